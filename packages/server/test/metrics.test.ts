import { describe, expect, it } from "vitest";
import { client, startTestServer } from "./helpers.js";

/** One sample of the Prometheus text exposition format (version 0.0.4). */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Parses the text exposition format strictly: every line is a `# HELP`, a `# TYPE` or a sample
 * of a family announced by a `# TYPE` before it, with well-formed labels and a number. Throws on
 * anything else, so a scrape Prometheus could not read fails the test.
 */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      if (meta[1] === "TYPE") {
        if (!/^(counter|gauge|histogram|summary|untyped)$/.test(meta[3]!))
          throw new Error(`bad TYPE: ${line}`);
        types.set(meta[2]!, meta[3]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample: ${JSON.stringify(line)}`);
    const name = m[1]!;
    const family = [...types.keys()].find(
      (f) => name === f || /^(_bucket|_sum|_count|_total|_created)$/.test(name.slice(f.length)),
    );
    if (family === undefined) throw new Error(`sample of an undeclared family: ${line}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? "";
    const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/y;
    for (let at = 0; at < body.length; ) {
      label.lastIndex = at;
      const l = label.exec(body);
      if (!l) throw new Error(`bad labels: ${line}`);
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
      at = label.lastIndex;
    }
    // Values as Go's ParseFloat reads them: numbers, and NaN / ±Inf in any case.
    const raw = m[3]!;
    const value = /^nan$/i.test(raw)
      ? Number.NaN
      : /^[+-]?inf(inity)?$/i.test(raw)
        ? (raw.startsWith("-") ? -1 : 1) * Number.POSITIVE_INFINITY
        : Number(raw);
    if (Number.isNaN(value) && !/^nan$/i.test(raw)) throw new Error(`bad value: ${line}`);
    samples.push({ name, labels, value });
  }
  return { samples, types };
}

async function scrape(url: string, token?: string) {
  const res = await fetch(`${url}/metrics`, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
}

const value = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.find(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  )?.value;

describe("GET /metrics", () => {
  it("counts grants and ends, times waits and holds, and shows the line, in Prometheus' format", async () => {
    await using server = await startTestServer();
    const c = client(server);
    expect((await c.acquire("h", { resource: "busy" }, 0)).body.state).toBe("active");
    for (const id of ["w1", "w2"])
      expect((await c.acquire(id, { resource: "busy" }, 0)).body.state).toBe("queued");

    const before = await scrape(server.url);
    expect(before.status).toBe(200);
    expect(before.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const { samples, types } = parseExposition(before.text);
    expect(types.get("ratequeue_grants_total")).toBe("counter");
    expect(types.get("ratequeue_wait_seconds")).toBe("histogram");
    expect(value(samples, "ratequeue_grants_total")).toBe(1);
    expect(value(samples, "ratequeue_requests", { state: "active" })).toBe(1);
    expect(value(samples, "ratequeue_requests", { state: "queued" })).toBe(2);
    expect(value(samples, "ratequeue_resource_queued", { resource: "busy" })).toBe(2);
    expect(value(samples, "ratequeue_resource_used", { resource: "busy" })).toBe(1);
    expect(value(samples, "ratequeue_resource_capacity", { resource: "busy" })).toBe(1);
    expect(value(samples, "process_cpu_seconds_total")).toBeGreaterThan(0); // Node's own

    await c.release("h"); // w1 is granted after waiting
    await c.release("w2"); // cancelled while queued
    const after = parseExposition((await scrape(server.url)).text).samples;
    expect(value(after, "ratequeue_grants_total")).toBe(2);
    expect(value(after, "ratequeue_ends_total", { state: "released", was: "active" })).toBe(1);
    expect(value(after, "ratequeue_ends_total", { state: "cancelled", was: "queued" })).toBe(1);
    expect(value(after, "ratequeue_wait_seconds_count")).toBe(2);
    expect(value(after, "ratequeue_hold_seconds_count")).toBe(1);
    expect(value(after, "ratequeue_wait_seconds_bucket", { le: "+Inf" })).toBe(2);
    expect(value(after, "ratequeue_requests", { state: "queued" })).toBe(0);
    expect(value(after, "ratequeue_resource_queued", { resource: "busy" })).toBe(0);
  });

  it("reports only the busiest resources one by one (--metrics-top), longest line first", async () => {
    await using server = await startTestServer({ metricsTop: 3 });
    const c = client(server);
    // r0 … r5, with 0 … 5 waiters behind a holder each.
    for (let r = 0; r < 6; r++)
      for (let i = 0; i <= r; i++) await c.acquire(`r${r}-${i}`, { resource: `r${r}` }, 0);
    const { samples } = parseExposition((await scrape(server.url)).text);
    const queued = samples.filter((s) => s.name === "ratequeue_resource_queued");
    expect(queued.map((s) => [s.labels.resource, s.value])).toEqual([
      ["r5", 5],
      ["r4", 4],
      ["r3", 3],
    ]);
    expect(value(samples, "ratequeue_resources")).toBe(6); // totals count them all
  });

  it("takes admin keys only: none given, 401; an API key, 401; without admin keys, 403", async () => {
    await using server = await startTestServer({ apiKeys: ["app-key"], adminKeys: ["ops-key"] });
    await client(server, "app-key").acquire("a", { resource: "secret-name" }, 0);
    const anonymous = await scrape(server.url);
    expect(anonymous.status).toBe(401);
    expect(JSON.parse(anonymous.text)).toMatchObject({ code: "unauthorized" });
    const app = await scrape(server.url, "app-key");
    expect(app.status).toBe(401);
    expect(JSON.parse(app.text).detail).toMatch(/API keys do not open \/metrics/);
    const ops = await scrape(server.url, "ops-key");
    expect(ops.status).toBe(200);
    expect(ops.text).toContain('resource="secret-name"');
    expect(ops.text).not.toContain("app-key"); // namespaces are hashes, never the key
    // And the admin key is not an API key.
    expect((await client(server, "ops-key").acquire("b", { resource: "r" }, 0)).status).toBe(401);

    await using keysOnly = await startTestServer({ apiKeys: ["app-key"] });
    const refused = await scrape(keysOnly.url, "app-key");
    expect(refused.status).toBe(403);
    expect(JSON.parse(refused.text)).toMatchObject({ code: "admin_key_required" });
    expect(JSON.parse(refused.text).detail).toMatch(/--admin-key/);
  });

  it.each([
    [{ metricsTop: -1 }, /metricsTop must be an integer from 0 to 1000/],
    [{ adminKeys: ["has space"] }, /adminKeys: each key must be a non-empty string/],
    [{ apiKeys: ["same"], adminKeys: ["same"] }, /must not also be an API key/],
  ])("refuses %j with a message that says what to fix", async (options, message) => {
    await expect(startTestServer(options)).rejects.toThrow(message);
  });
});
