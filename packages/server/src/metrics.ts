import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { EngineObserver, Request } from "./engine.js";
import type { LocalBackend } from "./local-backend.js";

/** Bucket bounds of the wait and hold histograms, in seconds: 1 ms to 15 min. */
const BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900];

/**
 * The server's Prometheus metrics (`GET /metrics`, docs/protocol.md "Metrics"): counters and
 * histograms fed by the engine's grants and ends, gauges read at each scrape. Per-resource
 * series only for the `top` busiest resources, so a million names never make a million series.
 */
export class Metrics implements EngineObserver {
  readonly registry = new Registry();
  private readonly grants: Counter;
  private readonly ends: Counter<"state" | "was">;
  private readonly waits: Histogram;
  private readonly holds: Histogram;

  constructor(backend: LocalBackend, top: number) {
    const registers = [this.registry];
    this.grants = new Counter({
      name: "ratequeue_grants_total",
      help: "Requests granted (each grant takes a fencing token).",
      registers,
    });
    this.ends = new Counter({
      name: "ratequeue_ends_total",
      help: "Live requests ended, by final state (released, cancelled, timed_out, expired, dropped) and by the state they ended from (queued, active).",
      labelNames: ["state", "was"],
      registers,
    });
    this.waits = new Histogram({
      name: "ratequeue_wait_seconds",
      help: "Time from a request's creation to its grant (0 for an uncontended grant).",
      buckets: BUCKETS,
      registers,
    });
    this.holds = new Histogram({
      name: "ratequeue_hold_seconds",
      help: "Time from a grant to the end of the hold (release, expiry, drop).",
      buckets: BUCKETS,
      registers,
    });
    const engine = backend.engine;
    new Gauge({
      name: "ratequeue_requests",
      help: "Live requests, by state: active (holding units) or queued (waiting in line).",
      labelNames: ["state"],
      registers,
      collect() {
        const { live } = engine.stats();
        this.set({ state: "active" }, engine.activeCount);
        this.set({ state: "queued" }, live - engine.activeCount);
      },
    });
    new Gauge({
      name: "ratequeue_resources",
      help: "Resources something holds or waits on.",
      registers,
      collect() {
        this.set(engine.stats().resources);
      },
    });
    new Gauge({
      name: "ratequeue_sessions",
      help: "Client sessions the server keeps (connected, or within their grace).",
      registers,
      collect() {
        this.set(engine.stats().sessions);
      },
    });
    new Gauge({
      name: "ratequeue_open_links",
      help: "Open session links (kind=session: WebSockets and HTTP session polls) and per-request long-polls (kind=poll).",
      labelNames: ["kind"],
      registers,
      collect() {
        const { sessions, polls } = backend.openLinks();
        this.set({ kind: "session" }, sessions);
        this.set({ kind: "poll" }, polls);
      },
    });
    const perResource = (name: string, help: string, value: (r: Busy) => number) =>
      new Gauge({
        name,
        help: `${help} Only for the busiest resources (--metrics-top, default 10): longest line, then most units held. namespace: the first 12 characters of the API key's namespace id (never the key).`,
        labelNames: ["namespace", "resource"],
        registers,
        collect() {
          this.reset(); // a resource that left the top leaves the series
          for (const busy of engine.busiest(top))
            this.set(
              { namespace: busy.ns.slice(0, 12), resource: busy.resource.name },
              value(busy),
            );
        },
      });
    perResource(
      "ratequeue_resource_queued",
      "Requests waiting in the resource's line.",
      (b) => b.resource.line.size,
    );
    perResource("ratequeue_resource_used", "Units of the resource held.", (b) => b.resource.used);
    perResource(
      "ratequeue_resource_capacity",
      "The resource's capacity.",
      (b) => b.resource.capacity,
    );
  }

  private processMetrics = false;

  /** The exposition text. Node's own metrics (CPU, memory, event loop) start at the first scrape. */
  async text(): Promise<string> {
    if (!this.processMetrics) {
      this.processMetrics = true;
      collectDefaultMetrics({ register: this.registry });
    }
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  granted(req: Request, now: number): void {
    this.grants.inc();
    this.waits.observe(Math.max(0, now - req.createdAt) / 1000);
  }

  /** `ends` by state and `was`, bound once: prom-client hashes the labels of every `inc(labels)`. */
  private readonly endsBy = new Map<string, { inc(): void }>();

  ended(req: Request, was: string, now: number): void {
    const key = `${req.state} ${was}`;
    let counter = this.endsBy.get(key);
    if (counter === undefined) {
      counter = this.ends.labels({ state: req.state, was });
      this.endsBy.set(key, counter);
    }
    counter.inc();
    if (was === "active") this.holds.observe(Math.max(0, now - req.grantedAt) / 1000);
  }
}

type Busy = ReturnType<LocalBackend["engine"]["busiest"]>[number];
