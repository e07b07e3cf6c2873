import { describe, expect, it } from "vitest";
import { type ChaosSession, formatReport, runChaos, summary } from "./run.js";

// A short chaos run per session transport (pnpm test:chaos runs longer): client processes with
// dozens of acquire loops each — some holding for seconds with the rest queued behind — while
// clients are SIGKILLed, their connections reset, the server SIGKILLed and restarted on its
// data directory, and an operator revokes holders and changes a capacity; meanwhile a quarter of
// the acquires go to a resource under an operator's capacity, concurrency, rate limits and fair
// lanes with a reservation, a tenth to one of strict lanes. Only what must hold is asserted: how
// much work a run gets done depends on the machine, so beyond "some" (the run goes on until it
// has seen a grant) nothing is counted.
describe("chaos", () => {
  it.each<ChaosSession>(["websocket", "http"])(
    "keeps exclusion and fencing, and leaves no waiter behind, over a %s session",
    async (session) => {
      const lines: string[] = [];
      const r = await runChaos({
        session,
        seconds: 8,
        clients: 4,
        loops: [20, 50],
        serverKills: true,
        resets: true,
        // An operator revokes random holders and changes the semaphore's capacity meanwhile.
        operator: { revoke: true, capacity: true },
        seed: session === "websocket" ? 20261126 : 20261127,
        minGrants: 1,
        recoveryWindow: 3_000,
        waitGrace: 2_000,
        log: (line) => {
          if (!line.startsWith("grants") && !line.startsWith("loss:")) lines.push(line);
        },
      });
      console.log(`chaos, ${summary(r)}`);
      const verdict = `${formatReport(r)}\n${lines.join("\n")}`;
      expect(r.grants, verdict).toBeGreaterThan(0);
      expect(r.overlaps, verdict).toBe(0);
      expect(r.staleWritesAccepted, verdict).toBe(0);
      expect(r.waitersStuck, verdict).toBe(0);
      // The scheduled resources (resources.ts): their limits as set after every restart, never
      // exceeded, no rate limit exceeded in any window (the server's grant times), no lane starved.
      expect(r.limitsChecked, verdict).toBeGreaterThan(0);
      expect(r.limitsLost, verdict).toBe(0);
      for (const s of r.scheduled) {
        expect(s.limitViolations, verdict).toEqual({});
        expect(s.rateViolations, verdict).toBe(0);
        expect(s.starved, verdict).toBe(0);
      }
    },
    120_000,
  );
});
