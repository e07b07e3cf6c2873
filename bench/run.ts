import { mkdtempSync } from "node:fs";
import os, { tmpdir } from "node:os";
import { join } from "node:path";
import { bytesPerHeldLock, cyclesPerSecond, handoversPerSecond } from "./engine.js";
import { httpCycleLatencies, httpCyclesPerSecond, spawnServer } from "./http.js";
import { holderKillHandovers, waiterKillDepartures } from "./kill.js";
import { llmThroughput } from "./llm.js";
import { contendedLock } from "./sdk.js";
import { rawHttpSessionCycles, rawWebSocketCycles, sdkSessionCycles } from "./session.js";

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
const plain = median(await repeat(() => cyclesPerSecond(1, cycles)));
row("engine grant+release, one name (cycles/s)", fmt(plain), "≥ 1,000,000");
row(
  "engine grant+release, 100,000 names (cycles/s)",
  fmt(median(await repeat(() => cyclesPerSecond(100_000, cycles)))),
  "≥ 1,000,000",
);
const withMetrics = median(await repeat(() => cyclesPerSecond(1, cycles, true)));
row("engine grant+release, one name, counted by /metrics (cycles/s)", fmt(withMetrics));
const rated = median(await repeat(() => cyclesPerSecond(1, cycles, false, true)));
row(
  "engine grant+release, one name with 3 rate limits stacked (cycles/s; cost ÷ none)",
  `${fmt(rated)} (${(plain / rated).toFixed(2)}×)`,
  "≤ 1.3×",
);
const oneLine = median(await repeat(() => handoversPerSecond(cycles)));
row("engine hand-overs, one lock with 100 waiting (/s)", fmt(oneLine));
const inLanes = median(await repeat(() => handoversPerSecond(cycles, 4)));
row(
  "engine hand-overs, one lock with 100 waiting in 4 fair lanes (/s; cost ÷ one line)",
  `${fmt(inLanes)} (${(oneLine / inLanes).toFixed(2)}×)`,
);
const held = quick ? 10_000 : 100_000;
row(
  `engine memory per held lock (${fmt(held)} held, bytes)`,
  fmt(median(await repeat(() => bytesPerHeldLock(held), 3))),
  "≤ 1,024",
);

