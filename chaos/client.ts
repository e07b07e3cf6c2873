/**
 * One chaos client: a process that runs many acquire loops at once — all over the one session
 * the SDK keeps per client, as a busy service does — each acquiring, holding (briefly, or for
 * seconds while others queue behind it), releasing, or giving up while it waits. A holder of a
 * lock writes through the harness's fenced register while it believes it holds. Every step is
 * reported to the harness over IPC. A quarter of the acquires go to resources.ts's "sched", a tenth
 * to "shares" (an operator's limits and lanes), with a random load and lane, and always a timeout. The process may be SIGKILLed at any moment (the harness
 * records that itself); on "stop" it gives up its waits, cuts its holds short, and exits.
 *
 *   argv: serverUrls registerUrl seed loops session — serverUrls: one URL, or several (replicas)
 *   separated by commas, given to the SDK as a list
 */
import { setMaxListeners } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRateQueue, LeaseLostError, nodeWebSocket } from "../packages/sdk/src/node.js";
import { RESOURCES, SCHEDULED } from "./resources.js";

const [serverUrls, registerUrl, seedArg, loopsArg, session] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  "websocket" | "http" | "auto",
];

/** Share of holds that last seconds (LONG_HOLD), with the loops behind them queued. */
const LONG_SHARE = 0.15;
const LONG_HOLD = [1_000, 4_000] as const;
/** A long holder writes this often while it believes it holds. */
const WRITE_EVERY = 250;
/** How often the event loop is sampled for stalls, ms. */
const STALL_TICK = 10;

let seed = Number(seedArg);
const random = () => {
  // mulberry32: each process's choices follow from the seed the harness gives it
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
/** Messages sent to the harness and not yet handed to the OS: waited for before exiting. */
let unsent = 0;
let drained: (() => void) | undefined;
const report = (m: Record<string, unknown>) => {
  if (!process.connected) return;
  unsent++;
  process.send!(m, undefined, {}, () => {
    if (--unsent === 0) drained?.();
  });
};
// Without the harness there is nobody to report to: stop at once.
process.on("disconnect", () => process.exit(0));

/** Sleeps `ms`, or less if a signal aborts first. */
function sleep(ms: number, ...signals: AbortSignal[]): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const s of signals) {
      if (s.aborted) done();
      else s.addEventListener("abort", done, { once: true });
    }
  });
}

/**
 * CHAOS_TRACE=dir: keep the last 3 s of WebSocket frames, and write them to dir when a lease is
 * lost otherwise than by silence (the server ended it): the evidence for a bug report.
 */
const traceDir = process.env.CHAOS_TRACE;
const trace: string[] = [];
const note = (line: string) => {
  trace.push(`${Date.now()} ${line}`);
  while (trace.length > 0 && Number(trace[0]!.slice(0, 13)) < Date.now() - 3_000) trace.shift();
};
function tracing(): ReturnType<typeof nodeWebSocket> {
  const inner = nodeWebSocket();
  let n = 0;
  return {
    ...inner,
    open(url) {
      const ws = inner.open(url);
      const k = ++n;
      note(`ws${k} open`);
      const send = ws.send.bind(ws);
      ws.send = (data) => {
        note(`ws${k} > ${data}`);
        send(data);
      };
      ws.addEventListener("message", (e: { data: unknown }) => note(`ws${k} < ${String(e.data)}`));
      ws.addEventListener("close", (e: { code: number }) => note(`ws${k} closed ${e.code}`));
      ws.addEventListener("error", (e: { message?: string }) => note(`ws${k} error ${e.message}`));
      return ws;
    },
  };
}

const connect = () =>
  createRateQueue({
    apiKey: "chaos",
    baseUrl: serverUrls.includes(",") ? serverUrls.split(",") : serverUrls,
    session,
    retry: { retries: 10, maxDelay: 500 },
    ...(traceDir ? { webSocket: tracing() } : {}),
  });
const rq = connect();
/**
 * A client (so a session) per load on the scheduled resources: the server logs each grant with
 * its session, not its load, so the harness learns each session's load from the grants reported
 * here and knows the load of those a client never saw (given up as they came, or killed first).
 */
const byLoad = new Map<number, ReturnType<typeof createRateQueue>>([[1, rq]]);
const clientFor = (load: number) => {
  const known = byLoad.get(load);
  if (known !== undefined) return known;
  const client = connect();
  byLoad.set(load, client);
  return client;
};

const stop = new AbortController();
setMaxListeners(0, stop.signal);
/** The waits in progress, given up at "stop". */
const waits = new Set<AbortController>();
process.on("message", (m) => {
  if (m !== "stop") return;
  stop.abort();
  for (const w of waits) w.abort();
  setTimeout(() => {
    const busy: Record<string, number> = {};
    for (const p of phases) if (p !== "done") busy[p] = (busy[p] ?? 0) + 1;
    process.stderr.write(
      `chaos client ${process.pid}: 4 s after stop, loops ${JSON.stringify(busy)}\n`,
    );
  }, 4_000).unref();
});

/**
 * Event-loop stalls of this process, kept for a second: a lease lost just after one was maybe
 * lost to it (the session could not ping in time), not to the network or the server.
 */
const stalls: Array<{ at: number; ms: number }> = [];
let tick = performance.now();
setInterval(() => {
  const now = performance.now();
  const late = now - tick - STALL_TICK;
  tick = now;
  if (late >= 20) stalls.push({ at: Date.now(), ms: Math.round(late) });
  while (stalls.length > 0 && stalls[0]!.at < Date.now() - 1_000) stalls.shift();
}, STALL_TICK).unref();
/** The longest stall of the last second, ms. */
const recentStall = () =>
  Math.max(0, ...stalls.filter((s) => s.at >= Date.now() - 1_000).map((s) => s.ms));

