import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import {
  API_PREFIX,
  checkAcquireBody,
  checkRequestId,
  describe,
  type ProblemCode,
  SESSION_PATH,
  type ServerMessage,
} from "@ratequeue/core";
import type { FastifyInstance, FastifyReply } from "fastify";
import { type WebSocket, WebSocketServer } from "ws";
import type { SessionBackend, SessionLink } from "./backend.js";
import { loopbackHost, type ResolvedServerOptions } from "./options.js";
import { problem, sendProblem } from "./problem.js";

/**
 * The session transports (docs/protocol.md, "Sessions"): all of a client's acquires, grants,
 * releases and its liveness over one connection — a WebSocket at `/v1/session`, or, where a
 * WebSocket cannot be had, a chain of HTTP polls on `POST /v1/sessions/{id}` carrying the same
 * messages. Both are thin: parse, authenticate, validate, call the backend.
 */

/** Who may use the server: a namespace for a token, or the problem to answer. */
export type Authenticate = (token: string) => { ns: string } | { status: 401; detail: string };

/** Largest WebSocket frame accepted (a batch of messages), in bytes. */
const MAX_FRAME = 4 * 1024 * 1024;
/** Messages of one WebSocket handled per turn of the event loop. */
const SLICE = 256;
/** A WebSocket must say `hello` within this many ms. */
const HELLO_WITHIN = 10_000;

/**
 * Handles a batch of client messages of session `sid` (acquire, release, ping), pushing the
 * answers to `out` in order.
 */
function handle(
  backend: SessionBackend,
  options: ResolvedServerOptions,
  ns: string,
  sid: string,
  messages: readonly unknown[],
  out: ServerMessage[],
): void {
  // Several messages: one durable commit for them all (before any answer leaves, as ever).
  if (messages.length > 1)
    backend.batch(() => handleEach(backend, options, ns, sid, messages, out));
  else handleEach(backend, options, ns, sid, messages, out);
}

function handleEach(
  backend: SessionBackend,
  options: ResolvedServerOptions,
  ns: string,
  sid: string,
  messages: readonly unknown[],
  out: ServerMessage[],
): void {
  for (const m of messages) {
    if (m === null || typeof m !== "object" || Array.isArray(m)) {
      out.push(error(400, "invalid_request", `each message must be an object, got ${describe(m)}`));
      continue;
    }
    const msg = m as Record<string, unknown>;
    if (msg.t === "ping") {
      const ack = msg.ack;
      if (!Number.isSafeInteger(msg.n) || (ack !== undefined && !Number.isSafeInteger(ack))) {
        out.push(error(400, "invalid_request", "a ping needs an integer `n` (and `ack`, if any)"));
        continue;
      }
      backend.touchSession(ns, sid, ack as number | undefined);
      out.push({ t: "pong", n: msg.n as number });
      continue;
    }
    if (msg.t !== "acquire" && msg.t !== "release") {
      out.push(
        error(
          400,
          "invalid_request",
          `unknown message type ${describe(msg.t)}: expected "acquire", "release" or "ping"`,
          "t",
        ),
      );
      continue;
    }
    const { t, id, ...body } = msg;
    const bad = checkRequestId(id);
    if (bad) {
      out.push(error(400, "invalid_request", `request id ${bad}`, "id"));
      continue;
    }
    const rid = id as string;
    if (t === "release") {
      const snap = backend.releaseNow(ns, rid);
      out.push(
        snap === undefined
          ? error(404, "not_found", `no request ${rid} in this namespace`, undefined, rid)
          : { t: "state", ...snap },
      );
      continue;
    }
    const checked = checkAcquireBody(body, { maxExpiresIn: options.maxExpiresIn });
    if (!checked.ok) {
      const { field, detail } = checked.problem;
      out.push(error(400, "invalid_request", `${field} ${detail}`, field, rid));
      continue;
    }
    const result = backend.acquireInSession(ns, sid, rid, checked.value);
    out.push(
      "ok" in result
        ? error(409, result.code, result.detail, result.field, rid)
        : { t: "state", ...result },
    );
  }
}

function error(
  status: number,
  code: ProblemCode,
  detail: string,
  field?: string,
  id?: string,
): ServerMessage {
  const e: ServerMessage = { t: "error", status, code, detail };
  if (field !== undefined) e.field = field;
  if (id !== undefined) e.id = id;
  return e;
}

