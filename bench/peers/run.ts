/**
 * `pnpm bench:peers`: RateQueue against the locks people use today, measured in one run on this
 * machine, written to bench/RESULTS.md. PEERS_QUICK=1 runs small sizes (CI: it keeps working).
 * Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth);
 * REDIS_URL / PG_URL override. Start them with the commands in the README if they do not answer.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnServer } from "../http.js";
import {
  advisoryPeer,
  etcdPeer,
  type Peer,
  rateQueuePeer,
  redisSemaphorePeer,
  redlockPeer,
} from "./peers.js";

const quick = process.env.PEERS_QUICK === "1";
const HOLDER = fileURLToPath(new URL("./holder.ts", import.meta.url));
const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const pct = (xs: number[], p: number) =>
  xs.length ? sorted(xs)[Math.min(xs.length - 1, Math.floor(xs.length * p))]! : Number.NaN;
const median = (xs: number[]) => pct(xs, 0.5);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function spin(ms: number) {
  const until = performance.now() + ms;
  while (performance.now() < until) {}
}
const version = (pkg: string) =>
  JSON.parse(
    readFileSync(new URL(`../../node_modules/${pkg}/package.json`, import.meta.url), "utf8"),
  ).version as string;
let run = 0;
const uniq = (s: string) => `${s}-${process.pid}-${run++}`;

/** 1. Uncontended acquire + release, sequential: latencies in ms. */
async function uncontended(peer: Peer, n: number) {
  const w = await peer.worker();
  const key = uniq("uncontended");
  for (let i = 0; i < Math.min(200, n); i++) await (await w.lock(key))(); // warm-up
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await (await w.lock(key))();
    out.push(performance.now() - t);
  }
  await w.close();
  return { p50: median(out), p99: pct(out, 0.99) };
}

/** 2. One lock, `workers` × `turns` × `workMs`, with `gapMs` of other work between a worker's turns. */
async function contended(
  peer: Peer,
  workers: number,
  turns: number,
  workMs: number,
  gapMs: number,
) {
  const ws = await Promise.all(Array.from({ length: workers }, () => peer.worker()));
  const key = uniq("contended");
  const waits: number[] = [];
  const order: number[] = [];
  let fifo = 0;
  const waitingSince = new Map<number, number>();
  const t0 = performance.now();
  await Promise.all(
    ws.map(async (w, id) => {
      for (let t = 0; t < turns; t++) {
        const asked = performance.now();
        waitingSince.set(id, asked);
        const release = await w.lock(key);
        const got = performance.now();
        waitingSince.delete(id);
        // FIFO: was the longest-waiting worker served?
        if ([...waitingSince.values()].every((since) => since >= asked)) fifo++;
        waits.push(got - asked);
        order.push(id);
        spin(workMs);
        await release();
        if (gapMs) await sleep(gapMs);
      }
    }),
  );
  const wall = performance.now() - t0;
  await Promise.all(ws.map((w) => w.close()));
  let same = 0;
  for (let i = 1; i < order.length; i++) if (order[i] === order[i - 1]) same++;
  const grants = workers * turns;
  return {
    wall,
    handoversPerSecond: grants / (wall / 1000),
    waitP50: median(waits),
    waitP99: pct(waits, 0.99),
    efficiency: (grants * workMs) / wall,
    sameWorker: same / (grants - 1),
    fifo: fifo / grants,
  };
}

