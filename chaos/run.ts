/**
 * `pnpm test:chaos`: client processes, each running many acquire loops at once over its one
 * session, acquire, hold (briefly, or for seconds with waiters queued behind), release and give
 * up at random on two locks and a semaphore (capacities 1 and 3), while the harness
 * - SIGKILLs clients;
 * - resets every connection of a client (each client connects through a TCP proxy of its own,
 *   see proxy.ts), refusing its new ones for a random 0–500 ms blip;
 * - with CHAOS_SERVER_KILLS=1, SIGKILLs the server and restarts it on the same port and data
 *   directory.
 * Every lock holder writes through a fenced register that rejects stale tokens. The checker then
 * prints grants, faults, leases lost (told, and what was near each loss), overlaps among holders
 * not told they lost their lease, stale writes accepted, and waiters stuck at the end; the run
 * fails unless the last three are 0.
 *
 *   CHAOS_SECONDS (default 60), CHAOS_CLIENTS (default 6), CHAOS_LOOPS (acquire loops per client
 *   process, "min-max" or a number; default 20-100), CHAOS_SESSION (websocket | http | auto;
 *   default websocket), CHAOS_SERVER_KILLS (default 0), CHAOS_RESETS (default 1),
 *   CHAOS_OPERATOR=revoke (an operator revokes random holders through the admin API) or
 *   CHAOS_OPERATOR=capacity (and changes the semaphore's capacity),
 *   CHAOS_REFUSE (how a blip refuses connections: reset | closed; default reset, see proxy.ts),
 *   CHAOS_CLIENT_KILL_RATE (chance per 100–500 ms tick; default 0.3), CHAOS_RECOVERY_WINDOW,
 *   CHAOS_WAIT_GRACE (server options, ms), CHAOS_SEED, CHAOS_VERBOSE=1 (a line per lost lease),
 *   CHAOS_TRACE=dir (clients keep their last 3 s of WebSocket frames and write them to dir when
 *   the server ends a lease they hold: see client.ts), RATEQUEUE_TRACE=file (the server's grants,
 *   ends and session attaches, and the harness's faults, a line each: see local-backend.ts)
 */