/** Why a lease was lost, in a word, from the SDK's message. */
function why(reason: unknown): string {
  const message = reason instanceof Error ? reason.message : String(reason);
  if (message.includes("expired")) return "expired";
  if (message.includes("was confirmed within")) return "silence";
  if (message.includes("no longer knows")) return "forgotten";
  if (message.includes("refused this client")) return "gave-up";
  if (message.includes("an operator revoked it")) return "revoked";
  const ended = /the server ended it as (\w+)/.exec(message);
  return ended ? `ended-${ended[1]}` : "other";
}

/** A write through the fenced register, if the holder still believes it holds. */
async function write(name: string, token: number, lease: AbortSignal): Promise<void> {
  if (lease.aborted) return;
  const at = Date.now(); // sent at: the holder believed it held then
  try {
    const res = await fetch(registerUrl, {
      method: "POST",
      body: JSON.stringify({ name, token }),
      signal: AbortSignal.timeout(5_000),
    });
    await res.arrayBuffer();
    report({ type: "write", name, token, at, accepted: res.status === 200 });
  } catch {
    report({ type: "outcome", kind: "register_unreachable" }); // the harness's, not the SDK's
  }
}

/** What each loop is doing, for the report of a client slow to stop. */
const phases: string[] = [];

async function loop(i: number): Promise<void> {
  while (!stop.signal.aborted) {
    phases[i] = "acquiring";
    // A quarter of the acquires on "sched", a tenth on "shares" (resources.ts), the rest on the
    // locks and the semaphore.
    const r = random();
    const scheduled = r < 0.25 ? SCHEDULED[0] : r < 0.35 ? SCHEDULED[1] : undefined;
    const { name, capacity } = scheduled
      ? { name: scheduled.name, capacity: scheduled.limits.capacity }
      : pick(RESOURCES);
    const lane = scheduled ? pick(scheduled.lanes) : undefined;
    const load = scheduled && lane ? pick(scheduled.loads[lane]!) : 1;
    // The operator's capacity applies: a request on a scheduled resource names none.
    const options = scheduled ? { load, lane } : { capacity };
    const waitFrom = Date.now();
    let waitReported = false;
    const waited = (granted: boolean, to = Date.now()) => {
      if (!scheduled || waitReported) return;
      waitReported = true;
      report({ type: "wait", name, lane, from: waitFrom, to, granted });
    };
    const long = random() < LONG_SHARE;
    const holdFor = long
      ? LONG_HOLD[0] + random() * (LONG_HOLD[1] - LONG_HOLD[0])
      : 5 + random() * 40;
    // On a scheduled resource, always a timeout: it serves a few grants a second (its rate
    // limits), and loops waiting without one would pile up there. Its lanes stay waited on all
    // the same, by waiters that come and give up (check.ts, checkStarvation).
    const timeout = scheduled
      ? pick([100, 1_000, 3_000, 5_000])
      : pick([undefined, undefined, 0, 100, 1_000]);
    const wait = new AbortController();
    waits.add(wait);
    if (random() < 0.2) setTimeout(() => wait.abort(), random() * 300); // give up while waiting
    try {
      await clientFor(load).acquire(
        name,
        { ...options, timeout, signal: wait.signal },
        async (lease) => {
          waits.delete(wait);
          phases[i] = "holding";
          const token = lease.fencingToken;
          const grantedAt = Date.now();
          report({ type: "grant", name, token, at: grantedAt, load, lane, asked: waitFrom });
          waited(true, grantedAt);
          if (traceDir) note(`grant ${name} ${token} (${lease.id})`);
          let believes = true;
          const lost = (at = Date.now()) => {
            believes = false; // (a loss found by the release comes after the hold: reported all the same)
            const reason = why(lease.signal.reason);
            if (traceDir) {
              note(`lost ${name} ${token}: ${(lease.signal.reason as Error).message}`);
              if (reason !== "silence")
                writeFileSync(join(traceDir, `${process.pid}-${token}.log`), trace.join("\n"));
            }
            report({
              type: "lost",
              name,
              token,
              at,
              why: reason,
              stall: recentStall(),
            });
          };
          // Lost before the holder ran (the session's budget ran out as the grant came in): the
          // holder learns it at once, and holds nothing.
          if (lease.signal.aborted) lost(grantedAt);
          else lease.signal.addEventListener("abort", () => lost(), { once: true });
          try {
            const until = Date.now() + holdFor;
            if (capacity === 1) await write(name, token, lease.signal);
            while (Date.now() < until && !lease.signal.aborted && !stop.signal.aborted) {
              await sleep(Math.min(until - Date.now(), WRITE_EVERY), lease.signal, stop.signal);
              if (capacity === 1) await write(name, token, lease.signal);
            }
          } finally {
            // Whatever happened, the holder stops believing here: it releases (unless told lost).
            if (believes && !lease.signal.aborted) {
              believes = false;
              report({ type: "release", name, token, at: Date.now(), stall: recentStall() });
              if (traceDir) note(`release ${name} ${token}`);
            }
            phases[i] = "releasing";
          }
        },
      );
      report({ type: "outcome", kind: "ok" });
    } catch (error) {
      waited(false);
      report({
        type: "outcome",
        kind: error instanceof LeaseLostError ? "lease_lost" : (error as Error).name,
      });
    } finally {
      waits.delete(wait);
    }
    phases[i] = "pausing";
    await sleep(random() * 20, stop.signal);
  }
  phases[i] = "done";
}

await Promise.all(Array.from({ length: Number(loopsArg) }, (_, i) => loop(i)));
if (unsent > 0) await new Promise<void>((resolve) => (drained = resolve));
process.exit(0);
