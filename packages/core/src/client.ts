import { LeaseLostError } from "./errors.js";
import { checkAcquireParams, checkClientConfig } from "./options.js";
import type { RequestState } from "./protocol.js";
import type { RetryOptions } from "./retry.js";
import {
  ClientSession,
  type LeaseHandle,
  type SessionMode,
  type WebSocketFactory,
} from "./session.js";
import type { Transport } from "./transport.js";

/** Everything the protocol client needs to reach a server. */
export interface ClientConfig {
  /**
   * Server URL, e.g. `http://127.0.0.1:7420`; or several, for replicas of which one serves (the
   * others answer 503) or that stand behind load balancers: after a failed connection or a 421,
   * 502, 503 or 504 the next attempt goes to the next URL, and a URL that works is kept.
   */
  baseUrl: string | readonly string[];
  /** API key, sent as `Authorization: Bearer` (or in the WebSocket's `hello`). */
  apiKey: string;
  /** How to send HTTP (the HTTP session, and probes). */
  transport: Transport;
  /** How to open WebSockets; without one the session runs over HTTP polls. */
  webSocket?: WebSocketFactory;
  /** `auto` (default): a WebSocket session where one can be opened, else HTTP polls. */
  session?: SessionMode;
  /** Reconnecting after a failure. */
  retry?: RetryOptions;
  /** How long an HTTP exchange may take beyond its wait before it counts as failed, ms. Default `10_000`. */
  requestTimeout?: number;
}

/** What to acquire; see the SDK's `AcquireOptions` for each field's meaning and default. */
export interface AcquireParams {
  name: string;
  capacity?: number;
  load?: number;
  priority?: number;
  lane?: string;
  expiresIn?: number;
  lockDelay?: number;
  /** ms to wait in line; `0`: try once. Default: no limit. */
  timeout?: number;
  signal?: AbortSignal;
}

/**
 * A granted request: what a lease is made of. `lost` aborts (with `LeaseLostError`) the moment
 * the lease may no longer be this client's; `lostError` is that error, read without making the
 * signal.
 */
export type Grant = LeaseHandle;

/** How a hold ended: by `release` (`released`) or not (the lease was lost). */
export type HoldEnd = { state: "released" } | { state: "lost"; error: LeaseLostError };

/**
 * The protocol client: acquire and release over one session (a WebSocket, or HTTP polls), which
 * carries every request of this client and keeps their liveness. One per server and API key.
 */
export class ProtocolClient {
  readonly session: ClientSession;

  constructor(config: ClientConfig) {
    checkClientConfig(config);
    this.session = new ClientSession({ ...config, mode: config.session });
  }

  /**
   * Waits for a slot. Resolves with the grant; rejects with `signal.reason` on abort,
   * `AcquireTimeoutError` when `timeout` elapses. Either way no request is left in the line:
   * it is cancelled on the server, and a grant that raced the abort is released.
   */
  acquire(params: AcquireParams): Promise<Grant> {
    // Not `async`: one promise less per call counts when thousands are made at once.
    try {
      const body = checkAcquireParams(params);
      params.signal?.throwIfAborted();
      return this.session.acquire(body, params.signal);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Releases a held lease. `released` if it was still held; `lost` if it had already ended
   * (expired, dropped, forgotten by a restart) — the holder must hear of that too.
   */
  async releaseLease(grant: Grant): Promise<HoldEnd> {
    return holdEnd(grant, await this.session.release(grant.id));
  }

  /**
   * Ends the session: waiting acquires reject (`client_closed`), held leases are released, and
   * the connection closes once the server has answered (at most 2 s).
   */
  close(): Promise<void> {
    return this.session.shutdown();
  }
}

/** How a hold ended, from the state the server reports (undefined: it does not know the id). */
function holdEnd(grant: Grant, state: RequestState | undefined): HoldEnd {
  if (grant.lostError !== undefined) return { state: "lost", error: grant.lostError };
  if (state === "released") return { state: "released" };
  const why =
    state === undefined
      ? "the server no longer knows it (was it restarted?)"
      : state === "expired"
        ? "it expired (expiresIn elapsed)"
        : `the server ended it as ${state}`;
  return {
    state: "lost",
    error: new LeaseLostError(
      `the lease on ${JSON.stringify(grant.name)} (fencing token ${grant.fencingToken}) was lost: ${why}`,
      { resource: grant.name },
    ),
  };
}
