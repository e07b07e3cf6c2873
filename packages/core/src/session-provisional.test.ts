/**
 * Provisional grants over the WebSocket session (docs/protocol.md, "Provisional grants"): the
 * client says `provisional` in its hello; a grant event marked `provisional` hands the lease out
 * at once, `recorded` says it is durable, and a connection that ends before `recorded` costs
 * the lease (LeaseLostError, and a `release` once reconnected). The server here is a fake that
 * the test drives: it queues acquires of `CONTENDED`, and the test pushes the grant, the
 * `recorded` and the end of the connection when it chooses.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { type WebSocket, WebSocketServer } from "ws";
import { ProtocolClient } from "./client.js";
import { LeaseLostError } from "./errors.js";
import { nodeWebSocket } from "./node.js";
import type { ClientMessage, ServerMessage } from "./protocol.js";
import { fetchTransport } from "./transport.js";

/** Long enough that no stall of a loaded machine costs the test's lease. */
const TERMS = { grace: 10_000, ping: 2_500, recovery: 0 };
/** Acquires of this resource are queued; the test grants them (`grant`). */
const CONTENDED = "contended";

/**
 * A session server on `/v1/session`: hello → welcome (resumed when it knows the session, with
 * the events after `after` replayed), ping → pong, release → released, acquire → queued for
 * `CONTENDED`, else granted at once. `received` is every client message, with the number of the
 * connection it came on (1 for the first).
 */