/** The WebSocket session endpoint, on the Fastify app's HTTP server. */
export function attachWebSockets(
  app: FastifyInstance,
  options: ResolvedServerOptions,
  backend: SessionBackend,
  authenticate: Authenticate,
  state: { closing: boolean },
  /** Called with a connection whose client has authenticated. */
  proven: (socket: Duplex) => void,
): void {
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME });
  const path = API_PREFIX + SESSION_PATH;
  app.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = req.url ?? "";
    const refuse = (status: number, text: string) => {
      socket.end(
        `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n${text}\n`,
      );
    };
    if (url.split("?")[0] !== path) return refuse(404, "Not Found");
    if (options.apiKeys.length === 0 && !loopbackHost(req.headers.host))
      return refuse(403, "Forbidden"); // open mode answers loopback names only (options.ts)
    // A page may open a session only from an allowed origin (non-browser clients send none).
    const origin = req.headers.origin;
    if (origin !== undefined && !originAllowed(origin, req.headers.host, options.corsOrigins))
      return refuse(403, "Forbidden");
    if (state.closing) return refuse(503, "Service Unavailable");
    wss.handleUpgrade(req, socket, head, (ws) =>
      serveWebSocket(
        ws,
        options,
        backend,
        authenticate,
        () => proven(socket),
        req.socket.remoteAddress,
      ),
    );
  });
  // Before the HTTP server closes (it waits for every socket, and upgraded ones are not its own):
  // close each WebSocket with a handshake, and cut the ones that do not answer it.
  app.addHook("preClose", (done) => {
    for (const ws of wss.clients) {
      ws.close(1001, "server shutting down");
      setTimeout(() => ws.terminate(), 1_000).unref();
    }
    wss.close();
    done();
  });
}

