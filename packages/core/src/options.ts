import { ValidationError } from "./errors.js";
import { type AcquireBody, MAX_TIMEOUT } from "./protocol.js";
import { checkAcquireBody, describe } from "./validate.js";

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
      "apiKey is missing: pass createRateQueue({ apiKey }) — in a Cloudflare Worker, from its bindings: createRateQueue({ apiKey: env.RATEQUEUE_API_KEY }) — or set RATEQUEUE_API_KEY where the runtime has process.env",
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
  // One URL, or a non-empty array of them (replicas, tried in turn): each checked as one.
  const urls = config.baseUrl;
  const many = Array.isArray(urls) && urls.length > 0;
  for (const [i, value] of (many ? (urls as unknown[]) : [urls]).entries()) {
    try {
      if (typeof value !== "string" || !/^https?:$/.test(new URL(value).protocol)) throw 0;
    } catch {
      const field = many ? `baseUrl[${i}]` : "baseUrl";
      throw new ValidationError(
        `${field} must be an http(s) URL such as "http://127.0.0.1:7420", got ${describe(value)}`,
        { field },
      );
    }
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

/**
 * Checks acquire's name and options and returns the wire body they make; throws ValidationError
 * naming the option at fault. The wire body's own checker does the work, so the SDK and the
 * server accept exactly the same values (the server alone knows its maximum `expiresIn`).
 */
const ACQUIRE_OPTIONS = [
  "capacity",
  "load",
  "priority",
  "lane",
  "timeout",
  "expiresIn",
  "lockDelay",
] as const;

export function checkAcquireParams(input: object): AcquireBody {
  const params = input as Record<string, unknown>;
  const body: Record<string, unknown> = { resource: params.name };
  for (const key of ACQUIRE_OPTIONS) if (params[key] !== undefined) body[key] = params[key];
  const checked = checkAcquireBody(body, { maxExpiresIn: MAX_TIMEOUT });
  if (!checked.ok) {
    // The wire calls the name `resource`; the SDK calls it `name`.
    const field = checked.problem.field === "resource" ? "name" : checked.problem.field;
    throw new ValidationError(`${field} ${checked.problem.detail}`, {
      field,
      resource: typeof params.name === "string" ? params.name : undefined,
    });
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
  return checked.value;
}
