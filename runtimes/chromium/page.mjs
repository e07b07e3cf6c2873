// The page's script (Chromium): bundled by esbuild with the `browser` condition, as a web app's
// bundler would, and served from an origin of its own (not the RateQueue server's). Exposes
// `window.__conformance` to the Node driver (runner.mjs, through Playwright):
// - run(base, opts): the conformance cases over both transports, each line sent to
//   `window.__print` (a Playwright binding) as it is made;
// - hold(...): a holder page takes a lease and keeps it until its page is killed;
// - tryAcquire(...): one acquire against a given server, its outcome (the no-CORS check);
// - inflight(...): 20 acquires in flight from this page, then a try-lock on another resource.
import { createRateQueue } from "@ratequeue/sdk";
import { assert, deadline, resource, runAll, sleep } from "../conformance/cases.mjs";

// `await using`, from the same source file as the other runtimes', loaded as a module of its own
// (served by the driver; a URL built at run time, so esbuild leaves the import to the browser).
const loadUsingCase = async () => {
  try {
    return (await import(new URL("/using-case.mjs", location.origin).href)).default;
  } catch (error) {
    if (error instanceof SyntaxError) return undefined;
    throw error;
  }
};

function describe(error) {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  // A WebSocket's `error` is a bare Event: the browser tells a page nothing more.
  if (error instanceof Event) return `${error.constructor.name} { type: "${error.type}" }`;
  return String(error);
}

/** Every cause down the chain, `name: message` each. */
function causes(error) {
  const out = [];
  for (let e = error?.cause, i = 0; e !== undefined && i < 5; e = e?.cause, i++)
    out.push(describe(e));
  return out;
}

// The longest gap between two ticks of a 50 ms interval on this page's main thread (the SDK
// pings every grace/4 = 50 ms and the server drops a silent session after grace = 200 ms).
let lastTick = performance.now();
const stalls = { max: 0, over150: [] };
setInterval(() => {
  const now = performance.now();
  const gap = now - lastTick;
  lastTick = now;
  stalls.max = Math.max(stalls.max, Math.round(gap));
  if (gap > 150 && stalls.over150.length < 10)
    stalls.over150.push(
      `${Math.round(gap)} ms at ${Math.round(now)} (${document.visibilityState})`,
    );
}, 50);

window.__conformance = {
  stalls: () => stalls,

  /** `base`: { baseUrl, apiKey, control }; `opts`: { names, transports }. */
  run(base, opts = {}) {
    return runAll(
      { ...base, createRateQueue, runtime: "chromium", loadUsingCase },
      { ...opts, print: (line) => window.__print(line) },
    ).then(({ passed, failed }) => ({ passed, failed }));
  },

  /** Takes a lease and keeps it (this page is then killed); resolves with its fencing token. */
  async hold(baseUrl, apiKey, name, transport) {
    const lease = await createRateQueue({ apiKey, baseUrl, session: transport }).acquire(name);
    window.__held = { lease, at: Math.round(performance.now()) }; // kept reachable while the page lives
    lease.signal.addEventListener("abort", () => {
      window.__held.lost = `${describe(lease.signal.reason)} at ${Math.round(performance.now())}`;
    });
    return lease.fencingToken;
  },

  /** The holder's state, before it is killed: still held? the page's timer stalls. */
  holderState() {
    const h = window.__held;
    return {
      grantedAt: h?.at,
      lost: h?.lost ?? false,
      now: Math.round(performance.now()),
      stalls,
    };
  },

  /**
   * One acquire against `baseUrl` (`timeout` ms, or no limit if undefined, given up after
   * `within` ms); its outcome, never a throw.
   */
  async tryAcquire(baseUrl, apiKey, name, transport, timeout, within) {
    const rq = createRateQueue({ apiKey, baseUrl, session: transport });
    const start = performance.now();
    let out;
    try {
      const lease = await deadline(
        rq.acquire(name, timeout === undefined ? {} : { timeout }),
        within,
        "acquire",
      );
      await lease.release();
      out = { ok: true, ms: Math.round(performance.now() - start) };
    } catch (error) {
      out = {
        ok: false,
        ms: Math.round(performance.now() - start),
        error: describe(error),
        code: error?.code,
        causes: causes(error),
      };
    }
    const closing = performance.now();
    out.close = await deadline(rq.close(), 2_000, "rq.close()").then(
      () => `rq.close() took ${Math.round(performance.now() - closing)} ms`,
      (error) => describe(error),
    );
    return out;
  },

  /**
   * Browsers open at most 6 HTTP/1.1 connections per host: a client that held a connection per
   * waiting acquire would starve past the 6th. One client, capacity 1: 20 acquires in flight
   * (the first holds, 19 queue, as the server must show), then a try-lock (`timeout: 0`) on
   * another resource must be granted at once; then the 19 are granted one after another.
   */
  async inflight(baseUrl, apiKey, transport, name) {
    const ctx = { baseUrl, apiKey };
    const rq = createRateQueue({ apiKey, baseUrl, session: transport });
    try {
      const first = await deadline(rq.acquire(name, { capacity: 1 }), 3_000, "first acquire");
      const queued = [];
      for (let i = 0; i < 19; i++) queued.push(rq.acquire(name, { capacity: 1 }));
      for (const p of queued) p.catch(() => {}); // rejected by close() if a check below fails
      const start = performance.now();
      let snap;
      while (performance.now() - start < 3_000) {
        snap = await resource(ctx, name);
        if (snap.queued === 19) break;
        await sleep(25);
      }
      assert(
        snap.active === 1 && snap.queued === 19,
        `the server shows 1 active and 19 queued within 3 s: ${JSON.stringify(snap)}`,
      );
      const queuedAfter = Math.round(performance.now() - start);
      const t0 = performance.now();
      const other = await deadline(
        rq.acquire(`${name}-other`, { timeout: 0 }),
        3_000,
        "the 21st (a try-lock on another resource) while 19 wait",
      );
      const tryLockMs = Math.round(performance.now() - t0);
      await other.release();
      // Drain: each granted lease is released at once; all 19 must come through.
      const t1 = performance.now();
      await first.release();
      const tokens = [];
      await deadline(
        Promise.all(
          queued.map((p) =>
            p.then(async (lease) => {
              tokens.push(lease.fencingToken);
              await lease.release();
            }),
          ),
        ),
        5_000,
        "the 19 queued acquires granted in turn",
      );
      const drainMs = Math.round(performance.now() - t1);
      const after = await resource(ctx, name);
      assert(after.active === 0 && after.queued === 0, `empty after: ${JSON.stringify(after)}`);
      return `19 queued (server: active 1, queued 19) ${queuedAfter} ms after sending; the 21st, a try-lock on another resource, granted in ${tryLockMs} ms; the 19 then granted and released in ${drainMs} ms`;
    } finally {
      await deadline(rq.close(), 2_000, "close").catch(() => {});
    }
  },
};
