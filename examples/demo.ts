/**
 * `pnpm demo`: queued locking at work. An embedded RateQueue server starts; four worker
 * processes contend for the lock `user-update-42` through the SDK. Waiters queue instead of
 * spinning; every grant carries a larger fencing token; one worker is killed with SIGKILL while
 * it holds the lock, and the next waiter is served a moment later — no TTL, no heartbeat.
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { LIVENESS_DEFAULTS } from "@ratequeue/core";
import { startServer } from "@ratequeue/server";

const WORKERS = 4;
const TURNS = 3;
const VICTIM = "worker-3";
const worker = fileURLToPath(new URL("./demo-worker.ts", import.meta.url));

const server = await startServer({ port: 0 });
const t0 = Date.now();
const waiting = new Set<string>();
const holding = new Set<string>();
let grants = 0;
let maxHolders = 0;
let lastToken = 0;
let tokensIncrease = true;
let killedAt = 0;
let handover = Number.NaN;

function line(who: string, what: string) {
  const queue = waiting.size ? `waiting: ${[...waiting].join(", ")}` : "no one waiting";
  console.log(
    `${String(Date.now() - t0).padStart(5)} ms  ${who.padEnd(9)} ${what.padEnd(38)} ${queue}`,
  );
}

console.log(
  `RateQueue demo — embedded server at ${server.url}; ${WORKERS} worker processes × ${TURNS} turns on "user-update-42"\n`,
);

const exits = Array.from({ length: WORKERS }, (_, i) => {
  const name = `worker-${i + 1}`;
  const child = fork(worker, [server.url, String(TURNS)], {
    execArgv: process.execArgv,
    stdio: "inherit",
  });
  child.on("message", (m: { event: string; token?: number; at: number }) => {
    if (m.event === "asks") {
      waiting.add(name);
      line(name, "asks for the lock");
    } else if (m.event === "holds") {
      waiting.delete(name);
      holding.add(name);
      grants++;
      maxHolders = Math.max(maxHolders, holding.size);
      if (m.token! <= lastToken) tokensIncrease = false;
      lastToken = m.token!;
      if (killedAt && Number.isNaN(handover)) handover = m.at - killedAt;
      line(name, `HOLDS the lock (fencing token …${String(m.token).slice(-4)})`);
      if (name === VICTIM && !killedAt) {
        setTimeout(() => {
          killedAt = Date.now();
          child.kill("SIGKILL");
          holding.delete(name);
          line(name, "✝ killed with SIGKILL while holding");
        }, 40);
      }
    } else if (m.event === "releases") {
      holding.delete(name);
      line(name, "releases it");
    }
  });
  return new Promise<void>((resolve) => child.once("exit", () => resolve()));
});

await Promise.all(exits);
await server.close();

console.log(`
Summary
  grants:                 ${grants} (the killed worker's unfinished turns never ran)
  holders at once:        at most ${maxHolders}
  fencing tokens:         ${tokensIncrease ? "strictly increasing" : "NOT increasing (bug!)"}
  after the SIGKILL:      the next waiter held the lock ${handover} ms later (no TTL, no heartbeat:
                          the dead process's connection closed, and the server's ${LIVENESS_DEFAULTS.grace} ms grace ran out)`);