/** 3. `n` distinct locks taken at once by `n` callers: locks per second. */
async function distinct(peer: Peer, n: number, connections: number) {
  const ws = await Promise.all(Array.from({ length: connections }, () => peer.worker()));
  const base = uniq("distinct");
  const t0 = performance.now();
  let next = 0;
  // `connections` workers share the n callers (advisory locks need a session per holder).
  await Promise.all(
    ws.map(async (w) => {
      for (let i = next++; i < n; i = next++) await (await w.lock(`${base}-${i}`))();
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(ws.map((w) => w.close()));
  return n / seconds;
}

/** 4. A holder process killed with SIGKILL: ms until the next waiter holds the lock. */
async function killedHolder(peer: Peer, url: string, kills: number) {
  const out: number[] = [];
  const w = await peer.worker();
  for (let k = 0; k < kills; k++) {
    const key = uniq("killed");
    const child = spawn(process.execPath, ["--import", "tsx", HOLDER, peer.name, key, url], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve) =>
      child.stdout
        .setEncoding("utf8")
        .on("data", (d: string) => d.includes("holding") && resolve()),
    );
    const next = w.lock(key);
    await sleep(50); // the waiter is in line (or spinning)
    const killedAt = performance.now();
    child.kill("SIGKILL");
    const release = await next;
    out.push(performance.now() - killedAt);
    await release();
  }
  await w.close();
  return { median: median(out), max: Math.max(...out) };
}

/** 5. RateQueue only: `n` waiters on one lock — server memory, and the time to drain them. */
async function manyWaiters(url: string, pid: number, n: number) {
  const rss = () =>
    Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;
  const peer = rateQueuePeer(url, n + 100);
  const w = await peer.worker();
  const key = uniq("many");
  const release = await w.lock(key);
  const before = rss();
  let done = 0;
  const waiters = Array.from({ length: n }, async () => {
    await (await w.lock(key))();
    done++;
  });
  const api = (path: string) =>
    fetch(url + path, { headers: { authorization: "Bearer bench" } }).then((r) => r.json());
  while ((await api(`/v1/resources/${key}`)).queued < n) await sleep(50);
  const queuedRss = rss();
  const t0 = performance.now();
  await release();
  await Promise.all(waiters);
  return {
    bytesPerWaiter: (queuedRss - before) / n,
    drainSeconds: (performance.now() - t0) / 1000,
    done,
  };
}

/** A throwaway single-member etcd on 127.0.0.1:2379, if the binary is installed (or ETCD_URL is set). */
async function startEtcd(): Promise<{ stop: () => void } | undefined> {
  if (process.env.ETCD_URL) return { stop: () => {} };
  const dir = mkdtempSync(join(os.tmpdir(), "ratequeue-etcd-"));
  const args = ["--data-dir", dir, "--listen-client-urls", "http://127.0.0.1:2379"];
  args.push(
    "--advertise-client-urls",
    "http://127.0.0.1:2379",
    "--listen-peer-urls",
    "http://127.0.0.1:2380",
  );
  const child = spawn("etcd", args, { stdio: "ignore" });
  const started = await new Promise<boolean>((resolve) => {
    child.once("error", () => resolve(false));
    const deadline = Date.now() + 10_000;
    const poll = async () => {
      try {
        if ((await fetch("http://127.0.0.1:2379/health")).ok) return resolve(true);
      } catch {}
      if (Date.now() > deadline) return resolve(false);
      setTimeout(poll, 100);
    };
    void poll();
  });
  if (!started) {
    child.kill();
    return undefined;
  }
  return { stop: () => child.kill() };
}

// --- the run ------------------------------------------------------------------------------------
const server = await spawnServer();
const log = (s: string) => console.log(s);
const etcd = await startEtcd();
const peers: Peer[] = [
  rateQueuePeer(server.url),
  redlockPeer(version("redlock")),
  redisSemaphorePeer(version("redis-semaphore")),
  advisoryPeer(version("pg")),
  ...(etcd ? [etcdPeer(version("etcd3"))] : []),
];
if (!etcd) log("etcd: skipped — no `etcd` binary (apt-get install etcd-server) and no ETCD_URL");
const results: Record<string, Record<string, number | string>> = {};
const size = quick
  ? { n1: 200, turns: 5, distinct: 100, kills: 1, waiters: 500 }
  : { n1: 2_000, turns: 50, distinct: 1_000, kills: 5, waiters: 10_000 };

for (const peer of peers) {
  const r: Record<string, number | string> = {};
  results[peer.name] = r;
  log(`== ${peer.name}: ${peer.settings}`);
  // Warm up the client library (and RateQueue's server) before measuring: a cold JIT would
  // penalise whichever peer runs first.
  await uncontended(peer, size.n1 / 2);
  await contended(peer, 20, Math.max(2, size.turns / 5), 1, 0);
  await distinct(
    peer,
    size.distinct / 5,
    peer.name.startsWith("PostgreSQL") ? 50 : size.distinct / 5,
  );
  const u = await uncontended(peer, size.n1);
  Object.assign(r, { u50: u.p50, u99: u.p99 });
  log(`  1. uncontended p50 ${u.p50.toFixed(3)} ms, p99 ${u.p99.toFixed(3)} ms`);
  for (const gap of [0, 5]) {
    const c = await contended(peer, 20, size.turns, 1, gap);
    const k = gap ? "g" : "c";
    Object.assign(r, {
      [`${k}wall`]: c.wall,
      [`${k}hps`]: c.handoversPerSecond,
      [`${k}w50`]: c.waitP50,
      [`${k}w99`]: c.waitP99,
      [`${k}eff`]: c.efficiency,
      [`${k}same`]: c.sameWorker,
      [`${k}fifo`]: c.fifo,
    });
    log(
      `  2. contended${gap ? " (+5 ms between turns)" : ""}: wall ${c.wall.toFixed(0)} ms, ${c.handoversPerSecond.toFixed(0)} hand-overs/s, wait p50 ${c.waitP50.toFixed(1)} / p99 ${c.waitP99.toFixed(1)} ms, efficiency ${(c.efficiency * 100).toFixed(0)}%, back to same worker ${(c.sameWorker * 100).toFixed(0)}%, FIFO ${(c.fifo * 100).toFixed(0)}%`,
    );
  }
  const d = await distinct(
    peer,
    size.distinct,
    peer.name.startsWith("PostgreSQL") ? 50 : size.distinct,
  );
  r.distinct = d;
  log(`  3. ${size.distinct} distinct locks at once: ${d.toFixed(0)} locks/s`);
  const k = await killedHolder(
    peer,
    server.url,
    // Kills cost a TTL each for the peers that have one (etcd: 30 s), so those get fewer.
    peer.name === "RateQueue"
      ? size.kills * 4
      : peer.name === "etcd lock"
        ? Math.min(2, size.kills)
        : size.kills,
  );
  Object.assign(r, { k50: k.median, kmax: k.max });
  log(
    `  4. holder SIGKILLed → next holds: median ${k.median.toFixed(0)} ms, max ${k.max.toFixed(0)} ms`,
  );
  await peer.close();
}
const many = await manyWaiters(server.url, server.pid, size.waiters);
log(
  `  5. RateQueue, ${size.waiters} waiters on one lock: ${many.bytesPerWaiter.toFixed(0)} bytes each on the server, drained in ${many.drainSeconds.toFixed(2)} s`,
);
await server.stop();
etcd?.stop();

// --- the table ----------------------------------------------------------------------------------
const rq = results.RateQueue!;
const names = peers.map((p) => p.name);
const fmt = (v: number | string | undefined, unit: string, digits = 0) =>
  typeof v === "number" && Number.isFinite(v) ? `${v.toFixed(digits)}${unit}` : String(v ?? "—");
const ratio = (name: string, key: string) => {
  const a = results[name]![key];
  const b = rq[key];
  return name === "RateQueue" || typeof a !== "number" || typeof b !== "number" || b === 0
    ? ""
    : ` (${(a / b).toFixed(2)}×)`;
};
// [label, key, digits, unit, better]: `better` says which way wins (for the "behind" list).
const rows: Array<[string, string, number, string, "lower" | "higher" | ""]> = [
  ["1. uncontended p50", "u50", 3, " ms", "lower"],
  ["1. uncontended p99", "u99", 3, " ms", "lower"],
  ["2. 20×50×1 ms: wall", "cwall", 0, " ms", "lower"],
  ["2. hand-overs/s", "chps", 0, "", "higher"],
  ["2. wait p50", "cw50", 1, " ms", ""],
  ["2. wait p99", "cw99", 1, " ms", "lower"],
  ["2. efficiency vs ideal", "ceff", 2, "", "higher"],
  ["2. hand-overs back to the same worker", "csame", 2, "", "lower"],
  ["2. grants to the longest waiter (FIFO)", "cfifo", 2, "", "higher"],
  ["2b. +5 ms between turns: wall", "gwall", 0, " ms", "lower"],
  ["2b. hand-overs/s", "ghps", 0, "", "higher"],
  ["2b. wait p99", "gw99", 1, " ms", "lower"],
  ["2b. back to the same worker", "gsame", 2, "", "lower"],
  ["3. distinct locks at once, locks/s", "distinct", 0, "", "higher"],
  ["4. SIGKILLed holder → next holds, median", "k50", 0, " ms", "lower"],
  ["4. … max", "kmax", 0, " ms", "lower"],
];
const cpu = os.cpus();
const lines = [
  "# RateQueue against the locks people use today",
  "",
  `Generated by \`pnpm bench:peers\`${quick ? " (PEERS_QUICK=1: small sizes, figures not meaningful)" : ""} on ${new Date().toISOString().slice(0, 10)}: ${cpu[0]?.model ?? "?"} × ${cpu.length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, Redis and PostgreSQL on the same machine, all clients in one process. Ratios are peer ÷ RateQueue (for times, above 1 means RateQueue is faster; for rates, below 1).`,
  "",
  ...peers.map((p) => `- **${p.name}**: ${p.settings}`),
  "",
  `| measure | ${names.join(" | ")} |`,
  `| --- |${names.map(() => " --- |").join("")}`,
  ...rows.map(
    ([label, key, d, unit]) =>
      `| ${label} | ${names.map((n) => fmt(results[n]![key], unit, d) + ratio(n, key)).join(" | ")} |`,
  ),
  "",
  "Where RateQueue is behind in this run (better value, and by how much):",
  "",
  ...rows.flatMap(([label, key, , , better]) => {
    const mine = rq[key];
    if (!better || typeof mine !== "number") return [];
    const ahead = names.filter((n) => {
      const v = results[n]![key];
      return (
        n !== "RateQueue" && typeof v === "number" && (better === "lower" ? v < mine : v > mine)
      );
    });
    return ahead.length
      ? [
          `- ${label}: ${ahead.map((n) => `${n} (${(Number(results[n]![key]) / mine).toFixed(2)}×)`).join(", ")}`,
        ]
      : [];
  }),
  "",
  `5. ${size.waiters} waiters on one lock (RateQueue only — the Redis locks keep no queue, their waiters poll; advisory locks need a connection per waiter, and PostgreSQL allows 100): ${many.bytesPerWaiter.toFixed(0)} bytes of server memory per waiter (RSS), drained in ${many.drainSeconds.toFixed(2)} s.`,
  "",
];
// PEERS_OUT: where to write the table (CI's quick run writes nowhere, keeping the real results).
writeFileSync(process.env.PEERS_OUT ?? new URL("../RESULTS.md", import.meta.url), lines.join("\n"));
console.log(`\n${lines.join("\n")}`);
