import { Engine, type EngineConfig } from "../packages/server/src/engine.js";
import { LocalBackend } from "../packages/server/src/local-backend.js";
import { Metrics } from "../packages/server/src/metrics.js";
import { resolveServerOptions } from "../packages/server/src/options.js";

/** The engine as the server configures it by default. */
function engine(overrides: Partial<EngineConfig> = {}): Engine {
  return new Engine({ ...resolveServerOptions(), ...overrides });
}

/**
 * Grant+release cycles per second: each cycle creates a request (granted at once), then
 * releases it — the engine's whole hot path, bookkeeping of ended requests included.
 */
export function cyclesPerSecond(
  names: number,
  cycles: number,
  metrics = false,
  /** Stacks three rate limits (never reached) on every name: what the grant path pays for them. */
  rated = false,
): number {
  const e = engine();
  // The server's /metrics counting this engine's grants and ends (its gauges read a backend's
  // engine at scrape, which this does not).
  if (metrics) e.observer = new Metrics(new LocalBackend(resolveServerOptions()), 10);
  const ids = Array.from({ length: cycles }, (_, i) => `req-${i}`);
  const resources = Array.from({ length: names }, (_, i) => `lock-${i}`);
  if (rated)
    for (const name of resources)
      e.setRates("key", name, [
        { limit: 1e9, window: 60_000, kind: "sliding", counts: "requests" },
        { limit: 1e9, window: 60_000, kind: "fixed", counts: "load" },
        { limit: 1e9, window: 1_000, kind: "sliding", counts: "load" },
      ]);
  const body = { resource: "" };
  const t0 = performance.now();
  for (let i = 0; i < cycles; i++) {
    body.resource = resources[i % names]!;
    e.acquire("key", ids[i]!, body);
    e.release("key", ids[i]!);
  }
  const seconds = (performance.now() - t0) / 1000;
  return cycles / seconds;
}

/**
 * Hand-overs per second on one contended lock: 100 requests wait; each release grants the next.
 */
export function handoversPerSecond(
  cycles: number,
  /** Spreads the requests over this many lanes (fair turns, weight 1): what lanes cost. */
  lanes = 0,
): number {
  const e = engine({ maxQueue: 1_000_000 });
  const ids = Array.from({ length: cycles }, (_, i) => `req-${i}`);
  const bodies =
    lanes === 0
      ? [{ resource: "hot" }]
      : Array.from({ length: lanes }, (_, l) => ({ resource: "hot", lane: `lane-${l}` }));
  const body = (i: number) => bodies[i % bodies.length]!;
  const depth = 100;
  for (let i = 0; i < depth; i++) e.acquire("key", ids[i]!, body(i));
  const t0 = performance.now();
  for (let i = 0; i < cycles - depth; i++) {
    e.release("key", ids[i]!); // grants the next (in its turn's lane)
    e.acquire("key", ids[i + depth]!, body(i + depth)); // joins the line
  }
  const seconds = (performance.now() - t0) / 1000;
  return (cycles - depth) / seconds;
}

/** Heap bytes per held lock: `count` locks held on distinct names, with their polls attached. */
export function bytesPerHeldLock(count: number): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run with node --expose-gc");
  const e = engine();
  gc();
  const before = process.memoryUsage().heapUsed;
  // The id (a UUID) and the name are built here, so their strings count: the server keeps them.
  for (let i = 0; i < count; i++) {
    const id = `0b7d3c52-9a1e-4f3b-8c55-${String(i).padStart(12, "0")}`;
    const r = e.acquire("key", id, { resource: `billing-update-customer-${i}` });
    if (r.ok) e.attach(r.request);
  }
  gc();
  const after = process.memoryUsage().heapUsed;
  if (e.stats().live !== count) throw new Error("not every lock is held");
  return (after - before) / count;
}
