import { describe, expect, it } from "vitest";
import {
  attributeLosses,
  check,
  checkLimits,
  checkRate,
  checkStarvation,
  type Fault,
  type Hold,
  type LaneHold,
  type LaneWait,
  type Limits,
  type Loss,
  limitsDiffer,
  ratePeak,
  type ServerGrant,
} from "./check.js";

const hold = (client: string, token: number, start: number, end?: number): Hold => ({
  client,
  name: "l",
  token,
  start,
  end,
});

describe("chaos checker", () => {
  it("finds no overlap in back-to-back holds, even touching ones", () => {
    expect(check([hold("a", 1, 0, 10), hold("b", 2, 10, 20)], [], { l: 1 }, 100).overlaps).toEqual(
      [],
    );
  });

  it("reports two holders of a lock at once", () => {
    const v = check([hold("a", 1, 0, 10), hold("b", 2, 5, 20)], [], { l: 1 }, 100);
    expect(v.overlaps).toEqual([{ name: "l", at: 5, holders: ["a#1", "b#2"] }]);
  });

  it("counts a hold that never ended as open until the end of the run", () => {
    expect(check([hold("a", 1, 0), hold("b", 2, 50, 60)], [], { l: 1 }, 100).overlaps).toHaveLength(
      1,
    );
  });

  it("counts a holder told at once that it lost the lease as holding nothing", () => {
    const v = check(
      [hold("a", 1, 5, 5), hold("b", 2, 0, 10), hold("c", 3, 20, 30)],
      [],
      { l: 1 },
      100,
    );
    expect(v.overlaps).toEqual([]);
  });

  it("counts each holder against the capacity its grant was made under, by fencing token", () => {
    const holds = [hold("a", 1, 0, 9_000), hold("b", 2, 100, 9_000), hold("c", 3, 5_000, 9_000)];
    // Raised to 3 after token 2: the third grant (token 3) is fine.
    expect(
      check(holds, [], { l: 2 }, 10_000, [{ name: "l", token: 2, capacity: 3 }]).overlaps,
    ).toEqual([]);
    // Never raised: it is not.
    expect(check(holds, [], { l: 2 }, 10_000).overlaps).toHaveLength(1);
    // Cut to 1 after token 2: the first two were granted under 2, fine however late told; the
    // third, granted after the cut while two were held, is an overlap.
    const cut = [{ name: "l", token: 2, capacity: 1 }];
    expect(check(holds.slice(0, 2), [], { l: 2 }, 10_000, cut).overlaps).toEqual([]);
    expect(check(holds, [], { l: 2 }, 10_000, cut).overlaps).toHaveLength(1);
  });

  it("allows up to `capacity` holders of a semaphore", () => {
    const holds = [hold("a", 1, 0, 10), hold("b", 2, 1, 10), hold("c", 3, 2, 10)];
    expect(check(holds, [], { l: 3 }, 100).overlaps).toEqual([]);
    expect(check([...holds, hold("d", 4, 3, 10)], [], { l: 3 }, 100).overlaps).toHaveLength(1);
  });

  it("lets a holder told it lost the lease before the next grant go unreported", () => {
    // a's lease.signal aborted at 9 (its end), b was granted at 10: no overlap.
    expect(check([hold("a", 1, 0, 9), hold("b", 2, 10, 20)], [], { l: 1 }, 100).overlaps).toEqual(
      [],
    );
  });

  it("reports an accepted write from a holder whose successor had started", () => {
    const holds = [hold("a", 1, 0, 10), hold("b", 2, 20, 30)];
    const fresh = { name: "l", token: 1, at: 5, accepted: true };
    const stale = { name: "l", token: 1, at: 25, accepted: true };
    const rejected = { name: "l", token: 1, at: 26, accepted: false };
    expect(check(holds, [fresh, stale, rejected], { l: 1 }, 100).staleWritesAccepted).toEqual([
      stale,
    ]);
  });

  it("judges a write by when it was sent: one sent before the successor's grant is not stale", () => {
    const holds = [hold("a", 1, 0, 10), hold("b", 2, 10, 30)];
    const sentBefore = { name: "l", token: 1, at: 9, accepted: true };
    expect(check(holds, [sentBefore], { l: 1 }, 100).staleWritesAccepted).toEqual([]);
  });
});

