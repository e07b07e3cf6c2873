import { once } from "node:events";
import { describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { client, eventually, startTestServer } from "./helpers.js";

/** A log stream that keeps every line, parsed (pino writes one JSON object per line). */
function capture() {
  const raw: string[] = [];
  return {
    stream: { write: (line: string) => void raw.push(line) },
    raw,
    lines: () => raw.map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe("structured logs", () => {
  it("at debug: a line per grant, end and request, with its ids — and never a key", async () => {
    const log = capture();
    await using server = await startTestServer({
      apiKeys: ["app-key-123"],
      adminKeys: ["ops-key-456"],
      logLevel: "debug",
      logStream: log.stream,
    });
    const api = client(server, "app-key-123");
    await api.acquire("a", { resource: "r" });
    await api.acquire("b", { resource: "r" }, 0);
    await api.release("a"); // b is granted
    await api.release("b");
    expect((await client(server, "wrong-secret-key").acquire("c", { resource: "r" })).status).toBe(
      401,
    );
    await fetch(`${server.url}/metrics`, { headers: { authorization: "Bearer ops-key-456" } });
    // A WebSocket session says its key in its first message, not in a header.
    const ws = new WebSocket(`${server.url.replace(/^http/, "ws")}/v1/session`);
    await once(ws, "open");
    ws.send(JSON.stringify({ t: "hello", key: "app-key-123", session: "s1" }));
    await once(ws, "message");
    ws.close();

    await eventually(() => log.lines().some((l) => l.url === "/metrics"));
    const lines = log.lines();
    const grants = lines.filter((l) => l.event === "grant");
    expect(grants.map((l) => l.requestId)).toEqual(["a", "b"]);
    expect(grants[1]).toMatchObject({ level: 20, resource: "r", msg: "granted" });
    expect(grants[1]!.fencingToken).toBeGreaterThan(grants[0]!.fencingToken as number);
    const ends = lines.filter((l) => l.event === "end");
    expect(ends.map((l) => [l.requestId, l.state, l.was])).toEqual([
      ["a", "released", "active"],
      ["b", "released", "active"],
    ]);
    const requests = lines.filter((l) => l.msg === "request");
    expect(requests.length).toBeGreaterThanOrEqual(5);
    for (const r of requests) expect(r.reqId).toBeDefined();
    expect(requests.some((r) => r.status === 401)).toBe(true);
    for (const line of log.raw) {
      expect(line).not.toContain("app-key-123");
      expect(line).not.toContain("wrong-secret-key");
      expect(line).not.toContain("ops-key-456");
    }
  });

  it("at info (the command's default): a holder dropped when its client goes away is a warning, and grants are not logged", async () => {
    const log = capture();
    await using server = await startTestServer({
      logLevel: "info",
      logStream: log.stream,
      repollGrace: 300,
      grace: 100,
    });
    await client(server).acquire("gone", { resource: "r" }, 0); // and never polls again
    await eventually(() => log.lines().some((l) => l.event === "end"), 5_000);
    const lines = log.lines();
    expect(lines.filter((l) => l.event === "end")).toEqual([
      expect.objectContaining({
        level: 40,
        state: "dropped",
        was: "active",
        requestId: "gone",
        msg: expect.stringMatching(/its client went away/),
      }),
    ]);
    expect(lines.some((l) => l.event === "grant" || l.msg === "request")).toBe(false);
  });

  it("refuses an unknown level, naming the levels", async () => {
    // @ts-expect-error: not a level
    await expect(startTestServer({ logLevel: "verbose" })).rejects.toThrow(
      /logLevel must be one of fatal, error, warn, info, debug, trace, silent/,
    );
  });
});
