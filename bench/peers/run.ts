/**
 * `pnpm bench:peers`: RateQueue against the locks people use today, measured in one run on this
 * machine, written to bench/RESULTS.md. PEERS_QUICK=1 runs small sizes (CI: it keeps working).
 * Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth);
 * REDIS_URL / PG_URL override. Start them with the commands in the README if they do not answer.
 */
import { spawn } from "node:child_process";
import { setMaxListeners } from "node:events";
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { createRateQueue, type RateQueue } from "../../packages/sdk/src/node.js";
import { spawnServer } from "../http.js";
import {
  advisoryPeer,
  etcdPeer,
  type Peer,
  PG_URL,
  REPLICAS,
  rateQueuePeer,
  redisSemaphorePeer,
  redlockPeer,
} from "./peers.js";

const quick = process.env.PEERS_QUICK === "1";
const HOLDER = fileURLToPath(new URL("./holder.ts", import.meta.url));
const SERVER_CLI = fileURLToPath(new URL("../../packages/server/src/cli.ts", import.meta.url));
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

// --- deadlines ----------------------------------------------------------------------------------
// Every wait of the run is bounded (the bound grows with the work size): a scenario that hangs
// fails the run, naming itself, instead of stalling it (scenario 5 once hung for 5 minutes).

/**
 * `promise`, or a rejection once `ms` have passed: `what` names the scenario and peer, `doing`
 * the wait (a function: evaluated then, to report progress).
 */
function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  doing: string | (() => string),
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const text = typeof doing === "function" ? doing() : doing;
      reject(new Error(`${what}: no result within ${Math.round(ms)} ms — ${text}`));
    }, ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Polls `check` every `every` ms until it holds; rejects like `withDeadline` after `ms`. */
async function until(
  check: () => Promise<boolean>,
  ms: number,
  what: string,
  doing: string | (() => string),
  every = 20,
) {
  const deadline = performance.now() + ms;
  for (;;) {
    if (await withDeadline(check(), Math.max(1, deadline - performance.now()), what, doing)) return;
    if (performance.now() > deadline) {
      const text = typeof doing === "function" ? doing() : doing;
      throw new Error(`${what}: no result within ${ms} ms — ${text}`);
    }
    await sleep(every);
  }
}

/**
 * SIGKILLs the processes this run started that are still alive (holders, RateQueue servers,
 * etcd), found as this process's children by their command line: a failed run leaves none
 * behind, including a server whose start never answered.
 */
function killChildren() {
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== process.pid) continue;
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (argv.includes(HOLDER) || argv.includes(SERVER_CLI) || argv[0]?.endsWith("etcd")) {
        process.kill(Number(pid), "SIGKILL");
      }
    } catch {
      // It exited meanwhile.
    }
  }
}

/** A process holding `key` with `peer` until it is killed; `holding` resolves once it holds. */
function spawnHolder(peerName: string, key: string, url: string) {
  const child = spawn(process.execPath, ["--import", "tsx", HOLDER, peerName, key, url], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const holding = new Promise<void>((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (d: string) => d.includes("holding") && resolve());
    child.once("error", reject);
    child.once("exit", (code, signal) =>
      reject(new Error(`the holder process exited (${signal ?? code}) before it held ${key}`)),
    );
  });
  return { child, holding };
}

/**
 * A holder process that takes and releases `key` on command (holder.ts, `relay`): `take()`
 * resolves once it holds, `release()` with the time it released (timeOrigin-based ms).
 */
