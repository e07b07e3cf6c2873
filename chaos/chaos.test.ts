import { expect, it } from "vitest";
import { runChaos } from "./run.js";

// A bounded chaos run (pnpm test:chaos runs longer): clients and the server are SIGKILLed at
// random while clients acquire, hold and release; the server restarts on its data directory.
it("keeps exclusion and fencing, and leaves no waiter behind, while clients and the server are SIGKILLed", async () => {
  const r = await runChaos({
    seconds: 10,
    clients: 4,
    serverKills: true,
    seed: 20261126,
    recoveryWindow: 3_000,
  });
  expect(r.grants).toBeGreaterThan(50);
  expect(r.clientKills).toBeGreaterThan(3);
  expect(r.serverRestarts).toBeGreaterThan(0);
  expect(r.overlaps).toBe(0);
  expect(r.staleWritesAccepted).toBe(0);
  expect(r.waitersStuck).toBe(0);
}, 120_000);
