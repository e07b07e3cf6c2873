/**
 * Rate limits on a resource, stacked with its capacity (docs/protocol.md, "Limits"): a grant
 * happens only when the request's load fits the capacity *and* every rate limit has room for it.
 * A rate limit is consumed at grant and given back only by time, never by release.
 */
export interface RateLimitSpec {
  /** Most requests (or units of load) granted per window. */
  limit: number;
  /** The window, in ms. */
  window: number;
  /**
   * `sliding`: any `window` ms in a row (the last `window` ms before each grant); `fixed`:
   * windows aligned on the clock (every `window` ms since the Unix epoch: a minute's window
   * starts on the minute), the count starting afresh in each.
   */
  kind: "sliding" | "fixed";
  /** What a grant uses up: 1 per request, or its `load` (tokens, say). */
  counts: "requests" | "load";
}

/** Most rate limits on one resource, and their bounds. */
export const RATE_BOUNDS = { count: 8, limit: 1_000_000_000, window: 86_400_000 } as const;

/**
 * Checks an operator's rate limits (the admin API's `rates`): a sentence saying what to fix, or
 * the limits with their defaults filled in (`kind: "sliding"`, `counts: "requests"`).
 */
export function parseRates(raw: unknown): RateLimitSpec[] | string {
  if (!Array.isArray(raw) || raw.length > RATE_BOUNDS.count)
    return `rates must be an array of at most ${RATE_BOUNDS.count} limits, each {"limit": N, "window": ms, "kind": "sliding" | "fixed", "counts": "requests" | "load"}`;
  const specs: RateLimitSpec[] = [];
  for (const [i, item] of raw.entries()) {
    const at = `rates[${i}]`;
    if (item === null || typeof item !== "object" || Array.isArray(item))
      return `${at} must be an object`;
    const r = item as Record<string, unknown>;
    for (const key of Object.keys(r))
      if (!["limit", "window", "kind", "counts"].includes(key))
        return `${at} has an unknown field ${JSON.stringify(key)}: use limit, window, kind, counts`;
    if (!whole(r.limit, RATE_BOUNDS.limit))
      return `${at}.limit must be a whole number from 1 to ${RATE_BOUNDS.limit}`;
    if (!whole(r.window, RATE_BOUNDS.window))
      return `${at}.window must be a whole number of ms from 1 to ${RATE_BOUNDS.window} (a day)`;
    const kind = r.kind ?? "sliding";
    if (kind !== "sliding" && kind !== "fixed") return `${at}.kind must be "sliding" or "fixed"`;
    const counts = r.counts ?? "requests";
    if (counts !== "requests" && counts !== "load")
      return `${at}.counts must be "requests" or "load"`;
    specs.push({ limit: r.limit as number, window: r.window as number, kind, counts });
  }
  return specs;
}

function whole(v: unknown, max: number): boolean {
  return Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= max;
}

/** How much of `spec` a request of `load` uses up. */
export function amountOf(spec: RateLimitSpec, load: number): number {
  return spec.counts === "load" ? load : 1;
}

/** A sentence for the spec, as errors and the admin API show it. */
export function describeRate(spec: RateLimitSpec): string {
  return `${spec.limit} ${spec.counts === "load" ? "units of load" : "requests"} per ${spec.window} ms (${spec.kind})`;
}

/**
 * A resource's grants within its longest window, and each limit's count over them. Each limit
 * keeps a cursor on the first grant it still counts: the cursors only move forward as time
 * passes, so a check costs O(1) amortized, whatever the number of grants per window.
 */
export class RateState {
  readonly specs: readonly RateLimitSpec[];
  /** Grants, oldest first: when, and the load (those before every cursor are spent). */
  private times: number[] = [];
  private loads: number[] = [];
  /** When a restart forgot the grants before it, if one did (see `saturate`). */
  private restartedAt: number | undefined;
  /** Per limit: the first grant it counts, and its count over those. */
  private readonly from: number[];
  private readonly used: number[];
  /** Per limit: it counts as full until then (a restart forgot the grants before it). */
  private readonly fullUntil: number[];

