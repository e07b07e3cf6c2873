import { describe, expect, it } from "vitest";
import { type ChaosSession, formatReport, runChaos, summary } from "./run.js";

// A short chaos run per session transport (pnpm test:chaos runs longer): client processes with
// dozens of acquire loops each — some holding for seconds with the rest queued behind — while
// clients are SIGKILLed, their connections reset, and the server SIGKILLed and restarted on its
// data directory. Only what must hold is asserted: how much work a run gets done depends on the
// machine, so beyond "some" (the run goes on until it has seen a grant) nothing is counted.
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
        // No operator here: a revoke is not yet durable — a server killed between a revoke and
        // its holder hearing of it restarts without the revoke, and may grant the units while
        // the holder still believes (seen once in 8 HTTP runs). pnpm test:chaos with
        // CHAOS_OPERATOR=revoke|capacity runs it; issue 12's note says what would fix it.
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
    },
    120_000,
  );
});