import { type ChildProcess, fork, spawn } from "node:child_process";
import { appendFileSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { LIVENESS_DEFAULTS } from "../packages/core/src/liveness.js";
import { bundle as compile } from "./bundle.js";
import {
  attributeLosses,
  type CapacityChange,
  check,
  type Fault,
  type Hold,
  type Loss,
  type Write,
} from "./check.js";
import { type ChaosProxy, type Refuse, startProxy } from "./proxy.js";
import { RESOURCES } from "./resources.js";

export type ChaosSession = "websocket" | "http" | "auto";

export interface ChaosOptions {
  /** How long faults are injected, in s... */
  seconds: number;
  /**
   * ...and past it, if fewer grants were seen, until this many were (at most 3 × `seconds` in
   * all): a loaded machine slows the run down, it must not empty it. Default 0.
   */
  minGrants?: number;
  clients: number;
  serverKills: boolean;
  seed: number;
  /** What carries each client's session. Default `"websocket"`. */
  session?: ChaosSession;
  /** Concurrent acquire loops per client process, drawn from [min, max]. Default [20, 100]. */
  loops?: readonly [number, number];
  /** Reset clients' connections at random. Default true. */
  resets?: boolean;
  /**
   * An operator at work: at random ticks, revokes a random holder through the admin API (its
   * client must be told before the next is granted: revoked units are held back for `grace`),
   * and with `capacity`, sets the semaphore's capacity between 1 and 4 (a raise serves the line
   * at once, a cut lets holders finish). The checker counts each holder against the capacity
   * its grant was made under, told apart by fencing token (check.ts).
   */
  operator?: { revoke: boolean; capacity: boolean };
  /** How a reset's blip refuses new connections (proxy.ts). Default `"reset"`. */
  refuse?: Refuse;
  /** Chance, at each 100–500 ms tick, that a client is SIGKILLed (and replaced). Default 0.3. */
  clientKillRate?: number;
  /** The server's --recovery-window, in ms. Default: the server's (poll window + repoll grace). */
  recoveryWindow?: number;
  /** The server's --wait-grace, in ms. Default: the server's (5 s). */
  waitGrace?: number;
  log?: (line: string) => void;
}

export interface ChaosReport {
  session: ChaosSession;
  grants: number;
  /** Holds of a second or more that ended in a release. */
  longHoldsReleased: number;
  /** Most waiters seen queued on the three names at once (sampled each second). */
  peakQueued: number;
  /** Longest time without a grant while the server had waiters (sampled each second), ms. */
  longestWithoutGrant: number;
  clientKills: number;
  /** Clients that did not exit within 5 s of "stop" (SIGKILLed then), or exited with an error. */
  clientsStuckAtStop: number;
  clientCrashes: number;
  serverRestarts: number;
  /** The server died on its own (and was restarted): a bug, its last lines are logged. */
  serverCrashes: number;
  resets: number;
  revokes: number;
  capacityChanges: number;
  leasesLost: number;
  /** Of those: within a second of a fault injected on the client (its reset, a server outage). */
  leasesLostNearFault: number;
  /** ...else within a second of a stall (≥ 50 ms) of the holder's event loop or the harness's. */
  leasesLostNearStall: number;
  /** ...and the others: nothing injected or seen near them. */
  leasesLostUnexplained: number;
  /** Why, as the SDK said (a word per reason), by the class above ("fault", "stall", "unexplained"). */
  leasesLostWhy: Record<string, number>;
  /**
   * Lost leases reported after the holder had stopped and released: the release found the lease
   * already ended (the server dropped it, e.g. while the holder was cut off after its last check).
   */
  lostFoundAtRelease: number;
  overlaps: number;
  staleWritesAccepted: number;
  staleWritesRejected: number;
  waitersStuck: number;
  /** From the last client's exit until the server had nothing left (or the check gave up), ms. */
  settleMs: number;
  /** How acquire calls ended in the clients ("ok", "lease_lost", error names). */
  outcomes: Record<string, number>;
}

const CAPACITIES = Object.fromEntries(RESOURCES.map((r) => [r.name, r.capacity]));
/** A loss this soon after a fault touching its client is put down to the fault, ms. */
const NEAR_FAULT = 1_000;
/** An event-loop stall this long may cost a holder its lease (the budget is grace − 25 ms), ms. */
const STALL = 50;
const STOP_WITHIN = 5_000;

type ClientMessage =
  | { type: "grant"; name: string; token: number; at: number }
  | { type: "release"; name: string; token: number; at: number; stall: number }
  | { type: "lost"; name: string; token: number; at: number; why: string; stall: number }
  | { type: "write"; name: string; token: number; at: number; accepted: boolean }
  | { type: "outcome"; kind: string };

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const log = o.log ?? (() => {});
  const session = o.session ?? "websocket";
  const [minLoops, maxLoops] = o.loops ?? [20, 100];
  const refuse = o.refuse ?? "reset";
  const waitGrace = o.waitGrace ?? LIVENESS_DEFAULTS.waitGrace;
  const recovery = o.recoveryWindow ?? 14_000;
  let seed = o.seed;
  const random = () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const bundle = await compile();

  // The fenced register: accepts a write only if its token is the highest seen for the name.
  const highest = new Map<string, number>();
  const register = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const { name, token } = JSON.parse(body) as { name: string; token: number };
      const ok = token >= (highest.get(name) ?? 0);
      if (ok) highest.set(name, token);
      res.writeHead(ok ? 200 : 409).end();
    });
  });
  await new Promise<void>((r) => register.listen(0, "127.0.0.1", r));
  const registerUrl = `http://127.0.0.1:${(register.address() as { port: number }).port}/`;

  /** RATEQUEUE_TRACE=file: the harness's faults go to the file the server traces its events to. */
  const mark = (line: string) => {
    if (process.env.RATEQUEUE_TRACE)
      appendFileSync(process.env.RATEQUEUE_TRACE, `${Date.now()} harness ${line}\n`);
  };
  // The server, restartable on the same port and data directory.
  const dataDir = mkdtempSync(join(tmpdir(), "ratequeue-chaos-"));
  let port = 0;
  let server: ChildProcess | undefined;
  let serverUp = false;
  // If the harness dies, its server must not outlive it (clients exit when their IPC closes).
  const killServer = () => server?.kill("SIGKILL");
  process.once("exit", killServer);
  /** The server's last lines on stderr, for the log if it dies on its own. */
  let serverLines: string[] = [];
  const startServer = async () => {
    const child = spawn(
      process.execPath,
      [
        ...[bundle.server, "--port", String(port), "--api-key", "chaos"],
        ...["--data-dir", dataDir, "--admin-key", "chaos-operator"],
        ...(o.recoveryWindow === undefined ? [] : ["--recovery-window", String(o.recoveryWindow)]),
        ...(o.waitGrace === undefined ? [] : ["--wait-grace", String(o.waitGrace)]),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    serverLines = [];
    child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      serverLines = [...serverLines, ...d.split("\n").filter(Boolean)].slice(-20);
    });
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout!.setEncoding("utf8").on("data", (d: string) => {
        const m = /http:\/\/127\.0\.0\.1:(\d+)/.exec(d);
        if (m) resolve(m[0]);
      });
      child.once("exit", (code) =>
        reject(new Error(`server exited (${code}) on start:\n${serverLines.join("\n")}`)),
      );
    });
    child.once("exit", (code, signal) => {
      if (server !== child || !serverUp) return; // killed by the harness
      serverUp = false;
      report.serverCrashes++;
      log(
        `the server died on its own (${signal ?? code}); its last lines:\n${serverLines.join("\n")}`,
      );
    });
    port = Number(new URL(url).port);
    server = child;
    serverUp = true;
    return url;
  };
  const holds = new Map<string, Hold>(); // key: client/token
  /** How each hold ended, for the log of an overlap. */
  const ended = new Map<string, string>();
  const writes: Write[] = [];
  const losses: Loss[] = [];
  const faults: Fault[] = [];
  const report: ChaosReport = {
    session,
    grants: 0,
    longHoldsReleased: 0,
    peakQueued: 0,
    longestWithoutGrant: 0,
    clientKills: 0,
    clientsStuckAtStop: 0,
    clientCrashes: 0,
    serverRestarts: 0,
    serverCrashes: 0,
    resets: 0,
    revokes: 0,
    capacityChanges: 0,
    leasesLost: 0,
    leasesLostNearFault: 0,
    leasesLostNearStall: 0,
    leasesLostUnexplained: 0,
    leasesLostWhy: {},
    lostFoundAtRelease: 0,
    overlaps: 0,
    staleWritesAccepted: 0,
    staleWritesRejected: 0,
    waitersStuck: 0,
    settleMs: 0,
    outcomes: {},
  };
  const url = await startServer();
  const clients = new Map<string, { child: ChildProcess; proxy: ChaosProxy }>();
  let lastGrant = Date.now();
  /** When each client stopped believing anything: killed, or exited. */
  const goneAt = new Map<string, number>();
  const exited: Array<Promise<void>> = [];
  let n = 0;

  /** The client is gone (killed, or exited): every hold of it ends then. */
  const gone = (id: string, at: number) => {
    if (goneAt.has(id)) return;
    goneAt.set(id, at);
    for (const [key, h] of holds)
      if (h.client === id && h.end === undefined) {
        h.end = at;
        ended.set(key, "client gone");
      }
  };

  const spawnClient = async () => {
    const id = `c${n++}`;
    const proxy = await startProxy(() => port, { refuse, serverUp });
    const loops = minLoops + Math.floor(random() * (maxLoops - minLoops + 1));
    const child = fork(
      bundle.client,
      [proxy.url, registerUrl, String(Math.floor(random() * 2 ** 31)), String(loops), session],
      { execArgv: [], stdio: ["ignore", "ignore", "inherit", "ipc"] },
    );
    child.on("error", () => {}); // an IPC send to a client that just died
    child.on("message", (m: ClientMessage) => {
      if (m.type === "outcome") {
        report.outcomes[m.kind] = (report.outcomes[m.kind] ?? 0) + 1;
        return;
      }
      const key = `${id}/${m.token}`;
      if (m.type !== "write") mark(`${id} ${m.type} token=${m.token} at ${m.at}`);
      if (m.type === "grant") {
        report.grants++;
        lastGrant = Date.now();
        // A message sent just before a SIGKILL can arrive after the harness recorded the
        // kill: that holder stopped believing anything at its death.
        holds.set(key, {
          client: id,
          name: m.name,
          token: m.token,
          start: m.at,
          end: goneAt.get(id),
        });
      } else if (m.type === "release") {
        const h = holds.get(key);
        if (h && h.end === undefined) {
          h.end = m.at;
          ended.set(
            key,
            `released; longest stall of its process in the second before: ${m.stall} ms`,
          );
          if (m.at - h.start >= 1_000) report.longHoldsReleased++;
        }
      } else if (m.type === "lost") {
        const h = holds.get(key);
        report.leasesLost++;
        if (h && h.end !== undefined && !goneAt.has(id)) report.lostFoundAtRelease++;
        if (h && h.end === undefined) {
          h.end = m.at;
          ended.set(
            key,
            `lost: ${m.why}; longest stall of its process in the second before: ${m.stall} ms`,
          );
        }
        losses.push({ client: id, at: m.at, why: m.why, stall: m.stall });
      } else if (m.type === "write") {
        writes.push({ name: m.name, token: m.token, at: m.at, accepted: m.accepted });
      }
    });
    exited.push(
      new Promise<void>((resolve) =>
        // "close": after the last IPC message has been delivered.
        child.once("close", (code, signal) => {
          if (signal === null && code !== 0) report.clientCrashes++;
          gone(id, Date.now());
          proxy.close();
          clients.delete(id);
          resolve();
        }),
      ),
    );
    clients.set(id, { child, proxy });
  };

  const kill = (id: string) => {
    const { child } = clients.get(id)!;
    const at = Date.now();
    child.kill("SIGKILL");
    clients.delete(id);
    gone(id, at);
  };

  /** What the server has in line and held on the three names (asked directly, not proxied). */
  const requests = async () => {
    let queued = 0;
    let active = 0;
    for (const name of Object.keys(CAPACITIES)) {
      const res = await fetch(`${url}/v1/resources/${name}`, {
        headers: { authorization: "Bearer chaos" },
        signal: AbortSignal.timeout(2_000),
      });
      const state = (await res.json()) as { queued: number; active: number };
      queued += state.queued;
      active += state.active;
    }
    return { queued, active, left: queued + active };
  };

  /** The operator's capacity changes on the semaphore ("pool"), for the checker. */
  const capacityChanges: CapacityChange[] = [];
  const setCapacity = async (capacity: number) => {
    try {
      const auth = { authorization: "Bearer chaos-operator", "content-type": "application/json" };
      const admin = (path: string, init: RequestInit = {}) =>
        fetch(`${url}/v1/admin${path}`, {
          ...init,
          headers: auth,
          signal: AbortSignal.timeout(2_000),
        });
      const { namespaces } = (await (await admin("/namespaces")).json()) as {
        namespaces: Array<{ id: string }>;
      };
      if (namespaces[0] === undefined) return;
      const before = await admin(`/namespaces/${namespaces[0].id}/resources/pool`);
      if (before.status !== 200) return;
      const { lastToken: tokenBefore } = (await before.json()) as { lastToken: number };
      const res = await admin(`/namespaces/${namespaces[0].id}/limits/pool`, {
        method: "PUT",
        body: JSON.stringify({ capacity }),
      });
      if (res.status !== 200) return; // below a live load (409), or the server went down
      const { lastToken: tokenAfter } = (await res.json()) as { lastToken: number };
      // A raise grants inside the call: grants after the token read before it may be under the
      // new capacity. A cut stops grants once applied: those after its answer's token are.
      const previous = capacityChanges.at(-1)?.capacity ?? CAPACITIES.pool!;
      const token = capacity > previous ? tokenBefore : tokenAfter;
      capacityChanges.push({ name: "pool", token, capacity });
      report.capacityChanges++;
    } catch {} // the server is down
  };

  /** The operator: revokes a random holder of a random resource; false if there was none (or no server). */
  const revokeOne = async (): Promise<boolean> => {
    const admin = (path: string, init: RequestInit = {}) =>
      fetch(`${url}/v1/admin${path}`, {
        ...init,
        headers: { authorization: "Bearer chaos-operator", "content-type": "application/json" },
        signal: AbortSignal.timeout(2_000),
      });
    try {
      const { namespaces } = (await (await admin("/namespaces")).json()) as {
        namespaces: Array<{ id: string }>;
      };
      const ns = namespaces[0]?.id;
      if (ns === undefined) return false;
      const name = pick(Object.keys(CAPACITIES));
      const res = await admin(`/namespaces/${ns}/resources/${encodeURIComponent(name)}`);
      if (res.status !== 200) return false;
      const { holders } = (await res.json()) as { holders: Array<{ id: string }> };
      if (holders.length === 0) return false;
      const victim = pick(holders).id;
      const revoked = await admin(`/namespaces/${ns}/requests/${victim}/revoke`, {
        method: "POST",
        body: JSON.stringify({ reason: "chaos operator" }),
      });
      return revoked.status === 200;
    } catch {
      return false; // the server is down: the next tick tries again
    }
  };

  // The harness's own stalls: it carries every client's connection (proxies).
  let tick = performance.now();
  const stallWatch = setInterval(() => {
    const now = performance.now();
    const late = now - tick - 10;
    tick = now;
    if (late >= STALL) faults.push({ kind: "stall", from: Date.now() - late, to: Date.now() });
  }, 10);

  for (let i = 0; i < o.clients; i++) await spawnClient();
  const started = Date.now();
  const running = () => {
    const elapsed = Date.now() - started;
    return (
      elapsed < o.seconds * 1000 ||
      (report.grants < (o.minGrants ?? 0) && elapsed < 3 * o.seconds * 1000)
    );
  };
  let nextServerKill = Date.now() + 3_000;
  let nextSample = 0;
  let onServer = { queued: 0, active: 0 };
  let lastRestart = 0;
  while (running()) {
    await sleep(100 + random() * 400);
    if (random() < (o.clientKillRate ?? 0.3) && clients.size > 0) {
      const victim = pick([...clients.keys()]);
      mark(`kill ${victim}`);
      kill(victim);
      report.clientKills++;
      await spawnClient();
    }
    if ((o.resets ?? true) && random() < 0.4 && clients.size > 0) {
      const id = pick([...clients.keys()]);
      const blip = random() * 500;
      const at = Date.now();
      mark(`reset ${id} blip ${Math.round(blip)}`);
      clients.get(id)!.proxy.reset(blip);
      faults.push({ kind: "reset", client: id, from: at, to: at + blip });
      report.resets++;
    }
    if (o.operator?.revoke && serverUp && random() < 0.3) {
      const at = Date.now();
      if (await revokeOne()) {
        report.revokes++;
        faults.push({ kind: "revoke", from: at, to: Date.now() });
      }
    }
    if (o.operator?.capacity && serverUp && random() < 0.2)
      await setCapacity(1 + Math.floor(random() * 4));
    if (!serverUp || (o.serverKills && Date.now() > nextServerKill)) {
      const from = Date.now();
      if (serverUp) {
        serverUp = false;
        const exit = new Promise((r) => server!.once("exit", r));
        mark("server kill");
        server!.kill("SIGKILL");
        await exit;
        report.serverRestarts++;
      }
      // Only now does nothing listen on the server's port: the proxies stop listening too.
      for (const c of clients.values()) c.proxy.serverDown();
      await sleep(100 + random() * 400);
      await startServer();
      await Promise.all([...clients.values()].map((c) => c.proxy.serverUp()));
      lastRestart = Date.now();
      mark("server up");
      faults.push({ kind: "server", from, to: lastRestart });
      nextServerKill = Date.now() + 2_000 + random() * 3_000;
    }
    if (serverUp && Date.now() >= nextSample) {
      nextSample = Date.now() + 1_000;
      try {
        onServer = await requests();
        report.peakQueued = Math.max(report.peakQueued, onServer.queued);
        if (onServer.queued > 0)
          report.longestWithoutGrant = Math.max(report.longestWithoutGrant, Date.now() - lastGrant);
      } catch {} // the server is down
    }
    log(
      `grants ${report.grants}, client kills ${report.clientKills}, resets ${report.resets}, server restarts ${report.serverRestarts}, leases lost ${report.leasesLost}; on the server: ${onServer.active} held (${[...holds.values()].filter((h) => h.end === undefined).length} by live holders), ${onServer.queued} queued`,
    );
  }

  // Stop: every client gives up its waits, cuts its holds short and exits; then nothing may be
  // left waiting.
  for (const [id, { child }] of clients) {
    if (child.connected) child.send("stop");
    setTimeout(() => {
      if (clients.has(id)) {
        report.clientsStuckAtStop++;
        kill(id);
      }
    }, STOP_WITHIN).unref();
  }
  await Promise.all(exited);
  const endOfRun = Date.now();
  // Every request of a client gone (killed, or exited: a cancel it had not sent yet is lost
  // with it) must be dropped: holders within the grace, waiters within the wait grace of its
  // going, and requests a restart restored within the recovery window of it.
  const settleBy = Math.max(endOfRun + waitGrace + 1_000, lastRestart + recovery + 2_000);
  const ask = () => requests().catch(() => undefined); // undefined: the server does not answer
  let left = await ask();
  while (Date.now() < settleBy && (left === undefined || left.left > 0)) {
    await sleep(200);
    left = await ask();
  }
  report.settleMs = Date.now() - endOfRun;
  clearInterval(stallWatch);
  register.close();
  serverUp = false;
  const serverExit = new Promise((r) => server!.once("exit", r));
  server!.kill("SIGTERM");
  const stopped = await Promise.race([serverExit.then(() => true), sleep(5_000).then(() => false)]);
  if (!stopped) {
    log("the server did not exit within 5 s of SIGTERM: killed");
    server!.kill("SIGKILL");
    await serverExit;
  }
  process.off("exit", killServer);
  bundle.dispose();
  rmSync(dataDir, { recursive: true, force: true });
  if (left === undefined) {
    throw new Error(`the server did not answer at the end of the run:\n${serverLines.join("\n")}`);
  }
  if (left.left > 0) log(`left on the server at the end: ${JSON.stringify(left)}`);
  report.waitersStuck = left.left;

  const verdict = check([...holds.values()], writes, CAPACITIES, endOfRun, capacityChanges);
  report.overlaps = verdict.overlaps.length;
  report.staleWritesAccepted = verdict.staleWritesAccepted.length;
  report.staleWritesRejected = writes.filter((w) => !w.accepted).length;
  const losing = attributeLosses(losses, faults, NEAR_FAULT, STALL);
  report.leasesLostNearFault = losing.nearFault.length;
  report.leasesLostNearStall = losing.nearStall.length;
  report.leasesLostUnexplained = losing.unexplained.length;
  for (const [near, list] of [
    ["fault", losing.nearFault],
    ["stall", losing.nearStall],
    ["unexplained", losing.unexplained],
  ] as const) {
    for (const l of list) {
      const key = `${l.why} (${near})`;
      report.leasesLostWhy[key] = (report.leasesLostWhy[key] ?? 0) + 1;
    }
  }
  for (const l of losses) {
    const near = faults
      .filter(
        (f) => (f.client === undefined || f.client === l.client) && Math.abs(l.at - f.from) < 3_000,
      )
      .map((f) => `${f.kind}@${Math.round(f.from - l.at)}..${Math.round(f.to - l.at)}`);
    log(
      `loss: ${l.client} ${l.why} stall ${l.stall} ms; faults near (ms from the loss): ${near.join(" ")}`,
    );
  }
  for (const v of verdict.overlaps.slice(0, 5)) {
    log(`overlap on ${v.name} at ${v.at}: ${v.holders.join(", ")}`);
    for (const holder of v.holders) {
      const h = holds.get(holder.replace("#", "/"))!;
      log(
        `  ${holder}: held from ${h.start - v.at} to ${(h.end ?? endOfRun) - v.at} ms (${ended.get(holder.replace("#", "/")) ?? "open"})`,
      );
    }
  }
  for (const w of verdict.staleWritesAccepted.slice(0, 5))
    log(`stale write accepted on ${w.name} at ${w.at}: token ${w.token}`);
  return report;

  function pick<T>(xs: T[]): T {
    return xs[Math.floor(random() * xs.length)]!;
  }
}

