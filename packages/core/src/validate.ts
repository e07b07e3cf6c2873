import {
  type AcquireBody,
  MAX_CAPACITY,
  MAX_LANE_LENGTH,
  MAX_LOCK_DELAY,
  MAX_NAME_BYTES,
  MAX_PRIORITY,
  MAX_REQUEST_ID_LENGTH,
  MAX_TIMEOUT,
  MIN_PRIORITY,
} from "./protocol.js";

/**
 * Validation shared by the server (which answers 400) and the SDK (which throws before any
 * network call), so that both accept exactly the same inputs and say the same thing.
 * Each check returns `undefined` when the value is fine, else a sentence that says how to fix it.
 */

// Control characters (C0, DEL, C1), line/paragraph separators and unpaired surrogates have no
// printable form: they make names that cannot be logged, typed or compared by eye.
const UNPRINTABLE = /[\p{Cc}\p{Zl}\p{Zp}]|\p{Cs}/u;
const REQUEST_ID = /^[A-Za-z0-9._~-]+$/;
const LANE = /^[A-Za-z0-9._-]+$/;

/** UTF-8 length of a well-formed string, without allocating (works on every runtime). */
export function utf8Length(s: string): number {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      bytes += 4;
      i++; // the low surrogate of the pair
    } else bytes += 3;
  }
  return bytes;
}

/** A resource name: 1–256 UTF-8 bytes of printable Unicode; `/` and spaces are allowed. */
export function checkName(name: unknown): string | undefined {
  if (typeof name !== "string") return `must be a string, got ${describe(name)}`;
  if (name.length === 0) return "must not be empty";
  if (UNPRINTABLE.test(name)) {
    return "must be printable: remove control characters, line breaks and unpaired surrogates";
  }
  const bytes = utf8Length(name);
  if (bytes > MAX_NAME_BYTES) {
    return `must be at most ${MAX_NAME_BYTES} UTF-8 bytes, got ${bytes}: shorten it or hash the variable part`;
  }
  return undefined;
}

/** A client-chosen request id: 1–128 characters of `A-Z a-z 0-9 . _ ~ -` (a UUID fits). */
export function checkRequestId(id: unknown): string | undefined {
  if (typeof id !== "string" || id.length === 0) return "must be a non-empty string";
  if (id.length > MAX_REQUEST_ID_LENGTH) {
    return `must be at most ${MAX_REQUEST_ID_LENGTH} characters, got ${id.length}`;
  }
  if (!REQUEST_ID.test(id)) {
    return "may contain only letters, digits and . _ ~ - (use crypto.randomUUID())";
  }
  return undefined;
}

/** A lane name: 1–64 characters of `A-Z a-z 0-9 . _ -` (e.g. `batch`, `tenant-42`). */
export function checkLane(lane: unknown): string | undefined {
  if (typeof lane !== "string" || lane.length === 0)
    return `must be a non-empty string, got ${describe(lane)}`;
  if (lane.length > MAX_LANE_LENGTH)
    return `must be at most ${MAX_LANE_LENGTH} characters, got ${lane.length}`;
  if (!LANE.test(lane)) return "may contain only letters, digits and . _ - (e.g. batch, tenant-42)";
  return undefined;
}

/** An integer in `[min, max]`; `unit` (e.g. "ms") is named in the message. */
export function checkInteger(
  value: unknown,
  min: number,
  max: number,
  unit = "",
): string | undefined {
  const u = unit ? ` ${unit}` : "";
  if (typeof value !== "number" || !Number.isInteger(value)) {
    return `must be an integer from ${min} to ${max}${u}, got ${describe(value)}`;
  }
  if (value < min || value > max) return `must be from ${min} to ${max}${u}, got ${value}`;
  return undefined;
}

/** Server-side bounds that depend on configuration. */
export interface AcquireLimits {
  /** Largest `expiresIn` the server accepts, in ms. */
  maxExpiresIn: number;
}

/** A field that failed validation, and how to fix it. */
export interface FieldProblem {
  field: string;
  detail: string;
}

const ACQUIRE_FIELDS = new Set([
  "resource",
  "capacity",
  "load",
  "priority",
  "lane",
  "timeout",
  "expiresIn",
  "lockDelay",
]);

/**
 * Checks a `PUT /v1/requests/{id}` body. Unknown fields are refused rather than ignored, so a
 * misspelt option (`priorty`) is an error instead of a silent default.
 */
export function checkAcquireBody(
  body: unknown,
  limits: AcquireLimits,
): { ok: true; value: AcquireBody } | { ok: false; problem: FieldProblem } {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return fail("body", `must be a JSON object, got ${describe(body)}`);
  }
  const b = body as Record<string, unknown>;
  for (const key of Object.keys(b)) {
    if (!ACQUIRE_FIELDS.has(key)) {
      return fail(key, `is not a known field; expected some of: ${[...ACQUIRE_FIELDS].join(", ")}`);
    }
  }
  const problem =
    at("resource", checkName(b.resource)) ??
    opt(b, "capacity", (v) => checkInteger(v, 1, MAX_CAPACITY)) ??
    opt(b, "load", (v) => checkInteger(v, 1, MAX_CAPACITY)) ??
    opt(b, "priority", (v) => checkInteger(v, MIN_PRIORITY, MAX_PRIORITY)) ??
    opt(b, "lane", checkLane) ??
    opt(b, "timeout", (v) => checkInteger(v, 0, MAX_TIMEOUT, "ms")) ??
    opt(b, "expiresIn", (v) =>
      checkInteger(
        v,
        1,
        limits.maxExpiresIn,
        limits.maxExpiresIn < MAX_TIMEOUT ? "ms (the server's maximum hold)" : "ms",
      ),
    ) ??
    opt(b, "lockDelay", (v) => checkInteger(v, 0, MAX_LOCK_DELAY, "ms"));
  if (problem) return { ok: false, problem };
  if (
    b.load !== undefined &&
    b.capacity !== undefined &&
    (b.load as number) > (b.capacity as number)
  ) {
    return fail(
      "load",
      `must not exceed capacity (${b.capacity}), got ${b.load}: it could never be granted`,
    );
  }
  return { ok: true, value: b as unknown as AcquireBody };
}

function at(field: string, detail: string | undefined): FieldProblem | undefined {
  return detail === undefined ? undefined : { field, detail };
}

function opt(
  b: Record<string, unknown>,
  field: string,
  check: (v: unknown) => string | undefined,
): FieldProblem | undefined {
  return b[field] === undefined ? undefined : at(field, check(b[field]));
}

function fail(field: string, detail: string) {
  return { ok: false as const, problem: { field, detail } };
}

/** A short, safe description of a bad value for an error message (never the whole value). */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return value.length > 0 ? "an array" : "an empty array";
  switch (typeof value) {
    case "string":
      return value.length > 40 ? `a string of ${value.length} characters` : JSON.stringify(value);
    case "number":
    case "boolean":
      return String(value);
    case "undefined":
      return "nothing";
    default:
      return `a ${typeof value}`;
  }
}