function spawnRelay(peerName: string, key: string, url: string) {
  const child = spawn(process.execPath, ["--import", "tsx", HOLDER, peerName, key, url, "relay"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  let exited: Error | undefined;
  createInterface({ input: child.stdout! }).on("line", (line) => {
    lines.push(line);
    wake?.();
  });
  child.once("exit", (code, signal) => {
    exited = new Error(`the holder process exited (${signal ?? code})`);
    wake?.();
  });
  const next = async (prefix: string) => {
    for (;;) {
      const i = lines.findIndex((l) => l.startsWith(prefix));
      if (i >= 0) return lines.splice(i, 1)[0]!;
      if (exited) throw exited;
      await new Promise<void>((r) => {
        wake = r;
      });
    }
  };
  return {
    child,
    take: async () => {
      child.stdin!.write("take\n");
      await next("holding");
    },
    release: async () => {
      child.stdin!.write("release\n");
      return Number((await next("released ")).slice("released ".length));
    },
  };
}

/**
 * 4b. Hand-over to another process: a holder process releases, and a waiter in this process
 * (in line, or polling, for 50 ms before) holds: ms from the holder's release call to the grant.
 * The first few are not counted: a new process's first releases run cold code.
 */
async function handover(peer: Peer, url: string, n: number) {
  const what = `scenario 4b (${peer.name})`;
  const out: number[] = [];
  const w = await withDeadline(peer.worker(), 10_000, what, "opening a worker");
  const key = uniq("handover");
  const holder = spawnRelay(peer.name, key, url);
  try {
    for (let i = -Math.min(5, n); i < n; i++) {
      await withDeadline(holder.take(), 30_000, what, `the holder process taking ${key}`);
      const next = w.lock(key).then((release) => ({
        release,
        at: performance.timeOrigin + performance.now(),
      }));
      await sleep(50); // the waiter is in line (or polling)
      const released = await withDeadline(holder.release(), 10_000, what, `releasing ${key}`);
      const got = await withDeadline(next, 10_000, what, `the waiter holding ${key}`);
      if (i >= 0) out.push(got.at - released);
      await withDeadline(got.release(), 10_000, what, `releasing ${key} again`);
    }
  } finally {
    holder.child.kill("SIGKILL");
  }
  await withDeadline(w.close(), 10_000, what, "closing the worker");
  return { p50: median(out), max: Math.max(...out) };
}

/** 1. Uncontended acquire + release, sequential: latencies in ms. */
function uncontended(peer: Peer, n: number, label = peer.name) {
  return withDeadline(
    (async () => {
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
    })(),
    // 30 ms a cycle: room for a loaded machine (a commit to PostgreSQL per operation, for the
    // replicas), still failing a hang.
    10_000 + 30 * (n + Math.min(200, n)),
    `scenario 1 (${label})`,
    `${n} sequential acquire + release cycles on one lock`,
  );
}

/** 2. One lock, `workers` × `turns` × `workMs`, with `gapMs` of other work between a worker's turns. */
function contended(
  peer: Peer,
  workers: number,
  turns: number,
  workMs: number,
  gapMs: number,
  label = peer.name,
) {
  return withDeadline(
    contendedRun(peer, workers, turns, workMs, gapMs),
    30_000 + workers * turns * (workMs + gapMs + 50),
    `scenario 2 (${label})`,
    `${workers} workers × ${turns} turns × ${workMs} ms (+${gapMs} ms between turns) on one lock`,
  );
}

async function contendedRun(
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
function distinct(peer: Peer, n: number, connections: number, label = peer.name) {
  return withDeadline(
    (async () => {
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
    })(),
    10_000 + 10 * n + 50 * connections,
    `scenario 3 (${label})`,
    `${n} distinct locks taken at once over ${connections} connections`,
  );
}

/** 4. A holder process killed with SIGKILL: ms until the next waiter holds the lock. */
async function killedHolder(peer: Peer, url: string, kills: number) {
  const what = `scenario 4 (${peer.name})`;
  const out: number[] = [];
  const w = await withDeadline(peer.worker(), 10_000, what, "opening a worker");
  for (let k = 0; k < kills; k++) {
    const key = uniq("killed");
    const holder = spawnHolder(peer.name, key, url);
    try {
      await withDeadline(holder.holding, 30_000, what, `a holder process taking ${key}`);
      const next = w.lock(key);
      await sleep(50); // the waiter is in line (or spinning)
      const killedAt = performance.now();
      holder.child.kill("SIGKILL");
      // The slowest peer hands over after its lease TTL (etcd: 30 s).
      const release = await withDeadline(
        next,
        60_000,
        what,
        `the next waiter holding ${key} after its holder was SIGKILLed (kill ${k + 1} of ${kills})`,
      );
      out.push(performance.now() - killedAt);
      await withDeadline(release(), 10_000, what, `releasing ${key}`);
    } finally {
      holder.child.kill("SIGKILL");
    }
  }
  await withDeadline(w.close(), 10_000, what, "closing the worker");
  return { median: median(out), max: Math.max(...out) };
}

/** RSS of process `pid`, in bytes. */
const rss = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;

/**
 * `GET /v1/resources/{name}`: the waiters in line (`queued`, which counts `away` ones too) and
 * of them `away`, or undefined when the server did not answer within 2 s (it is busy). Global
 * `fetch`, `connection: close`: no socket of its own stays open to be counted as the SDK's.
 */
async function line(url: string, name: string, apiKey = "bench") {
  let res: Response;
  let body: { queued?: unknown; away?: unknown };
  try {
    res = await fetch(`${url}/v1/resources/${encodeURIComponent(name)}`, {
      headers: { authorization: `Bearer ${apiKey}`, connection: "close" },
      signal: AbortSignal.timeout(2_000),
    });
    body = (await res.json()) as typeof body;
  } catch (error) {
    if ((error as Error).name === "TimeoutError") return undefined;
    throw error;
  }
  if (!res.ok || typeof body.queued !== "number") {
    throw new Error(`GET /v1/resources/${name}: HTTP ${res.status} ${JSON.stringify(body)}`);
  }
  return { queued: body.queued, away: typeof body.away === "number" ? body.away : 0 };
}

/** 5. RateQueue only: `n` waiters on one lock — server memory, and the time to drain them. */
async function manyWaiters(url: string, pid: number, n: number) {
  const what = "scenario 5 (RateQueue)";
  const peer = rateQueuePeer(url, n + 100);
  const w = await peer.worker();
  const key = uniq("many");
  const release = await withDeadline(w.lock(key), 10_000, what, `taking ${key}`);
  const before = rss(pid);
  let done = 0;
  // Started 1,000 per turn of the event loop: this scenario measures the server. One tick of
  // 10,000 calls blocks this process for longer than the server's grace, and the holder (this
  // process too) would rightly give its lease up (see the note on issue 8).
  const waiters: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    if (i > 0 && i % 1_000 === 0) await new Promise((r) => setImmediate(r));
    waiters.push(
      (async () => {
        await (await w.lock(key))();
        done++;
      })(),
    );
  }
  let queued = 0;
  await until(
    async () => {
      queued = (await line(url, key))?.queued ?? queued;
      return queued >= n;
    },
    10_000 + 2 * n,
    what,
    () =>
      `${n} waiters getting in line (last seen in line: ${queued}; ${done} served while the lock was held)`,
    50,
  );
  const queuedRss = rss(pid);
  const t0 = performance.now();
  await withDeadline(release(), 10_000, what, `releasing ${key}`);
  await withDeadline(
    Promise.all(waiters),
    10_000 + 5 * n,
    what,
    () => `draining ${n} waiters after the holder released (${done} served so far)`,
  );
  return {
    bytesPerWaiter: (queuedRss - before) / n,
    drainSeconds: (performance.now() - t0) / 1000,
    done,
  };
}

/**
 * Client TCP sockets this process has open to `port`: the entries of /proc/self/net/tcp{,6}
 * whose remote port is `port` (the client side; a server in this process would show `port` as
 * the local one) and whose inode is one of this process's file descriptors (the table lists the
 * whole network namespace: a holder process's sockets are not ours).
 */
function clientSockets(port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // Closed meanwhile (or the directory's own descriptor).
    }
  }
  let count = 0;
  for (const table of ["/proc/self/net/tcp", "/proc/self/net/tcp6"]) {
    let text: string;
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const row of text.split("\n").slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
      const f = row.trim().split(/\s+/);
      if (f.length < 10) continue;
      if (Number.parseInt(f[2]!.split(":")[1]!, 16) === port && inodes.has(f[9]!)) count++;
    }
  }
  return count;
}

