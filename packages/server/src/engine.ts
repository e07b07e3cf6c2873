import {
  type AcquireBody,
  DEFAULT_CAPACITY,
  DEFAULT_LOAD,
  DEFAULT_PRIORITY,
  type RequestSnapshot,
  type RequestState,
  type ResourceSnapshot,
} from "@ratequeue/core";
import { DeadlineHeap } from "./internal/deadline-heap.js";
import { Line } from "./internal/line.js";
import { List } from "./internal/list.js";

/** Where the engine reads the time. Inject a fake one in tests. */
export interface Clock {
  now(): number;
}

/** The engine's settings, all resolved (see `resolveServerOptions` for the defaults and units). */
export interface EngineConfig {
  /** Hold bound for a request without `expiresIn`, in ms. */
  defaultExpiresIn: number;
  /** After a client's open poll closes, how long it has to open another before its request is dropped (ms). */
  grace: number;
  /** After the server answers a poll (window ended, or news), how long the client has to poll again (ms). */
  repollGrace: number;
  /** Most requests waiting in one resource's line; more are refused with `queue_full`. */
  maxQueue: number;
  /** How long an ended request is remembered, so that a retried create or release sees its end (ms). */
  retention: number;
  /** Most ended requests remembered at once; the oldest are forgotten first. */
  maxRetained: number;
}

/** Why an acquire was refused: a stable code (the HTTP layer maps it to a status) and a sentence. */
export interface Refusal {
  ok: false;
  code: "request_conflict" | "capacity_mismatch" | "queue_full";
  field?: string;
  detail: string;
}

/** A live request as a store keeps it, to rebuild it after a restart. */
export interface SavedRequest {
  ns: string;
  id: string;
  name: string;
  load: number;
  priority: number;
  capacity: number;
  askedCapacity: number | undefined;
  expiresIn: number;
  lockDelay: number;
  seq: number;
  state: "queued" | "active";
  fencingToken: number;
  /** Clock time (ms) the hold expires, if active. */
  expiresAt: number;
  /** Clock time (ms) a queued request times out, or Infinity. */
  waitUntil: number;
}

/** A request's saved form. */
export function saved(req: Request): SavedRequest {
  return {
    ns: req.ns.key,
    id: req.id,
    name: req.name,
    load: req.load,
    priority: req.priority,
    capacity: req.capacity,
    askedCapacity: req.askedCapacity,
    expiresIn: req.expiresIn,
    lockDelay: req.lockDelay,
    seq: req.seq,
    state: req.state === "active" ? "active" : "queued",
    fencingToken: req.fencingToken,
    expiresAt: req.expiresAt,
    waitUntil: req.waitUntil,
  };
}

/**
 * One request on one resource, from creation to its end; the engine keeps it a while after
 * the end (see `retention`). The HTTP layer holds these handles across a long-poll.
 */
export class Request {
  state: RequestState = "queued";
  fencingToken = 0;
  /** Clock time the hold ends as `expired` (active only). */
  expiresAt = 0;
  /** Clock time a queued request ends as `timed_out`, or Infinity. */
  waitUntil: number;
  /** Clock time the request is dropped when no poll is open on it. */
  livenessAt = 0;
  /** Open polls (long-polls) on this request. */
  pollers = 0;
  endedAt = 0;
  /** Links, owned by the resource's line or holder list. */
  prev: Request | undefined = undefined;
  next: Request | undefined = undefined;
  /** Owned by the deadline heap. */
  deadline = 0;
  heapIndex = -1;
  /** Link in the engine's list of ended requests, oldest first. */
  retainedNext: Request | undefined = undefined;
  /** Undefined once ended, so the resource can be forgotten. */
  resource: Resource | undefined;
  /**
   * Lock delay: ms this request's units stay held back after it ends without a release
   * (dropped or expired), for stores that cannot check fencing tokens. 0: none.
   */
  lockDelay = 0;
  /** While its units are held back by its lock delay: the resource they belong to. */
  heldBackOn: Resource | undefined = undefined;
  /** Arrival order, across restarts (the line's order is rebuilt from it). */
  seq = 0;