/** The figures in one line. */
export function summary(r: ChaosReport): string {
  return `${r.session}: ${r.grants} grants, ${r.clientKills} client kills, ${r.serverRestarts} server restarts, ${r.resets} resets, ${r.revokes} revokes, ${r.capacityChanges} capacity changes, longest without a grant ${r.longestWithoutGrant} ms, ${r.leasesLost} leases lost (${r.leasesLostNearFault} near a fault, ${r.leasesLostNearStall} near a stall, ${r.leasesLostUnexplained} with nothing near), ${r.overlaps} overlaps, ${r.staleWritesAccepted} stale writes accepted, ${r.waitersStuck} stuck`;
}

/** The report as the command prints it. */
export function formatReport(r: ChaosReport): string {
  return `
session:                                   ${r.session}
grants:                                    ${r.grants}
long holds (>= 1 s) released:              ${r.longHoldsReleased}
peak waiters queued:                       ${r.peakQueued}
longest with waiters and no grant:         ${r.longestWithoutGrant} ms
client kills:                              ${r.clientKills}
server restarts (kill -9):                 ${r.serverRestarts}
server crashes (died on its own):          ${r.serverCrashes}
connection resets:                         ${r.resets}
holders revoked by the operator:           ${r.revokes}
semaphore capacity changes (operator):     ${r.capacityChanges}
leases lost (told):                        ${r.leasesLost}
  near an injected fault:                  ${r.leasesLostNearFault}
  else near an event-loop stall:           ${r.leasesLostNearStall}
  with nothing near:                       ${r.leasesLostUnexplained}
  why:                                     ${JSON.stringify(r.leasesLostWhy)}
  reported by release() (after the hold):  ${r.lostFoundAtRelease}
stale writes rejected by the register:     ${r.staleWritesRejected}
clients stuck at stop / crashed:           ${r.clientsStuckAtStop} / ${r.clientCrashes}
overlaps among holders not told they lost: ${r.overlaps}   (must be 0)
stale writes accepted:                     ${r.staleWritesAccepted}   (must be 0)
waiters stuck at the end:                  ${r.waitersStuck}   (must be 0; settled in ${r.settleMs} ms)
client-side outcomes:                      ${JSON.stringify(r.outcomes)}`;
}