describe("attributing lost leases", () => {
  const loss = (client: string, at: number, stall = 0): Loss => ({
    client,
    at,
    why: "silence",
    stall,
  });
  const faults: Fault[] = [
    { kind: "reset", client: "a", from: 100, to: 300 },
    { kind: "server", from: 2_000, to: 3_000 },
    { kind: "stall", from: 5_000, to: 5_100 },
  ];

  it("puts a loss down to a fault that touched its client, within the window after it", () => {
    const r = attributeLosses(
      [loss("a", 150), loss("a", 1_200), loss("a", 1_400)],
      faults,
      1_000,
      50,
    );
    expect(r.nearFault.map((l) => l.at)).toEqual([150, 1_200]);
    expect(r.unexplained.map((l) => l.at)).toEqual([1_400]);
  });

  it("does not put a loss down to another client's reset, but to a server outage for all", () => {
    const r = attributeLosses([loss("b", 150), loss("b", 2_500)], faults, 1_000, 50);
    expect(r.unexplained.map((l) => l.at)).toEqual([150]);
    expect(r.nearFault.map((l) => l.at)).toEqual([2_500]);
  });

  it("puts the rest down to a stall of the holder's process or of the harness, if any", () => {
    const r = attributeLosses(
      [loss("b", 4_500, 80), loss("b", 5_050), loss("b", 7_000)],
      faults,
      1_000,
      50,
    );
    expect(r.nearStall.map((l) => l.at)).toEqual([4_500, 5_050]);
    expect(r.unexplained.map((l) => l.at)).toEqual([7_000]);
  });
});

