/**
 * RateQueue's errors: one root, `RateQueueError`, and a subclass per outcome a caller may handle.
 * Each has a stable `name` and `code`, keeps its `cause`, and is branded with a global symbol so
 * that `instanceof` works even when two copies of the package are loaded (ESM and CJS, or two
 * versions in one bundle), as undici does.
 *
 * @example
 * ```ts
 * try {
 *   await ratequeue.acquire("report", { timeout: 5_000 }, run);
 * } catch (error) {
 *   if (error instanceof AcquireTimeoutError) console.log("busy, try later");
 *   else throw error;
 * }
 * ```
 */

const KINDS = Symbol.for("ratequeue.error.kinds");

export interface RateQueueErrorOptions {
  /** The underlying error or response that led to this one. */
  cause?: unknown;
  /** A stable code; defaults to the class's. */
  code?: string;
  /** The resource concerned, if any. */
  resource?: string;
  /** The HTTP status the server answered, if any. */
  status?: number;
  /** The input at fault, if the server or the SDK named one (`load`, `capacity`, ...). */
  field?: string;
}

/** The root of every error RateQueue throws. `code` is stable; `message` is for people. */
export class RateQueueError extends Error {
  /** Stable class identity, used by the brand (class names can be minified). */
  static readonly kind: string = "RateQueueError";
  static readonly defaultCode: string = "ratequeue_error";

  /** Stable, machine-readable: what happened. */
  readonly code: string;
  /** The resource concerned, if any. */
  readonly resource: string | undefined;
  /** The HTTP status the server answered, if any. */
  readonly status: number | undefined;
  /** The input at fault, if one was named (`load`, `capacity`, `timeout`, ...). */
  readonly field: string | undefined;
  declare readonly [KINDS]: readonly string[];

  constructor(message: string, options: RateQueueErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    const ctor = new.target as typeof RateQueueError;
    this.name = ctor.kind;
    this.code = options.code ?? ctor.defaultCode;
    this.resource = options.resource;
    this.status = options.status;
    this.field = options.field;
    const kinds: string[] = [];
    for (
      let c: unknown = ctor;
      typeof c === "function" && "kind" in c;
      c = Object.getPrototypeOf(c)
    ) {
      kinds.push((c as typeof RateQueueError).kind);
    }
    Object.defineProperty(this, KINDS, { value: kinds });
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    if (typeof value !== "object" || value === null) return false;
    const kinds = (value as { [KINDS]?: unknown })[KINDS];
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class `instanceof` was asked about (a subclass too)
    return Array.isArray(kinds) && kinds.includes(this.kind);
  }
}

/** A name or option is invalid. Thrown before any network call; the message says how to fix it. */
export class ValidationError extends RateQueueError {
  static override readonly kind: string = "ValidationError";
  static override readonly defaultCode: string = "invalid_request";
}

/** The server refused the API key (HTTP 401 or 403). Not retried. */
export class AuthenticationError extends RateQueueError {
  static override readonly kind: string = "AuthenticationError";
  static override readonly defaultCode: string = "unauthorized";
}

/** `timeout` elapsed while the request was queued; it has left the line. */
export class AcquireTimeoutError extends RateQueueError {
  static override readonly kind: string = "AcquireTimeoutError";
  static override readonly defaultCode: string = "acquire_timeout";
}

/** The resource's line is full (the server's `maxQueue`). */
export class QueueFullError extends RateQueueError {
  static override readonly kind: string = "QueueFullError";
  static override readonly defaultCode: string = "queue_full";
}

/**
 * A held lease ended before it was released: it expired (`expiresIn`), or the server dropped it
 * (it did not hear from this client in time, or forgot it in a restart). `lease.signal` aborts
 * with this error, and the callback style rejects with it after `fn` settles.
 */
export class LeaseLostError extends RateQueueError {
  static override readonly kind: string = "LeaseLostError";
  static override readonly defaultCode: string = "lease_lost";
  /** When an operator revoked the lease: why, in their words. */
  readonly reason: string | undefined;

  constructor(message: string, options: RateQueueErrorOptions & { reason?: string } = {}) {
    super(message, options);
    this.reason = options.reason;
  }
}

/** The server could not be reached, or kept failing, after every retry. */
export class ServiceUnavailableError extends RateQueueError {
  static override readonly kind: string = "ServiceUnavailableError";
  static override readonly defaultCode: string = "service_unavailable";
}