// As a command: pnpm test:chaos
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const range = (raw: string | undefined): [number, number] | undefined => {
    if (raw === undefined) return undefined;
    const [a, b = a] = raw.split("-").map(Number) as [number, number?];
    return [a, b!];
  };
  const options: ChaosOptions = {
    seconds: Number(env.CHAOS_SECONDS ?? 60),
    clients: Number(env.CHAOS_CLIENTS ?? 6),
    serverKills: env.CHAOS_SERVER_KILLS === "1",
    seed: Number(env.CHAOS_SEED ?? Date.now() % 2 ** 31),
    session: (env.CHAOS_SESSION ?? "websocket") as ChaosSession,
    loops: range(env.CHAOS_LOOPS),
    resets: env.CHAOS_RESETS !== "0",
    operator:
      env.CHAOS_OPERATOR === undefined
        ? undefined
        : { revoke: true, capacity: env.CHAOS_OPERATOR === "capacity" },
    refuse: (env.CHAOS_REFUSE ?? "reset") as Refuse,
    clientKillRate:
      env.CHAOS_CLIENT_KILL_RATE === undefined ? undefined : Number(env.CHAOS_CLIENT_KILL_RATE),
    recoveryWindow:
      env.CHAOS_RECOVERY_WINDOW === undefined ? undefined : Number(env.CHAOS_RECOVERY_WINDOW),
    waitGrace: env.CHAOS_WAIT_GRACE === undefined ? undefined : Number(env.CHAOS_WAIT_GRACE),
  };
  if (!["websocket", "http", "auto"].includes(options.session!))
    throw new Error(`CHAOS_SESSION must be websocket, http or auto, got ${options.session}`);
  if (!["reset", "closed"].includes(options.refuse!))
    throw new Error(`CHAOS_REFUSE must be reset or closed, got ${options.refuse}`);
  console.log(`chaos: ${JSON.stringify(options)}`);
  let last = 0;
  const r = await runChaos({
    ...options,
    log: (line) => {
      if (line.startsWith("loss:")) {
        if (env.CHAOS_VERBOSE === "1") console.log(line);
      } else if (Date.now() - last > 5_000 || !line.startsWith("grants")) {
        last = Date.now();
        console.log(line);
      }
    },
  });
  console.log(formatReport(r));
  const ok = r.overlaps === 0 && r.staleWritesAccepted === 0 && r.waitersStuck === 0;
  console.log(ok ? "\nchaos: OK" : "\nchaos: FAILED");
  process.exit(ok ? 0 : 1);
}