/** Did `error` come from `signal` aborting (the SDK rejects with `signal.reason`, as `fetch`)? */
const abortedBy = (signal: AbortSignal, error: unknown) =>
  signal.aborted &&
  (error === signal.reason || ["AbortError", "TimeoutError"].includes((error as Error)?.name));

/** Waiters on `key` through `rq`, each counted by how it ended; their promises never reject. */
function crowd(rq: RateQueue, key: string, n: number, signal: AbortSignal) {
  const c = { granted: 0, aborted: 0, failed: 0, firstError: "", settled: [] as Promise<void>[] };
  for (let i = 0; i < n; i++) {
    c.settled.push(
      rq
        .acquire(key, { capacity: 1, signal }, () => void c.granted++)
        .then(
          () => {},
          (error: unknown) => {
            if (abortedBy(signal, error)) c.aborted++;
            else {
              c.failed++;
              c.firstError ||= String((error as Error)?.message ?? error);
            }
          },
        ),
    );
  }
  return c;
}

/**
 * 6. RateQueue only: `n` concurrent `acquire` calls on one lock, through ONE SDK client (its
 * defaults), in this process, while another process holds the lock; meanwhile this process runs
 * a 2 ms critical section `cycles` times on another lock. Measured: (a) time until all `n` are
 * in the server's line; (b) client sockets open to the server; (c) server memory per waiter
 * (the server is its own process: its VmRSS); (d) the side critical section's latency.
 * (a) and (d) are bounded measurements — a figure past its bound is reported as such, it is
 * what a client that cannot keep `n` waiters looks like; anything else that hangs fails the run.
 */
