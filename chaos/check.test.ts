import { describe, expect, it } from "vitest";
import { check, type Hold } from "./check.js";

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

  it("allows up to `capacity` holders of a semaphore", () => {
    const holds = [hold("a", 1, 0, 10), hold("b", 2, 1, 10), hold("c", 3, 2, 10)];
    expect(check(holds, [], { l: 3 }, 100).overlaps).toEqual([]);
    expect(check([...holds, hold("d", 4, 3, 10)], [], { l: 3 }, 100).overlaps).toHaveLength(1);
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
});