  constructor(
    readonly ns: Namespace,
    readonly id: string,
    readonly name: string,
    resource: Resource,
    readonly load: number,
    readonly priority: number,
    /** The resource's capacity (fixed for the resource's life). */
    readonly capacity: number,
    /** The capacity the client asked for, if any (compared when the request is resumed). */
    readonly askedCapacity: number | undefined,
    readonly expiresIn: number,
    timeoutAt: number,
  ) {
    this.resource = resource;
    this.waitUntil = timeoutAt;
  }
}

/** A named resource, alive while anything holds or waits on it. */
export class Resource {
  /** Units held, including those held back by a lock delay. */
  used = 0;
  /** Units held back by the lock delay of holders that ended without a release. */
  heldBack = 0;
  readonly line = new Line<Request>();
  readonly holders = new List<Request>();
  constructor(
    readonly name: string,
    readonly capacity: number,
  ) {}
}

/** One API key's world: resource names and request ids are scoped to it. */
export class Namespace {
  readonly requests = new Map<string, Request>();
  readonly resources = new Map<string, Resource>();
  constructor(readonly key: string) {}
}

/**
 * The queueing engine: pure (no I/O, no timers; time comes from the injected clock) and
 * single-threaded. The host calls `advance()` when `nextDeadline()` comes due, and learns of
 * every grant and every end through `onChange`.
 *
 * Rules:
 * - a resource is created by its first request (capacity from it, default 1) and forgotten as
 *   soon as nothing holds or waits on it;
 * - the line is ordered by priority (higher first), then arrival; the head is granted as soon
 *   as its load fits, and nothing behind it may pass it (so large requests never starve);
 * - every grant takes the next fencing token, a counter shared by all resources, so tokens
 *   strictly increase per resource even after the resource is forgotten and recreated;
 * - a request lives while a poll is open on it; with none open it is dropped after `grace`
 *   (poll closed by the client) or `repollGrace` (poll answered by the server);
 * - a hold ends as `expired` after `expiresIn`; a queued request with a `timeout` ends as
 *   `timed_out` when it elapses (`timeout: 0` never joins the line).
 */
export class Engine {
  private readonly namespaces = new Map<string, Namespace>();
  private readonly heap = new DeadlineHeap<Request>();
  private token: number;
  private seq = 0;
  private retainedHead: Request | undefined = undefined;
  private retainedTail: Request | undefined = undefined;
  private retainedCount = 0;
  private liveCount = 0;
  private resourceCount = 0;

  constructor(
    private readonly config: EngineConfig,
    private readonly clock: Clock = Date,
    /** Called after each grant and each end, with the engine in a consistent state. Must not call back into the engine synchronously. */
    private readonly onChange: (req: Request) => void = () => {},
  ) {
    // Seeded from the clock in µs, so tokens keep growing across restarts even without a store.
    this.token = Math.floor(clock.now() * 1000);
  }