async function manyInOneProcess(label: string, args: string[], n: number, cycles: number) {
  const what = `scenario 6 (RateQueue, ${label})`;
  const lineBound = 5_000 + n;
  const sideBound = 5_000 + 100 * cycles;
  const server = await withDeadline(
    spawnServer(args),
    30_000,
    what,
    `starting the server (${args.join(" ")})`,
  );
  const port = Number(new URL(server.url).port);
  const rq = createRateQueue({ apiKey: "bench", baseUrl: server.url });
  const key = uniq("crowd");
  const side = uniq("side");
  const holder = spawnHolder("RateQueue", key, server.url);
  await withDeadline(holder.holding, 30_000, what, `a holder process taking ${key}`);

  // Warm-up (server and client code paths), so the "before" RSS is not the first requests' JIT.
  const sideCycle = (signal?: AbortSignal) => rq.acquire(side, { signal }, () => spin(2));
  await withDeadline(
    (async () => {
      for (let i = 0; i < 20; i++) await sideCycle();
    })(),
    20_000,
    what,
    "warm-up: 20 side cycles",
  );
  const warm = new AbortController();
  setMaxListeners(0, warm.signal); // one signal for many calls, by design
  const warmCrowd = crowd(rq, key, 50, warm.signal);
  await until(
    async () => ((await line(server.url, key))?.queued ?? 0) >= 50,
    5_000,
    what,
    "warm-up: 50 waiters getting in line",
  ).catch(() => {}); // a client that cannot get 50 in line shows it below
  warm.abort();
  await withDeadline(
    Promise.all(warmCrowd.settled),
    10_000,
    what,
    "warm-up: 50 aborted waiters settling",
  );
  await until(
    async () => (await line(server.url, key))?.queued === 0,
    10_000,
    what,
    "warm-up: the aborted waiters leaving the line",
  );
  const before = rss(server.pid);

  // (a), (b), (c): the waiters get in line.
  const stop = new AbortController();
  setMaxListeners(0, stop.signal);
  const t0 = performance.now();
  const c = crowd(rq, key, n, stop.signal);
  let inLine = 0;
  let away = 0;
  let peak = 0;
  let allInLine: number | undefined;
  let sockets = 0;
  for (;;) {
    // Sampled before the status request, whose own connection has closed by then.
    sockets = Math.max(sockets, clientSockets(port));
    const l = await line(server.url, key);
    const at = performance.now() - t0;
    if (l) ({ queued: inLine, away } = l);
    peak = Math.max(peak, inLine);
    if (inLine >= n) {
      allInLine = at;
      break;
    }
    if (at > lineBound) break;
    await sleep(20);
  }
  const queuedRss = rss(server.pid);
  const memoryOver = inLine;

  // (d): the side critical section, while the waiters wait. A cycle still running at the bound
  // is cut there (its signal aborts) and counts as a lower bound. The cut cycle is not awaited
  // here: an aborted request still queued in the client's connection pool may only settle once
  // a connection frees up. It must settle with the waiters, below, within that bound.
  const samples: Array<{ ms: number; cut: boolean }> = [];
  let cutCycle: Promise<unknown> = Promise.resolve();
  const sideEnd = performance.now() + sideBound;
  for (let i = 0; i < cycles; i++) {
    sockets = Math.max(sockets, clientSockets(port));
    const left = sideEnd - performance.now();
    if (left <= 0) break;
    const cut = AbortSignal.timeout(Math.ceil(left));
    const t = performance.now();
    const cycle = sideCycle(cut).then(
      () => "done" as const,
      (error: unknown) => ({ error }),
    );
    const aborted = new Promise<"cut">((resolve) =>
      cut.addEventListener("abort", () => resolve("cut"), { once: true }),
    );
    const outcome = await Promise.race([cycle, aborted]);
    if (outcome === "done") {
      samples.push({ ms: performance.now() - t, cut: false });
      continue;
    }
    if (outcome !== "cut" && !abortedBy(cut, outcome.error)) throw outcome.error;
    samples.push({ ms: left, cut: true });
    cutCycle = cycle;
    break;
  }
  sockets = Math.max(sockets, clientSockets(port));
  const grantedWhileHeld = c.granted;

  // Done: the waiters are aborted (the holder is then killed: none of them is served), bounded.
  stop.abort();
  holder.child.kill("SIGKILL");
  await withDeadline(
    Promise.all([...c.settled, cutCycle]),
    10_000 + 2 * n,
    what,
    () =>
      `${n} waiters (and a cut side cycle) settling after their signals aborted (${c.aborted} aborted, ${c.granted} served, ${c.failed} failed so far)`,
  );
  await withDeadline(server.stop(), 10_000, what, "stopping the server");

  const ms = samples.map((s) => s.ms);
  const sidePct = (p: number) => {
    const v = pct(ms, p);
    // A percentile that lands on a cut cycle is only a lower bound.
    return { ms: v, atLeast: samples.some((s) => s.cut && s.ms <= v) };
  };
  return {
    n,
    lineBound,
    allInLine,
    peak,
    away,
    sockets,
    memoryOver,
    bytesPerWaiter: memoryOver ? (queuedRss - before) / memoryOver : Number.NaN,
    cycles,
    sideBound,
    sideDone: samples.filter((s) => !s.cut).length,
    sideCut: samples.some((s) => s.cut),
    sideP50: sidePct(0.5),
    sideP99: sidePct(0.99),
    grantedWhileHeld,
    failed: c.failed,
    firstError: c.firstError,
  };
}
type ManyInOne = Awaited<ReturnType<typeof manyInOneProcess>>;

