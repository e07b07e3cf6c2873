import {
  AcquireTimeoutError,
  AuthenticationError,
  LeaseLostError,
  QueueFullError,
  RateQueueError,
  ServiceUnavailableError,
  ValidationError,
} from "./errors.js";
import { onAbort, sleep } from "./internal/signals.js";
import { LIVENESS_DEFAULTS, LivenessBudget, pingInterval } from "./liveness.js";
import {
  type AcquireBody,
  API_PREFIX,
  type ClientMessage,
  type RequestSnapshot,
  type RequestState,
  SESSION_PATH,
  type ServerMessage,
  type SessionTerms,
} from "./protocol.js";
import {
  DEFAULT_RETRY,
  parseRetryAfter,
  type RetryOptions,
  TransientError,
  withRetries,
} from "./retry.js";
import type { Transport } from "./transport.js";
import { utf8Length } from "./validate.js";

/** Answers to an exchange that no retry changes (the request itself is refused). */
const FATAL = [400, 401, 403, 405, 413, 414, 415, 422, 431];

/**
 * The client side of a session (docs/protocol.md, "Sessions"): one connection to the server that
 * carries every acquire, grant, release and the liveness of all of this client's requests, however
 * many are in flight. It owns reconnecting, resuming, pinging and the liveness budget; a lease
 * only asks it whether it is still held (`LeaseHandle.lost`). The model is etcd's
 * `concurrency.Session` and ZooKeeper's session: one object owns keep-alive, expiry and "lost".
 */

/** A WebSocket as the session needs it: the WHATWG API (browsers, Deno, Bun, workerd, `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** `open`, `message` (`data`), `error`, `close` (`code`: 1009 says a frame was too big). */
  // biome-ignore lint/suspicious/noExplicitAny: the event types differ between runtimes
  addEventListener(type: string, listener: (event: any) => void): void;
}

/** How a session opens WebSockets; `undefined` where the runtime has none (HTTP session only). */
export interface WebSocketFactory {
  open(url: string): WebSocketLike;
  /** Idle: no live requests. Node unrefs the socket, so an idle session never holds a process open. */
  idle?(ws: WebSocketLike, idle: boolean): void;
}

/** Which connection carries the session. */
export type SessionMode = "auto" | "websocket" | "http";

export interface SessionConfig {
  /**
   * The server's URL, or several (replicas): a failure of the connection, or a 421, 502, 503 or
   * 504, sends the next attempt to the next URL; a URL that works is kept until it fails.
   */
  baseUrl: string | readonly string[];
  apiKey: string;
  /** For the HTTP session and for probing the server. */
  transport: Transport;
  /** For the WebSocket session. */
  webSocket?: WebSocketFactory;
  /** `auto` (default): a WebSocket where one can be opened, else HTTP polls. */
  mode?: SessionMode;
  /** How long an HTTP exchange may take beyond its wait before it counts as failed, ms. Default `10_000`. */
  requestTimeout?: number;
  /** Reconnecting: how often and how fast (p-retry, with jitter). */
  retry?: RetryOptions;
}

/** A granted request, as the session keeps it. */
export interface LeaseHandle {
  readonly id: string;
  readonly name: string;
  readonly fencingToken: number;
  /** Aborts with `LeaseLostError` the moment the lease may no longer be this client's. */
  readonly lost: AbortSignal;
  /** Why the lease was lost (the reason `lost` aborts with), readable without making `lost`; `undefined` while held. */
  readonly lostError: LeaseLostError | undefined;
}

/**
 * A lease as the session hands it out. Its `lost` signal is made when first read, already
 * aborted if the lease was lost before: an AbortController costs microseconds, and most leases
 * are released without anyone watching theirs.
 */
class Held implements LeaseHandle {
  lostError: LeaseLostError | undefined;
  #lost: AbortController | undefined;

  constructor(
    readonly id: string,
    readonly name: string,
    readonly fencingToken: number,
  ) {}

  get lost(): AbortSignal {
    if (this.#lost === undefined) {
      this.#lost = new AbortController();
      if (this.lostError) this.#lost.abort(this.lostError);
    }
    return this.#lost.signal;
  }

  lose(error: LeaseLostError): void {
    this.lostError = error;
    this.#lost?.abort(error);
  }
}

/**
 * Acquires begun per turn of the event loop; more in one turn wait for the next (see
 * `acquire`). One costs tens of µs (most of it the garbage collector's, for what a waiting
 * request keeps): 256 keep a turn to a few ms.
 */
const ADMIT_PER_TURN = 256;
/** Messages per frame (or HTTP exchange) at most; more wait for the next (see `flush`). */
const MAX_BATCH = 256;

/** Runs `fn` at the next turn of the event loop, after pending I/O and timers. */
const atNextTurn: (fn: () => void) => void =
  typeof setImmediate === "function" ? (fn) => setImmediate(fn) : (fn) => setTimeout(fn, 0);

function closedError(resource: string): RateQueueError {
  return new RateQueueError("this RateQueue client was closed: create a new one to acquire", {
    code: "client_closed",
    resource,
  });
}

/** After `timeout`, how long to wait for the server's own `timed_out` before giving up, ms. */
const TIMEOUT_SLACK = 500;
/** A release that no server has answered after this long rejects with ServiceUnavailableError (it stays queued). */
const RELEASE_BUDGET = 10_000;
/** How long `shutdown` waits for the server to answer its releases and cancels, ms. */
const SHUTDOWN_BUDGET = 2_000;
/** An idle session (no live requests) closes its connection after this long, ms. */
const IDLE_CLOSE = 30_000;
/** A WebSocket not welcomed within this long is closed and tried again, ms. */
const CONNECT_TIMEOUT = 5_000;

type Phase = "sending" | "queued" | "active" | "ended";