describe("the scheduler's limits", () => {
  const lh = (
    client: string,
    token: number,
    lane: string,
    load: number,
    start: number,
    end?: number,
  ): LaneHold => ({ client, name: "s", token, start, end, lane, load });
  const fair: Limits = {
    capacity: 4,
    concurrency: 3,
    lanes: { strategy: "fair", weights: { gold: 2 }, reserved: { gold: 1 } },
  };

  it("counts units of load against the capacity, holders against the concurrency", () => {
    const ok = [lh("a", 1, "gold", 2, 0, 10), lh("b", 2, "gold", 2, 1, 10)];
    expect(checkLimits(ok, "s", fair, 100)).toEqual([]);
    const over = [...ok, lh("c", 3, "gold", 1, 5, 10)];
    expect(checkLimits(over, "s", fair, 100).map((v) => [v.kind, v.held, v.most])).toEqual([
      ["capacity", 5, 4],
      ["reserved", 4, 3], // gold's 5 units, 1 of them its reservation's
    ]);
    const many = [
      lh("a", 1, "gold", 1, 0, 10),
      lh("b", 2, "gold", 1, 1, 10),
      lh("c", 3, "gold", 1, 2, 10),
      lh("d", 4, "gold", 1, 3, 10),
    ];
    expect(checkLimits(many, "s", fair, 100).map((v) => v.kind)).toEqual(["concurrency"]);
    // Ended before the next began: nothing held at once.
    const after = [lh("a", 1, "gold", 3, 0, 10), lh("b", 2, "silver", 3, 10, 20)];
    expect(checkLimits(after, "s", fair, 100)).toEqual([]);
  });

  it("reports other lanes taking reserved units, not the reserving lane's own", () => {
    // 3 units outside gold's reservation (4 − 1): silver and bronze may hold 3 between them.
    const fits = [lh("a", 1, "silver", 2, 0, 10), lh("b", 2, "bronze", 1, 1, 10)];
    expect(checkLimits(fits, "s", fair, 100)).toEqual([]);
    expect(
      checkLimits([...fits, lh("c", 3, "gold", 1, 2, 10)], "s", fair, 100).map((v) => v.kind),
    ).toEqual([]);
    // A fourth unit for silver takes gold's: a violation even with gold idle.
    const taken = [...fits, lh("c", 3, "silver", 1, 2, 10)];
    expect(checkLimits(taken, "s", fair, 100).map((v) => [v.kind, v.held, v.most])).toEqual([
      ["reserved", 4, 3],
    ]);
    // Gold past its reservation draws on the pool too.
    const goldOver = [lh("a", 1, "gold", 3, 0, 10), lh("b", 2, "silver", 2, 1, 10)];
    expect(checkLimits(goldOver, "s", fair, 100).map((v) => v.kind)).toEqual([
      "capacity",
      "reserved",
    ]);
  });

  it("reports a strict lane over its share, and any unit for a lane without one", () => {
    const strict: Limits = { capacity: 4, lanes: { strategy: "strict", shares: { a: 2, b: 1 } } };
    const ok = [lh("x", 1, "a", 2, 0, 10), lh("y", 2, "b", 1, 0, 10)];
    expect(checkLimits(ok, "s", strict, 100)).toEqual([]);
    expect(
      checkLimits([...ok, lh("z", 3, "b", 1, 5, 10)], "s", strict, 100).map((v) => v.kind),
    ).toEqual(["share"]);
    expect(checkLimits([lh("z", 3, "c", 1, 5, 10)], "s", strict, 100).map((v) => v.kind)).toEqual([
      "share",
    ]);
  });

  it("counts a hold never ended as held to the end of the run", () => {
    const v = checkLimits(
      [lh("a", 1, "gold", 3, 0), lh("b", 2, "silver", 2, 50, 60)],
      "s",
      fair,
      100,
    );
    expect(v.map((x) => x.kind)).toEqual(["capacity", "reserved"]);
  });
});