  constructor(specs: readonly RateLimitSpec[], previous?: RateState, now = 0) {
    this.specs = specs;
    this.from = specs.map(() => 0);
    this.used = specs.map(() => 0);
    this.fullUntil = specs.map(() => Number.NEGATIVE_INFINITY);
    if (previous !== undefined) {
      // New limits count the grants the resource has kept (the old ones' longest window)...
      const kept = previous.oldest();
      this.times = previous.times.slice(kept);
      this.loads = previous.loads.slice(kept);
      specs.forEach((spec, i) => {
        for (const load of this.loads) this.used[i]! += amountOf(spec, load);
      });
      // ...and, like the old ones, as full for the window that holds a restart.
      if (previous.restartedAt !== undefined) this.saturate(previous.restartedAt);
      this.advance(now);
    }
  }

  /**
   * After a restart the grants of the previous run are unknown: every limit counts as full for
   * the window that holds `now`, so that no window sees more than its limit across the restart.
   */
  saturate(now: number): void {
    this.restartedAt = now;
    this.specs.forEach((spec, i) => {
      this.fullUntil[i] =
        spec.kind === "fixed" ? windowStart(spec, now) + spec.window : now + spec.window;
    });
  }

  /** Whether a request of `load` fits every limit at `now`. */
  fits(load: number, now: number): boolean {
    return this.fitsAt(load, now) <= now;
  }

  /** The earliest time ≥ `now` at which a request of `load` fits every limit (no grant between). */
  fitsAt(load: number, now: number): number {
    this.advance(now);
    let at = now;
    this.specs.forEach((spec, i) => {
      at = Math.max(at, this.fullUntil[i]!, this.limitFitsAt(spec, i, amountOf(spec, load), now));
    });
    return at;
  }

  /** Uses up `load` of every limit at `now` (a grant). */
  take(load: number, now: number): void {
    this.advance(now);
    this.times.push(now);
    this.loads.push(load);
    this.specs.forEach((spec, i) => {
      this.used[i]! += amountOf(spec, load);
    });
  }

  /** Per limit: what it has used in its current window at `now`, as the admin API shows it. */
  usage(now: number): Array<{ used: number; fullUntil?: number }> {
    this.advance(now);
    return this.specs.map((_, i) =>
      this.fullUntil[i]! > now
        ? { used: this.used[i]!, fullUntil: this.fullUntil[i]! }
        : { used: this.used[i]! },
    );
  }

  /** Whether it keeps nothing a limit still counts (the resource may be forgotten then). */
  idle(now: number): boolean {
    this.advance(now);
    return this.used.every((u) => u === 0) && this.fullUntil.every((t) => t <= now);
  }

  private limitFitsAt(spec: RateLimitSpec, i: number, amount: number, now: number): number {
    if (this.used[i]! + amount <= spec.limit) return now;
    if (spec.kind === "fixed") return windowStart(spec, now) + spec.window;
    // Sliding: wait until enough of the oldest grants it counts leave the window.
    let left = this.used[i]!;
    for (let k = this.from[i]!; k < this.times.length; k++) {
      left -= amountOf(spec, this.loads[k]!);
      if (left + amount <= spec.limit) return this.times[k]! + spec.window;
    }
    return Number.POSITIVE_INFINITY; // over the limit itself: never (refused before it waits)
  }

  /** Moves each limit's cursor past the grants its window no longer holds at `now`. */
  private advance(now: number): void {
    this.specs.forEach((spec, i) => {
      // A grant at time t counts while t ≥ the window's start.
      const start = spec.kind === "fixed" ? windowStart(spec, now) : now - spec.window + 1;
      let k = this.from[i]!;
      while (k < this.times.length && this.times[k]! < start) {
        this.used[i]! -= amountOf(spec, this.loads[k]!);
        k++;
      }
      this.from[i] = k;
    });
    // Grants no limit counts any more are dropped once they are most of what is kept
    // (amortized O(1) a grant; what is kept stays within twice the longest window's grants).
    const spent = this.oldest();
    if (spent > 64 && spent * 2 > this.times.length) {
      this.times = this.times.slice(spent);
      this.loads = this.loads.slice(spent);
      for (let i = 0; i < this.from.length; i++) this.from[i]! -= spent;
    }
  }

  /** The first grant some limit still counts (all spent before it). */
  private oldest(): number {
    return this.from.length === 0 ? this.times.length : Math.min(...this.from);
  }

  /** How many grants it keeps (for tests). */
  get kept(): number {
    return this.times.length;
  }
}

/** The start of the fixed window that holds `now`. */
function windowStart(spec: RateLimitSpec, now: number): number {
  return Math.floor(now / spec.window) * spec.window;
}