  /**
   * Creates request `id` in namespace `ns`, or resumes it if it exists (a retried create).
   * Resuming with different parameters is a `request_conflict`.
   */
  acquire(
    ns: string,
    id: string,
    body: AcquireBody,
  ): { ok: true; request: Request; created: boolean } | Refusal {
    const now = this.clock.now();
    const space = this.namespace(ns);
    const load = body.load ?? DEFAULT_LOAD;
    const priority = body.priority ?? DEFAULT_PRIORITY;
    const existing = space.requests.get(id);
    if (existing) {
      if (
        existing.name !== body.resource ||
        existing.load !== load ||
        existing.priority !== priority ||
        existing.askedCapacity !== body.capacity
      ) {
        return {
          ok: false,
          code: "request_conflict",
          detail: `request ${id} already exists on resource ${JSON.stringify(existing.name)} with other parameters: use a new request id for a new request`,
        };
      }
      return { ok: true, request: existing, created: false };
    }

    const known = space.resources.get(body.resource);
    const resource =
      known ?? this.createResource(space, body.resource, body.capacity ?? DEFAULT_CAPACITY);
    if (known !== undefined && body.capacity !== undefined && body.capacity !== resource.capacity) {
      return {
        ok: false,
        code: "capacity_mismatch",
        field: "capacity",
        detail: `resource ${JSON.stringify(body.resource)} exists with capacity ${resource.capacity}, not ${body.capacity}: use the same capacity everywhere (it can change once nothing holds or waits on the resource)`,
      };
    }
    if (load > resource.capacity) {
      this.forgetIfIdle(space, resource);
      return {
        ok: false,
        code: "capacity_mismatch",
        field: "load",
        detail: `load ${load} exceeds the capacity (${resource.capacity}) of resource ${JSON.stringify(body.resource)}: it could never be granted`,
      };
    }

    const timeoutAt = body.timeout === undefined ? Number.POSITIVE_INFINITY : now + body.timeout;
    const req = new Request(
      space,
      id,
      body.resource,
      resource,
      load,
      priority,
      resource.capacity,
      body.capacity,
      body.expiresIn ?? this.config.defaultExpiresIn,
      timeoutAt,
    );
    req.lockDelay = body.lockDelay ?? 0;
    req.seq = ++this.seq;
    // Until the first poll attaches, the request is as good as abandoned.
    req.livenessAt = now + this.config.repollGrace;
    if (resource.line.size === 0 && resource.used + load <= resource.capacity) {
      this.grant(resource, req, now); // the common, uncontended case: no line to join
    } else {
      resource.line.push(req);
      this.pump(resource, now, req);
    }
    if (req.state === "queued") {
      if (body.timeout === 0) {
        resource.line.unlink(req);
        this.pump(resource, now);
        this.record(space, req);
        this.end(req, "timed_out", now);
        return { ok: true, request: req, created: true };
      }
      if (resource.line.size > this.config.maxQueue) {
        resource.line.unlink(req);
        this.pump(resource, now);
        this.forgetIfIdle(space, resource);
        return {
          ok: false,
          code: "queue_full",
          detail: `resource ${JSON.stringify(body.resource)} already has ${this.config.maxQueue} requests waiting (the server's maxQueue): retry later or spread the work over more names`,
        };
      }
    }
    this.record(space, req);
    this.schedule(req);
    return { ok: true, request: req, created: true };
  }

  /**
   * Rebuilds live requests saved before a restart (see `Store`), in arrival order. Holders keep
   * their units and fencing tokens; waiters keep their places. None has a poll open yet, so each
   * client has `recoveryWindow` ms to come back before its request is dropped. Call it once, on
   * an empty engine.
   */
  restore(saved: readonly SavedRequest[], tokenFloor: number, recoveryWindow: number): void {
    const now = this.clock.now();
    this.token = Math.max(this.token, tokenFloor);
    for (const r of [...saved].sort((a, b) => a.seq - b.seq)) {
      const space = this.namespace(r.ns);
      const resource =
        space.resources.get(r.name) ?? this.createResource(space, r.name, r.capacity);
      const req = new Request(
        space,
        r.id,
        r.name,
        resource,
        r.load,
        r.priority,
        r.capacity,
        r.askedCapacity,
        r.expiresIn,
        r.waitUntil,
      );
      req.lockDelay = r.lockDelay;
      req.seq = r.seq;
      this.seq = Math.max(this.seq, r.seq);
      req.livenessAt = now + recoveryWindow;
      if (r.state === "active") {
        resource.holders.push(req);
        resource.used += req.load;
        req.state = "active";
        req.fencingToken = r.fencingToken;
        req.expiresAt = r.expiresAt;
        this.token = Math.max(this.token, r.fencingToken);
      } else {
        resource.line.push(req);
      }
      this.record(space, req);
      this.schedule(req);
    }
    // Holders saved as active may have left room (e.g. a release that was not yet saved).
    for (const space of this.namespaces.values())
      for (const resource of space.resources.values()) this.pump(resource, now);
  }

  /** The request, live or recently ended. */
  get(ns: string, id: string): Request | undefined {
    return this.namespaces.get(ns)?.requests.get(id);
  }

  /**
   * Ends the request by its client's wish: `released` if active, `cancelled` if queued.
   * Idempotent: an ended request is returned as it is.
   */
  release(ns: string, id: string): Request | undefined {
    const req = this.get(ns, id);
    if (req === undefined) return undefined;
    if (req.state === "active" || req.state === "queued") {
      this.finish(req, req.state === "active" ? "released" : "cancelled", this.clock.now());
    }
    return req;
  }

  /** A poll opened on the request: it is alive for as long as one stays open. */
  attach(req: Request): void {
    if (req.resource === undefined) return;
    req.pollers++;
    this.schedule(req);
  }

