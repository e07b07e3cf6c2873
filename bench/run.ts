import { mkdtempSync } from "node:fs";
import os, { tmpdir } from "node:os";
import { join } from "node:path";
import { bytesPerHeldLock, cyclesPerSecond, handoversPerSecond } from "./engine.js";
import { httpCycleLatencies, httpCyclesPerSecond, spawnServer } from "./http.js";
import { holderKillHandovers, waiterKillDepartures } from "./kill.js";
import { contendedLock, floorLatencies, sdkCycleLatencies, spawnFloorServer } from "./sdk.js";

/**
 * `pnpm bench`: the server's and the SDK's numbers. Each figure is the median of several runs;
 * machines are shared and noisy, so compare figures from one run, not across runs.
 * BENCH_QUICK=1 (CI) uses small sizes: it proves the benchmark runs, its figures mean little.
 */
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const quick = process.env.BENCH_QUICK === "1";

const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const median = (xs: number[]) => sorted(xs)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number) =>
  sorted(xs)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const ms = (xs: number[]) => `${median(xs).toFixed(3)} / ${pct(xs, 0.99).toFixed(3)}`;
async function repeat<T>(f: () => T | Promise<T>, runs = RUNS): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < runs; i++) out.push(await f());
  return out;
}

const rows: Array<[string, string, string]> = [];
function row(what: string, value: string, goal = "") {
  rows.push([what, value, goal]);
  console.log(`${what}: ${value}${goal ? `  (goal ${goal})` : ""}`);
}

// --- the engine, in this process ---------------------------------------------------------------
const cycles = quick ? 50_000 : 1_000_000;
row(
  "engine grant+release, one name (cycles/s)",
  fmt(median(await repeat(() => cyclesPerSecond(1, cycles)))),
  "≥ 1,000,000",
);
row(
  "engine grant+release, 100,000 names (cycles/s)",
  fmt(median(await repeat(() => cyclesPerSecond(100_000, cycles)))),
  "≥ 1,000,000",
);
row(
  "engine hand-overs, one lock with 100 waiting (/s)",
  fmt(median(await repeat(() => handoversPerSecond(cycles)))),
);
const held = quick ? 10_000 : 100_000;
row(
  `engine memory per held lock (${fmt(held)} held, bytes)`,
  fmt(median(await repeat(() => bytesPerHeldLock(held), 3))),
  "≤ 1,024",
);

// --- over loopback, the server in its own process -----------------------------------------------
const server = await spawnServer();
const floor = await spawnFloorServer();
try {
  const window = quick ? 500 : 3_000;
  const httpRuns = quick ? 1 : 3;
  await httpCyclesPerSecond(server.url, 8, 300); // warm up the server's JIT
  for (const workers of [1, 16, 64]) {
    const rate = median(
      await repeat(() => httpCyclesPerSecond(server.url, workers, window), httpRuns),
    );
    row(`HTTP acquire+release, ${workers} concurrent clients (cycles/s)`, fmt(rate));
  }
  row(
    "HTTP acquire+release latency, one client (p50 / p99 ms)",
    ms(await httpCycleLatencies(server.url, quick ? 200 : 2_000)),
  );

  const durable = await spawnServer([
    "--data-dir",
    mkdtempSync(join(tmpdir(), "ratequeue-bench-")),
  ]);
  try {
    for (let i = 0; i < (quick ? 1 : 3); i++) await httpCycleLatencies(durable.url, 1_500); // JIT warm-up, as the other server had
    row(
      "HTTP acquire+release latency, one client, with --data-dir (p50 / p99 ms)",
      ms(await httpCycleLatencies(durable.url, quick ? 200 : 2_000)),
    );
  } finally {
    await durable.stop();
  }

  // The SDK against the floor, interleaved in one run so that noise hits both alike.
  const n = quick ? 200 : 2_000;
  // Warm both paths up first: the JIT makes the first few hundred cycles several times slower.
  await floorLatencies(floor.url, 1_000);
  await sdkCycleLatencies(server.url, 1_000);
  const floors: number[] = [];
  const sdk: number[] = [];
  for (let r = 0; r < (quick ? 1 : 5); r++) {
    floors.push(...(await floorLatencies(floor.url, n)));
    sdk.push(...(await sdkCycleLatencies(server.url, n)));
  }
  row("HTTP floor: do-nothing round trip, same client (p50 / p99 ms)", ms(floors));
  row("SDK uncontended acquire(name, {}, fn) cycle (p50 / p99 ms)", ms(sdk));
  row(
    "SDK cycle p50 ÷ two floor round trips",
    `${(median(sdk) / (2 * median(floors))).toFixed(2)}×`,
    "≤ 1.5×",
  );

  const turns = quick ? 5 : 50;
  if (!quick) for (let i = 0; i < 3; i++) await contendedLock(server.url, 20, turns, 1); // JIT warm-up
  const runs = await repeat(() => contendedLock(server.url, 20, turns, 1), quick ? 1 : 5);
  const mid = runs.sort((a, b) => a.efficiency - b.efficiency)[Math.floor(runs.length / 2)]!;
  row(
    `one lock, 20 callers × ${turns} turns × 1 ms of work: wall / ideal ms`,
    `${fmt(mid.wall)} / ${fmt(mid.ideal)} = ${(mid.efficiency * 100).toFixed(1)}% of ideal, ${fmt(mid.handoversPerSecond)} hand-overs/s`,
    "≥ 85%",
  );

  // Crash hand-over (polled every ms, so figures carry up to ~1 ms of polling on top).
  const kills = quick ? 3 : 20;
  const handovers = await holderKillHandovers(server.url, kills);
  row(
    `SIGKILLed holder → next waiter holds (${kills} kills: median / max ms)`,
    `${median(handovers).toFixed(0)} / ${Math.max(...handovers).toFixed(0)}`,
    "median ≤ 250",
  );
  const departures = await waiterKillDepartures(server.url, kills);
  row(
    `SIGKILLed waiter → gone from the line (${kills} kills: median / max ms)`,
    `${median(departures).toFixed(0)} / ${Math.max(...departures).toFixed(0)}`,
  );
} finally {
  floor.stop();
  await server.stop();
}

const cpu = os.cpus();
console.log(
  `\nmachine: ${cpu[0]?.model ?? "?"} × ${cpu.length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}; engine: medians of ${RUNS} runs; HTTP: of ${quick ? 1 : 3}`,
);
console.log("\n| measure | value | goal |\n| --- | --- | --- |");
for (const [w, v, g] of rows) console.log(`| ${w} | ${v} | ${g} |`);
