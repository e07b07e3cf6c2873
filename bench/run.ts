import os from "node:os";
import { bytesPerHeldLock, cyclesPerSecond, handoversPerSecond } from "./engine.js";
import { httpCycleLatencies, httpCyclesPerSecond, spawnServer } from "./http.js";

/**
 * `pnpm bench`: the server's numbers. Each figure is the median of RUNS runs; machines are
 * shared and noisy, so compare figures from one run, not across runs.
 */
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const quick = process.env.BENCH_QUICK === "1"; // CI: small sizes, just proves the benchmark runs

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]!;
};
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const repeat = async <T>(f: () => T | Promise<T>, runs = RUNS) => {
  const out: T[] = [];
  for (let i = 0; i < runs; i++) out.push(await f());
  return out;
};

const rows: Array<[string, string, string]> = [];
const row = (what: string, value: string, goal = "") => {
  rows.push([what, value, goal]);
  console.log(`${what}: ${value}${goal ? `  (goal ${goal})` : ""}`);
};

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

const server = await spawnServer();
try {
  const ms = quick ? 500 : 3_000;
  await httpCyclesPerSecond(server.url, 8, 300); // warm up the server's JIT
  for (const workers of [1, 16, 64]) {
    row(
      `HTTP acquire+release, ${workers} concurrent clients (cycles/s)`,
      fmt(median(await repeat(() => httpCyclesPerSecond(server.url, workers, ms), quick ? 1 : 3))),
    );
  }
  const lat = await httpCycleLatencies(server.url, quick ? 200 : 2_000);
  row(
    "HTTP acquire+release latency, one client (p50 / p99 ms)",
    `${median(lat).toFixed(3)} / ${pct(lat, 0.99).toFixed(3)}`,
  );
} finally {
  await server.stop();
}

console.log(
  `\nmachine: ${os.cpus()[0]?.model ?? "?"} × ${os.cpus().length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}; medians of ${RUNS} runs (HTTP: 3)`,
);
console.log("\n| measure | value | goal |\n| --- | --- | --- |");
for (const [w, v, g] of rows) console.log(`| ${w} | ${v} | ${g} |`);