interface Entry {
  id: string;
  body: AcquireBody;
  phase: Phase;
  /** The message that still needs an answer (`acquire`, then `release`): resent on reconnect. */
  outstanding: ClientMessage | undefined;
  /** Messages sent on the current connection and not answered yet, oldest first (answers come in order). */
  inflight: Array<{ message: ClientMessage; sentAt: number }>;
  acquire?: {
    resolve(lease: LeaseHandle): void;
    reject(error: unknown): void;
    /** The caller's wait goes on under a new request id (its first place was lost). */
    moved(id: string): void;
  };
  release?: { resolve(state: RequestState | undefined): void; reject(error: unknown): void };
  lease?: Held;
  /** Loses the lease when its `expiresIn` has elapsed. */
  expiry?: ReturnType<typeof setTimeout>;
  /** The client gave up on it (abort, timeout, lost): release it whatever the server says next. */
  abandoned: boolean;
  /** Counted in `held` (granted, handed out, not yet released or lost). */
  holding: boolean;
  /** Granted provisionally, and not yet `recorded`: lost if the connection ends first. */
  provisional?: boolean;
  released?: Promise<RequestState | undefined>;
}

/** One connection (a WebSocket, or HTTP polls); the session above does the bookkeeping. */
interface Link {
  send(messages: ClientMessage[]): void;
  close(): void;
  idle(idle: boolean): void;
}

let sessionCounter = 0;

export class ClientSession {
  readonly id = `${crypto.randomUUID()}-${++sessionCounter}`;
  private readonly entries = new Map<string, Entry>();
  private readonly budget = new LivenessBudget({
    grace: LIVENESS_DEFAULTS.grace,
    ping: pingInterval(LIVENESS_DEFAULTS.grace),
    recovery: 0,
  });
  private link: Link | undefined;
  private connected = false;
  private welcomed = false;
  private mode: "websocket" | "http";
  private outbox: ClientMessage[] = [];
  private flushQueued = false;
  /** Highest event seq handled (acknowledged in pings). */
  private ack = 0;
  /** The server run `ack` counts in (events are numbered per run: see `welcome`). */
  private run: string | undefined;
  private pingN = 0;
  /** ping n → send time. */
  private readonly pings = new Map<number, number>();
  private pingTimer: ReturnType<typeof setTimeout> | undefined;
  private budgetTimer: ReturnType<typeof setTimeout> | undefined;
  private budgetTimerAt = Number.POSITIVE_INFINITY;
  /** The link whose server said `bye` (it is shutting down). */
  private byeFrom: Link | undefined;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  private held = 0;
  /** Closed for good (`shutdown`): no new acquires. */
  private shutDown = false;
  /** While shutting down: called once nothing is live any more. */
  private drained: (() => void) | undefined;
  /** Send time of the latest message whose answer has arrived on this connection. */
  private lastAnsweredSentAt = Number.NEGATIVE_INFINITY;
  /** The server's URLs, the one in use first. */
  declare private readonly bases: string[];
  /**
   * The URL of the server that last welcomed the session. Only its port refusing says the
   * server that holds the session is down (liveness.ts); another URL's says nothing of it.
   */
  declare private home: string | undefined;
  private readonly retry: Required<RetryOptions>;

  constructor(private readonly config: SessionConfig) {
    this.bases = [config.baseUrl].flat().map((url) => url.replace(/\/+$/, ""));
    this.retry = { ...DEFAULT_RETRY, ...config.retry };
    const mode = config.mode ?? "auto";
    if (mode === "websocket" && config.webSocket === undefined) {
      throw new ValidationError(
        'session "websocket" needs a WebSocket, and this runtime has no global one: pass webSocket, or use session "auto" (HTTP polls where there is none)',
        { field: "session" },
      );
    }
    this.mode = mode === "http" || config.webSocket === undefined ? "http" : "websocket";
  }

  /** Which connection carries the session now. */
  get transport(): "websocket" | "http" {
    return this.mode;
  }

  /**
   * Waits for a slot: resolves with the lease once granted. Rejects with `signal.reason` on
   * abort and `AcquireTimeoutError` after `timeout`; either way the request leaves the line (a
   * grant that raced is released).
   */
  acquire(body: AcquireBody, signal?: AbortSignal): Promise<LeaseHandle> {
    signal?.throwIfAborted();
    if (this.shutDown) return Promise.reject(closedError(body.resource));
    return new Promise<LeaseHandle>((resolve, reject) => {
      // A burst (thousands of acquires in one synchronous loop) is taken in slices, one per
      // turn of the event loop: done at once, it would block the loop long enough for this
      // process's own holders to miss their pongs and give their leases up (liveness rule).
      if (this.admitted >= ADMIT_PER_TURN || this.backlog.length > 0) {
        this.backlog.push({ body, signal, resolve, reject });
        this.admitNextTurn();
        return;
      }
      this.admitted++;
      this.admitNextTurn();
      this.begin(body, signal, resolve, reject);
    });
  }

  /** Acquires waiting for a later turn (see `acquire`), oldest first. */
  private backlog: Array<{
    body: AcquireBody;
    signal: AbortSignal | undefined;
    resolve: (lease: LeaseHandle) => void;
    reject: (error: unknown) => void;
  }> = [];
  /** Acquires begun in this turn of the event loop. */
  private admitted = 0;
  private turnQueued = false;

  /** At the next turn: a new slice of acquires may begin (the backlog's oldest first). */
  private admitNextTurn(): void {
    if (this.turnQueued) return;
    this.turnQueued = true;
    atNextTurn(() => {
      this.turnQueued = false;
      const slice = this.backlog.splice(0, ADMIT_PER_TURN);
      this.admitted = slice.length;
      if (this.backlog.length > 0 || slice.length > 0) this.admitNextTurn();
      for (const { body, signal, resolve, reject } of slice) {
        if (signal?.aborted) reject(signal.reason);
        else if (this.shutDown) reject(closedError(body.resource));
        else this.begin(body, signal, resolve, reject);
      }
    });
  }

  /** Starts acquire: the request is tracked and sent; `resolve` once granted. */
  private begin(
    body: AcquireBody,
    signal: AbortSignal | undefined,
    resolve: (lease: LeaseHandle) => void,
    reject: (error: unknown) => void,
  ): void {
    let id: string = crypto.randomUUID();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const cleanup = () => {
      clearTimeout(timer);
      stopWatching?.();
    };
    const giveUp = (error: unknown) => {
      const entry = this.entries.get(id);
      if (entry?.acquire === undefined) return;
      entry.acquire = undefined;
      cleanup();
      this.abandon(entry);
      reject(error);
    };
    const stopWatching = signal && onAbort(signal, () => giveUp(signal.reason));
    if (body.timeout !== undefined && body.timeout > 0) {
      timer = setTimeout(
        () => giveUp(timeoutError(body.resource, body.timeout!)),
        body.timeout + TIMEOUT_SLACK,
      );
    }
    this.track(id, body, {
      resolve: (lease) => {
        cleanup();
        resolve(lease);
      },
      reject: (error) => {
        cleanup();
        reject(error);
      },
      moved: (next) => {
        id = next; // abort and timeout give up the request as it is now
      },
    });
  }