/** Scenario 6's figures as text, each with its goal (printed, not asserted) and whether it is met. */
function manyInOneFigures(m: ManyInOne) {
  const goal = (met: boolean, text: string) => `(goal ${text}: ${met ? "met" : "missed"})`;
  const side = (p: { ms: number; atLeast: boolean }) =>
    Number.isFinite(p.ms) ? `${p.atLeast ? "≥ " : ""}${p.ms.toFixed(1)} ms` : "—";
  const notes = [
    m.failed ? `${m.failed} waiters failed before the abort (first: ${m.firstError})` : "",
    m.grantedWhileHeld ? `${m.grantedWhileHeld} waiters served while the lock was held` : "",
    m.away ? `${m.away} of those in line were away` : "",
  ].filter(Boolean);
  return {
    line: `${
      m.allInLine === undefined
        ? `not all within ${(m.lineBound / 1000).toFixed(1)} s (at most ${m.peak} of ${m.n})`
        : `${(m.allInLine / 1000).toFixed(2)} s`
    } ${goal(m.allInLine !== undefined && m.allInLine <= 2_000, "≤ 2 s")}`,
    sockets: `${m.sockets} ${goal(m.sockets <= 4, "≤ 4")}`,
    memory: Number.isFinite(m.bytesPerWaiter)
      ? `${m.bytesPerWaiter.toFixed(0)} B${
          m.memoryOver < m.n
            ? `, over the ${m.memoryOver} in line (goal ≤ 2 KB: not measured, not all in line)`
            : m.bytesPerWaiter < 0
              ? " (goal ≤ 2 KB: not measured, the RSS fell: noise larger than the waiters)"
              : ` ${goal(m.bytesPerWaiter <= 2_048, "≤ 2 KB")}`
        }`
      : "— (none in line)",
    side50: side(m.sideP50),
    side99: `${side(m.sideP99)}${
      m.sideDone < m.cycles
        ? ` (${m.sideDone} of ${m.cycles} cycles done${m.sideCut ? `, the last cut at the ${m.sideBound} ms bound` : ""})`
        : ""
    } ${goal(m.sideDone === m.cycles && m.sideP99.ms <= 10, "≤ 10 ms")}`,
    notes: notes.join("; "),
  };
}

function describeManyInOne(m: ManyInOne) {
  const f = manyInOneFigures(m);
  return `${m.n} waiters through one client — in line: ${f.line}; client sockets: ${f.sockets}; server memory per waiter: ${f.memory}; side 2 ms section p50 ${f.side50}, p99 ${f.side99}${f.notes ? `; ${f.notes}` : ""}`;
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

/** Schemas of replicas this run made, dropped at the end (and by `fail`). */
const schemas = new Set<string>();

async function dropSchema(schema: string) {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    schemas.delete(schema);
  } finally {
    await client.end();
  }
}

/** Of replicas `urls`, those that lead now (`GET /v1/replica` is 200). */
async function leading(urls: string[]) {
  const out: string[] = [];
  for (const url of urls) {
    const res = await fetch(`${url}/v1/replica`, {
      headers: { connection: "close" },
      signal: AbortSignal.timeout(2_000),
    }).catch(() => undefined);
    await res?.body?.cancel();
    if (res?.status === 200) out.push(url);
  }
  return out;
}

