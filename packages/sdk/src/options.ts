import type { RetryOptions, SessionMode, Transport, WebSocketFactory } from "@ratequeue/core";

/** Options of `createRateQueue()`: where the server is, and how to reach it. */
export interface RateQueueOptions {
  /** API key, sent as `Authorization: Bearer`. Default: `RATEQUEUE_API_KEY` from the environment. */
  apiKey?: string;
  /**
   * Server URL. Default: `RATEQUEUE_URL` from the environment, else `"http://127.0.0.1:7420"`.
   * Several URLs (replicas of which one serves and the others answer 503, or load balancers):
   * after a failed connection or a 421, 502, 503 or 504 the session reconnects to the next one,
   * and keeps a URL that works until it fails.
   */
  baseUrl?: string | readonly string[];
  /**
   * Reconnecting after the connection to the server fails (network errors, 5xx): how often and
   * how fast. Default: 6 retries, 50 ms doubling to 2 s, with jitter; then waiting calls reject
   * with `ServiceUnavailableError`.
   */
  retry?: RetryOptions;
  /**
   * What carries this client's session — every acquire, release and the liveness of its leases,
   * over one connection however many calls are in flight. `"auto"` (default): a WebSocket, or
   * HTTP long-polls where a WebSocket cannot be opened (a proxy that refuses upgrades).
   * `"websocket"` or `"http"` force one.
   */
  session?: SessionMode;
  /** How to send HTTP (the HTTP session, and the fallback probe). Default: undici on Node.js, `fetch` elsewhere. */
  transport?: Transport;
  /** How to open WebSockets. Default: `ws` on Node.js, the global `WebSocket` elsewhere. */
  webSocket?: WebSocketFactory;
  /**
   * How long an HTTP exchange may take beyond what it asked the server to wait before it counts
   * as failed and the session reconnects, in ms. Default `10_000`.
   */
  requestTimeout?: number;
}

/** Options of `acquire()`. Durations are in milliseconds. Each overrides the instance's. */
export interface AcquireOptions {
  /** API key for this call. Default: the instance's. */
  apiKey?: string;
  /** Server URL, or URLs (see `RateQueueOptions.baseUrl`), for this call. Default: the instance's. */
  baseUrl?: string | readonly string[];
  /** Stop waiting: the call rejects with `signal.reason` (an `AbortError` by default), as `fetch` does. */
  signal?: AbortSignal;
  /**
   * How long to wait in line, in ms, before rejecting with `AcquireTimeoutError`. `0` tries once
   * and never queues. Default: no limit (until `signal` aborts).
   */
  timeout?: number;
  /** Units of the resource, used when this call creates it (first use). Default `1`: a lock. */
  capacity?: number;
  /** Units this call takes. Default `1`. */
  load?: number;
  /** Higher is served first within its lane; equal priorities in arrival order. Default `10`. */
  priority?: number;
  /**
   * The lane to wait in: 1–64 characters of `A-Z a-z 0-9 . _ -`. Each lane is a line of its own;
   * lanes take turns (`fair`, the default) or own fixed shares (`strict`), as the operator set
   * for the resource (README, "Lanes and reserved capacity"). Default `"default"`.
   */
  lane?: string;
  /**
   * Hard upper bound on holding, in ms from the grant: past it the lease is lost (`lease.signal`
   * aborts). Default: the server's (15 minutes on a default server).
   */
  expiresIn?: number;
  /**
   * Lock delay, in ms (as Chubby's): if this lease ends without a release — the process died, or
   * the lease expired — the server holds its slot back this long before anyone else gets it,
   * for stores that cannot check `fencingToken`. Default `0`; at most `300_000`.
   */
  lockDelay?: number;
}

export const ACQUIRE_OPTION_KEYS: ReadonlySet<string> = new Set([
  "apiKey",
  "baseUrl",
  "signal",
  "timeout",
  "capacity",
  "load",
  "priority",
  "lane",
  "expiresIn",
  "lockDelay",
]);

export const DEFAULT_BASE_URL = "http://127.0.0.1:7420";