describe("rate limits by the server's grant times", () => {
  /** A grant logged at `at`, made at or after `lo` (default: `at`, known exactly). */
  const g = (token: number, at: number, load?: number, lo: number | null = at): ServerGrant => ({
    token,
    at,
    load,
    ...(lo === null ? {} : { lo }),
  });
  const sliding = { limit: 3, window: 1_000, kind: "sliding", counts: "requests" } as const;
  const fixed = { limit: 4, window: 1_000, kind: "fixed", counts: "load" } as const;

  it("finds a sliding window holding more grants than the limit", () => {
    // 3 in any 1000 ms: a fourth 999 ms after the first is one too many, 1000 ms after it is not.
    expect(checkRate([g(1, 0), g(2, 10), g(3, 500), g(4, 1_000)], sliding)).toEqual([]);
    const v = checkRate([g(1, 0), g(2, 10), g(3, 500), g(4, 999)], sliding);
    expect(v).toHaveLength(1);
    expect(v[0]!.tokens).toEqual([1, 2, 3, 4]);
  });

  it("reports only what is certain: a grant is made between its lower bound and its log line", () => {
    // The first logged at 0 but maybe made at -10: maybe 1009 ms before the fourth.
    expect(checkRate([g(1, 0, 1, -10), g(2, 10), g(3, 500), g(4, 999)], sliding)).toEqual([]);
    // Made at -10 at the earliest: 1000 ms before the fourth, at 990, at the latest... still one window.
    expect(checkRate([g(1, 0, 1, -10), g(2, 10), g(3, 500), g(4, 989)], sliding)).toHaveLength(1);
    // No lower bound at all: it anchors nothing, but the next ones still count.
    expect(checkRate([g(1, 0, 1, null), g(2, 10), g(3, 500), g(4, 999)], sliding)).toEqual([]);
    expect(
      checkRate([g(1, 0, 1, null), g(2, 10), g(3, 500), g(4, 998), g(5, 999)], sliding),
    ).toHaveLength(1);
    expect(checkRate([g(1, 0, 1, null), g(2, 10, 1, null)], sliding)).toEqual([]);
    // ...unless `exact`: the log times as the grant times.
    expect(
      checkRate([g(1, 0, 1, null), g(2, 10), g(3, 500), g(4, 999)], sliding, { exact: true }),
    ).toHaveLength(1);
  });

  it("orders grants by token: each made no earlier than the one before, no later than the one after", () => {
    // Token 3 has no lower bound but comes after token 2 (made at 10 or later); token 1, logged
    // late (at 600), was made before token 2 (logged at 10).
    const grants = [g(1, 600, 1, 0), g(2, 10), g(3, 500, 1, null), g(4, 1_005)];
    // 1..4 within [0, 1005]: not certain; 2..4 within [10, 1005]: 3, fine.
    expect(checkRate(grants, sliding)).toEqual([]);
    expect(checkRate([...grants.slice(0, 3), g(4, 999)], sliding)).toHaveLength(1);
  });

  it("reports a run of overfull sliding windows once", () => {
    const burst = Array.from({ length: 10 }, (_, i) => g(i + 1, i * 10));
    expect(checkRate(burst, sliding)).toHaveLength(1);
    // Two bursts far apart: two.
    const two = [...burst, ...burst.map((x) => g(x.token + 100, x.at + 5_000))];
    expect(checkRate(two, sliding)).toHaveLength(2);
  });

  it("counts load in fixed windows aligned on the clock, each afresh", () => {
    // 4 units in [0, 1000), 4 in [1000, 2000): fine, though 7 lie within 200 ms.
    const ok = [g(1, 100, 2), g(2, 900, 2), g(3, 1_000, 3), g(4, 1_100, 1)];
    expect(checkRate(ok, fixed)).toEqual([]);
    const v = checkRate([...ok, g(5, 1_999, 1)], fixed);
    expect(v.map((x) => [x.from, x.to, x.counted])).toEqual([[1_000, 2_000, 5]]);
  });

  it("leaves out of a fixed window a grant maybe made in the one before, and counts an unknown load as 1", () => {
    // Logged at 1005, made at 995 or later: maybe in the window before.
    const edge = [g(1, 1_005, 3, 995), g(2, 1_100, 2)];
    expect(checkRate(edge, fixed)).toEqual([]);
    expect(checkRate([g(1, 1_005, 3, 1_000), g(2, 1_100, 2)], fixed)).toHaveLength(1);
    expect(checkRate([g(1, 100, 3), g(2, 200)], fixed)).toEqual([]);
    expect(checkRate([g(1, 100, 3), g(2, 200), g(3, 300)], fixed)).toHaveLength(1);
    expect(checkRate([g(1, 100, 3), g(2, 200)], fixed, { unknownLoad: 3 })).toHaveLength(1);
  });
});

