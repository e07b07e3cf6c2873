import { describe, expect, it } from "vitest";
import { parseRates, type RateLimitSpec, RateState } from "./rate.js";

const sliding = (limit: number, window: number): RateLimitSpec => ({
  limit,
  window,
  kind: "sliding",
  counts: "requests",
});

describe("parseRates", () => {
  it("fills in the defaults and says what to fix in bad input", () => {
    expect(parseRates([{ limit: 500, window: 60_000 }])).toEqual([sliding(500, 60_000)]);
    expect(parseRates({})).toMatch(/rates must be an array of at most 8 limits/);
    expect(parseRates([{ limit: 0, window: 1 }])).toBe(
      "rates[0].limit must be a whole number from 1 to 1000000000",
    );
    expect(parseRates([{ limit: 1, window: 1.5 }])).toMatch(/rates\[0\]\.window must be a whole/);
    expect(parseRates([{ limit: 1, window: 10, kind: "rolling" }])).toBe(
      'rates[0].kind must be "sliding" or "fixed"',
    );
    expect(parseRates([{ limit: 1, window: 10, counts: "tokens" }])).toBe(
      'rates[0].counts must be "requests" or "load"',
    );
    expect(parseRates([{ limit: 1, window: 10, per: "minute" }])).toMatch(/unknown field "per"/);
    expect(parseRates([null])).toBe("rates[0] must be an object");
  });
});

describe("RateState", () => {
  it("slides: a grant counts for exactly `window` ms, and the wait ends when enough have left", () => {
    const r = new RateState([sliding(2, 100)]);
    r.take(1, 0);
    r.take(1, 40);
    expect(r.fits(1, 99)).toBe(false);
    expect(r.fitsAt(1, 50)).toBe(100); // the grant at 0 leaves the window at 100
    expect(r.fits(1, 100)).toBe(true);
    expect(r.usage(139)).toEqual([{ used: 1 }]);
    expect(r.usage(140)).toEqual([{ used: 0 }]);
  });

  it("keeps its cost flat over many grants, and forgets those no window holds", () => {
    const r = new RateState([sliding(1_000, 1_000), { ...sliding(50, 10), counts: "load" }]);
    for (let t = 0; t < 100_000; t += 10) {
      expect(r.fits(5, t)).toBe(true);
      r.take(5, t);
    }
    expect(r.usage(100_000)).toEqual([{ used: 99 }, { used: 0 }]);
    // Under steady traffic it keeps about the longest window's grants, not all of them.
    expect(r.kept).toBeLessThanOrEqual(2 * 100 + 64);
    expect(r.idle(200_000)).toBe(true);
  });

  it("carries the grants it kept over to new limits, and counts as full after a restart", () => {
    const old = new RateState([sliding(10, 1_000)]);
    old.take(1, 0);
    old.take(1, 500);
    const next = new RateState([sliding(2, 1_000)], old, 600);
    expect(next.fitsAt(1, 600)).toBe(1_000);
    const restarted = new RateState([{ ...sliding(5, 60_000), kind: "fixed" }]);
    restarted.saturate(90_000);
    expect(restarted.fitsAt(1, 90_000)).toBe(120_000); // the end of the minute that holds it
    expect(restarted.usage(90_000)).toEqual([{ used: 0, fullUntil: 120_000 }]);
    // Limits set again after the restart still count its window as full (the same, a new one).
    const again = new RateState([{ ...sliding(5, 60_000), kind: "fixed" }], restarted, 100_000);
    expect(again.fitsAt(1, 100_000)).toBe(120_000);
    const longer = new RateState([sliding(5, 120_000)], again, 100_000);
    expect(longer.fitsAt(1, 100_000)).toBe(210_000);
  });
});
