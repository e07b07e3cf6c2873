/**
 * Counts who is inside a critical section right now, per key and overall, and keeps the peaks.
 * The examples' tests assert on it: `maxPerKey === 1` is mutual exclusion on every key, and
 * `maxOverall > 1` shows that different keys were not serialised behind each other.
 */
export class ConcurrencyTracker {
  readonly #inside = new Map<string, number>();
  #overall = 0;
  /** The most callers ever inside the section for one key at once. */
  maxPerKey = 0;
  /** The most callers ever inside the section, all keys together. */
  maxOverall = 0;
  /** How many times each key's section was entered. */
  readonly entries = new Map<string, number>();

  enter(key: string): void {
    const n = (this.#inside.get(key) ?? 0) + 1;
    this.#inside.set(key, n);
    this.#overall++;
    this.entries.set(key, (this.entries.get(key) ?? 0) + 1);
    this.maxPerKey = Math.max(this.maxPerKey, n);
    this.maxOverall = Math.max(this.maxOverall, this.#overall);
  }

  leave(key: string): void {
    const n = (this.#inside.get(key) ?? 0) - 1;
    if (n < 0) throw new Error(`leave("${key}") without enter`);
    if (n === 0) this.#inside.delete(key);
    else this.#inside.set(key, n);
    this.#overall--;
  }

  /** Callers inside a section right now: 0 once everything has settled. */
  get inside(): number {
    return this.#overall;
  }
}

/** Resolves after `ms`: the examples' stand-in for a database round trip or an API call. */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
