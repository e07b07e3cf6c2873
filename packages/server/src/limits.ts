import { parseRates, type RateLimitSpec } from "./rate.js";

/** A change of a resource's limits: each one named is set (a value) or lifted (null). */
export interface LimitChange {
  capacity?: number | null;
  rates?: readonly RateLimitSpec[] | null;
  concurrency?: number | null;
}

/** What a change of limits takes, as its errors say. */
export const LIMITS_BODY =
  'send any of {"capacity": N} (units of load held at once), {"concurrency": N} (requests holding at once, whatever their load) — whole numbers from 1 to 1000000000 — and {"rates": [{"limit": N, "window": ms, "kind": "sliding" | "fixed", "counts": "requests" | "load"}]}; null lifts one';

/**
 * Reads a change of limits (the admin API's body, or an entry of a config file) from `body`,
 * whose fields other than the limits' are listed in `also`. A string says what is wrong.
 */
export function parseLimitChange(
  body: unknown,
  also: readonly string[] = [],
): LimitChange | { error: string; field: string } {
  if (body === null || typeof body !== "object" || Array.isArray(body))
    return { error: LIMITS_BODY, field: "capacity" };
  const b = body as Record<string, unknown>;
  for (const key of Object.keys(b))
    if (key !== "capacity" && key !== "rates" && key !== "concurrency" && !also.includes(key))
      return { error: `unknown field ${JSON.stringify(key)}: ${LIMITS_BODY}`, field: key };
  const { capacity, concurrency } = b;
  if (capacity === undefined && b.rates === undefined && concurrency === undefined)
    return { error: LIMITS_BODY, field: "capacity" };
  const whole = (v: unknown) =>
    v === undefined ||
    v === null ||
    (Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= 1e9);
  if (!whole(capacity))
    return {
      error: "capacity must be a whole number from 1 to 1000000000, or null",
      field: "capacity",
    };
  if (!whole(concurrency))
    return {
      error:
        "concurrency must be a whole number from 1 to 1000000000 (requests holding at once), or null",
      field: "concurrency",
    };
  const rates = b.rates === undefined || b.rates === null ? b.rates : parseRates(b.rates);
  if (typeof rates === "string") return { error: rates, field: "rates" };
  return {
    ...(capacity === undefined ? {} : { capacity: capacity as number | null }),
    ...(rates === undefined ? {} : { rates }),
    ...(concurrency === undefined ? {} : { concurrency: concurrency as number | null }),
  };
}