describe("lanes starved", () => {
  const w = (lane: string, from: number, to: number, client = "a"): LaneWait => ({
    client,
    name: "s",
    lane,
    from,
    to,
    granted: false,
  });
  const gr = (lane: string, at: number) => ({ name: "s", lane, at });

  it("reports a lane with waiters throughout and no grant past the bound", () => {
    const waits = [w("gold", 0, 20_000), w("silver", 0, 20_000), w("bronze", 0, 5_000)];
    const grants = [gr("gold", 9_000), gr("gold", 18_000), gr("silver", 11_000)];
    const starved = checkStarvation(waits, grants, 10_000, [], 0);
    expect(starved.map((s) => [s.lane, s.from, s.to])).toEqual([["silver", 0, 11_000]]);
  });

  it("follows the lane, not one waiter: waiters giving up in turn keep it waiting", () => {
    // Each waits 3 s, a new one before the last gives up: 0..15 s with waiters, no grant.
    const relay = [0, 2_500, 5_000, 7_500, 10_000, 12_000].map((t, i) =>
      w("silver", t, t + 3_000, `c${i}`),
    );
    expect(checkStarvation(relay, [], 10_000, [], 0)).toHaveLength(1);
    // A grant to anyone in the lane at 6 s: two gaps under 10 s.
    expect(checkStarvation(relay, [gr("silver", 6_000)], 10_000, [], 0)).toEqual([]);
    // A gap with no waiter (12 s after the last gave up): not starved.
    const gap = [w("silver", 0, 6_000), w("silver", 7_000, 14_000)];
    expect(checkStarvation(gap, [], 10_000, [], 0)).toEqual([]);
  });

  it("does not count the time a server was down, nor a while after it", () => {
    const waits = [w("silver", 0, 20_000)];
    // 10 s of service after 0, 3 s (2 down, 1 after) not counted: the deadline is 13 s.
    const grants = [gr("silver", 12_500), gr("silver", 20_000)];
    expect(checkStarvation(waits, grants, 10_000, [{ from: 2_000, to: 4_000 }], 1_000)).toEqual([]);
    expect(checkStarvation(waits, grants, 10_000, [{ from: 2_000, to: 3_000 }], 0)).toHaveLength(1);
    // Overlapping outages count once; one past the deadline not at all.
    const down = [
      { from: 1_000, to: 3_000 },
      { from: 2_000, to: 4_000 },
      { from: 30_000, to: 40_000 },
    ];
    const at = (t: number) => [gr("silver", t), gr("silver", 20_000)];
    expect(checkStarvation(waits, at(13_000), 10_000, down, 0)).toEqual([]);
    expect(checkStarvation(waits, at(13_500), 10_000, down, 0)).toHaveLength(1);
  });

  it("counts the last waiter's own late grant as late", () => {
    const late = { ...w("gold", 0, 12_000), granted: true };
    expect(checkStarvation([late], [gr("gold", 12_000)], 10_000, [], 0)).toHaveLength(1);
    expect(checkStarvation([late], [gr("gold", 9_000)], 10_000, [], 0)).toEqual([]);
  });
});

describe("the operator's limits read back", () => {
  const limits: Limits = {
    capacity: 4,
    concurrency: 3,
    rates: [{ limit: 10, window: 500, kind: "sliding", counts: "requests" }],
    lanes: { strategy: "fair", weights: { gold: 2 }, reserved: { gold: 1 } },
  };
  const shown = {
    limit: 4,
    concurrency: 3,
    rates: [{ limit: 10, window: 500, kind: "sliding", counts: "requests", used: 3 }],
    laneConfig: { reserved: { gold: 1 }, strategy: "fair", weights: { gold: 2 } },
  };

  it("finds them as set, whatever the order of fields and the counts shown", () => {
    expect(limitsDiffer(limits, shown)).toBeUndefined();
  });

  it("says what differs", () => {
    expect(limitsDiffer(limits, { ...shown, limit: null, laneConfig: null })).toBe(
      'capacity null, not 4; lanes null, not {"reserved":{"gold":1},"strategy":"fair","weights":{"gold":2}}',
    );
    expect(limitsDiffer(limits, { ...shown, rates: [] })).toMatch(/^rates \[\], not/);
  });
});

describe("a rate limit's peak", () => {
  it("is the most counted in one window", () => {
    const g = (token: number, at: number, load?: number): ServerGrant => ({ token, at, load });
    const grants = [g(1, 0, 2), g(2, 400, 3), g(3, 999, 1), g(4, 1_500)];
    expect(ratePeak(grants, { limit: 9, window: 1_000, kind: "sliding", counts: "requests" })).toBe(
      3,
    );
    expect(ratePeak(grants, { limit: 9, window: 1_000, kind: "fixed", counts: "load" })).toBe(6);
  });
});
