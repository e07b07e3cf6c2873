import type { Limits } from "./check.js";

/** The names the chaos clients contend for: two locks and a semaphore. */
export const RESOURCES = [
  { name: "lock-a", capacity: 1 },
  { name: "lock-b", capacity: 1 },
  { name: "pool", capacity: 3 },
] as const;

/**
 * Resources under an operator's limits, set once through the admin API at the start of every
 * run (they must survive the servers' restarts: the harness reads them back after each). Clients
 * acquire them with a random load from `loads` in a random lane of `lanes`, giving no capacity
 * (the operator's applies).
 *
 * - "sched": capacity 4 in units of load, at most 3 holders at once, a sliding limit on requests
 *   and a fixed one on units of load — low enough that both bind whatever the machine (the fixed
 *   one most of the time, the sliding one on the bursts that open each fixed window) — and fair
 *   lanes: "gold" twice the turns of the others, and 1 unit reserved for it.
 * - "shares": strict lanes, each owning a share of the capacity (a load fits its lane's share).
 */
export const SCHEDULED: ReadonlyArray<{
  name: string;
  limits: Limits;
  lanes: readonly string[];
  /** Loads by lane: a request's load is drawn from its lane's. */
  loads: Readonly<Record<string, readonly number[]>>;
}> = [
  {
    name: "sched",
    limits: {
      capacity: 4,
      concurrency: 3,
      rates: [
        { limit: 4, window: 1_000, kind: "sliding", counts: "requests" },
        { limit: 8, window: 2_000, kind: "fixed", counts: "load" },
      ],
      lanes: { strategy: "fair", weights: { gold: 2 }, reserved: { gold: 1 } },
    },
    lanes: ["gold", "silver", "bronze"],
    loads: { gold: [1, 2, 3], silver: [1, 2, 3], bronze: [1, 2, 3] },
  },
  {
    name: "shares",
    limits: {
      capacity: 4,
      lanes: { strategy: "strict", shares: { a: 2, b: 1, c: 1 } },
    },
    lanes: ["a", "b", "c"],
    loads: { a: [1, 2], b: [1], c: [1] },
  },
];