function serveWebSocket(
  ws: WebSocket,
  options: ResolvedServerOptions,
  backend: SessionBackend,
  authenticate: Authenticate,
  proven: () => void,
  /** The client's network address. */
  address: string | undefined,
): void {
  let ns = "";
  let sid: string | undefined;
  let lastHeard = performance.now();
  const out: ServerMessage[] = [];
  let flushing = false;
  /** The client takes provisional grants (it said so in its hello). */
  let provisional = false;
  /** Requests whose `queued` answer has left: their place in line is durable. */
  const placed = new Set<string>();
  const write = (n: number) => {
    if (ws.readyState !== ws.OPEN) return;
    const batch = out.splice(0, n);
    if (batch.length === 0) return;
    if (provisional)
      for (const m of batch)
        if (m.t === "state") {
          if (m.state === "queued") placed.add(m.id);
          else placed.delete(m.id);
        }
    ws.send(JSON.stringify(batch.length === 1 ? batch[0] : batch));
  };
  /**
   * A grant that may leave before its commit (docs/protocol.md, "Provisional grants"): to a client
   * that takes them, of a request whose place in line is durable, with a fencing token the store
   * says a later leader would not hand out again. `recorded` follows once the commit is in: it
   * waits in `out`, for the same `durable()` as everything else.
   */
  const early = (e: ServerMessage): boolean => {
    if (
      !provisional ||
      e.t !== "state" ||
      e.seq === undefined ||
      e.state !== "active" ||
      !placed.has(e.id) ||
      ws.readyState !== ws.OPEN ||
      !backend.provisional?.(ns, e.fencingToken!) ||
      // Events leave in their order: a client takes an event numbered below one it has as
      // replayed, and acknowledges it (a revoke waiting for its commit would be lost).
      out.some((m) => m.t === "state" && m.seq !== undefined)
    )
      return false;
    placed.delete(e.id);
    ws.send(JSON.stringify({ ...e, provisional: true }));
    push({ t: "recorded", id: e.id });
    return true;
  };
  let waiting = false;
  const flush = () => {
    if (waiting) return; // the round under way sends the rest
    if (out.length === 0) {
      flushing = false;
      return;
    }
    // With a store on PostgreSQL, what has been queued so far leaves once what it reflects is
    // durable (the messages queued meanwhile wait for the next round, in order); if the store
    // failed, nothing more is said: the client reconnects to the replica that takes over.
    const durable = backend.durable?.();
    if (durable === undefined) {
      flushing = false;
      write(out.length);
      return;
    }
    const n = out.length;
    waiting = true;
    durable.then(
      () => {
        waiting = false;
        write(n);
        flush();
      },
      () => ws.terminate(),
    );
  };
  const push = (m: ServerMessage) => {
    out.push(m);
    if (!flushing) {
      flushing = true;
      queueMicrotask(flush);
    }
  };
  const link: SessionLink = {
    send: (events) => {
      for (const e of events) if (!early(e)) push(e);
    },
    bye: (recovery) => {
      push({ t: "bye", recovery });
      flush();
    },
    address,
  };
  const fail = (status: number, code: ProblemCode, detail: string, field?: string) => {
    push(error(status, code, detail, field));
    flush();
    ws.close(1008, code);
  };

  // Silence: a session that sends nothing for repollGrace is as good as gone.
  let silence: ReturnType<typeof setTimeout> | undefined;
  const watchSilence = () => {
    const quiet = performance.now() - lastHeard;
    if (quiet >= options.repollGrace) {
      ws.terminate();
      return;
    }
    silence = setTimeout(watchSilence, options.repollGrace - quiet + 1);
    silence.unref();
  };
  silence = setTimeout(() => {
    if (sid === undefined) ws.close(1008, "no hello");
    else watchSilence();
  }, HELLO_WITHIN);
  silence.unref();

  ws.on("message", (data, isBinary) => {
    lastHeard = performance.now();
    let parsed: unknown;
    try {
      parsed = JSON.parse(isBinary ? Buffer.from(data as Buffer).toString() : String(data));
    } catch {
      return fail(400, "invalid_request", "a frame must be JSON: a message or an array of them");
    }
    const messages = Array.isArray(parsed) ? parsed : [parsed];
    if (sid === undefined) {
      const hello = messages[0] as Record<string, unknown> | undefined;
      if (hello?.t !== "hello") {
        return fail(400, "invalid_request", 'the first message must be {"t":"hello",...}', "t");
      }
      const who = authenticate(typeof hello.key === "string" ? hello.key : "");
      if ("status" in who) return fail(401, "unauthorized", who.detail, "key");
      const bad = checkRequestId(hello.session);
      if (bad) return fail(400, "invalid_request", `session id ${bad}`, "session");
      if (hello.after !== undefined && !Number.isSafeInteger(hello.after)) {
        return fail(400, "invalid_request", "after must be an integer (the last event seq seen)");
      }
      if (hello.run !== undefined && typeof hello.run !== "string") {
        return fail(400, "invalid_request", "run must be the string a welcome gave", "run");
      }
      const after = ofThisRun(backend, hello.after as number | undefined, hello.run);
      ns = who.ns;
      sid = hello.session as string;
      provisional = hello.provisional === true;
      proven();
      // The welcome goes first, then any unacknowledged events, then the answers.
      push({ t: "welcome", session: sid, resumed: false, run: backend.run, ...backend.terms });
      const welcome = out[out.length - 1] as { resumed: boolean };
      welcome.resumed = backend.attachSession(ns, sid, after, link).known;
      clearTimeout(silence);
      watchSilence();
      receive(messages.slice(1));
      return;
    }
    receive(messages);
  });

  /**
   * Messages wait in order and are handled in slices of `SLICE`, one slice per turn of the event
   * loop: a client that sends 10,000 acquires at once must not hold up every other session's
   * pings for longer than their `grace`. A ping that arrives behind such a backlog is answered at
   * once (it only proves the session alive, in any order), so the sender's own leases do not
   * wait behind its burst either.
   */
  const inbox: unknown[] = [];
  let draining = false;
  const receive = (messages: unknown[]) => {
    // Behind a backlog (earlier frames not yet handled, or a long batch), a ping is answered at
    // once: it only proves the session alive.
    const backlog = inbox.length > 0 || messages.length > SLICE;
    for (const m of messages) {
      if (backlog && (m as { t?: unknown } | null)?.t === "ping")
        handle(backend, options, ns, sid!, [m], out);
      else inbox.push(m);
    }
    drain();
  };
  const drain = () => {
    if (inbox.length > 0 && !draining && ws.readyState === ws.OPEN) {
      handle(backend, options, ns, sid!, inbox.splice(0, SLICE), out);
      if (inbox.length > 0) {
        draining = true;
        setImmediate(() => {
          draining = false;
          drain();
        });
      }
    }
    if (out.length > 0 && !flushing) {
      flushing = true;
      queueMicrotask(flush);
    }
  };
  ws.on("close", () => {
    clearTimeout(silence);
    inbox.length = 0;
    if (sid !== undefined) backend.detachSession(ns, sid, link, "closed");
  });
  ws.on("error", () => ws.terminate());
}