  /**
   * A poll on the request ended. `answered`: the server answered it (the client will poll
   * again at once); otherwise the client closed it (it may be gone).
   */
  detach(req: Request, answered: boolean): void {
    if (req.resource === undefined) return;
    if (--req.pollers > 0) return;
    req.livenessAt = this.clock.now() + (answered ? this.config.repollGrace : this.config.grace);
    this.schedule(req);
  }

  /**
   * A poll was answered the moment it arrived: as good as attach then detach(answered), in one
   * step — the client proved alive, and gets `repollGrace` for its next poll.
   */
  answered(req: Request): void {
    if (req.resource === undefined || req.pollers > 0) return;
    req.livenessAt = this.clock.now() + this.config.repollGrace;
    this.schedule(req);
  }

  /**
   * The connection that carried the request's last (answered) poll closed: its client is
   * probably gone, so it gets `grace` instead of `repollGrace` to come back.
   */
  hasten(req: Request): void {
    if (req.resource === undefined || req.pollers > 0) return;
    req.livenessAt = Math.min(req.livenessAt, this.clock.now() + this.config.grace);
    this.schedule(req);
  }

  /** Clock time of the next deadline, if any: call `advance()` then. */
  nextDeadline(): number | undefined {
    const due = this.heap.peek()?.deadline;
    const head = this.retainedHead;
    if (head === undefined) return due;
    const forget = head.endedAt + this.config.retention;
    return due === undefined ? forget : Math.min(due, forget);
  }

  /** Ends every request whose deadline has come (expiry, timeout, liveness) and forgets old ends. */
  advance(): void {
    const now = this.clock.now();
    for (
      let req = this.heap.peek();
      req !== undefined && req.deadline <= now;
      req = this.heap.peek()
    ) {
      if (req.heldBackOn !== undefined) this.endLockDelay(req, now);
      else if (req.state === "active" && req.expiresAt <= now) this.finish(req, "expired", now);
      else if (req.state === "queued" && req.waitUntil <= now) this.finish(req, "timed_out", now);
      else this.finish(req, "dropped", now);
    }
    this.forgetEnded(now);
  }

  /** What the wire says about a request. */
  snapshot(req: Request): RequestSnapshot {
    const snap: RequestSnapshot = {
      id: req.id,
      resource: req.name,
      state: req.state,
      load: req.load,
      priority: req.priority,
      capacity: req.capacity,
    };
    if (req.fencingToken !== 0) snap.fencingToken = req.fencingToken;
    if (req.state === "active") snap.expiresIn = Math.max(0, req.expiresAt - this.clock.now());
    if (req.resource !== undefined) snap.pollWithin = this.config.repollGrace;
    return snap;
  }

  /** A resource's state, or undefined if nothing holds or waits on it. */
  resource(ns: string, name: string, maxHolders = 100): ResourceSnapshot | undefined {
    const resource = this.namespaces.get(ns)?.resources.get(name);
    if (resource === undefined) return undefined;
    const now = this.clock.now();
    const holders: ResourceSnapshot["holders"] = [];
    for (const h of resource.holders) {
      if (holders.length >= maxHolders) break;
      holders.push({
        id: h.id,
        load: h.load,
        fencingToken: h.fencingToken,
        expiresIn: Math.max(0, h.expiresAt - now),
      });
    }
    return {
      name,
      capacity: resource.capacity,
      used: resource.used,
      heldBack: resource.heldBack,
      active: resource.holders.size,
      queued: resource.line.size,
      holders,
    };
  }

  /** Counts, for tests, benchmarks and the health route. */
  stats(): {
    namespaces: number;
    resources: number;
    live: number;
    retained: number;
    timers: number;
  } {
    return {
      namespaces: this.namespaces.size,
      resources: this.resourceCount,
      live: this.liveCount,
      retained: this.retainedCount,
      timers: this.heap.size,
    };
  }

  /** Every live request (for shutdown). */
  *liveRequests(): IterableIterator<Request> {
    for (const space of this.namespaces.values()) {
      for (const req of space.requests.values()) if (req.resource !== undefined) yield req;
    }
  }

  // --- internals ---------------------------------------------------------------------------

