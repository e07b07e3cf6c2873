/**
 * A client process that stalls in its own I/O (a listener doing synchronous work, a frame of
 * hundreds of answers, a loaded machine) while its server's next answer is already in the same
 * frame. The server runs in a worker thread and announces `grace` 1000 ms with pings so rare that
 * the only confirmations are the answers to the test's own messages.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { afterEach, describe, expect, it } from "vitest";
import { ProtocolClient } from "./client.js";
import { LeaseLostError } from "./errors.js";
import { nodeWebSocket, undiciTransport } from "./node.js";

/** grace 1000 ms: a lease is the client's 950 ms (less the margin) after its last confirmed send. */
const TERMS = { grace: 1_000, ping: 60_000, recovery: 0 };
const BUDGET = 950;

/**
 * A session server (hello → welcome, ping → pong, acquire → granted, release → released). The
 * acquire of resource "other" is answered in one frame after an event revoking the lease on "x".
 */
const SERVER = `
const { parentPort, workerData } = require("node:worker_threads");
const { WebSocketServer } = require(workerData.ws);
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/v1/session" });
let token = 0;
let x;
const snapshot = (id, resource) => ({ t: "state", id, resource, load: 1, priority: 0, capacity: 1 });
wss.on("listening", () => parentPort.postMessage(wss.address().port));
wss.on("connection", (ws) => ws.on("message", (data) => {
  const parsed = JSON.parse(String(data));
  const out = [];
  for (const m of Array.isArray(parsed) ? parsed : [parsed]) {
    if (m.t === "hello") out.push({ t: "welcome", session: m.session, resumed: false, run: "r", ...workerData.terms });
    else if (m.t === "ping") out.push({ t: "pong", n: m.n });
    else if (m.t === "release") out.push({ ...snapshot(m.id, "?"), state: "released" });
    else {
      if (m.resource === "x") x = m.id;
      if (m.resource === "other") out.push({ ...snapshot(x, "x"), seq: 1, state: "revoked", reason: "ops" });
      out.push({ ...snapshot(m.id, m.resource), state: "active", fencingToken: ++token, expiresIn: 600000 });
    }
  }
  ws.send(JSON.stringify(out.length === 1 ? out[0] : out));
}));
`;

/** Blocks this thread's event loop until `performance.now()` reaches `until`. */
function stallUntil(until: number): void {
  while (performance.now() < until) {
    // the worker's server answers meanwhile
  }
}

describe("a client that stalls with its server's next answer already read", () => {
  let cleanup: Array<() => Promise<unknown> | undefined> = [];
  afterEach(async () => {
    for (const step of cleanup) await step();
    cleanup = [];
  });

  const setup = async () => {
    const worker = new Worker(SERVER, {
      eval: true,
      workerData: { ws: createRequire(import.meta.url).resolve("ws"), terms: TERMS },
    });
    const port = await new Promise<number>((resolve) => worker.once("message", resolve));
    const rq = new ProtocolClient({
      baseUrl: `http://127.0.0.1:${port}`,
      apiKey: "key",
      transport: undiciTransport(),
      webSocket: nodeWebSocket(),
      session: "websocket",
    });
    cleanup.push(
      () => rq.close(),
      () => worker.terminate(),
    );
    return rq;
  };

  // Found as 1 failure in 10 runs of the suite (sdk repro "1,000 acquires started in one loop"):
  // a holder whose process was busy with its own burst on a loaded machine read the answers of
  // a frame after its budget had run out, and gave its lease up before it reached the one that
  // confirmed a message sent well within the budget.
  it("an answer later in the frame keeps the lease, though read after the budget ran out", async () => {
    const rq = await setup();
    const lease = await rq.acquire({ name: "held" });
    const x = await rq.acquire({ name: "x" });
    const grantedAt = performance.now(); // the last confirmed send was before this
    // The revoke of x comes first in the frame: its listener stalls this process past the
    // budget confirmed so far (≤ grantedAt + 950), though well within the one the next answer
    // in the frame earns (sent 400 ms in).
    x.lost.addEventListener("abort", () => stallUntil(grantedAt + BUDGET + 100));
    await new Promise((resolve) => setTimeout(resolve, 400));
    const other = await rq.acquire({ name: "other" });
    expect(x.lost.reason).toBeInstanceOf(LeaseLostError);
    expect(performance.now()).toBeGreaterThan(grantedAt + BUDGET);
    expect(lease.lost.aborted, String(lease.lost.reason)).toBe(false);
    await rq.releaseLease(other);
    await rq.releaseLease(lease);
    expect(lease.lost.aborted).toBe(false);
  });
});
