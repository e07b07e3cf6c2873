import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "@ratequeue/server";
import { describe, expect, it } from "vitest";
import { eventually } from "../../../test-support/eventually.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = fileURLToPath(new URL("../src/cli/run.ts", import.meta.url));

/** `ratequeue ARGS…` as a real process, from source (tsx resolves the workspace packages). */
function ratequeue(url: string, args: string[]): ChildProcess & { out: () => string } {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, RATEQUEUE_URL: url, RATEQUEUE_API_KEY: "cli" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    out += d;
  });
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    out += d;
  });
  return Object.assign(child, { out: () => out });
}

async function exitCode(child: ChildProcess): Promise<number | null> {
  const [code] = await once(child, "exit");
  return code;
}

const resource = (url: string, name: string) =>
  fetch(`${url}/v1/resources/${name}`, { headers: { authorization: "Bearer cli" } }).then(
    (r) => r.json() as Promise<{ used: number; queued: number }>,
  );

describe("ratequeue run (flock across machines)", () => {
  it("runs the command while holding the lock, passes its exit code and the fencing token", async () => {
    await using server = await startServer({ port: 0 });
    const a = ratequeue(server.url, [
      "run",
      "job",
      "--",
      "sh",
      "-c",
      'echo "token=$RATEQUEUE_FENCING_TOKEN"; exit 7',
    ]);
    expect(await exitCode(a)).toBe(7);
    expect(a.out()).toMatch(/token=\d+/);
    expect(await resource(server.url, "job")).toMatchObject({ used: 0, queued: 0 });
  });

  it("queues a second run behind the first; --no-wait exits 1 at once; --wait times out with 1", async () => {
    await using server = await startServer({ port: 0 });
    const dir = mkdtempSync(join(tmpdir(), "ratequeue-run-"));
    const log = join(dir, "log");
    const go = join(dir, "go");
    // The first holds until the test says so, however slowly the others start.
    const first = ratequeue(server.url, [
      "run",
      "job",
      "--",
      "sh",
      "-c",
      `echo a-start >> ${log}; while [ ! -f ${go} ]; do sleep 0.05; done; echo a-end >> ${log}`,
    ]);
    await eventually(async () => (await resource(server.url, "job")).used === 1);
    const noWait = ratequeue(server.url, ["run", "job", "--no-wait", "--", "true"]);
    expect(await exitCode(noWait)).toBe(1);
    expect(noWait.out()).toMatch(/held elsewhere/);
    const timedOut = ratequeue(server.url, ["run", "job", "--wait", "200", "--", "true"]);
    expect(await exitCode(timedOut)).toBe(1);
    const second = ratequeue(server.url, ["run", "job", "--", "sh", "-c", `echo b >> ${log}`]);
    await eventually(async () => (await resource(server.url, "job")).queued === 1);
    writeFileSync(go, "");
    expect(await exitCode(first)).toBe(0);
    expect(await exitCode(second)).toBe(0);
    expect(readFileSync(log, "utf8").split("\n").filter(Boolean)).toEqual([
      "a-start",
      "a-end",
      "b",
    ]);
  });

  it("forwards SIGTERM to the command and passes on how it ended", async () => {
    await using server = await startServer({ port: 0 });
    const run = ratequeue(server.url, [
      "run",
      "job",
      "--",
      "sh",
      "-c",
      "trap 'echo got-term; exit 42' TERM; echo started; sleep 10 & wait",
    ]);
    await eventually(() => run.out().includes("started")); // the command runs, its trap is set
    run.kill("SIGTERM");
    expect(await exitCode(run)).toBe(42);
    expect(run.out()).toMatch(/got-term/);
    expect(await resource(server.url, "job")).toMatchObject({ used: 0 });
  });

  it("when killed with SIGKILL, the command is killed too and the lock goes to the next", async () => {
    await using server = await startServer({ port: 0 });
    const dir = mkdtempSync(join(tmpdir(), "ratequeue-run-"));
    const pidFile = join(dir, "pid");
    const run = ratequeue(server.url, [
      "run",
      "job",
      "--",
      "sh",
      "-c",
      `echo $$ > ${pidFile}; sleep 30`,
    ]);
    await eventually(async () => (await resource(server.url, "job")).used === 1);
    await eventually(() => existsSync(pidFile) && readFileSync(pidFile, "utf8").trim() !== "");
    const pid = Number(readFileSync(pidFile, "utf8"));
    run.kill("SIGKILL");
    await eventually(() => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true; // the command is gone
      }
    });
    const next = ratequeue(server.url, ["run", "job", "--", "true"]);
    expect(await exitCode(next)).toBe(0);
  });

  it("stops the command with SIGTERM and exits 3 when the lease is lost", async () => {
    await using server = await startServer({ port: 0, maxExpiresIn: 1_000, defaultExpiresIn: 500 });
    const run = ratequeue(server.url, [
      "run",
      "job",
      "--",
      "sh",
      "-c",
      "trap 'exit 0' TERM; sleep 10 & wait",
    ]);
    expect(await exitCode(run)).toBe(3);
    expect(run.out()).toMatch(/lease on job lost/);
  });

  it("refuses a usage error with 2 and says what to fix", async () => {
    const run = ratequeue("http://127.0.0.1:9", ["run", "job", "./no-dash-dash"]);
    expect(await exitCode(run)).toBe(2);
    expect(run.out()).toMatch(/put the command after `--`/);
  });
});