/**
 * `n` RateQueue servers, each its own process, as replicas on a fresh PostgreSQL schema: their
 * URLs (in start order), the leader's, `leaderNow` (the leader at the time: a leader that could
 * not prove its lock within --grace has stepped down), and a stop that ends them all and drops
 * the schema.
 */
async function startReplicas(n: number) {
  const schema = `ratequeue_bench_${process.pid}_${Date.now()}`;
  schemas.add(schema);
  const servers = await Promise.all(
    Array.from({ length: n }, () =>
      withDeadline(
        spawnServer(["--store", PG_URL, "--pg-schema", schema]),
        30_000,
        "setup",
        `starting a RateQueue replica (schema ${schema})`,
      ),
    ),
  );
  const urls = servers.map((s) => s.url);
  // Each new leader bumps the schema's epoch: how many terms there were.
  const epoch = async () => {
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    try {
      const { rows } = await client.query<{ epoch: string }>(
        `SELECT epoch FROM "${schema}".leader`,
      );
      return Number(rows[0]?.epoch ?? 0);
    } finally {
      await client.end();
    }
  };
  // A leader, and the same one (the same term) for a second: replicas starting together on a
  // loaded machine have handed the lead round a few times (a leader steps down when PostgreSQL
  // has not answered its probe within --grace, and a starving process's probes are late).
  let leader = "";
  let term = 0;
  let since = 0;
  await until(
    async () => {
      const now = await leading(urls);
      const e = await epoch();
      const one = now.length === 1 ? now[0]! : "";
      if (one === "" || one !== leader || e !== term) {
        leader = one;
        term = e;
        since = performance.now();
        return false;
      }
      return performance.now() - since >= 1_000;
    },
    30_000,
    "setup",
    () =>
      `one of the ${n} replicas leading for a second (GET /v1/replica; now: ${leader || "none"}, term ${term})`,
    100,
  );
  return {
    urls,
    leader,
    epoch,
    /** Its process: with SERVER_NODE_ARGS="--cpu-prof …", the profile to read (pid in its name). */
    leaderPid: servers[urls.indexOf(leader)]!.pid,
    schema,
    leaderNow: async () => (await leading(urls)).join(", ") || "none",
    /** Followers first (no take-over), then the leader; then the schema goes. */
    stop: async () => {
      const now = await leading(urls);
      const followers = servers.filter((s) => !now.includes(s.url));
      await Promise.all(followers.map((s) => s.stop()));
      await Promise.all(servers.filter((s) => !followers.includes(s)).map((s) => s.stop()));
      await dropSchema(schema);
    },
  };
}

/**
 * What a durable commit costs on this PostgreSQL now: `n` single-row upserts, each its own
 * transaction (synchronous_commit as the server has it), into a table of `schema`; ms.
 */
async function commitRoundTrip(schema: string, n: number) {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    const table = `"${schema}".bench_commit`;
    await client.query(`CREATE TABLE ${table} (k int PRIMARY KEY, v int NOT NULL)`);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await client.query(
        `INSERT INTO ${table} VALUES (1, $1) ON CONFLICT (k) DO UPDATE SET v = excluded.v`,
        [i],
      );
      out.push(performance.now() - t);
    }
    await client.query(`DROP TABLE ${table}`);
    return { p50: median(out), p99: pct(out, 0.99) };
  } finally {
    await client.end();
  }
}

// --- the run ------------------------------------------------------------------------------------
/** A failed run (a deadline passed, a peer threw): say what, leave no process behind, exit 1. */
let failed = false;
function fail(error: unknown): void {
  if (failed) return;
  failed = true;
  console.error(`\nbench:peers failed: ${error instanceof Error ? error.message : String(error)}`);
  if (error instanceof Error && error.stack) console.error(error.stack);
  killChildren();
  // The replicas' schemas go too (bounded: PostgreSQL may be what failed).
  void withDeadline(
    Promise.allSettled([...schemas].map(dropSchema)),
    5_000,
    "teardown",
    "dropping the replicas' schemas",
  )
    .catch(() => {})
    .finally(() => process.exit(1));
}
// A rejected top-level await arrives as an uncaught exception; a stray rejection is a bug too.
process.on("uncaughtException", fail);
process.on("unhandledRejection", fail);

// The machine may be shared: its load (1-minute average) at the start and end goes in the header.
const loadAtStart = os.loadavg()[0]!;
const server = await withDeadline(spawnServer(), 30_000, "setup", "starting the RateQueue server");
const log = (s: string) => console.log(s);
const etcd = await startEtcd();
/**
 * The peers, each made when its turn comes: `url` is what its holder processes are given
 * (RateQueue's server; the replicas' URLs, comma-separated), `stop` ends what it started and
 * says what the table's readers should know of the run (or "").
 */
