import { checkLane } from "@ratequeue/core";
import type { LaneConfig } from "./internal/lanes.js";
import { parseRates, type RateLimitSpec } from "./rate.js";

/** A change of a resource's limits: each one named is set (a value) or lifted (null). */
export interface LimitChange {
  capacity?: number | null;
  rates?: readonly RateLimitSpec[] | null;
  concurrency?: number | null;
  lanes?: LaneConfig | null;
}

/** What a change of limits takes, as its errors say. */
export const LIMITS_BODY =
  'send any of {"capacity": N} (units of load held at once), {"concurrency": N} (requests holding at once, whatever their load) — whole numbers from 1 to 1000000000 —, {"rates": [{"limit": N, "window": ms, "kind": "sliding" | "fixed", "counts": "requests" | "load"}]} and {"lanes": {"strategy": "fair", "weights": {"LANE": N}, "reserved": {"LANE": N}}} or {"lanes": {"strategy": "strict", "shares": {"LANE": N}}}; null lifts one';

/** What `lanes` takes, as its errors say. */
export const LANES_BODY =
  '{"strategy": "fair", "weights": {"LANE": N}, "reserved": {"LANE": N}} (lanes take turns by weight, default 1; reserved units are theirs only) or {"strategy": "strict", "shares": {"LANE": N}} (each lane owns its share of the capacity), or null to lift them';

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
    if (!LIMIT_FIELDS.has(key) && !also.includes(key))
      return { error: `unknown field ${JSON.stringify(key)}: ${LIMITS_BODY}`, field: key };
  const { capacity, concurrency } = b;
  if (
    capacity === undefined &&
    b.rates === undefined &&
    concurrency === undefined &&
    b.lanes === undefined
  )
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
  const lanes = b.lanes === undefined || b.lanes === null ? b.lanes : parseLanes(b.lanes);
  if (lanes !== undefined && lanes !== null && "error" in lanes) return lanes;
  return {
    ...(capacity === undefined ? {} : { capacity: capacity as number | null }),
    ...(rates === undefined ? {} : { rates }),
    ...(concurrency === undefined ? {} : { concurrency: concurrency as number | null }),
    ...(lanes === undefined ? {} : { lanes }),
  };
}

const LIMIT_FIELDS = new Set(["capacity", "rates", "concurrency", "lanes"]);

/**
 * Reads a resource's `lanes` (see `LANES_BODY`); the error names the place (`lanes.shares.batch`).
 * Whether shares and reservations fit the capacity is the engine's to say (it knows the capacity).
 */
export function parseLanes(raw: unknown): LaneConfig | { error: string; field: string } {
  const bad = (field: string, error: string) => ({
    error: `lanes${field} ${error}`,
    field: `lanes${field}`,
  });
  if (raw === null || typeof raw !== "object" || Array.isArray(raw))
    return bad("", `must be an object: ${LANES_BODY}`);
  const b = raw as Record<string, unknown>;
  for (const key of Object.keys(b))
    if (key !== "strategy" && key !== "weights" && key !== "shares" && key !== "reserved")
      return bad(`.${key}`, `is not a lanes field: ${LANES_BODY}`);
  const strategy = b.strategy ?? "fair";
  if (strategy !== "fair" && strategy !== "strict")
    return bad(".strategy", `must be "fair" or "strict": ${LANES_BODY}`);
  const config: LaneConfig = { strategy };
  const maps = [
    ["weights", "fair", 1_000, "turns per round"],
    ["shares", "strict", 1e9, "units the lane owns"],
    ["reserved", "fair", 1e9, "units held for the lane only"],
  ] as const;
  for (const [field, only, max, meaning] of maps) {
    const value = b[field];
    if (value === undefined) continue;
    if (strategy !== only)
      return bad(
        `.${field}`,
        only === "strict"
          ? 'applies to strict lanes only: add "strategy": "strict" (or use weights and reserved)'
          : 'applies to fair lanes only: a strict lane\'s share is its own already (use "shares")',
      );
    if (value === null || typeof value !== "object" || Array.isArray(value))
      return bad(`.${field}`, `must be an object of lane names to numbers (${meaning})`);
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length > 64) return bad(`.${field}`, "may name at most 64 lanes");
    for (const [lane, n] of entries) {
      const badLane = checkLane(lane);
      if (badLane) return bad(`.${field}.${lane}`, `is not a lane name: it ${badLane}`);
      if (!Number.isSafeInteger(n) || (n as number) < 1 || (n as number) > max)
        return bad(`.${field}.${lane}`, `must be a whole number from 1 to ${max} (${meaning})`);
    }
    // fromEntries, not out[lane] = n: a lane named __proto__ stays an entry of its own.
    config[field] = Object.fromEntries(entries) as Record<string, number>;
  }
  if (strategy === "strict" && config.shares === undefined)
    return bad(
      ".shares",
      'strict lanes need their shares: {"strategy": "strict", "shares": {"LANE": N}}',
    );
  return config;
}
