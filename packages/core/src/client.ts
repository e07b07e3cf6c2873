import {
  AcquireTimeoutError,
  AuthenticationError,
  LeaseLostError,
  QueueFullError,
  RateQueueError,
  ValidationError,
} from "./errors.js";
import { linkSignals } from "./internal/signals.js";
import { checkAcquireParams, checkClientConfig } from "./options.js";
import {
  type AcquireBody,
  API_PREFIX,
  type Problem,
  type RequestSnapshot,
  type RequestState,
} from "./protocol.js";
import {
  DEFAULT_RETRY,
  parseRetryAfter,
  type RetryOptions,
  TransientError,
  withRetries,
} from "./retry.js";
import type { Transport } from "./transport.js";

/** Everything the protocol client needs to reach a server. */
export interface ClientConfig {
  /** Server URL, e.g. `http://127.0.0.1:7420`. */
  baseUrl: string;
  /** API key, sent as `Authorization: Bearer`. */
  apiKey: string;
  /** How to send HTTP. */
  transport: Transport;
  /** Retries of failed calls. */
  retry?: RetryOptions;
  /** Longest a poll may be held by the server, in ms (the server caps it at its own window). Default `20_000`. */
  pollWindow?: number;
  /**
   * How much longer than its poll window a reply may take before the exchange is abandoned and
   * retried, in ms (a server or network that went silent). Default `15_000`.
   */
  replyTimeout?: number;
}

/** What to acquire; see the SDK's `AcquireOptions` for each field's meaning and default. */
export interface AcquireParams {
  name: string;
  capacity?: number;
  load?: number;
  priority?: number;
  expiresIn?: number;
  lockDelay?: number;
  /** ms to wait in line; `0`: try once. Default: no limit. */
  timeout?: number;
  signal?: AbortSignal;
}

/** A granted request: what a lease is made of. */
export interface Grant {
  id: string;
  name: string;
  fencingToken: number;
  /** ms until the server ends the hold, as of the grant. */
  expiresIn: number;
  /** `performance.now()` when the exchange that brought the grant was sent: the server knew of us then. */
  confirmedAt: number;
  /** The server's repoll grace (see `RequestSnapshot.pollWithin`), if it says. */
  pollWithin: number | undefined;
}

/** How a hold ended: by `release` (`released`) or not (the lease was lost). */
export type HoldEnd = { state: "released" } | { state: "lost"; error: LeaseLostError };

/**
 * After `timeout`, how long the client still waits for the server's own `timed_out` verdict
 * (which it sends at `timeout` exactly) before giving up on its own, in ms.
 */
const TIMEOUT_SLACK = 500;
/** Budget for cancelling a request whose acquire was abandoned, in ms. */
const CANCEL_BUDGET = 2_000;

/**
 * The protocol client: acquire (create + long-poll), hold (the open poll that is the lease's
 * liveness), release. Stateless apart from its configuration.
 */
export class ProtocolClient {
  private readonly base: string;
  private readonly headers: Record<string, string>;
  private readonly retry: Required<RetryOptions>;
  private readonly window: number;
  private readonly replyTimeout: number;

  constructor(private readonly config: ClientConfig) {
    checkClientConfig(config);
    this.base = config.baseUrl.replace(/\/+$/, "") + API_PREFIX;
    this.headers = { authorization: `Bearer ${config.apiKey}` };
    this.retry = { ...DEFAULT_RETRY, ...config.retry };
    this.window = config.pollWindow ?? 20_000;
    this.replyTimeout = config.replyTimeout ?? 15_000;
  }