interface Entrant {
  peer: Peer;
  url: string;
  stop?: () => Promise<string>;
}
/** Said under the table, of the peers' runs. */
const notes: string[] = [];
const p50p99 = (x: { p50: number; p99: number }) =>
  `p50 ${x.p50.toFixed(2)} ms, p99 ${x.p99.toFixed(2)} ms`;
const entrants: Array<() => Promise<Entrant>> = [
  async () => ({ peer: rateQueuePeer(server.url), url: server.url }),
  async () => {
    const replicas = await startReplicas(3);
    const commits = quick ? 50 : 500;
    const term = await replicas.epoch();
    const before = await withDeadline(
      commitRoundTrip(replicas.schema, commits),
      30_000,
      "setup",
      "timing PostgreSQL's commits",
    );
    log(
      `  replicas ${replicas.urls.join(", ")}: the leader is ${replicas.leader} (pid ${replicas.leaderPid}); a durable commit on PostgreSQL now: ${p50p99(before)}`,
    );
    return {
      // All three: the SDK finds the leader (the others answer 503), and follows a new one.
      peer: rateQueuePeer(replicas.urls, 256, true),
      url: replicas.urls.join(","),
      stop: async () => {
        const after = await commitRoundTrip(replicas.schema, commits);
        const leader = await replicas.leaderNow();
        const terms = (await replicas.epoch()) - term;
        await replicas.stop();
        return `${REPLICAS}: a durable commit on this PostgreSQL (${commits} single-row upserts, each its own transaction) took ${p50p99(before)} before its scenarios and ${p50p99(after)} after; a hand-over of scenario 2 makes one (the release, the grant and the next request go in one commit), but the grant leaves before it; an uncontended acquire + release waits for two. ${
          terms === 0
            ? "The same replica led throughout."
            : `The lead changed hands ${terms} time${terms === 1 ? "" : "s"} during the run (${replicas.leader} led at the start, ${leader} at the end): a leader steps down when it has not proven its lock within --grace; the SDK, given every URL, followed.`
        }`;
      },
    };
  },
  async () => ({ peer: redlockPeer(version("redlock")), url: "" }),
  async () => ({ peer: redisSemaphorePeer(version("redis-semaphore")), url: "" }),
  async () => ({ peer: advisoryPeer(version("pg")), url: "" }),
  ...(etcd ? [async () => ({ peer: etcdPeer(version("etcd3")), url: "" })] : []),
];
const peers: Peer[] = [];
if (!etcd) log("etcd: skipped — no `etcd` binary (apt-get install etcd-server) and no ETCD_URL");
const results: Record<string, Record<string, number | string>> = {};
const size = quick
  ? { n1: 200, turns: 5, distinct: 100, kills: 1, handovers: 3, waiters: 500, sideCycles: 10 }
  : {
      n1: 2_000,
      turns: 50,
      distinct: 1_000,
      kills: 5,
      handovers: 30,
      waiters: 10_000,
      sideCycles: 50,
    };