  /**
   * Releases a lease. Resolves with the state the server reports (`released`, or how it ended
   * before), or `undefined` if the server no longer knows it.
   */
  release(id: string): Promise<RequestState | undefined> {
    this.expireIfSpent();
    const entry = this.entries.get(id);
    if (entry === undefined || entry.phase === "ended") return Promise.resolve(undefined);
    entry.released ??= new Promise((resolve, reject) => {
      const timer = unref(
        setTimeout(() => {
          if (entry.release === undefined) return;
          entry.release = undefined;
          reject(
            new ServiceUnavailableError(
              `releasing ${JSON.stringify(entry.body.resource)}: no answer from the server within ${RELEASE_BUDGET} ms; the release is sent as soon as it is reachable`,
            ),
          );
        }, RELEASE_BUDGET),
      );
      entry.release = {
        resolve: (state) => {
          clearTimeout(timer);
          resolve(state);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.stopHolding(entry);
      this.sendRelease(entry); // unless already on its way (the lease was lost)
    });
    return entry.released;
  }

  /** Closes the connection (tests and shutdown); live requests end on the server after `grace`. */
  close(): void {
    this.cancelTimers();
    this.link?.close();
    this.link = undefined;
    this.connected = false;
  }

  /**
   * Ends the session for good: waiting acquires reject with `client_closed` and leave the line,
   * held leases are released (their holders' `release()` resolves as usual), and once the server
   * has answered — or after `within` ms — the connection closes. Later acquires reject.
   */
  async shutdown(within = SHUTDOWN_BUDGET): Promise<void> {
    if (this.shutDown) return;
    this.shutDown = true;
    for (const entry of [...this.entries.values()]) {
      if (entry.acquire !== undefined) {
        const acquire = entry.acquire;
        entry.acquire = undefined;
        this.abandon(entry);
        acquire.reject(
          new RateQueueError(
            `this RateQueue client was closed while ${JSON.stringify(entry.body.resource)} was awaited`,
            { code: "client_closed", resource: entry.body.resource },
          ),
        );
      } else if (entry.phase === "active") {
        // Its holder hears of it through lease.signal, and the server is told to release it.
        this.lose(entry, "its RateQueue client was closed");
      }
    }
    if (this.live()) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, within);
        this.drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.drained = undefined;
    }
    this.close();
  }

  // --- outgoing ------------------------------------------------------------------------------