/** `POST /v1/sessions/{id}[?after=seq&run=id&wait=ms]`: the same session, over HTTP polls. */
export function sessionRoute(
  app: FastifyInstance,
  options: ResolvedServerOptions,
  backend: SessionBackend,
): void {
  /** The socket that carried each session's last answered poll, watched until its next poll. */
  const watched = new Map<string, { socket: NodeJS.EventEmitter; onClose: () => void }>();
  const unwatch = (key: string) => {
    const w = watched.get(key);
    if (w === undefined) return;
    watched.delete(key);
    w.socket.removeListener("close", w.onClose);
  };

  app.post<{ Params: { id: string }; Querystring: Record<string, string> }>(
    `${API_PREFIX}/sessions/:id`,
    // A batch of messages, as large as a WebSocket frame may be (not one request's 16 KiB).
    { bodyLimit: MAX_FRAME },
    async (req, reply) => {
      const ns = req.namespace;
      const sid = req.params.id;
      const bad = checkRequestId(sid);
      if (bad) return invalid(reply, "id", `session id ${bad}`);
      const seen = intParam(req.query.after, "after");
      if (typeof seen === "string") return invalid(reply, "after", seen);
      const after = ofThisRun(backend, seen, req.query.run);
      const wait = intParam(req.query.wait, "wait");
      if (typeof wait === "string") return invalid(reply, "wait", wait);
      const body = req.body ?? [];
      if (!Array.isArray(body)) {
        return invalid(
          reply,
          "body",
          `the body must be a JSON array of messages, got ${describe(body)}`,
        );
      }
      const key = `${ns}\n${sid}`;
      unwatch(key);
      const { known } = backend.touchSession(ns, sid, after, req.socket.remoteAddress);
      const out: ServerMessage[] = [];
      handle(backend, options, ns, sid, body, out);
      const head = { session: sid, known, run: backend.run, ...backend.terms };
      const events = () => backend.pendingEvents(ns, sid, after);
      const window = Math.min(wait ?? options.pollWindow, options.pollWindow);
      /** Until its next poll, the session leaves (`grace`) if the socket of this answer closes. */
      const watch = () => {
        const socket = reply.raw.socket;
        if (socket === null || socket.destroyed) {
          backend.leaveSession(ns, sid);
          return;
        }
        const onClose = () => {
          watched.delete(key);
          backend.leaveSession(ns, sid);
        };
        unwatch(key);
        socket.once("close", onClose);
        watched.set(key, { socket, onClose });
      };
      if (out.length > 0 || events().length > 0 || window === 0) {
        watch();
        return { ...head, messages: [...out, ...events()] };
      }
      // A long-poll: the session is attached while it is open, and answered on the first event.
      return new Promise((resolve) => {
        let done = false;
        const opened = performance.now();
        const finish = (how: "answered" | "closed") => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          reply.raw.removeListener("close", onClientClose);
          backend.detachSession(ns, sid, link, how);
          if (how === "closed") return resolve(reply);
          watch();
          // How long the session was attached by this poll: the client may count on it (see
          // "Liveness" in docs/protocol.md), as it knows the poll left it no sooner than it sent it.
          const held = Math.floor(performance.now() - opened);
          resolve({ ...head, held, messages: events() });
        };
        const link: SessionLink = {
          send: () => queueMicrotask(() => finish("answered")),
          bye: () => finish("answered"),
          address: req.socket.remoteAddress,
        };
        const onClientClose = () => {
          if (!reply.raw.writableFinished) finish("closed");
        };
        const timer = setTimeout(() => finish("answered"), window);
        reply.raw.once("close", onClientClose);
        backend.attachSession(ns, sid, after, link);
      });
    },
  );
}

/**
 * The last event a client has seen, if it is of this run: a client that names another run (it
 * read its events from this server before a restart) has seen none of this run's. A client that
 * names no run is taken at its word (`curl` following docs/protocol.md).
 */
function ofThisRun(backend: SessionBackend, after: number | undefined, run: unknown) {
  return run === undefined || run === backend.run ? after : undefined;
}

function intParam(value: string | undefined, name: string): number | undefined | string {
  if (value === undefined) return undefined;
  if (!/^\d{1,15}$/.test(value)) return `${name} must be a whole number, got ${describe(value)}`;
  return Number(value);
}

function invalid(reply: FastifyReply, field: string, detail: string) {
  return sendProblem(reply, problem(400, "invalid_request", detail, field));
}

/** A browser page's origin may open a session: the server's own, or one of `--cors-origin`. */
function originAllowed(origin: string, host: string | undefined, allowed: readonly string[]) {
  if (allowed.includes("*") || allowed.includes(origin)) return true;
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}