for (const enter of entrants) {
  const { peer, url, stop } = await enter();
  peers.push(peer);
  const r: Record<string, number | string> = {};
  results[peer.name] = r;
  log(`== ${peer.name}: ${peer.settings}`);
  // Warm up the client library (and RateQueue's server) before measuring: a cold JIT would
  // penalise whichever peer runs first.
  const warm = `${peer.name}, warm-up`;
  await uncontended(peer, size.n1 / 2, warm);
  await contended(peer, 20, Math.max(2, size.turns / 5), 1, 0, warm);
  await distinct(
    peer,
    size.distinct / 5,
    peer.name.startsWith("PostgreSQL") ? 50 : size.distinct / 5,
    warm,
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
    url,
    // Kills cost a TTL each for the peers that have one (etcd: 30 s), so those get fewer.
    // The replicas hand a killed holder's lease on as the server in memory does (after --grace).
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
  const h = await handover(peer, url, size.handovers);
  Object.assign(r, { h50: h.p50, hmax: h.max });
  log(
    `  4b. hand-over to another process, release → grant: p50 ${h.p50.toFixed(2)} ms, max ${h.max.toFixed(2)} ms`,
  );
  await withDeadline(peer.close(), 10_000, `teardown (${peer.name})`, "closing the client");
  if (stop) {
    const note = await withDeadline(
      stop(),
      60_000,
      `teardown (${peer.name})`,
      "stopping its servers",
    );
    if (note) {
      notes.push(note);
      log(`  ${note}`);
    }
  }
}
const many = await manyWaiters(server.url, server.pid, size.waiters);
log(
  `  5. RateQueue, ${size.waiters} waiters on one lock: ${many.bytesPerWaiter.toFixed(0)} bytes each on the server, drained in ${many.drainSeconds.toFixed(2)} s`,
);
await withDeadline(server.stop(), 10_000, "teardown (RateQueue)", "stopping the server");
etcd?.stop();
const dataDir = mkdtempSync(join(os.tmpdir(), "ratequeue-bench-"));
const manyInOne: Array<[string, ManyInOne]> = [];
for (const [label, args] of [
  ["--memory", ["--memory"]],
  ["--data-dir (durable)", ["--data-dir", dataDir]],
] as const) {
  const m = await manyInOneProcess(label, [...args], size.waiters, size.sideCycles);
  manyInOne.push([label, m]);
  log(`  6. RateQueue ${label}, ${describeManyInOne(m)}`);
}
rmSync(dataDir, { recursive: true, force: true });

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
  ["4b. hand-over to another process: release → grant, p50", "h50", 2, " ms", "lower"],
  ["4b. … max", "hmax", 2, " ms", "lower"],
];
const cpu = os.cpus();
const lines = [
  "# RateQueue against the locks people use today",
  "",
  `Generated by \`pnpm bench:peers\`${quick ? " (PEERS_QUICK=1: small sizes, figures not meaningful)" : ""} on ${new Date().toISOString().slice(0, 10)}: ${cpu[0]?.model ?? "?"} × ${cpu.length}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, load average ${loadAtStart.toFixed(1)} at the start and ${os.loadavg()[0]!.toFixed(1)} at the end, Redis and PostgreSQL on the same machine, all clients in one process (the holder processes of 4, 4b and 6 apart). Ratios are peer ÷ RateQueue in memory (for times, above 1 means RateQueue is faster; for rates, below 1); for ${REPLICAS}, what keeping the state in PostgreSQL costs.`,
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
  ...notes.flatMap((n) => [n, ""]),
  `4b: a holder process releases while a waiter in this process has been in line (or polling) for 50 ms; from the holder's release call to the waiter's grant, both stamped with \`performance.timeOrigin + performance.now()\`; ${size.handovers} hand-overs, after ${Math.min(5, size.handovers)} not counted (the holder process warming up).`,
  "",
  "Where RateQueue (in memory) is behind in this run (better value, and by how much):",
  "",
  ...rows.flatMap(([label, key, , , better]) => {
    const mine = rq[key];
    if (!better || typeof mine !== "number") return [];
    const ahead = names.filter((n) => {
      const v = results[n]![key];
      return (
        !n.startsWith("RateQueue") &&
        typeof v === "number" &&
        (better === "lower" ? v < mine : v > mine)
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
  `6. Many in one process: ${size.waiters} concurrent \`acquire\` calls on one lock through one SDK client (\`createRateQueue\`, its default transport) while another process holds the lock; meanwhile the same process runs a 2 ms critical section ${size.sideCycles} times on another lock. RateQueue only — the other peers are not comparable here: the Redis and etcd locks keep no queue (their waiters poll), and advisory locks need a connection per waiter. Goals, printed and not asserted: all in line within 2 s, at most 4 client sockets, at most 2 KB of server memory per waiter, side p99 at most 10 ms.`,
  "",
  "| server | all in line | client sockets to the server | server memory per waiter | side p50 | side p99 | notes |",
  "| --- | --- | --- | --- | --- | --- | --- |",
  ...manyInOne.map(([label, m]) => {
    const f = manyInOneFigures(m);
    return `| ${label} | ${f.line} | ${f.sockets} | ${f.memory} | ${f.side50} | ${f.side99} | ${f.notes || "—"} |`;
  }),
  "",
  "In line: `GET /v1/resources/{name}` (`queued`, which counts `away` waiters too) polled every 20 ms from the first call, bounded. Client sockets: the most seen during the wait — entries of /proc/self/net/tcp with the server's port as remote port whose inode is one of this process's file descriptors. Server memory: the server process's VmRSS once all are in line, less before (after a warm-up), over the waiters in line. Side: acquire + 2 ms + release, sequential, bounded; a cycle cut at the bound counts as a lower bound (≥).",
  "",
];
// PEERS_OUT: where to write the table (CI's quick run writes nowhere, keeping the real results).
writeFileSync(process.env.PEERS_OUT ?? new URL("../RESULTS.md", import.meta.url), lines.join("\n"));
console.log(`\n${lines.join("\n")}`);
