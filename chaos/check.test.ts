import { describe, expect, it } from "vitest";
import { attributeLosses, check, type Fault, type Hold, type Loss } from "./check.js";

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
