import pRetry from "p-retry";
import { ServiceUnavailableError } from "./errors.js";
import { sleep } from "./internal/signals.js";

/** How failed calls are retried. Only what is safe is retried: network errors, 408, 429, 5xx. */
export interface RetryOptions {
  /** Retries after the first attempt. Default `6`. */
  retries?: number;
  /** Delay before the first retry, in ms; doubles each time, times a random 1–2 (jitter). Default `50`. */
  minDelay?: number;
  /** Largest delay between two attempts, in ms. Default `2_000`. */
  maxDelay?: number;
  /** Largest `Retry-After` honoured, in ms. Default `30_000`. */
  maxRetryAfter?: number;
}

export const DEFAULT_RETRY: Required<RetryOptions> = {
  retries: 6,
  minDelay: 50,
  maxDelay: 2_000,
  maxRetryAfter: 30_000,
};

/** A failure worth retrying (the server may answer next time). Internal: callers see ServiceUnavailableError. */
export class TransientError extends Error {
  override name = "TransientError";
  constructor(
    message: string,
    /** ms the server asked us to wait (`Retry-After`), if it did. */
    public retryAfter?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * Runs `attempt` until it succeeds, fails for good, or `signal` aborts (then rejects with its
 * reason). p-retry provides the backoff; it is wrapped so its types and errors do not leak.
 */
export async function withRetries<T>(
  what: string,
  attempt: () => Promise<T>,
  options: Required<RetryOptions>,
  signal?: AbortSignal,
  maxRetryTime?: number,
): Promise<T> {
  try {
    return await pRetry(attempt, {
      retries: options.retries,
      factor: 2,
      minTimeout: options.minDelay,
      maxTimeout: options.maxDelay,
      randomize: true,
      maxRetryTime,
      signal,
      shouldRetry: ({ error }) => error instanceof TransientError && !signal?.aborted,
      onFailedAttempt: async ({ error }) => {
        if (error instanceof TransientError && error.retryAfter && !signal?.aborted) {
          await sleep(Math.min(error.retryAfter, options.maxRetryAfter), signal);
        }
      },
    });
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    if (error instanceof TransientError) {
      throw new ServiceUnavailableError(`${what} failed after retries: ${error.message}`, {
        cause: error.cause ?? error,
      });
    }
    throw error;
  }
}

/** `Retry-After` (seconds, or an HTTP date) in ms; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}