  /**
   * Waits for a slot. Resolves with the grant; rejects with `signal.reason` on abort,
   * `AcquireTimeoutError` when `timeout` elapses. Either way no request is left in the line:
   * it is cancelled on the server, and a grant that raced the abort is released.
   */
  async acquire(params: AcquireParams): Promise<Grant> {
    checkAcquireParams(params);
    params.signal?.throwIfAborted();
    const { name, signal, timeout } = params;
    const body: AcquireBody = { resource: name };
    for (const key of [
      "capacity",
      "load",
      "priority",
      "expiresIn",
      "timeout",
      "lockDelay",
    ] as const) {
      if (params[key] !== undefined) body[key] = params[key];
    }
    const link = linkSignals(
      [signal],
      timeout === undefined ? undefined : timeout + TIMEOUT_SLACK,
      () => timeoutError(name, timeout!),
    );
    let id = newId();
    const stamp: Stamp = { sentAt: 0 };
    try {
      let snap: RequestSnapshot | undefined = await this.create(id, body, link.signal, stamp);
      for (;;) {
        if (snap === undefined) {
          // The server no longer knows the id (it restarted, or forgot it): ask again, same id.
          snap = await this.create(id, body, link.signal, stamp);
        } else if (snap.state === "queued") {
          snap = await this.poll(id, "queued", link.signal, this.window, stamp);
        } else if (snap.state === "active") {
          break;
        } else if (snap.state === "timed_out") {
          throw timeoutError(name, timeout ?? 0);
        } else if (snap.state === "dropped") {
          // We lost our place (no poll reached the server within its grace): queue again.
          id = newId();
          snap = await this.create(id, body, link.signal, stamp);
        } else {
          throw new RateQueueError(
            `the request for ${JSON.stringify(name)} was ${snap.state} by someone else while it waited`,
            {
              code: "request_ended",
              resource: name,
            },
          );
        }
      }
      if (link.signal.aborted) throw link.signal.reason; // the grant raced the abort
      return {
        id,
        name,
        fencingToken: snap.fencingToken!,
        expiresIn: snap.expiresIn ?? 0,
        confirmedAt: stamp.sentAt,
        pollWithin: snap.pollWithin,
      };
    } catch (error) {
      // The create may have reached the server even if its reply did not reach us.
      if (!(error instanceof AuthenticationError)) await this.cancel(id);
      if (link.signal.aborted) throw link.signal.reason;
      throw error;
    } finally {
      link.dispose();
    }
  }

  /**
   * Keeps a poll open on a granted request for as long as it is held — that open poll is the
   * lease's liveness. Resolves when the hold ends: `released` (by `release`), or `lost` with the
   * reason. Rejects only with `signal.reason` (the caller stopped holding).
   */
  async hold(grant: Grant, signal: AbortSignal): Promise<HoldEnd> {
    const expiresAt = grant.confirmedAt + grant.expiresIn;
    let confirmedAt = grant.confirmedAt;
    let pollWithin = grant.pollWithin;
    for (;;) {
      // Jeopardy: the server drops a lease no poll reached within `pollWithin` of its last
      // answer, and that answer came after our poll was sent. So past `confirmedAt + pollWithin`
      // (less a margin) the lease may be someone else's: stop believing in it first.
      const deadline =
        pollWithin === undefined
          ? expiresAt
          : Math.min(expiresAt, confirmedAt + pollWithin - margin(pollWithin));
      const jeopardy = linkSignals([signal], deadline - performance.now());
      const stamp: Stamp = { sentAt: 0 };
      let snap: RequestSnapshot | undefined;
      try {
        snap = await this.poll(
          grant.id,
          "active",
          jeopardy.signal,
          holdWait(this.window, pollWithin),
          stamp,
        );
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        const why =
          deadline < expiresAt
            ? `no poll was confirmed by the server within ${pollWithin} ms, after which it releases the lease`
            : "the server could not be reached until the lease expired";
        return lost(grant, why, error);
      } finally {
        jeopardy.dispose();
      }
      if (snap?.state !== "active") return holdEnd(grant, snap?.state);
      confirmedAt = stamp.sentAt;
      pollWithin = snap.pollWithin ?? pollWithin;
    }
  }

  /**
   * Releases a held lease. `released` if it was still held; `lost` if it had already ended
   * (expired, dropped, forgotten by a restart) — the holder must hear of that too.
   */
  async releaseLease(grant: Grant): Promise<HoldEnd> {
    return holdEnd(grant, await this.release(grant.id));
  }

  /** Releases (or cancels) a request. Idempotent; an id the server does not know counts as done. */
  async release(id: string, signal?: AbortSignal): Promise<RequestState | undefined> {
    const snap = await withRetries(
      "release",
      () => this.send("DELETE", `/requests/${id}`, undefined, signal, 0),
      this.retry,
      signal,
    );
    return snap?.state;
  }

  // --- internals ---------------------------------------------------------------------------

  /** `stamp.sentAt` gets the `performance.now()` at which the attempt that succeeded was sent. */
  private create(id: string, body: AcquireBody, signal: AbortSignal, stamp?: Stamp) {
    return withRetries(
      `acquiring ${JSON.stringify(body.resource)}`,
      () => {
        if (stamp) stamp.sentAt = performance.now();
        return this.send("PUT", `/requests/${id}?wait=${this.window}`, body, signal, this.window);
      },
      this.retry,
      signal,
    );
  }

  private poll(
    id: string,
    known: "queued" | "active",
    signal: AbortSignal,
    wait = this.window,
    stamp?: Stamp,
    maxRetryTime?: number,
  ) {
    return withRetries(
      known === "queued" ? "waiting" : "holding",
      () => {
        if (stamp) stamp.sentAt = performance.now();
        return this.send(
          "GET",
          `/requests/${id}?state=${known}&wait=${wait}`,
          undefined,
          signal,
          wait,
        );
      },
      known === "active" ? { ...this.retry, retries: Number.POSITIVE_INFINITY } : this.retry,
      signal,
      maxRetryTime,
    );
  }