// --- over loopback, the server in its own process -----------------------------------------------
const server = await spawnServer();
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

  // The SDK against a raw client of the same transport, interleaved in one run so that noise
  // hits both alike (issue 8: the SDK adds ≤ 15 %).
  const n = quick ? 200 : 2_000;
  const rounds = quick ? 1 : 5;
  const pairs = [
    ["WebSocket session", rawWebSocketCycles, "websocket"],
    ["HTTP session", rawHttpSessionCycles, "http"],
  ] as const;
  for (const [label, raw, session] of pairs) {
    // Warm both paths up first: the JIT makes the first few hundred cycles several times slower.
    await raw(server.url, 1_000);
    await sdkSessionCycles(server.url, 1_000, session);
    const raws: number[] = [];
    const sdks: number[] = [];
    for (let r = 0; r < rounds; r++) {
      raws.push(...(await raw(server.url, n)));
      sdks.push(...(await sdkSessionCycles(server.url, n, session)));
    }
    row(`${label}: raw protocol acquire+release (p50 / p99 ms)`, ms(raws));
    row(`${label}: SDK acquire(name, {}, fn) (p50 / p99 ms)`, ms(sdks));
    row(`${label}: SDK p50 ÷ raw p50`, `${(median(sdks) / median(raws)).toFixed(2)}×`, "≤ 1.15×");
  }

  // The durable default against --memory, SDK over its default (WebSocket) session, interleaved.
  const durableDir = mkdtempSync(join(tmpdir(), "ratequeue-bench-"));
  const durableSdk = await spawnServer(["--data-dir", durableDir]);
  try {
    await sdkSessionCycles(durableSdk.url, 1_500, "websocket");
    await sdkSessionCycles(server.url, 1_500, "websocket");
    const mem: number[] = [];
    const dur: number[] = [];
    for (let r = 0; r < rounds; r++) {
      mem.push(...(await sdkSessionCycles(server.url, n, "websocket")));
      dur.push(...(await sdkSessionCycles(durableSdk.url, n, "websocket")));
    }
    row("SDK uncontended cycle, --memory (p50 / p99 ms)", ms(mem));
    // What /metrics adds per cycle is the engine observer's work (its gauges are read at scrape).
    const metricsMs = (1 / withMetrics - 1 / plain) * 1000;
    row(
      "metrics' cost on the uncontended cycle (engine time added ÷ SDK cycle p50)",
      `${((metricsMs / median(mem)) * 100).toFixed(2)}%`,
      "≤ 5%",
    );
    row("SDK uncontended cycle, --data-dir (p50 / p99 ms)", ms(dur));
    row(
      "durable ÷ --memory, uncontended p50",
      `${(median(dur) / median(mem)).toFixed(2)}×`,
      "≤ 1.10×",
    );
    const turns = quick ? 5 : 50;
    if (!quick) {
      for (let i = 0; i < 2; i++) {
        await contendedLock(server.url, 20, turns, 1); // JIT warm-up
        await contendedLock(durableSdk.url, 20, turns, 1);
      }
    }
    const memRuns: Awaited<ReturnType<typeof contendedLock>>[] = [];
    const durRuns: Awaited<ReturnType<typeof contendedLock>>[] = [];
    for (let r = 0; r < (quick ? 1 : 5); r++) {
      memRuns.push(await contendedLock(server.url, 20, turns, 1));
      durRuns.push(await contendedLock(durableSdk.url, 20, turns, 1));
    }
    const mid = (xs: typeof memRuns) =>
      [...xs].sort((a, b) => a.efficiency - b.efficiency)[Math.floor(xs.length / 2)]!;
    const m = mid(memRuns);
    const d = mid(durRuns);
    row(
      `one lock, 20 callers × ${turns} turns × 1 ms of work, --memory: wall / ideal ms`,
      `${fmt(m.wall)} / ${fmt(m.ideal)} = ${(m.efficiency * 100).toFixed(1)}% of ideal, ${fmt(m.handoversPerSecond)} hand-overs/s`,
      "≥ 85%",
    );
    row(
      `one lock, 20 callers × ${turns} turns × 1 ms of work, --data-dir: wall / ideal ms`,
      `${fmt(d.wall)} / ${fmt(d.ideal)} = ${(d.efficiency * 100).toFixed(1)}% of ideal, ${fmt(d.handoversPerSecond)} hand-overs/s`,
    );
    row("durable ÷ --memory, contended wall", `${(d.wall / m.wall).toFixed(2)}×`, "≤ 1.10×");
  } finally {
    await durableSdk.stop();
  }

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

  // Issue 13's example: 30 workers, a fake LLM API's requests and tokens per window, through
  // one resource's rate limits.
  const llm = await llmThroughput(server.url, quick);
  row(
    `LLM example: 30 workers, ${llm.limits.rpm} requests and ${fmt(llm.limits.tpm)} tokens per ${llm.limits.window} ms (429s; share of the most the API allows)`,
    `${llm.limited} 429s; ${llm.served} served in ${(llm.span / 1000).toFixed(1)} s = ${(llm.share * 100).toFixed(1)}%`,
    "0; ≥ 95%",
  );
} finally {
  await server.stop();
}

const cpu = os.cpus();
console.log(
  `\nmachine: ${cpu[0]?.model ?? "?"} × ${cpu.length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}; engine: medians of ${RUNS} runs; HTTP: of ${quick ? 1 : 3}`,
);
console.log("\n| measure | value | goal |\n| --- | --- | --- |");
for (const [w, v, g] of rows) console.log(`| ${w} | ${v} | ${g} |`);