describe("ratequeue status (the admin API in a terminal)", () => {
  const withKey = (url: string, args: string[], key: string) => {
    process.env.RATEQUEUE_ADMIN_KEY = key;
    try {
      return ratequeue(url, args);
    } finally {
      delete process.env.RATEQUEUE_ADMIN_KEY;
    }
  };

  it("lists the busiest resources, then one resource's holders and line in order", async () => {
    // The requests below are made once and never polled: kept for a minute, however slowly
    // the status processes start on a busy machine.
    await using server = await startServer({
      port: 0,
      apiKeys: ["cli"],
      adminKeys: ["ops"],
      repollGrace: 60_000,
    });
    const put = (id: string, body: object, wait?: number) =>
      fetch(`${server.url}/v1/requests/${id}${wait === undefined ? "" : `?wait=${wait}`}`, {
        method: "PUT",
        headers: { authorization: "Bearer cli", "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    await put("holder", { resource: "reports" });
    await put("first", { resource: "reports" }, 0);
    await put("urgent", { resource: "reports", priority: 50 }, 0);
    await put("other", { resource: "quiet" });

    const all = withKey(server.url, ["status"], "ops");
    expect(await exitCode(all)).toBe(0);
    const listing = all.out();
    expect(listing).toMatch(/2 resources, 2 holding, 2 waiting/);
    // Busiest first: reports (2 waiting) before quiet.
    expect(listing.indexOf("reports")).toBeLessThan(listing.indexOf("quiet"));
    expect(listing).not.toContain("cli"); // the namespace is an id, never the key

    const one = withKey(server.url, ["status", "reports"], "ops");
    expect(await exitCode(one)).toBe(0);
    const lines = one.out().split("\n");
    expect(lines[0]).toMatch(
      /^reports \(namespace [\w-]{12}\): capacity 1, 1 used, 1 holding, 2 waiting/,
    );
    const holder = lines.findIndex((l) => l.trim().startsWith("HOLDER"));
    expect(lines[holder + 1]).toMatch(/^\s+holder\s+1\s+\d+.*127\.0\.0\.1/);
    const line = lines.findIndex((l) => l.trim().startsWith("#"));
    expect(lines[line + 1]).toMatch(/^\s+1\s+urgent\s+1\s+50/);
    expect(lines[line + 2]).toMatch(/^\s+2\s+first\s+1\s+10/);
  });

  it("says what is wrong: an API key instead of an admin key exits 1, a bad option 2", async () => {
    await using server = await startServer({ port: 0, apiKeys: ["cli"], adminKeys: ["ops"] });
    const refused = withKey(server.url, ["status"], "cli");
    expect(await exitCode(refused)).toBe(1);
    expect(refused.out()).toMatch(/401.*API keys do not open the admin API/);
    const bad = withKey(server.url, ["status", "--top", "zero"], "ops");
    expect(await exitCode(bad)).toBe(2);
    expect(bad.out()).toMatch(/--top must be a whole number/);
  });
});
