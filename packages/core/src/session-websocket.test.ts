/**
 * The WebSocket session against a server that `ws` plays with a small `maxPayload`: a frame over
 * it is closed with code 1009 ("message too big"), as an older server or a proxy would. The
 * server of this version accepts any frame the client sends.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocketServer } from "ws";
import { ProtocolClient } from "./client.js";
import { LeaseLostError, RateQueueError } from "./errors.js";
import { nodeWebSocket } from "./node.js";
import type { ClientMessage, ServerMessage } from "./protocol.js";
import { fetchTransport } from "./transport.js";

/** Long enough that no stall of a loaded machine costs the test's lease. */
const TERMS = { grace: 10_000, ping: 2_500, recovery: 0 };
/** How many connections prove the client resends what will never pass. */
const LOOPING = 20;
const MAX_PAYLOAD = 512;

/**
 * A minimal session server on `/v1/session` (hello → welcome, ping → pong, every acquire granted
 * at once) whose `ws` closes any frame over `MAX_PAYLOAD` bytes with 1009. `tooBig` counts those.
 */
async function fakeServer() {
  const state = { connections: 0, tooBig: 0, fencingToken: 0 };
  const received: ClientMessage[] = [];
  const sessions = new Set<string>();
  let onEvent = () => {};
  /** Resolves once `check` holds after a connection, a frame or a frame refused. */
  const until = (check: () => boolean) =>
    new Promise<void>((resolve) => {
      const previous = onEvent;
      onEvent = () => {
        previous();
        if (check()) resolve();
      };
    });
  const http: Server = createServer((req, res) => {
    res.writeHead(req.url === "/v1/health" ? 200 : 404, { "content-type": "application/json" });
    res.end("{}");
  });
  const wss = new WebSocketServer({ server: http, path: "/v1/session", maxPayload: MAX_PAYLOAD });
  wss.on("connection", (ws) => {
    state.connections++;
    queueMicrotask(onEvent);
    ws.on("error", (error: Error & { code?: string }) => {
      // As the server does (ws has sent the close, 1009, already).
      if (error.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH") state.tooBig++;
      ws.terminate();
      queueMicrotask(onEvent);
    });
    ws.on("message", (data) => {
      const parsed = JSON.parse(String(data)) as ClientMessage | ClientMessage[];
      const out: ServerMessage[] = [];
      for (const m of Array.isArray(parsed) ? parsed : [parsed]) {
        received.push(m);
        if (m.t === "hello") {
          out.push({
            t: "welcome",
            session: m.session,
            resumed: sessions.has(m.session),
            run: "run-1",
            ...TERMS,
          });
          sessions.add(m.session);
        } else if (m.t === "ping") out.push({ t: "pong", n: m.n });
        else if (m.t === "release") out.push({ ...snapshot(m.id, "?"), state: "released" });
        else
          out.push({
            ...snapshot(m.id, m.resource),
            state: "active",
            fencingToken: ++state.fencingToken,
            expiresIn: 60_000,
          });
      }
      ws.send(JSON.stringify(out.length === 1 ? out[0] : out));
      queueMicrotask(onEvent);
    });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const baseUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  const close = async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise((resolve) => wss.close(resolve));
    await new Promise((resolve) => http.close(resolve));
  };
  return { baseUrl, state, received, until, close };
}

function snapshot(id: string, resource: string) {
  return { t: "state" as const, id, resource, load: 1, priority: 0, capacity: 1 };
}

/** Settles with what `promise` settles with, or with "reconnecting" once the client connected `LOOPING` times. */
function settledOrLooping(
  promise: Promise<unknown>,
  server: Awaited<ReturnType<typeof fakeServer>>,
): Promise<unknown> {
  return Promise.race([
    promise.then(
      (value) => ({ value }),
      (error: unknown) => error,
    ),
    server.until(() => server.state.connections >= LOOPING).then(() => "reconnecting"),
  ]);
}

/** Three acquires started at once: one frame of about 900 bytes, over `MAX_PAYLOAD`. */
function burst(rq: ProtocolClient): Promise<unknown>[] {
  const acquires = ["a", "b", "c"].map((c) => rq.acquire({ name: c.repeat(200) }));
  for (const acquire of acquires) acquire.catch(() => {});
  return acquires;
}

describe("WebSocket session: a frame the server closes with 1009 (too big)", () => {
  let cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const step of cleanup) await step();
    cleanup = [];
  });

  const setup = async () => {
    const server = await fakeServer();
    const rq = new ProtocolClient({
      baseUrl: server.baseUrl,
      apiKey: "key",
      transport: fetchTransport(),
      webSocket: nodeWebSocket(),
      session: "websocket",
      retry: { retries: 1_000, minDelay: 1, maxDelay: 20 },
    });
    cleanup.push(
      () => rq.close(),
      () => server.close(),
    );
    return { server, rq };
  };

  // It was resent on a new connection for ever.
  it("the acquires reject, saying how large the frame was and what to do; the frame is not sent again", async () => {
    const { server, rq } = await setup();
    const acquires = burst(rq);
    const outcome = await settledOrLooping(acquires[0]!, server);
    expect(outcome).toBeInstanceOf(RateQueueError);
    expect(outcome).toMatchObject({ status: 413, code: "payload_too_large" });
    const message = (outcome as Error).message;
    expect(message).toMatch(/closed the WebSocket \(code 1009\)/);
    const bytes = Number(/a frame of (\d+) bytes/.exec(message)?.[1]);
    expect(bytes).toBeGreaterThan(MAX_PAYLOAD);
    expect(message).toMatch(/too large .*: upgrade the server/);
    for (const acquire of acquires) await expect(acquire).rejects.toMatchObject({ status: 413 });
    expect(server.state).toMatchObject({ connections: 1, tooBig: 1 });
    // The session is back for what fits; what did not is not sent again.
    await rq.releaseLease(await rq.acquire({ name: "next" }));
    expect(server.state).toMatchObject({ connections: 2, tooBig: 1 });
  });

  it("while a lease is held: its holder hears of it, and the server is told to release it", async () => {
    const { server, rq } = await setup();
    const lease = await rq.acquire({ name: "held" });
    const released = server.until(() =>
      server.received.some((m) => m.t === "release" && m.id === lease.id),
    );
    const acquires = burst(rq);
    const outcome = await settledOrLooping(acquires[0]!, server);
    expect(outcome).toBeInstanceOf(RateQueueError);
    expect(outcome).toMatchObject({ status: 413, code: "payload_too_large" });
    expect(lease.lost.aborted).toBe(true);
    expect(lease.lost.reason).toBeInstanceOf(LeaseLostError);
    for (const acquire of acquires) await expect(acquire).rejects.toMatchObject({ status: 413 });
    // On a new connection, which carries the release and not the frame that was too big.
    await released;
    expect(server.state).toMatchObject({ connections: 2, tooBig: 1 });
  });
});
