import type { RetryOptions, Transport } from "@ratequeue/core";

/** Options of `createRateQueue()`: where the server is, and how to reach it. */
export interface RateQueueOptions {
  /** API key, sent as `Authorization: Bearer`. Default: `RATEQUEUE_API_KEY` from the environment. */
  apiKey?: string;
  /** Server URL. Default: `RATEQUEUE_URL` from the environment, else `"http://127.0.0.1:7420"`. */
  baseUrl?: string;
  /** Retries of failed calls (network errors, 408, 429, 5xx). Default: 6 retries, 50 ms doubling to 2 s, with jitter. */
  retry?: RetryOptions;
  /** How to send HTTP. Default: undici on Node.js, `fetch` everywhere else. */
  transport?: Transport;
  /**
   * Longest the client asks the server to hold a poll, in ms; the server caps it at its own
   * window (10 s by default). Default `20_000`.
   */
  pollWindow?: number;
  /**
   * How much longer than its poll window a reply may take before the exchange is
   * abandoned and retried, in ms: a server or network that went silent. Default `15_000`.
   */
  replyTimeout?: number;
}

/** Options of `acquire()`. Durations are in milliseconds. Each overrides the instance's. */
export interface AcquireOptions {
  /** API key for this call. Default: the instance's. */
  apiKey?: string;
  /** Server URL for this call. Default: the instance's. */
  baseUrl?: string;
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
  /** Higher is served first; equal priorities in arrival order. Default `10`. */
  priority?: number;
  /**
   * A fairness lane (round-robin between lanes of one priority). Not supported by the server yet:
   * passing it throws `ValidationError` rather than being ignored.
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