async function fakeServer() {
  const state = { connections: 0, fencingToken: 0, seq: 0 };
  const received: Array<{ m: ClientMessage; connection: number }> = [];
  /** `resumed` of each welcome sent, in order. */
  const welcomes: boolean[] = [];
  const sessions = new Set<string>();
  /** Events (messages with a seq) sent, for replay on resume. */
  const events: Array<ServerMessage & { seq: number }> = [];
  let current: WebSocket | undefined;
  let onEvent = () => {};
  /** Resolves once `check` holds after a connection or a frame. */
  const until = (check: () => boolean) =>
    new Promise<void>((resolve) => {
      if (check()) return resolve();
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
  const wss = new WebSocketServer({ server: http, path: "/v1/session" });
  wss.on("connection", (ws) => {
    const connection = ++state.connections;
    current = ws;
    queueMicrotask(onEvent);
    ws.on("error", () => ws.terminate());
    ws.on("message", (data) => {
      const parsed = JSON.parse(String(data)) as ClientMessage | ClientMessage[];
      const out: ServerMessage[] = [];
      for (const m of Array.isArray(parsed) ? parsed : [parsed]) {
        received.push({ m, connection });
        if (m.t === "hello") {
          const resumed = sessions.has(m.session);
          out.push({ t: "welcome", session: m.session, resumed, run: "run-1", ...TERMS });
          welcomes.push(resumed);
          sessions.add(m.session);
          if (resumed) out.push(...events.filter((e) => e.seq > (m.after ?? 0)));
        } else if (m.t === "ping") out.push({ t: "pong", n: m.n });
        else if (m.t === "release") out.push({ ...snapshot(m.id, "?"), state: "released" });
        else if (m.t === "acquire" && m.resource === CONTENDED)
          out.push({ ...snapshot(m.id, m.resource), state: "queued" });
        else if (m.t === "acquire")
          out.push({
            ...snapshot(m.id, m.resource),
            state: "active",
            fencingToken: ++state.fencingToken,
            expiresIn: 60_000,
          });
      }
      if (out.length > 0) ws.send(JSON.stringify(out.length === 1 ? out[0] : out));
      queueMicrotask(onEvent);
    });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const baseUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;

  /** Sends `m` on the connection of the latest hello. */
  const push = (m: ServerMessage) => {
    if (current === undefined) throw new Error("no connection");
    current.send(JSON.stringify(m));
  };
  /** The id of the first queued acquire of `CONTENDED`, once it has come. */
  const queuedId = async () => {
    const find = () =>
      received.find(({ m }) => m.t === "acquire" && m.resource === CONTENDED)?.m as
        | { id: string }
        | undefined;
    await until(() => find() !== undefined);
    return find()!.id;
  };
  /** A grant event for queued request `id`, marked provisional if asked. Its fencing token. */
  const grant = (id: string, provisional: boolean) => {
    const fencingToken = ++state.fencingToken;
    const event = {
      ...snapshot(id, CONTENDED),
      seq: ++state.seq,
      state: "active" as const,
      fencingToken,
      expiresIn: 60_000,
    };
    events.push(event);
    push(provisional ? { ...event, provisional: true } : event);
    return fencingToken;
  };
  /** Ends the current connection at once (no close frame), as a replica that dies would. */
  const terminate = () => current?.terminate();
  const hellos = () => received.filter(({ m }) => m.t === "hello").length;
  const close = async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise((resolve) => wss.close(resolve));
    await new Promise((resolve) => http.close(resolve));
  };
  return {
    baseUrl,
    state,
    received,
    welcomes,
    until,
    push,
    queuedId,
    grant,
    terminate,
    hellos,
    close,
  };
}

function snapshot(id: string, resource: string) {
  return { t: "state" as const, id, resource, load: 1, priority: 0, capacity: 1 };
}

describe("WebSocket session: provisional grants", () => {
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

  /** A contended acquire, granted by the server (provisionally if asked): the lease. */
  const granted = async (
    server: Awaited<ReturnType<typeof fakeServer>>,
    rq: ProtocolClient,
    provisional: boolean,
  ) => {
    const acquire = rq.acquire({ name: CONTENDED });
    const id = await server.queuedId();
    const fencingToken = server.grant(id, provisional);
    const lease = await acquire;
    expect(lease).toMatchObject({ id, name: CONTENDED, fencingToken });
    return lease;
  };

  /**
   * Ends the connection and waits until the client has been welcomed again and has processed
   * that welcome: a new acquire, made once the second hello is in, is answered only after it.
   */
  const reconnect = async (server: Awaited<ReturnType<typeof fakeServer>>, rq: ProtocolClient) => {
    server.terminate();
    await server.until(() => server.hellos() >= 2);
    const probe = await rq.acquire({ name: "probe-after-reconnect" });
    expect(probe.lost.aborted).toBe(false);
    expect(server.state.connections).toBe(2);
  };

  const releasesOf = (server: Awaited<ReturnType<typeof fakeServer>>, id: string) =>
    server.received.filter(({ m }) => m.t === "release" && m.id === id);

  /** After `reconnect`: the lease was kept, and its release goes on the new connection. */
  const expectKeptThroughResume = async (
    server: Awaited<ReturnType<typeof fakeServer>>,
    rq: ProtocolClient,
    lease: Awaited<ReturnType<typeof granted>>,
  ) => {
    expect(server.welcomes).toEqual([false, true]);
    expect(lease.lost.aborted).toBe(false);
    expect(lease.lostError).toBeUndefined();
    expect(releasesOf(server, lease.id)).toHaveLength(0);
    expect(await rq.releaseLease(lease)).toEqual({ state: "released" });
    expect(releasesOf(server, lease.id).map(({ connection }) => connection)).toEqual([2]);
  };

  it("the hello says the client takes provisional grants", async () => {
    const { server, rq } = await setup();
    const lease = await rq.acquire({ name: "free" });
    const hello = server.received.find(({ m }) => m.t === "hello")?.m;
    expect(hello).toMatchObject({ t: "hello", key: "key", provisional: true });
    await rq.releaseLease(lease);
  });

  it("a provisional grant is a lease at once; the connection ending before `recorded` loses it, and it is released once reconnected", async () => {
    const { server, rq } = await setup();
    const lease = await granted(server, rq, true);
    // Usable at once: nothing has said `recorded`.
    expect(lease.lost.aborted).toBe(false);
    expect(lease.lostError).toBeUndefined();
    let heard: unknown;
    lease.lost.addEventListener("abort", () => {
      heard = lease.lost.reason;
    });
    await reconnect(server, rq);
    expect(lease.lost.aborted).toBe(true);
    expect(heard).toBe(lease.lost.reason);
    expect(lease.lost.reason).toBeInstanceOf(LeaseLostError);
    expect(lease.lostError).toBe(lease.lost.reason);
    expect((lease.lost.reason as Error).message).toMatch(
      /the connection ended before the server had recorded the grant/,
    );
    // Sent on the new connection (in the frame that followed its welcome, before the probe).
    expect(releasesOf(server, lease.id).map(({ connection }) => connection)).toEqual([2]);
    expect(await rq.releaseLease(lease)).toMatchObject({ state: "lost" });
    expect(releasesOf(server, lease.id)).toHaveLength(1);
  });

  it("a provisional grant `recorded` before the connection ends is kept when the session resumes", async () => {
    const { server, rq } = await setup();
    const lease = await granted(server, rq, true);
    server.push({ t: "recorded", id: lease.id });
    // A round trip after `recorded`: the client has read it before the connection ends.
    await rq.acquire({ name: "probe-after-recorded" });
    await reconnect(server, rq);
    await expectKeptThroughResume(server, rq, lease);
  });

  it("an ordinary grant (not provisional) is kept when the connection ends and the session resumes", async () => {
    const { server, rq } = await setup();
    const lease = await granted(server, rq, false);
    await reconnect(server, rq);
    await expectKeptThroughResume(server, rq, lease);
  });
});