  private enqueue(message: ClientMessage): void {
    if (this.idleTimer !== undefined || this.idle) this.setIdle();
    this.outbox.push(message);
    if (!this.connected) {
      this.connect();
      return;
    }
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flush);
    }
  }

  /**
   * Sends what accumulated in this turn as one frame (a batch) — at most `MAX_BATCH` messages:
   * the rest go at the next turn, so that neither side spends longer than a few ms on one frame
   * while a holder's ping waits behind it.
   */
  private readonly flush = (): void => {
    this.flushQueued = false;
    if (!this.connected || this.link === undefined || this.outbox.length === 0) return;
    if (this.marker !== undefined) return; // the server is still on the last slice
    let batch = this.outbox;
    if (batch.length > MAX_BATCH && this.mode === "websocket") {
      // The next slice goes when the server has answered this one (the pong of a ping sent
      // after it: answers come in order). Over HTTP, each exchange carries one slice and the
      // next waits for its answer anyway.
      batch = this.outbox.splice(0, MAX_BATCH);
      this.marker = this.newPing(batch);
    } else this.outbox = [];
    this.link.send(batch);
    this.armPing();
  };

  /**
   * While a burst goes out in slices (see `flush`): the ping whose pong lets the next slice go.
   * Without this, slices would pile up in the server's socket ahead of a holder's ping.
   */
  private marker: number | undefined;

  /** Appends a ping to `batch`; its number. */
  private newPing(batch: ClientMessage[]): number {
    const n = ++this.pingN;
    this.pings.set(n, performance.now());
    if (this.pings.size > 64) this.pings.delete(this.pings.keys().next().value!);
    batch.push({ t: "ping", n, ack: this.ack });
    return n;
  }

  private armPing(): void {
    if (this.pingTimer !== undefined || !this.live()) return;
    this.pingTimer = setTimeout(this.ping, this.budget.terms.ping);
  }

  private readonly ping = (): void => {
    this.pingTimer = undefined;
    // Over HTTP the session poll, answered every `ping` ms, is the ping.
    if (!this.connected || !this.live() || this.mode === "http") return;
    if (this.link === this.byeFrom) return; // the server said bye: the next link pings
    // In a frame of its own, at once: a ping must not wait behind a burst of other messages.
    const ping: ClientMessage[] = [];
    this.newPing(ping);
    this.link?.send(ping);
    this.armPing();
  };

  // --- connection ----------------------------------------------------------------------------

  /**
   * Opens a connection (retried with backoff, see `RetryOptions`) unless one is open or opening;
   * `after` ms from now if the server asked for that (`Retry-After`).
   */
  private connect(after = 0): void {
    if (this.connecting !== undefined || this.link !== undefined) return;
    const wait = Math.min(after, this.retry.maxRetryAfter);
    const attempt: Promise<void> = (wait > 0 ? sleep(wait) : Promise.resolve())
      .then(() =>
        withRetries(
          `connecting to the RateQueue server at ${this.bases[0]}`,
          () => this.round(),
          this.retry,
        ),
      )
      .then(
        () => {
          if (this.connecting === attempt) this.connecting = undefined;
        },
        (error: unknown) => {
          if (this.connecting === attempt) this.connecting = undefined;
          // A durable server is restarting (its port refused us): its recovery window keeps
          // our leases, so keep trying until the budget it gave is spent.
          if (this.live() && !this.budget.spent(performance.now())) this.connect();
          else this.failAll(error, "the server could not be reached");
        },
      );
    this.connecting = attempt;
  }

  /**
   * One attempt at each URL in turn, with no backoff between them: a failover goes round the
   * replicas at once, so the client reaches the new leader within its leases' grace. The retry
   * loop's backoff comes after a whole round (or a failure that keeps the URL).
   */
  private async round(): Promise<void> {
    for (let left = this.bases.length; ; ) {
      const url = this.bases[0];
      try {
        return await this.connectOnce();
      } catch (error) {
        if (--left < 1 || url === this.bases[0]) throw error;
      }
    }
  }

  /** One attempt: resolves once the server welcomes the session. */
  private connectOnce(): Promise<void> {
    if (!this.live() && this.outbox.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.welcomeWaiter = { resolve, reject };
      this.welcomed = false;
      this.lastAnsweredSentAt = Number.NEGATIVE_INFINITY;
      this.link = this.mode === "websocket" ? this.openWebSocket() : this.openHttp();
    });
  }

  private connecting: Promise<void> | undefined;
  private welcomeWaiter: { resolve(): void; reject(error: unknown): void } | undefined;

  /** The link is gone (before or after its welcome): try again if anything is live. */
  private disconnected(link: Link, cause?: unknown): void {
    if (this.link !== link) return;
    this.link = undefined;
    this.connected = false;
    // A grant told before its commit, and the connection gone before `recorded`: the server
    // may have died first, and the one that takes over may never know of it.
    for (const entry of this.entries.values()) {
      if (!entry.provisional) continue;
      entry.provisional = false;
      if (entry.holding)
        this.lose(
          entry,
          "the connection ended before the server had recorded the grant (a replica on PostgreSQL that stopped serving may not have)",
        );
    }
    clearTimeout(this.pingTimer);
    this.pingTimer = undefined;
    this.pings.clear();
    if (code(cause) === "ECONNREFUSED" && this.bases[0] === this.home) {
      // Nothing listens on the server's port: it is down, and cannot hand leases on until it
      // has restarted and waited its recovery window (see liveness.ts). Only the port of the
      // server that welcomed the session says so: another URL's refusing is no news of it.
      this.budget.serverDown(performance.now());
      this.armBudget();
    }
    // After no answer (refused, reset, timeout, DNS) or a 421, 502, 503 or 504 — `HTTP 503: …`
    // from an exchange, `Unexpected server response: 503` from `ws` — the next attempt goes to
    // the next URL, and if that is another, at once (a `Retry-After` was this server's). Any
    // other answer is this server's own: the next attempt may pass there. A URL that works is
    // kept until it fails. Moving changes where the next attempt goes, never the budget.
    if (
      !/(HTTP|response:) (?!421|50[234])\d/.test((cause as Error)?.message) &&
      this.bases.push(this.bases.shift()!) > 1 &&
      cause instanceof TransientError
    ) {
      cause.retryAfter = 0;
    }
    const waiter = this.welcomeWaiter;
    this.welcomeWaiter = undefined;
    if (waiter !== undefined) {
      // An attempt failed: the retry loop decides what comes next.
      waiter.reject(
        cause instanceof TransientError
          ? cause
          : new TransientError(`connection failed: ${describeError(cause)}`, undefined, { cause }),
      );
      return;
    }
    this.connect(cause instanceof TransientError ? cause.retryAfter : 0);
  }

  /**
   * A connection failed before its welcome. Two questions for the server's health route: does
   * it answer plain HTTP although the WebSocket failed — then WebSockets do not get through
   * (a proxy refuses upgrades) and, if they never worked in this session, HTTP polls take over;
   * and, while a lease is at stake, is the port refused — then the server is down (see
   * liveness.ts). A dying server's port resets connections for a moment before it refuses
   * them, so while the budget lasts the probe is repeated, 10 ms apart, rather than waiting
   * for the retry backoff.
   */
  private async failedAttempt(link: Link, error: unknown): Promise<void> {
    const fallBack =
      this.mode === "websocket" && !this.everWelcomed && (this.config.mode ?? "auto") === "auto";
    for (let tries = 0; code(error) !== "ECONNREFUSED" && tries < 20; tries++) {
      // Only the port of the server that welcomed the session may extend the budget (see
      // `disconnected`): probing another URL would only delay the attempt at the next.
      const atStake =
        this.held > 0 && this.bases[0] === this.home && !this.budget.spent(performance.now());
      if (!fallBack && !atStake) break;
      if (tries > 0) await sleep(10);
      try {
        const res = await this.config.transport({
          method: "GET",
          url: `${this.bases[0]}${API_PREFIX}/health`,
          headers: {},
          signal: AbortSignal.timeout(1_000),
        });
        await res.text();
        if (fallBack && res.status === 200) this.mode = "http";
        break; // the server answers: it is up
      } catch (probeError) {
        if (code(probeError) === "ECONNREFUSED") error = probeError;
        if (!atStake) break;
      }
    }
    this.disconnected(link, error);
  }

  private openWebSocket(): Link {
    const url = `${this.bases[0]!.replace(/^http/, "ws")}${API_PREFIX}${SESSION_PATH}`;
    let ws: WebSocketLike;
    /** The largest frame sent on this link: its size, should the server close it as too big. */
    let big = "";
    const link: Link = {
      send: (messages) => {
        this.sending(messages, performance.now());
        try {
          const frame = JSON.stringify(messages.length === 1 ? messages[0] : messages);
          if (frame.length > big.length) big = frame;
          ws.send(frame);
        } catch (error) {
          // The socket cannot be used from here (in a Worker: a socket of another request; or
          // it closed under us): the session goes on over a new connection, which resends.
          queueMicrotask(() => this.disconnected(link, error));
          try {
            ws.close(1000);
          } catch {}
        }
      },
      close: () => ws.close(1000),
      idle: (idle) => this.config.webSocket!.idle?.(ws, idle),
    };
    let lastError: unknown;
    try {
      ws = this.config.webSocket!.open(url);
    } catch (error) {
      queueMicrotask(() => this.disconnected(link, error));
      return link;
    }
    const connectTimer = setTimeout(() => {
      if (this.link === link && !this.welcomed) ws.close(4000, "connect timeout");
    }, CONNECT_TIMEOUT);
    ws.addEventListener("open", () => {
      if (this.link !== link) return;
      this.helloSentAt = performance.now();
      // A server is up and will hear the hello: a recovery extension ends (liveness.ts).
      this.budget.contacted(this.helloSentAt);
      this.armBudget();
      big = JSON.stringify({
        t: "hello",
        key: this.config.apiKey,
        session: this.id,
        after: this.ack,
        run: this.run,
        provisional: true,
      });
      ws.send(big);
    });
    ws.addEventListener("message", (event: { data: unknown }) => {
      if (this.link !== link) return;
      let parsed: ServerMessage | ServerMessage[];
      try {
        parsed = JSON.parse(String(event.data));
      } catch {
        ws.close(1002);
        return;
      }
      for (const m of Array.isArray(parsed) ? parsed : [parsed]) this.receive(m);
      if (this.welcomed) clearTimeout(connectTimer);
    });
    ws.addEventListener("error", (event: { error?: unknown }) => {
      lastError = event.error ?? event;
    });
    ws.addEventListener("close", (event: { code?: number }) => {
      clearTimeout(connectTimer);
      // 1009: a frame was larger than the server (an older one) or a proxy accepts, and would
      // be as often as it is resent. Not 1008: our server sends the problem first (a 401 fails
      // the session there), or closes a connection whose hello came too late — a new one may pass.
      if (event.code === 1009 && this.link === link) this.fatal(413, "", utf8Length(big), true);
      else if (!this.welcomed) void this.failedAttempt(link, lastError);
      else this.disconnected(link, lastError);
    });
    return link;
  }

  /** Messages are going out at `at`: each awaits its answer. */
  private sending(messages: readonly ClientMessage[], at: number): void {
    for (const message of messages) {
      if (message.t === "acquire" || message.t === "release")
        this.entries.get(message.id)?.inflight.push({ message, sentAt: at });
    }
  }

  private openHttp(): Link {
    let closed = false;
    let polling = false;
    let sending = false;
    const link: Link = {
      send: (messages) => {
        this.outbox.unshift(...messages);
        if (!sending) void exchange();
      },
      close: () => {
        closed = true;
      },
      idle: () => {},
    };
    const headers = {
      authorization: `Bearer ${this.config.apiKey}`,
      "content-type": "application/json",
    };
    // The link's exchanges share one signal: an AbortSignal.timeout each costs more than the
    // rest of the exchange's client-side work (a signal, and the transport's listener on it). One
    // that outlives its time aborts them all, which ends the link as any failed exchange does;
    // what they carried is resent on the next link.
    const timeout = new AbortController();
    /** One POST: the outbox out (none for a poll), answers and events back. */
    const exchange = async (wait = 0): Promise<boolean> => {
      const messages = wait > 0 || !this.connected ? [] : this.outbox.splice(0, MAX_BATCH);
      if (wait === 0) sending = true;
      const sent = performance.now();
      this.sending(messages, sent);
      const timer = setTimeout(
        () => timeout.abort(new DOMException("no answer in time", "TimeoutError")),
        wait + (this.config.requestTimeout ?? 10_000),
      );
      try {
        const payload = JSON.stringify(messages);
        const res = await this.config.transport({
          method: "POST",
          url: `${this.bases[0]}${API_PREFIX}/sessions/${this.id}?after=${this.ack}${
            this.run === undefined ? "" : `&run=${encodeURIComponent(this.run)}`
          }&wait=${wait}`,
          headers,
          body: payload,
          signal: timeout.signal,
        });
        const text = await res.text();
        if (closed || this.link !== link) return false;
        if (res.status !== 200) {
          // What the request itself is refused for comes back however often it is sent (an
          // older server's smaller body limit: 413): it fails the session. The rest (408, 429,
          // 5xx, and a 404 or 421 from a proxy in the middle of a rollout) may pass next time.
          if (FATAL.includes(res.status)) {
            this.fatal(res.status, text, utf8Length(payload));
            return false;
          }
          throw new TransientError(
            `HTTP ${res.status}: ${text.slice(0, 200)}`,
            parseRetryAfter(res.header("retry-after")),
          );
        }
        const body = JSON.parse(text) as SessionTerms & {
          known: boolean;
          run?: string;
          /** How long the server held this long-poll open before answering, ms. */
          held?: number;
          messages: ServerMessage[];
        };
        // The first answer is the welcome. A later one that does not know the session means the
        // server lost it (restarted without its data): welcomed again, as a session it forgot.
        // One from another run means the server restarted between two polls: welcomed again,
        // as a session it kept (its events count from 1 again).
        if (!this.connected || !body.known || body.run !== this.run) {
          this.receive({ t: "welcome", session: this.id, resumed: body.known, ...body }, sent);
        } else {
          // The server held the poll `held` ms after it arrived (no sooner than it was sent),
          // with the session attached: it heard from the session that late at the earliest.
          const held = typeof body.held === "number" ? Math.max(0, Math.min(body.held, wait)) : 0;
          // Sent after the budget ran out, it proves nothing of the time between (`confirmLate`).
          if (this.budget.spent(performance.now()) && sent >= this.budget.safeUntil)
            this.expireIfSpent();
          this.answered(sent, sent + held);
        }
        for (const m of body.messages) this.receive(m, sent);
        return true;
      } catch (error) {
        // Unless the port refused it, the exchange may have reached a server (liveness.ts) —
        // other than the one that said bye (it answers 503 until it is gone).
        if (code(error) !== "ECONNREFUSED" && link !== this.byeFrom) {
          this.budget.contacted(sent);
          this.armBudget();
        }
        if (closed || this.link !== link) return false;
        closed = true; // what it carried is resent after the welcome of the next connection
        if (this.connected) this.disconnected(link, error);
        else void this.failedAttempt(link, error);
        return false;
      } finally {
        clearTimeout(timer);
        if (wait === 0) {
          sending = false;
          if (!closed && this.connected && this.outbox.length > 0) void exchange();
        }
      }
    };
    /** While anything is live: one poll open at a time, answered at news or after `ping` ms. */
    const poll = async () => {
      if (polling) return;
      polling = true;
      while (!closed && this.link === link && this.live()) {
        if (!(await exchange(this.budget.terms.ping))) break;
      }
      polling = false;
    };
    this.httpPoll = poll;
    queueMicrotask(() => {
      if (this.link === link) void exchange();
    });
    return link;
  }

  private httpPoll: (() => Promise<void>) | undefined;
  private pollStart: ReturnType<typeof setTimeout> | undefined;

  /**
   * The server refused the session itself (bad key), or an exchange of `bytes` as no retry would
   * change (a bad request; a batch over its body limit; `closed`: a WebSocket frame over its
   * size limit, code 1009): the session stops, so everything waiting fails and every lease is
   * lost (the server hands them on once it hears nothing).
   */
  private fatal(status: number, text: string, bytes?: number, closed?: boolean): void {
    let problem: { detail?: string; code?: string; field?: string } = {};
    try {
      problem = JSON.parse(text) ?? {};
    } catch {}
    const detail = problem.detail ?? `HTTP ${status}`;
    const error =
      status === 401 || status === 403
        ? new AuthenticationError(`the server refused the API key (HTTP ${status}): ${detail}`, {
            status,
          })
        : new RateQueueError(
            `the server ${
              closed
                ? `closed the WebSocket (code 1009) on a frame of ${bytes} bytes`
                : `refused a session exchange of ${bytes} bytes (HTTP ${status}): ${detail}`
            }${
              status === 413
                ? "; the batch is too large for this server or a proxy in front of it: upgrade the server, raise the proxy's size limit, or start fewer acquires at once"
                : ""
            }`,
            {
              status,
              code: problem.code ?? (closed ? "payload_too_large" : `http_${status}`),
              field: problem.field,
            },
          );
    const waiter = this.welcomeWaiter;
    this.welcomeWaiter = undefined;
    this.close();
    if (waiter)
      waiter.reject(error); // not transient: the retry loop fails everything with it
    else this.failAll(error);
  }

  private failAll(error: unknown, why = "the server refused this client"): void {
    this.outbox = [];
    for (const entry of [...this.entries.values()]) {
      entry.acquire?.reject(error);
      entry.acquire = undefined;
      entry.release?.reject(error);
      entry.release = undefined;
      entry.outstanding = undefined;
      this.lose(entry, why);
      this.end(entry);
    }
  }

  // --- incoming ------------------------------------------------------------------------------

  /**
   * One server message. `ref`: a time the server had read our message by, before it wrote this
   * one (an HTTP exchange's send time); by default the send time of the latest message answered
   * on this WebSocket (answers and events come in the order the server wrote them).
   */
  private receive(m: ServerMessage, ref?: number): void {
    this.confirmLate(m, ref);
    this.expireIfSpent();
    switch (m.t) {
      case "welcome":
        this.welcome(m, ref ?? this.helloSentAt);
        return;
      case "pong": {
        const sent = this.pings.get(m.n);
        this.pings.delete(m.n);
        if (sent !== undefined) this.answered(sent);
        if (m.n === this.marker) {
          this.marker = undefined; // the server is through the last slice: the next one
          this.flush();
        }
        return;
      }
      case "bye":
        // No more pings to a server that is going: its pongs would end the extension.
        this.byeFrom = this.link;
        this.budget.terms = { ...this.budget.terms, recovery: m.recovery };
        if (m.recovery > 0) this.budget.serverDown(performance.now());
        else this.loseAll("the server shut down and keeps nothing across a restart (--memory)");
        this.armBudget();
        return;
      case "error":
        this.refused(m);
        return;
      case "recorded": {
        const entry = this.entries.get(m.id);
        if (entry !== undefined) entry.provisional = false;
        return;
      }
      case "state":
        this.state(m, m.seq, ref);
        return;
    }
  }

  private welcome(m: SessionTerms & { resumed: boolean; run?: string }, helloSentAt: number): void {
    const first = !this.everWelcomed;
    this.everWelcomed = true;
    this.welcomed = true;
    this.connected = true;
    this.home = this.bases[0];
    this.connecting = undefined; // done: a failure from now on starts a new connect
    this.welcomeWaiter?.resolve();
    this.welcomeWaiter = undefined;
    this.budget.terms = { grace: m.grace, ping: m.ping, recovery: m.recovery };
    this.answered(helloSentAt);
    // A new session on the server, or a new run of it (restarted on its data directory): its
    // events count from 1. (The server ignored our `after`, which counted another run's.)
    if (!m.resumed || m.run !== this.run) this.ack = 0;
    this.run = m.run;
    if (!m.resumed && !first) {
      // The server no longer knows this session (dropped, or restarted without its data): no
      // lease of it survived.
      this.loseAll("the server no longer knows this client's session (was it restarted?)");
    }
    // Every waiter asks again, with its request id: the server answers its current state. A
    // grant whose event was lost (a server killed right after it) arrives this way, and a
    // server that forgot the request queues it anew.
    for (const entry of this.entries.values()) {
      if (entry.acquire !== undefined && entry.outstanding === undefined)
        entry.outstanding = { t: "acquire", id: entry.id, ...entry.body };
    }
    // Resend what awaits an answer (idempotent: a request id is created once), then the rest.
    const resend: ClientMessage[] = [];
    for (const entry of this.entries.values()) {
      entry.inflight.length = 0; // sent on a connection that is gone
      if (entry.outstanding) resend.push(entry.outstanding);
    }
    this.outbox = resend; // stale pings are dropped
    this.marker = undefined; // its pong went with the old connection
    this.flush();
    this.armPing();
    this.setIdle();
    this.link?.idle(this.idle); // a new connection starts referenced
    if (this.mode === "http") void this.httpPoll?.();
  }

  /**
   * An answer read after the budget ran out, before the budget's timer did, still counts if its
   * message was sent before then: the server heard from the session at that send time, with the
   * leases still ours (no hand-on before `grace` after that), so they are safe `grace` − margin
   * after it. This happens when this process stalled in its I/O (a burst of its own work, a frame
   * of hundreds of answers, a loaded machine) with the answer already in the socket. An answer to
   * a message sent after the budget ran out proves nothing of the time between, and counts only
   * after `expireIfSpent` (it may still confirm the leases granted since).
   */
  private confirmLate(m: ServerMessage, ref?: number): void {
    if (this.held === 0 || !this.budget.spent(performance.now())) return;
    let sentAt: number | undefined;
    if (m.t === "pong") sentAt = this.pings.get(m.n);
    else if ((m.t === "state" && m.seq === undefined) || (m.t === "error" && m.id !== undefined))
      sentAt = ref ?? this.entries.get(m.id!)?.inflight[0]?.sentAt;
    if (sentAt !== undefined && sentAt < this.budget.safeUntil) this.budget.confirm(sentAt);
  }

  private everWelcomed = false;
  private idle = true;
  private helloSentAt = Number.NEGATIVE_INFINITY;

  /**
   * The server answered a message sent at `sentAt`; it had heard from the session at `heardAt`
   * at the earliest (later than `sentAt` for a long-poll it held).
   */
  private answered(sentAt: number, heardAt = sentAt): void {
    if (sentAt > this.lastAnsweredSentAt) this.lastAnsweredSentAt = sentAt;
    this.budget.confirm(heardAt);
    this.armBudget();
  }

  private state(
    snap: RequestSnapshot & { seq?: number; provisional?: true },
    seq: number | undefined,
    ref?: number,
  ): void {
    if (seq !== undefined) {
      if (seq <= this.ack) return; // a replayed event already handled
      this.ack = seq;
    }
    const entry = this.entries.get(snap.id);
    if (entry === undefined) {
      // A grant nobody here waits for (the session failed while it was queued): release it, or
      // the server would keep it for this session.
      if (snap.state === "active") this.enqueue({ t: "release", id: snap.id });
      return;
    }
    if (seq === undefined) {
      const answered = this.answerTo(entry);
      if (answered === undefined) return;
      if (answered.t === "release") {
        const final = snap.state !== "queued" && snap.state !== "active";
        if (!final) return; // cannot be: a release always ends the request
        entry.release?.resolve(snap.state);
        entry.release = undefined;
        if (entry.acquire) {
          entry.acquire.reject(
            new RateQueueError(`the request was ${snap.state}`, { code: "request_ended" }),
          );
          entry.acquire = undefined;
        }
        this.end(entry);
        return;
      }
    }
    if (snap.state === "queued") {
      // Never back from active: over HTTP, an acquire's answer ("queued") may arrive after the
      // event of the grant that followed it, on another connection.
      if (entry.phase !== "active") entry.phase = "queued";
      return;
    }
    if (snap.state === "active") {
      if (entry.phase === "active") return;
      entry.phase = "active";
      if (entry.abandoned || entry.acquire === undefined) {
        this.sendRelease(entry);
        return;
      }
      const lease = new Held(entry.id, entry.body.resource, snap.fencingToken!);
      entry.lease = lease;
      entry.holding = true;
      entry.provisional = snap.provisional === true;
      this.held++;
      // The server cannot have granted before it read our last answered message: counting
      // `expiresIn` from that message's send time never overestimates the hold.
      const expiresIn = snap.expiresIn ?? 0;
      const expiresAt = (ref ?? this.lastAnsweredSentAt) + expiresIn;
      const delay = expiresAt - performance.now();
      if (Number.isFinite(delay) && delay < 2_147_483_647) {
        entry.expiry = unref(
          setTimeout(() => this.lose(entry, "it expired (expiresIn elapsed)"), Math.max(0, delay)),
        );
      }
      const acquire = entry.acquire;
      entry.acquire = undefined;
      this.armBudget();
      acquire.resolve(lease);
      return;
    }
    // Final.
    if (entry.acquire) {
      const acquire = entry.acquire;
      entry.acquire = undefined;
      if (snap.state === "timed_out") {
        acquire.reject(timeoutError(entry.body.resource, entry.body.timeout ?? 0));
      } else if (snap.state === "dropped" && !entry.abandoned) {
        // Our place was lost (the session was away too long): queue again, as a new request.
        this.entries.delete(entry.id);
        const id = crypto.randomUUID();
        acquire.moved(id);
        this.track(id, entry.body, acquire);
        return;
      } else {
        acquire.reject(
          new RateQueueError(
            `the request for ${JSON.stringify(entry.body.resource)} was ${snap.state}${snap.reason === undefined ? "" : ` (${snap.reason})`} while it waited`,
            { code: "request_ended", resource: entry.body.resource },
          ),
        );
      }
      this.end(entry);
      return;
    }
    if (entry.phase === "active" && entry.lease && entry.lease.lostError === undefined) {
      if (snap.state === "revoked") {
        const reason = snap.reason ?? "no reason given";
        this.lose(entry, `an operator revoked it: ${reason}`, reason);
      } else if (snap.state !== "released") {
        this.lose(
          entry,
          snap.state === "expired"
            ? "it expired (expiresIn elapsed)"
            : `the server ended it as ${snap.state}`,
        );
      }
    }
    if (entry.release === undefined) this.end(entry);
  }

  /** A new request `id` for `acquire`: its `acquire` message goes out. */
  private track(id: string, body: AcquireBody, acquire: Entry["acquire"]): void {
    const outstanding: ClientMessage = { t: "acquire", id, ...body };
    this.entries.set(id, {
      id,
      body,
      phase: "sending",
      outstanding,
      inflight: [],
      abandoned: false,
      holding: false,
      acquire,
    });
    this.enqueue(outstanding);
  }

  /** An answer about `entry` came: to its oldest unanswered message (answers come in order). */
  private answerTo(entry: Entry): ClientMessage | undefined {
    const sent = entry.inflight.shift();
    if (sent === undefined) return undefined;
    this.answered(sent.sentAt);
    if (sent.message === entry.outstanding) entry.outstanding = undefined;
    return sent.message;
  }

  private refused(m: Extract<ServerMessage, { t: "error" }>): void {
    const entry = m.id === undefined ? undefined : this.entries.get(m.id);
    if (entry === undefined) {
      if (m.status === 401) this.fatal(401, JSON.stringify(m));
      return;
    }
    const resource = entry.body.resource;
    const error =
      m.code === "queue_full"
        ? new QueueFullError(m.detail, { status: m.status, resource })
        : m.status === 400
          ? new ValidationError(m.detail, { status: 400, resource, field: m.field })
          : m.status === 404
            ? undefined
            : new RateQueueError(m.detail, {
                status: m.status,
                resource,
                code: m.code,
                field: m.field,
              });
    this.answerTo(entry);
    if (entry.release) {
      entry.release.resolve(undefined); // 404: the server no longer knows it
      entry.release = undefined;
    }
    if (entry.acquire) {
      entry.acquire.reject(error);
      entry.acquire = undefined;
    }
    this.end(entry);
  }

  // --- leases and liveness -------------------------------------------------------------------

  private armBudget(): void {
    if (this.held === 0) return;
    if (this.budgetTimer !== undefined) {
      // Armed for as late or sooner: keep it (it re-arms itself if the budget grew meanwhile).
      if (this.budgetTimerAt <= this.budget.safeUntil) return;
      clearTimeout(this.budgetTimer); // the budget shrank (a recovery extension ended)
    }
    this.budgetTimerAt = this.budget.safeUntil;
    const delay = this.budget.safeUntil - performance.now();
    // The pings keep a process with live requests alive; this timer alone must not.
    this.budgetTimer = unref(
      setTimeout(this.checkBudget, Math.max(0, Math.min(delay, 2_147_483_647))),
    );
  }

  private readonly checkBudget = (): void => {
    this.budgetTimer = undefined;
    if (this.held === 0) return;
    if (!this.budget.spent(performance.now())) {
      this.armBudget();
      return;
    }
    // At once, not after this turn's I/O (where an answer may wait that would extend the
    // budget): the application's own I/O callbacks run there too, and must find the lease lost.
    this.expireIfSpent();
    // A connection that answers nothing is no connection: start again.
    if (this.connected && this.link) {
      const link = this.link;
      link.close();
      this.disconnected(link);
    }
  };

  /**
   * Gives the leases up if the budget is spent. Called by the budget's timer, and before
   * anything else the session does for its caller: after a stall, a message or a caller's own
   * timer may run before the overdue budget timer, and must find the leases already lost.
   */
  private expireIfSpent(): void {
    if (this.held === 0 || !this.budget.spent(performance.now())) return;
    const grace = this.budget.terms.grace;
    this.loseAll(
      `no message to the server was confirmed within ${grace} ms (the server's grace), after which it may hand the lease on`,
    );
  }

  private loseAll(why: string): void {
    for (const entry of this.entries.values()) if (entry.holding) this.lose(entry, why);
  }

  /** The lease may no longer be ours: say so, and make sure the server ends it too. */
  private lose(entry: Entry, why: string, reason?: string): void {
    const lease = entry.lease;
    if (lease === undefined || lease.lostError !== undefined) return;
    lease.lose(
      new LeaseLostError(
        `the lease on ${JSON.stringify(lease.name)} (fencing token ${lease.fencingToken}) was lost: ${why}`,
        { resource: lease.name, reason },
      ),
    );
    this.stopHolding(entry);
    if (entry.phase !== "ended" && entry.release === undefined) this.sendRelease(entry);
  }

  /** No longer counted as held: released by the holder, lost, or ended. */
  private stopHolding(entry: Entry): void {
    clearTimeout(entry.expiry);
    if (!entry.holding) return;
    entry.holding = false;
    this.held--;
  }

  private abandon(entry: Entry): void {
    entry.abandoned = true;
    if (entry.phase !== "ended") this.sendRelease(entry);
  }

  /** Ends the request on the server (cancel or release), whatever the caller is doing. */
  private sendRelease(entry: Entry): void {
    if (entry.outstanding?.t === "release") return;
    entry.outstanding = { t: "release", id: entry.id };
    this.enqueue(entry.outstanding);
  }

  private end(entry: Entry): void {
    this.stopHolding(entry);
    entry.phase = "ended";
    if (entry.outstanding === undefined) this.entries.delete(entry.id);
    this.setIdle();
  }

  /** Live: anything held, waited for, or awaiting an answer. */
  private live(): boolean {
    return this.entries.size > 0;
  }

  /** Idle (nothing live): the connection may not keep the process alive, and closes after a while. */
  private setIdle(): void {
    const idle = !this.live();
    if (idle) this.drained?.();
    if (idle !== this.idle) {
      this.idle = idle;
      this.link?.idle(idle);
    }
    if (!idle) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
      // Live again: the liveness traffic resumes (pings, or the HTTP session's poll loop).
      this.armPing();
      if (this.mode === "http" && this.connected && this.pollStart === undefined) {
        // Not at once: a call answered and released within one ping interval needs no poll
        // (its answers confirm the session), which halves the requests of short locks.
        this.pollStart = setTimeout(() => {
          this.pollStart = undefined;
          void this.httpPoll?.();
        }, this.budget.terms.ping);
      }
      return;
    }
    if (this.idleTimer !== undefined || this.link === undefined) return;
    this.idleTimer = unref(
      setTimeout(() => {
        this.idleTimer = undefined;
        if (!this.live()) this.close();
      }, IDLE_CLOSE),
    );
  }

  private cancelTimers(): void {
    for (const t of [this.pingTimer, this.budgetTimer, this.idleTimer, this.pollStart])
      clearTimeout(t);
    this.pingTimer = this.budgetTimer = this.idleTimer = this.pollStart = undefined;
  }
}

/** A timer that does not keep the process alive (where the runtime has `unref`: Node, Bun). */
function unref(timer: ReturnType<typeof setTimeout>): ReturnType<typeof setTimeout> {
  (timer as { unref?: () => void }).unref?.();
  return timer;
}

function timeoutError(name: string, timeout: number): AcquireTimeoutError {
  return new AcquireTimeoutError(
    `no slot of ${JSON.stringify(name)} came free within the timeout of ${timeout} ms; the request has left the line`,
    { resource: name },
  );
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    const c = code(error);
    return c ? `${error.message} (${c})` : error.message;
  }
  return typeof error === "object" && error !== null && "type" in error
    ? `WebSocket ${String((error as { type: unknown }).type)}`
    : String(error);
}

function code(error: unknown): string | undefined {
  for (let e = error as { code?: unknown; cause?: unknown } | undefined, i = 0; e && i < 4; i++) {
    if (typeof e.code === "string") return e.code;
    e = e.cause as typeof e;
  }
  return undefined;
}