  /** Best effort, bounded, and independent of the (aborted) caller signal: leave no ghost. */
  private async cancel(id: string): Promise<void> {
    const link = linkSignals([], CANCEL_BUDGET);
    try {
      await this.release(id, link.signal);
    } catch {
      // Unreachable server: the request is dropped there once our poll is seen closed.
    } finally {
      link.dispose();
    }
  }

  /** One exchange. Throws TransientError for what is worth retrying, a RateQueueError otherwise. */
  private async send(
    method: "GET" | "PUT" | "DELETE",
    path: string,
    body: AcquireBody | undefined,
    signal: AbortSignal | undefined,
    wait: number,
  ): Promise<RequestSnapshot | undefined> {
    const link = linkSignals([signal], wait + this.replyTimeout);
    let res: Awaited<ReturnType<Transport>>;
    let text: string;
    try {
      res = await this.config.transport({
        method,
        url: this.base + path,
        headers:
          body === undefined
            ? this.headers
            : { ...this.headers, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: link.signal,
      });
      text = await res.text();
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw new TransientError(
        link.signal.aborted
          ? `no reply within ${wait + this.replyTimeout} ms`
          : `network error: ${describeError(error)}`,
        undefined,
        { cause: error },
      );
    } finally {
      link.dispose();
    }
    const status = res.status;
    if (status >= 200 && status < 300) {
      try {
        return JSON.parse(text) as RequestSnapshot;
      } catch (error) {
        throw new TransientError(
          `malformed reply (HTTP ${status}): ${text.slice(0, 80)}`,
          undefined,
          { cause: error },
        );
      }
    }
    if (status === 404 && method !== "PUT") return undefined;
    const problem = parseProblem(text);
    const detail = problem?.detail ?? `HTTP ${status}`;
    const resource = body?.resource;
    if (status === 408 || status === 429 || status >= 500) {
      throw new TransientError(
        `HTTP ${status}: ${detail}`,
        parseRetryAfter(res.header("retry-after")),
      );
    }
    if (status === 401 || status === 403) {
      throw new AuthenticationError(`the server refused the API key (HTTP ${status}): ${detail}`, {
        status,
      });
    }
    if (problem?.code === "queue_full") throw new QueueFullError(detail, { status, resource });
    if (status === 400)
      throw new ValidationError(detail, { status, resource, field: problem?.field });
    throw new RateQueueError(detail, { status, resource, code: problem?.code ?? `http_${status}` });
  }
}

/** When an exchange's successful attempt was sent (`performance.now()`). */
interface Stamp {
  sentAt: number;
}

/** Safety margin under the server's repoll grace, for clock rates and processing: ms. */
function margin(pollWithin: number): number {
  return Math.min(500, pollWithin / 4);
}

/**
 * How long a holder asks the server to hold each poll: short enough that two answers always
 * arrive inside the jeopardy deadline (so a live holder never trips it), at most the window.
 */
export function holdWait(window: number, pollWithin: number | undefined): number {
  if (pollWithin === undefined) return window;
  return Math.max(1, Math.min(window, Math.floor((pollWithin - margin(pollWithin)) / 3)));
}

function newId(): string {
  return crypto.randomUUID();
}

function timeoutError(name: string, timeout: number): AcquireTimeoutError {
  return new AcquireTimeoutError(
    `no slot of ${JSON.stringify(name)} came free within the timeout of ${timeout} ms; the request has left the line`,
    { resource: name },
  );
}

/** How a hold ended, from the state the server reports (undefined: it does not know the id). */
function holdEnd(grant: Grant, state: RequestState | undefined): HoldEnd {
  if (state === "released") return { state: "released" };
  if (state === undefined) return lost(grant, "the server no longer knows it (was it restarted?)");
  return lost(
    grant,
    state === "expired" ? "it expired (expiresIn elapsed)" : `the server ended it as ${state}`,
  );
}

function lost(grant: Grant, why: string, cause?: unknown): HoldEnd {
  return {
    state: "lost",
    error: new LeaseLostError(
      `the lease on ${JSON.stringify(grant.name)} (fencing token ${grant.fencingToken}) was lost: ${why}`,
      {
        resource: grant.name,
        cause,
      },
    ),
  };
}

function parseProblem(text: string): Partial<Problem> | undefined {
  try {
    const value = JSON.parse(text);
    return typeof value === "object" && value !== null ? value : undefined;
  } catch {
    return undefined;
  }
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    const code =
      (cause as { code?: string } | undefined)?.code ?? (error as { code?: string }).code;
    return code ? `${error.message} (${code})` : error.message;
  }
  return String(error);
}
