import { expect, it } from "vitest";
import { runChaos } from "./run.js";

// A bounded chaos run (pnpm test:chaos runs longer): clients are SIGKILLed at random while they
// acquire, hold and release; the server is not killed (its state is in memory: see run.ts).
it("keeps exclusion and fencing, and leaves no waiter behind, while clients are SIGKILLed", async () => {
  const r = await runChaos({ seconds: 8, clients: 4, serverKills: false, seed: 20261126 });
  expect(r.grants).toBeGreaterThan(50);
  expect(r.clientKills).toBeGreaterThan(3);
  expect(r.overlaps).toBe(0);
  expect(r.staleWritesAccepted).toBe(0);
  expect(r.waitersStuck).toBe(0);
}, 90_000);
