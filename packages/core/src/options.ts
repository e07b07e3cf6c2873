import { ValidationError } from "./errors.js";
import {
  MAX_CAPACITY,
  MAX_LOCK_DELAY,
  MAX_PRIORITY,
  MAX_TIMEOUT,
  MIN_PRIORITY,
} from "./protocol.js";
import { checkInteger, checkName, describe } from "./validate.js";

/**
 * Checks the client's configuration before any network call, with messages that say how to fix
 * the call. The same rules as the server's, so a call that passes here is not refused there for
 * its shape (only the server knows its maximum `expiresIn`).
 */
export function checkClientConfig(config: {
  baseUrl?: unknown;
  apiKey?: unknown;
  transport?: unknown;
}): void {
  if (typeof config.apiKey !== "string" || config.apiKey.trim() === "") {
    throw new ValidationError(
      "apiKey is missing: pass { apiKey } or set RATEQUEUE_API_KEY (any non-empty token works against a server in open development mode)",
      { field: "apiKey" },
    );
  }
  if (/\s/.test(config.apiKey)) {
    throw new ValidationError(
      "apiKey must not contain whitespace: check for a stray newline in RATEQUEUE_API_KEY",
      {
        field: "apiKey",
      },
    );
  }
  let url: URL | undefined;
  try {
    url = typeof config.baseUrl === "string" ? new URL(config.baseUrl) : undefined;
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw new ValidationError(
      `baseUrl must be an http(s) URL such as "http://127.0.0.1:7420", got ${describe(config.baseUrl)}`,
      { field: "baseUrl" },
    );
  }
  if (typeof config.transport !== "function") {
    throw new ValidationError(
      "transport must be a function (use fetchTransport() or undiciTransport())",
      {
        field: "transport",
      },
    );
  }
}

/** Checks acquire's name and options; throws ValidationError naming the option at fault. */
export function checkAcquireParams(input: object): void {
  const params = input as Record<string, unknown>;
  const nameProblem = checkName(params.name);
  if (nameProblem) throw new ValidationError(`name ${nameProblem}`, { field: "name" });
  const integer = (field: string, min: number, max: number, unit = "") => {
    const value = params[field];
    if (value === undefined) return;
    const problem = checkInteger(value, min, max, unit);
    if (problem)
      throw new ValidationError(`${field} ${problem}`, { field, resource: params.name as string });
  };
  integer("capacity", 1, MAX_CAPACITY);
  integer("load", 1, MAX_CAPACITY);
  integer("priority", MIN_PRIORITY, MAX_PRIORITY);
  integer("timeout", 0, MAX_TIMEOUT, "ms");
  integer("expiresIn", 1, MAX_TIMEOUT, "ms");
  integer("lockDelay", 0, MAX_LOCK_DELAY, "ms");
  if (
    params.load !== undefined &&
    params.capacity !== undefined &&
    (params.load as number) > (params.capacity as number)
  ) {
    throw new ValidationError(
      `load (${params.load}) must not exceed capacity (${params.capacity}): it could never be granted`,
      {
        field: "load",
        resource: params.name as string,
      },
    );
  }
  const signal = params.signal;
  if (
    signal !== undefined &&
    !(
      typeof signal === "object" &&
      signal !== null &&
      "aborted" in signal &&
      "addEventListener" in signal
    )
  ) {
    throw new ValidationError(`signal must be an AbortSignal, got ${describe(signal)}`, {
      field: "signal",
    });
  }
}