  private namespace(key: string): Namespace {
    let space = this.namespaces.get(key);
    if (space === undefined) {
      space = new Namespace(key);
      this.namespaces.set(key, space);
    }
    return space;
  }

  private createResource(space: Namespace, name: string, capacity: number): Resource {
    const resource = new Resource(name, capacity);
    space.resources.set(name, resource);
    this.resourceCount++;
    return resource;
  }

  private record(space: Namespace, req: Request): void {
    space.requests.set(req.id, req);
    this.liveCount++;
  }

  /** Grants from the head of the line while the head fits. `quiet` is not announced (its creator answers). */
  private pump(resource: Resource, now: number, quiet?: Request): void {
    for (let head = resource.line.first(); head !== undefined; head = resource.line.first()) {
      if (resource.used + head.load > resource.capacity) return;
      resource.line.unlink(head);
      this.grant(resource, head, now);
      if (head !== quiet) {
        this.schedule(head);
        this.onChange(head);
      }
    }
  }

  private grant(resource: Resource, req: Request, now: number): void {
    resource.holders.push(req);
    resource.used += req.load;
    req.state = "active";
    req.fencingToken = ++this.token;
    req.expiresAt = now + req.expiresIn;
  }

  /** Ends a live request and hands its room on. */
  private finish(req: Request, state: RequestState, now: number): void {
    const resource = req.resource!;
    const holdBack =
      req.state === "active" && req.lockDelay > 0 && (state === "dropped" || state === "expired");
    if (req.state === "active") {
      resource.holders.unlink(req);
      if (!holdBack) resource.used -= req.load;
    } else {
      resource.line.unlink(req);
    }
    this.end(req, state, now);
    if (holdBack) {
      // The holder may still believe it holds: keep its units from anyone else for a while.
      resource.heldBack += req.load;
      req.heldBackOn = resource;
      this.heap.set(req, now + req.lockDelay);
    }
    this.pump(resource, now);
    this.forgetIfIdle(req.ns, resource);
    this.forgetEnded(now);
    this.onChange(req);
  }

  /** A lock delay is over: the units go to the line. */
  private endLockDelay(req: Request, now: number): void {
    const resource = req.heldBackOn!;
    req.heldBackOn = undefined;
    this.heap.delete(req);
    resource.used -= req.load;
    resource.heldBack -= req.load;
    this.pump(resource, now);
    this.forgetIfIdle(req.ns, resource);
  }

  private end(req: Request, state: RequestState, now: number): void {
    req.state = state;
    req.endedAt = now;
    req.resource = undefined;
    req.pollers = 0;
    this.heap.delete(req);
    this.liveCount--;
    if (this.retainedTail) this.retainedTail.retainedNext = req;
    else this.retainedHead = req;
    this.retainedTail = req;
    this.retainedCount++;
  }

  private forgetIfIdle(space: Namespace, resource: Resource): void {
    if (
      resource.used === 0 &&
      resource.line.size === 0 &&
      space.resources.get(resource.name) === resource
    ) {
      space.resources.delete(resource.name);
      this.resourceCount--;
      if (space.requests.size === 0 && space.resources.size === 0)
        this.namespaces.delete(space.key);
    }
  }

  private forgetEnded(now: number): void {
    const horizon = now - this.config.retention;
    for (let r = this.retainedHead; r !== undefined; r = this.retainedHead) {
      if (this.retainedCount <= this.config.maxRetained && r.endedAt > horizon) return;
      this.retainedHead = r.retainedNext;
      if (this.retainedHead === undefined) this.retainedTail = undefined;
      r.retainedNext = undefined;
      this.retainedCount--;
      const space = r.ns;
      if (space.requests.get(r.id) === r) space.requests.delete(r.id);
      if (space.requests.size === 0 && space.resources.size === 0)
        this.namespaces.delete(space.key);
    }
  }

  /** Puts the request's earliest pending deadline in the heap. */
  private schedule(req: Request): void {
    let at = req.pollers === 0 ? req.livenessAt : Number.POSITIVE_INFINITY;
    if (req.state === "active") at = Math.min(at, req.expiresAt);
    else if (req.state === "queued") at = Math.min(at, req.waitUntil);
    if (at === Number.POSITIVE_INFINITY) this.heap.delete(req);
    else this.heap.set(req, at);
  }
}
