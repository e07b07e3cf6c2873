import {
  type AcquireBody,
  DEFAULT_CAPACITY,
  DEFAULT_LANE,
  DEFAULT_LOAD,
  DEFAULT_PRIORITY,
  type RequestSnapshot,
  type RequestState,
  type ResourceSnapshot,
} from "@ratequeue/core";
import { DeadlineHeap } from "./internal/deadline-heap.js";
import {
  type Lane,
  type LaneConfig,
  Lanes,
  laneConfigProblem,
  laneMost,
} from "./internal/lanes.js";
import { Line } from "./internal/line.js";
import { List } from "./internal/list.js";
import { type LivenessConfig, Session } from "./liveness.js";
import { amountOf, describeRate, type RateLimitSpec, RateState } from "./rate.js";

export { Session };

/** Where the engine reads the time. Inject a fake one in tests. */
export interface Clock {
  now(): number;
}

/** The engine's settings, all resolved (see `resolveServerOptions` for the defaults and units). */
export interface EngineConfig extends LivenessConfig {
  /** Hold bound for a request without `expiresIn`, in ms. */
  defaultExpiresIn: number;
  /** Most requests waiting in one resource's line; more are refused with `queue_full`. */
  maxQueue: number;
  /** How long an ended request is remembered, so that a retried create or release sees its end (ms). */
  retention: number;
  /** Most ended requests remembered per namespace; its oldest are forgotten first. */
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
  /** The session it belongs to; undefined for a request made without one. */
  session: string | undefined;
  name: string;
  load: number;
  priority: number;
  /** Its lane; left out for the default lane (and by stores of versions before lanes). */
  lane?: string;
  capacity: number;
  askedCapacity: number | undefined;
  expiresIn: number;
  lockDelay: number;
  seq: number;
  /**
   * `revoked`: an operator revoked it while it held, and its client may not have heard yet: its
   * units stay held back until the client is told (see `Engine.restore`).
   */
  state: "queued" | "active" | "revoked";
  /** Why an operator revoked it (`revoked` only). */
  reason?: string;
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
    session: req.session.id,
    name: req.name,
    load: req.load,
    priority: req.priority,
    ...(req.lane === DEFAULT_LANE ? {} : { lane: req.lane }),
    capacity: req.capacity,
    askedCapacity: req.askedCapacity,
    expiresIn: req.expiresIn,
    lockDelay: req.lockDelay,
    seq: req.seq,
    state:
      req.state === "active"
        ? "active"
        : req.state === "revoked" && req.heldBackOn !== undefined
          ? "revoked"
          : "queued",
    ...(req.reason === undefined ? {} : { reason: req.reason }),
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
  endedAt = 0;
  /** Links, owned by the resource's line or holder list. */
  prev: Request | undefined = undefined;
  next: Request | undefined = undefined;
  /** Owned by the deadline heap. */
  deadline = 0;
  heapIndex = -1;
  /** Link in its namespace's list of ended requests, oldest first. */
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
  /** Clock times it was created (or restored) and granted, for the metrics (0: not granted). */
  createdAt = 0;
  grantedAt = 0;
  /** Why an operator revoked it (state `revoked`). */
  reason: string | undefined = undefined;
  /** The lane it waits in (see `Lanes`). */
  lane = DEFAULT_LANE;

  constructor(
    readonly ns: Namespace,
    readonly id: string,
    /** Whose liveness it lives by. */
    readonly session: Session,
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

/** A named resource, alive while anything holds or waits on it (or an operator's limit is set). */
export class Resource {
  /** Units held, including those held back by a lock delay. */
  used = 0;
  /** Its rate limits and what they have counted (an operator's `rates`), if any. */
  rate: RateState | undefined = undefined;
  /** When its line's head fits its rate limits again; owned by the engine's rate heap. */
  deadline = 0;
  heapIndex = -1;
  /** Nothing is granted before this time (see `Engine.quietUntil`). */
  quietUntil = Number.NEGATIVE_INFINITY;
  /** Units held back by the lock delay of holders that ended without a release. */
  heldBack = 0;
  /** How many such ended holders hold units back (they count as holders for `concurrency`). */
  heldBackCount = 0;
  /** Most requests holding at once, whatever their load (an operator's `concurrency`). */
  concurrency = Number.POSITIVE_INFINITY;
  /**
   * Its waiters: one line, until it has lanes (a request names a lane, or an operator configures
   * them) — then a line per lane, for good (see `Lanes`). A resource that never sees a lane keeps
   * the single line and its direct checks: lanes cost nothing where they are not used.
   */
  line: Line<Request> | Lanes<Request> = new Line<Request>();
  readonly holders = new List<Request>();
  constructor(
    readonly name: string,
    /** Set by its first request, or by an operator's limit (which may change it at any time). */
    public capacity: number,
  ) {}
}

/** One API key's world: resource names and request ids are scoped to it. */
export class Namespace {
  readonly requests = new Map<string, Request>();
  readonly resources = new Map<string, Resource>();
  readonly sessions = new Map<string, Session>();
  /**
   * Capacities an operator set (admin API), by resource name: they win over what requests ask,
   * and such a resource is kept while idle.
   */
  readonly limits = new Map<string, number>();
  /** Rate limits an operator set (admin API), by resource name: kept, like `limits`. */
  readonly rates = new Map<string, readonly RateLimitSpec[]>();
  /** Most requests holding at once an operator set (admin API), by resource name: kept too. */
  readonly concurrency = new Map<string, number>();
  /** Lanes an operator configured (admin API), by resource name: kept too. */
  readonly lanes = new Map<string, LaneConfig>();
  /**
   * Its ended requests, oldest first, remembered for `retention` — at most `maxRetained` of
   * them: a quota per namespace, so that one key's traffic never makes another's forgotten.
   */
  retainedHead: Request | undefined = undefined;
  retainedTail: Request | undefined = undefined;
  retainedCount = 0;
  /** The last fencing token it handed out: tokens count per namespace (see `Engine`). */
  token = 0;
  /** When its oldest end is forgotten; owned by the engine's retention heap. */
  deadline = 0;
  heapIndex = -1;
  constructor(readonly key: string) {}

  get empty(): boolean {
    return (
      this.requests.size === 0 &&
      this.resources.size === 0 &&
      this.sessions.size === 0 &&
      this.limits.size === 0 &&
      this.rates.size === 0 &&
      this.concurrency.size === 0 &&
      this.lanes.size === 0
    );
  }
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
 *   as its load fits, and nothing behind it may pass it (so large requests never starve) — except
 *   a waiter whose session is away (its connection closed): it keeps its place, but is passed
 *   over until its client comes back;
 * - with lanes, each lane is such a line; lanes take turns (`fair`), or each waits for its own
 *   share (`strict`) — see `pumpLanes`;
 * - every grant takes the next fencing token of its namespace: a counter shared by the
 *   namespace's resources, so tokens strictly increase per resource even after the resource is
 *   forgotten and recreated, and one per namespace, so a key learns nothing of another's
 *   traffic from its own tokens. A namespace's counter outlives the namespace (one number per
 *   key), and starts from the clock in µs, so that tokens keep growing across restarts of a
 *   server without a store as long as the wall clock does not step back;
 * - a request lives by its session's liveness (see `liveness.ts`);
 * - a hold ends as `expired` after `expiresIn`; a queued request with a `timeout` ends as
 *   `timed_out` when it elapses (`timeout: 0` never joins the line).
 */
/** What the host's metrics hear of: every grant, and every end of a live request. */
export interface EngineObserver {
  granted(req: Request, now: number): void;
  /** `was`: the state it ended from; `req.state` is its final state. */
  ended(req: Request, was: RequestState, now: number): void;
}

export class Engine {
  /** Told of every grant and end (metrics), if set. */
  observer: EngineObserver | undefined;
  /** Told when an ended request's held-back units go back to its resource, if set. */
  onHoldBackEnd: ((req: Request) => void) | undefined;
  /** Live requests that hold units (the rest of `liveCount` wait). */
  activeCount = 0;
  private readonly namespaces = new Map<string, Namespace>();
  /** Expiry and timeout deadlines of requests. */
  private readonly heap = new DeadlineHeap<Request>();
  /** Liveness deadlines of sessions. */
  private readonly sessionHeap = new DeadlineHeap<Session>();
  private readonly sessionNs = new Map<Session, Namespace>();
  /** Namespaces with ended requests, by when their oldest is forgotten. */
  private readonly retentionHeap = new DeadlineHeap<Namespace>();
  /** Resources whose line's head waits for their rate limits, by when it fits. */
  private readonly rateHeap = new DeadlineHeap<Resource>();
  /** Last tokens of namespaces that were forgotten, to go on from if they come back. */
  private readonly tokens = new Map<string, number>();
  /** No namespace's tokens start below this. */
  private tokenFloor = 0;
  /** What `restore` sets as the quiet time of resources with waiters (`quietUntil`). */
  private quietTill = Number.NEGATIVE_INFINITY;
  /**
   * The resources `restore` made quiet, by `ns\0name`, until `quietTill`: one forgotten while
   * quiet (its waiters timed out) and made again is quiet as long.
   */
  private readonly quiet = new Set<string>();
  private seq = 0;
  private retainedCount = 0;
  private liveCount = 0;
  private resourceCount = 0;

  constructor(
    private readonly config: EngineConfig,
    private readonly clock: Clock = Date,
    /** Called after each grant and each end, with the engine in a consistent state. Must not call back into the engine synchronously. */
    private readonly onChange: (req: Request) => void = () => {},
    /** Called when a session is forgotten (nothing open, nothing live, its time is up). */
    private readonly onSessionGone: (session: Session) => void = () => {},
  ) {}

  /**
   * Creates request `id` in namespace `ns`, or resumes it if it exists (a retried create).
   * Resuming with different parameters is a `request_conflict`. With `sessionId` the request
   * lives by that session (created on first use, and touched: the client is alive); without,
   * by a session of its own, kept alive by the request's polls.
   */
  acquire(
    ns: string,
    id: string,
    body: AcquireBody,
    sessionId?: string,
  ): { ok: true; request: Request; created: boolean } | Refusal {
    const now = this.clock.now();
    const space = this.namespace(ns);
    const load = body.load ?? DEFAULT_LOAD;
    const priority = body.priority ?? DEFAULT_PRIORITY;
    const lane = body.lane ?? DEFAULT_LANE;
    const existing = space.requests.get(id);
    if (existing) {
      if (
        existing.name !== body.resource ||
        existing.load !== load ||
        existing.priority !== priority ||
        existing.lane !== lane ||
        existing.askedCapacity !== body.capacity
      ) {
        return {
          ok: false,
          code: "request_conflict",
          detail: `request ${id} already exists on resource ${JSON.stringify(existing.name)} with other parameters: use a new request id for a new request`,
        };
      }
      // The client is alive: touch its session as it is now (the request's own may be gone).
      if (sessionId !== undefined) this.touch(this.session(ns, sessionId));
      return { ok: true, request: existing, created: false };
    }

    const known = space.resources.get(body.resource);
    const resource =
      known ?? this.createResource(space, body.resource, body.capacity ?? DEFAULT_CAPACITY);
    if (
      known !== undefined &&
      known.used === 0 &&
      known.line.size === 0 &&
      !space.limits.has(body.resource)
    ) {
      // Kept while idle for its rate limits: its capacity is still the next request's to set.
      known.capacity = body.capacity ?? DEFAULT_CAPACITY;
    }
    if (
      known !== undefined &&
      body.capacity !== undefined &&
      body.capacity !== resource.capacity &&
      !space.limits.has(body.resource) // an operator's limit wins over what requests ask
    ) {
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
    const over = resource.rate?.specs.find((spec) => amountOf(spec, load) > spec.limit);
    if (over !== undefined) {
      this.forgetIfIdle(space, resource);
      return {
        ok: false,
        code: "capacity_mismatch",
        field: "load",
        detail: `load ${load} exceeds the rate limit of resource ${JSON.stringify(body.resource)} (${describeRate(over)}): it could never be granted`,
      };
    }
    const laneConfig = space.lanes.size === 0 ? undefined : space.lanes.get(body.resource);
    if (laneConfig !== undefined && load > laneMost(laneConfig, lane, resource.capacity)) {
      this.forgetIfIdle(space, resource);
      return laneRefusal(laneConfig, body.resource, lane, load, resource.capacity);
    }
    const lanes =
      resource.line instanceof Lanes || lane !== DEFAULT_LANE
        ? this.withLanes(space, resource)
        : undefined;

    // Until a poll attaches, a request of its own session is as good as abandoned after repollGrace.
    const session =
      sessionId === undefined
        ? new Session(undefined, now + this.config.repollGrace)
        : this.session(ns, sessionId);
    if (sessionId !== undefined) this.touch(session);
    const timeoutAt = body.timeout === undefined ? Number.POSITIVE_INFINITY : now + body.timeout;
    const req = new Request(
      space,
      id,
      session,
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
    req.lane = lane;
    req.seq = ++this.seq;
    req.createdAt = now;
    if (
      resource.line.size === 0 &&
      now >= resource.quietUntil &&
      this.fits(resource, load, now) &&
      (lanes === undefined || this.laneRoom(resource, lanes, lanes.lane(lane), load) <= POOL)
    ) {
      this.grant(resource, req, now); // the common, uncontended case: no line to join
    } else {
      resource.line.push(req);
      session.queued++;
      this.pump(resource, now, req);
    }
    if (req.state === "queued") {
      if (body.timeout === 0 || resource.line.size > this.config.maxQueue) {
        resource.line.unlink(req);
        this.pump(resource, now);
        if (body.timeout !== 0) {
          session.queued--;
          this.forgetIfIdle(space, resource);
          this.forgetSessionIfIdle(session, now);
          return {
            ok: false,
            code: "queue_full",
            detail: `resource ${JSON.stringify(body.resource)} already has ${this.config.maxQueue} requests waiting (the server's maxQueue): retry later or spread the work over more names`,
          };
        }
        this.record(space, req);
        this.end(req, "timed_out", now);
        this.forgetIfIdle(space, resource);
        this.forgetEnded(now, space);
        return { ok: true, request: req, created: true };
      }
    }
    this.record(space, req);
    this.schedule(req);
    this.scheduleSession(session);
    return { ok: true, request: req, created: true };
  }

  /**
   * Rebuilds live requests saved before a restart (see `Store`), in arrival order. Holders keep
   * their units and fencing tokens; waiters keep their places. No session is connected yet, so
   * each has `recoveryWindow` ms to come back before its requests are dropped. Call it once, on
   * an empty engine.
   */
  restore(
    saved: readonly SavedRequest[],
    recoveryWindow: number,
    /** Per namespace, the highest token it handed out before the restart. */
    tokens: ReadonlyMap<string, number> = new Map(),
    /** Where a namespace not in `tokens` starts from (at least). */
    tokenFloor = 0,
    /**
     * Sessions an earlier restart restored that have not come back since (`ns\0session`): they
     * keep that restart's deadline instead of getting a new window.
     */
    recovering: ReadonlyMap<string, number> = new Map(),
    /** Operators' limits (`ns\0name` → capacity), kept while idle. */
    limits: ReadonlyMap<string, number> = new Map(),
    /**
     * Operators' rate limits (`ns\0name` → limits). The grants the previous run counted are
     * unknown: each limit counts as full for the window that holds the restart.
     */
    rates: ReadonlyMap<string, readonly RateLimitSpec[]> = new Map(),
    /** Operators' concurrency limits (`ns\0name` → requests holding at once), kept while idle. */
    concurrency: ReadonlyMap<string, number> = new Map(),
    /** Operators' lanes (`ns\0name` → config), kept while idle. */
    lanes: ReadonlyMap<string, LaneConfig> = new Map(),
  ): {
    /** The sessions restored, and when each must be back by. */
    sessions: Array<{ ns: string; session: string; until: number }>;
    /** Revoked holders whose clients may not know it yet (see `SavedRequest.state`). */
    revoked: Request[];
  } {
    const now = this.clock.now();
    const revoked: Request[] = [];
    const restored = new Map<string, { ns: string; session: string; until: number }>();
    // Tokens first: a namespace made before they are known would start from the clock.
    this.tokenFloor = tokenFloor;
    for (const [ns, token] of tokens) this.tokens.set(ns, token);
    for (const { space, name, value } of this.byName(limits)) {
      space.limits.set(name, value);
      if (!space.resources.has(name)) this.createResource(space, name, value);
    }
    // Lanes before the requests, so that they join their lanes' lines as they are restored (a
    // resource made now gets its lanes). Only a resource that exists already (an operator's
    // capacity) is given them now: one the requests make keeps their capacity, and one with
    // neither is made last (made here, it would have had the default capacity, 1).
    for (const { space, name, value } of this.byName(lanes)) {
      space.lanes.set(name, value);
      const resource = space.resources.get(name);
      if (resource !== undefined) this.withLanes(space, resource);
    }
    for (const r of [...saved].sort((a, b) => a.seq - b.seq)) {
      const space = this.namespace(r.ns);
      const resource =
        space.resources.get(r.name) ?? this.createResource(space, r.name, r.capacity);
      let session: Session;
      if (r.session === undefined) {
        session = new Session(undefined, now + recoveryWindow);
      } else {
        const key = `${r.ns}\0${r.session}`;
        const until = recovering.get(key) ?? now + recoveryWindow;
        session = this.session(r.ns, r.session, until);
        if (!restored.has(key)) restored.set(key, { ns: r.ns, session: r.session, until });
      }
      const req = new Request(
        space,
        r.id,
        session,
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
      req.lane = r.lane ?? DEFAULT_LANE;
      req.seq = r.seq;
      req.createdAt = now;
      this.seq = Math.max(this.seq, r.seq);
      const lane =
        resource.line instanceof Lanes || req.lane !== DEFAULT_LANE
          ? this.withLanes(space, resource).lane(req.lane)
          : undefined;
      space.token = Math.max(space.token, r.fencingToken);
      if (r.state === "revoked") {
        // Revoked before the restart, its client perhaps not told: it may still believe it
        // holds. Its units stay held back until it is told (`toldOfEnd`), or until its session
        // is given up — by then its client has given the lease up by its own rule.
        req.fencingToken = r.fencingToken;
        req.reason = r.reason;
        req.state = "revoked";
        req.endedAt = now;
        req.resource = undefined;
        resource.used += req.load;
        if (lane !== undefined) lane.used += req.load;
        resource.heldBack += req.load;
        resource.heldBackCount++;
        req.heldBackOn = resource;
        this.heap.set(req, session.holdUntil);
        space.requests.set(req.id, req);
        this.retain(space, req, now);
        revoked.push(req);
        continue;
      }
      if (r.state === "active") {
        resource.holders.push(req);
        resource.used += req.load;
        if (lane !== undefined) {
          lane.used += req.load;
          lane.active++;
        }
        req.state = "active";
        session.active++;
        req.fencingToken = r.fencingToken;
        req.expiresAt = r.expiresAt;
        req.grantedAt = now;
        this.activeCount++;
      } else {
        resource.line.push(req);
        session.queued++;
        resource.quietUntil = this.quietTill;
        if (this.quietTill > now) this.quiet.add(`${r.ns}\0${r.name}`);
      }
      this.record(space, req);
      this.schedule(req);
      this.scheduleSession(session);
    }
    // Lanes, concurrency and rate limits last: a resource the saved requests made keeps their
    // capacity.
    for (const { space, name } of this.byName(lanes)) this.kept(space, name);
    for (const { space, name, value } of this.byName(concurrency)) {
      space.concurrency.set(name, value);
      this.kept(space, name).concurrency = value;
    }
    // The grants of the previous run are not known: each limit counts as full for the window
    // that holds now.
    for (const { space, name, value } of this.byName(rates)) {
      space.rates.set(name, value);
      const resource = this.kept(space, name);
      resource.rate = new RateState(value);
      resource.rate.saturate(now);
    }
    // Holders saved as active may have left room (e.g. a release that was not yet saved).
    for (const space of this.namespaces.values())
      for (const resource of space.resources.values()) this.pump(resource, now);
    return { sessions: [...restored.values()], revoked };
  }

  /**
   * The client of ended request `req` was told of its end (its event sent, or its poll
   * answered): units still held back for it go back within `grace` (its lock delay, if longer)
   * — the client acts on the news, or gives the lease up by the liveness rule, within that.
   */
  toldOfEnd(req: Request): void {
    if (req.heldBackOn === undefined) return;
    const at = this.clock.now() + Math.max(this.config.grace, req.lockDelay);
    if (at < req.deadline) this.heap.set(req, at);
  }

  /** The request, live or recently ended. */
  get(ns: string, id: string): Request | undefined {
    return this.namespaces.get(ns)?.requests.get(id);
  }

  /**
   * Session `id` of namespace `ns`, created (as if just heard from) if it does not exist.
   * `until`: for a new session, how long it lives before anything attaches (default: repollGrace).
   */
  session(ns: string, id: string, until?: number): Session {
    const space = this.namespace(ns);
    let session = space.sessions.get(id);
    if (session === undefined) {
      session = new Session(id, until ?? this.clock.now() + this.config.repollGrace);
      space.sessions.set(id, session);
      this.sessionNs.set(session, space);
      this.scheduleSession(session);
    }
    return session;
  }

  /** The session, if it exists. */
  findSession(ns: string, id: string): Session | undefined {
    return this.namespaces.get(ns)?.sessions.get(id);
  }

  /** The live requests of a session. */
  sessionRequests(session: Session): Iterable<Request> {
    return session.requests;
  }

  /**
   * Ends the request by its client's wish: `released` if active, `cancelled` if queued.
   * Idempotent: an ended request is returned as it is.
   */
  release(ns: string, id: string): Request | undefined {
    const req = this.get(ns, id);
    if (req === undefined) return undefined;
    if (req.state === "active" || req.state === "queued") {
      if (req.session.id !== undefined) this.touch(req.session);
      this.finish(req, req.state === "active" ? "released" : "cancelled", this.clock.now());
    }
    return req;
  }

  /** A connection or poll of the session opened: its requests live while one stays open. */
  attachSession(session: Session): void {
    const wasAway = session.attach();
    this.scheduleSession(session);
    if (wasAway) this.serveAround(session);
  }

  /** A connection or poll of the session ended: `answered` by the server, or `closed` by the client. */
  detachSession(session: Session, how: "answered" | "closed"): void {
    const wasAway = session.away;
    session.detach(how, this.clock.now(), this.config);
    this.scheduleSession(session);
    if (session.away && !wasAway) this.serveAround(session);
  }

  /** A message from the session's client arrived: it is alive. */
  touch(session: Session): void {
    const wasAway = session.touch(this.clock.now(), this.config);
    this.scheduleSession(session);
    if (wasAway) this.serveAround(session);
  }

  /** The session's connection closed or went silent, with nothing else open: it may be gone. */
  leave(session: Session): void {
    const wasAway = session.away;
    session.leave(this.clock.now(), this.config);
    this.scheduleSession(session);
    if (session.away && !wasAway) this.serveAround(session);
  }

  /** A poll opened on the request: it is alive for as long as one stays open. */
  attach(req: Request): void {
    if (req.resource !== undefined) this.attachSession(req.session);
  }

  /**
   * A poll on the request ended. `answered`: the server answered it (the client will poll
   * again at once); otherwise the client closed it (it may be gone).
   */
  detach(req: Request, answered: boolean): void {
    if (req.resource !== undefined)
      this.detachSession(req.session, answered ? "answered" : "closed");
  }

  /**
   * A poll was answered the moment it arrived: the client proved alive, and gets `repollGrace`
   * for its next poll (an open poll, if any, keeps it alive anyway).
   */
  answered(req: Request): void {
    if (req.resource !== undefined) this.touch(req.session);
  }

  /**
   * The connection that carried the request's last (answered) poll closed: its client is
   * probably gone, so it gets `grace` instead of `repollGrace` to come back.
   */
  hasten(req: Request): void {
    if (req.resource !== undefined) this.leave(req.session);
  }

  /**
   * For the next `restore`: a resource it restores waiters to grants nothing before `until` (the
   * clock's time); what waits, or arrives meanwhile, queues in order and is served then. A replica
   * that takes over on PostgreSQL does this for twice its `grace`: the leader before it may have
   * told a client of a grant it never committed, and such a grant is always of a waiter the
   * restored state has (docs/operations.md, "Grants before their commit").
   */
  quietUntil(until: number): void {
    this.quietTill = until;
  }

  /** Clock time of the next deadline, if any: call `advance()` then. */
  nextDeadline(): number | undefined {
    let due = this.heap.peek()?.deadline;
    for (const at of [
      this.sessionHeap.peek()?.deadline,
      this.retentionHeap.peek()?.deadline,
      this.rateHeap.peek()?.deadline,
    ]) {
      if (at !== undefined && (due === undefined || at < due)) due = at;
    }
    return due;
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
      else if (req.state === "active") this.finish(req, "expired", now);
      else this.finish(req, "timed_out", now);
    }
    for (
      let session = this.sessionHeap.peek();
      session !== undefined && session.deadline <= now;
      session = this.sessionHeap.peek()
    ) {
      this.expireSession(session, now);
    }
    for (
      let resource = this.rateHeap.peek();
      resource !== undefined && resource.deadline <= now;
      resource = this.rateHeap.peek()
    ) {
      this.rateHeap.delete(resource);
      this.pump(resource, now);
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
    if (req.resource !== undefined && req.session.id === undefined)
      snap.pollWithin = this.config.repollGrace;
    if (req.reason !== undefined) snap.reason = req.reason;
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
    let away = 0;
    for (const w of resource.line) if (w.session.away) away++;
    const snap: ResourceSnapshot = {
      name,
      capacity: resource.capacity,
      used: resource.used,
      heldBack: resource.heldBack,
      active: resource.holders.size,
      queued: resource.line.size,
      away,
      holders,
    };
    if (resource.line instanceof Lanes) snap.lanes = laneView(resource.line);
    return snap;
  }

  /** Every namespace with something live or remembered, for the admin API. */
  namespaceList(): Iterable<Namespace> {
    return this.namespaces.values();
  }

  /** Namespace `key`, if it has anything. */
  findNamespace(key: string): Namespace | undefined {
    return this.namespaces.get(key);
  }

  /** Counts, for tests, benchmarks and the health route. */
  stats(): {
    namespaces: number;
    resources: number;
    live: number;
    retained: number;
    timers: number;
    sessions: number;
  } {
    return {
      namespaces: this.namespaces.size,
      resources: this.resourceCount,
      live: this.liveCount,
      retained: this.retainedCount,
      timers: this.heap.size + this.sessionHeap.size + this.rateHeap.size,
      sessions: this.sessionNs.size,
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
      const last = this.tokens.get(key);
      this.tokens.delete(key);
      space.token = last ?? Math.max(this.tokenFloor, Math.floor(this.clock.now() * 1000));
      this.namespaces.set(key, space);
    }
    return space;
  }

  /** Forgets a namespace with nothing left in it, keeping its last token. */
  private forgetNamespaceIfEmpty(space: Namespace): void {
    if (!space.empty || this.namespaces.get(space.key) !== space) return;
    this.namespaces.delete(space.key);
    this.tokens.set(space.key, space.token);
  }

  /** The entries of a map by `ns\0name` (as stores keep operators' limits), with their namespace. */
  private byName<T>(
    map: ReadonlyMap<string, T>,
  ): Array<{ space: Namespace; name: string; value: T }> {
    return [...map].map(([key, value]) => {
      const [ns, name] = key.split("\0") as [string, string];
      return { space: this.namespace(ns), name, value };
    });
  }

  /** Resource `name`, made (with the namespace's limits) if nothing holds or waits on it. */
  private kept(space: Namespace, name: string): Resource {
    return space.resources.get(name) ?? this.createResource(space, name, DEFAULT_CAPACITY);
  }

  private createResource(space: Namespace, name: string, capacity: number): Resource {
    const resource = new Resource(name, space.limits.get(name) ?? capacity);
    const rates = space.rates.get(name);
    if (rates !== undefined) resource.rate = new RateState(rates);
    resource.concurrency = space.concurrency.get(name) ?? Number.POSITIVE_INFINITY;
    const lanes = space.lanes.get(name);
    if (lanes !== undefined) resource.line = new Lanes<Request>(lanes);
    if (this.quiet.size > 0) {
      if (this.clock.now() >= this.quietTill) this.quiet.clear();
      else if (this.quiet.has(`${space.key}\0${name}`)) resource.quietUntil = this.quietTill;
    }
    space.resources.set(name, resource);
    this.resourceCount++;
    return resource;
  }

  private record(space: Namespace, req: Request): void {
    space.requests.set(req.id, req);
    req.session.add(req);
    this.liveCount++;
  }

  /** The first waiter that may be served: the head, unless its session is away. */
  private serviceable(resource: Resource): Request | undefined {
    const head = resource.line.first();
    if (head === undefined || !head.session.away) return head;
    for (const r of resource.line) if (!r.session.away) return r;
    return undefined;
  }

  /** Whether a request of `load` fits the resource's capacity and rate limits at `now`. */
  private fits(resource: Resource, load: number, now: number): boolean {
    return (
      resource.used + load <= resource.capacity &&
      resource.holders.size + resource.heldBackCount < resource.concurrency &&
      (resource.rate === undefined || resource.rate.fits(load, now))
    );
  }

  /**
   * Grants from the head of the line while the head fits. `quiet` is not announced (its creator
   * answers). A head that fits the capacity but not the rate limits is served when they let it
   * (the rate heap wakes the resource then); nothing passes it meanwhile.
   */
  private pump(resource: Resource, now: number, quiet?: Request): void {
    if (now < resource.quietUntil) {
      if (resource.line.size > 0) this.rateHeap.set(resource, resource.quietUntil); // pumped then
      return;
    }
    if (resource.line instanceof Lanes) {
      this.pumpLanes(resource, resource.line, now, quiet);
      return;
    }
    for (
      let head = this.serviceable(resource);
      head !== undefined;
      head = this.serviceable(resource)
    ) {
      if (
        resource.used + head.load > resource.capacity ||
        resource.holders.size + resource.heldBackCount >= resource.concurrency
      ) {
        this.rateHeap.delete(resource); // a release pumps it again
        return;
      }
      if (resource.rate !== undefined) {
        const at = resource.rate.fitsAt(head.load, now);
        if (at > now) {
          if (at === Number.POSITIVE_INFINITY) this.rateHeap.delete(resource);
          else this.rateHeap.set(resource, at);
          return;
        }
      }
      resource.line.unlink(head);
      head.session.queued--;
      this.grant(resource, head, now);
      if (head !== quiet) {
        this.schedule(head);
        this.scheduleSession(head.session);
        this.onChange(head);
      }
    }
    this.rateHeap.delete(resource);
  }

  /**
   * `pump` for a resource with lanes. Lanes are tried in turn order (see `Lanes`); within a lane
   * only its first present waiter may be served (head of line, as in one line). The first lane in
   * turn whose waiter has room is served, and the turn moves on. The waiter chosen waits for the
   * resource's shared limits (concurrency, rates) holding everyone up, as a head does in one
   * line. A lane whose head waits for its own strict share holds nobody else up: that share is
   * nobody else's. A fair lane whose head waits for the shared pool lets later lanes be served
   * from their reservations only — never from the pool, which it is next in line for (so it
   * never starves). Own units always fit the capacity, but for a while after an operator changed
   * the lanes under holders (as after a cut of the capacity): such a lane waits alone.
   */
  private pumpLanes(
    resource: Resource,
    lanes: Lanes<Request>,
    now: number,
    quiet: Request | undefined,
  ): void {
    for (;;) {
      let pick: Request | undefined;
      let poolBlocked = false;
      for (let lane = lanes.ring.head; lane !== undefined; lane = lane.next) {
        const head = firstPresent(lane);
        if (head === undefined) continue;
        const room = this.laneRoom(resource, lanes, lane, head.load);
        // Its own units still held by others (shares or reservations set while they held more):
        // it waits for them alone.
        if (room === OWN && resource.used + head.load > resource.capacity) continue;
        if (room === OWN || (room === POOL && !poolBlocked)) {
          pick = head;
          break;
        }
        if (room === NO_POOL) {
          poolBlocked = true;
          // Nobody after it may take from the pool, and nobody has units of their own.
          if (lanes.reserving.length === 0) break;
        }
      }
      if (pick === undefined) break;
      if (
        resource.used + pick.load > resource.capacity ||
        resource.holders.size + resource.heldBackCount >= resource.concurrency
      )
        break;
      if (resource.rate !== undefined) {
        const at = resource.rate.fitsAt(pick.load, now);
        if (at > now) {
          if (at === Number.POSITIVE_INFINITY) this.rateHeap.delete(resource);
          else this.rateHeap.set(resource, at);
          return;
        }
      }
      const lane = lanes.lanes.get(pick.lane)!;
      lanes.unlink(pick);
      pick.session.queued--;
      this.grant(resource, pick, now);
      lanes.served(lane);
      if (pick !== quiet) {
        this.schedule(pick);
        this.scheduleSession(pick.session);
        this.onChange(pick);
      }
    }
    this.rateHeap.delete(resource);
  }

  /**
   * Where a request of `load` in `lane` would take its units from: its own (`OWN`: a strict
   * share, or a fair lane's reservation), the shared pool (`POOL`), or nowhere yet — its strict
   * share is full (`NO_SHARE`), or the pool is (`NO_POOL`). The resource's shared limits are
   * checked apart.
   */
  private laneRoom(resource: Resource, lanes: Lanes<Request>, lane: Lane<Request>, load: number) {
    if (lanes.strategy === "strict") return lane.used + load <= lane.share ? OWN : NO_SHARE;
    if (lane.used + load <= lane.reserved) return OWN;
    if (lanes.reservedTotal === 0)
      return resource.used + load <= resource.capacity ? POOL : NO_POOL;
    // Units past a lane's reservation come from the pool: the capacity less every reservation.
    const poolUsed = resource.used - lanes.reservedUsed();
    const need = lane.used + load - Math.max(lane.used, lane.reserved);
    return poolUsed + need <= resource.capacity - lanes.reservedTotal ? POOL : NO_POOL;
  }

  /** Resource `resource` with a line per lane from now on (its waiters and holders moved over). */
  private withLanes(space: Namespace, resource: Resource): Lanes<Request> {
    if (resource.line instanceof Lanes) return resource.line;
    const lanes = new Lanes<Request>(space.lanes.get(resource.name));
    const line = resource.line;
    resource.line = lanes;
    for (const req of [...line]) {
      line.unlink(req);
      lanes.push(req);
    }
    // Everything held so far was held in the default lane (a request in another made the lanes).
    if (resource.used > 0 || resource.holders.size > 0) {
      const lane = lanes.lane(DEFAULT_LANE);
      lane.used += resource.used;
      lane.active += resource.holders.size;
    }
    return lanes;
  }

  private grant(resource: Resource, req: Request, now: number): void {
    if (resource.line instanceof Lanes) {
      const lane = resource.line.lane(req.lane);
      lane.used += req.load;
      lane.active++;
    }
    resource.holders.push(req);
    resource.used += req.load;
    req.state = "active";
    req.session.active++;
    req.fencingToken = ++req.ns.token;
    req.expiresAt = now + req.expiresIn;
    req.grantedAt = now;
    this.activeCount++;
    resource.rate?.take(req.load, now);
    this.observer?.granted(req, now);
  }

  /**
   * The `n` resources with the longest lines (then the most units held), for the metrics: one
   * pass, keeping the best `n` (n is small).
   */
  busiest(n: number): Array<{ ns: string; resource: Resource }> {
    const top: Array<{ ns: string; resource: Resource }> = [];
    if (n <= 0) return top;
    const rank = (r: Resource) => r.line.size * 2 ** 32 + r.used;
    for (const space of this.namespaces.values()) {
      for (const resource of space.resources.values()) {
        if (top.length === n) {
          if (rank(resource) <= rank(top[n - 1]!.resource)) continue;
          top.pop();
        }
        let at = top.length;
        while (at > 0 && rank(top[at - 1]!.resource) < rank(resource)) at--;
        top.splice(at, 0, { ns: space.key, resource });
      }
    }
    return top;
  }

  /**
   * An operator sets resource `name`'s capacity (`undefined`: lifts the limit, the resource keeps
   * its capacity until it is forgotten). A raise grants waiters at once; a cut lets holders
   * finish and grants nothing until the units held fit under it. Refused below the load of a
   * live request (it could never be granted, and would stop the line behind it).
   */
  setLimit(ns: string, name: string, capacity: number | undefined): Resource | Refusal | undefined {
    return this.setLimits(ns, name, { capacity: capacity ?? null });
  }

  /**
   * An operator sets resource `name`'s rate limits (`undefined`: lifts them). They apply to the
   * line at once, counting the grants the resource has kept; the resource is kept while idle.
   * Refused if a waiter's load exceeds a limit (it could never be granted, and would stop the
   * line behind it).
   */
  setRates(
    ns: string,
    name: string,
    specs: readonly RateLimitSpec[] | undefined,
  ): Resource | Refusal | undefined {
    return this.setLimits(ns, name, { rates: specs ?? null });
  }

  /**
   * An operator changes resource `name`'s limits at once (see `setLimit` and `setRates`): what
   * `change` names (`null` lifts it), all or nothing — a refusal of either changes neither, and
   * nothing is granted in between.
   */
  setLimits(
    ns: string,
    name: string,
    change: {
      capacity?: number | null;
      rates?: readonly RateLimitSpec[] | null;
      concurrency?: number | null;
      lanes?: LaneConfig | null;
    },
  ): Resource | Refusal | undefined {
    const { capacity, rates, concurrency, lanes } = change;
    const before = this.namespaces.get(ns);
    const existing = before?.resources.get(name);
    // Shares and reservations are parts of an operator's capacity: both as they will be.
    const laneConfig = lanes === undefined ? before?.lanes.get(name) : (lanes ?? undefined);
    const limit = capacity === undefined ? before?.limits.get(name) : (capacity ?? undefined);
    const laneProblem = laneConfigProblem(laneConfig, limit);
    if (laneProblem !== undefined)
      return {
        ok: false,
        code: "capacity_mismatch",
        field: lanes === undefined ? "capacity" : "lanes",
        detail: `${JSON.stringify(name)}: ${laneProblem}`,
      };
    if (existing !== undefined && laneConfig !== undefined) {
      const cap = limit ?? existing.capacity;
      for (const r of existing.line) {
        const most = laneMost(laneConfig, r.lane, cap);
        if (r.load > most) {
          return {
            ok: false,
            code: "capacity_mismatch",
            field: "lanes",
            detail: `request ${r.id} (load ${r.load}) waits in lane ${JSON.stringify(r.lane)} of ${JSON.stringify(name)}, which could then hold at most ${most}: it could never be granted. Give that lane room, or revoke that request first`,
          };
        }
      }
    }
    if (existing !== undefined && typeof capacity === "number") {
      for (const r of [...existing.holders, ...existing.line]) {
        if (r.load > capacity) {
          return {
            ok: false,
            code: "capacity_mismatch",
            field: "capacity",
            detail: `capacity ${capacity} is below the load (${r.load}) of request ${r.id} on ${JSON.stringify(name)}: it could never be granted. Set at least ${r.load}, or revoke that request first`,
          };
        }
      }
    }
    if (existing !== undefined && rates) {
      for (const r of existing.line) {
        const over = rates.find((spec) => amountOf(spec, r.load) > spec.limit);
        if (over !== undefined) {
          return {
            ok: false,
            code: "capacity_mismatch",
            field: "rates",
            detail: `${describeRate(over)} is below what request ${r.id} (load ${r.load}) on ${JSON.stringify(name)} needs: it could never be granted. Allow at least that, or revoke that request first`,
          };
        }
      }
    }
    const sets =
      typeof capacity === "number" ||
      typeof concurrency === "number" ||
      (rates?.length ?? 0) > 0 ||
      (lanes ?? undefined) !== undefined;
    if (!sets && !this.namespaces.has(ns)) return undefined; // nothing to lift where nothing is
    const space = this.namespace(ns);
    const now = this.clock.now();
    if (capacity === null) space.limits.delete(name);
    else if (capacity !== undefined) space.limits.set(name, capacity);
    if (rates === null || rates?.length === 0) space.rates.delete(name);
    else if (rates !== undefined) space.rates.set(name, rates);
    if (concurrency === null) space.concurrency.delete(name);
    else if (concurrency !== undefined) space.concurrency.set(name, concurrency);
    if (lanes === null) space.lanes.delete(name);
    else if (lanes !== undefined) space.lanes.set(name, lanes);
    const resource = space.resources.get(name);
    if (resource === undefined) {
      if (
        space.limits.has(name) ||
        space.rates.has(name) ||
        space.concurrency.has(name) ||
        space.lanes.has(name)
      )
        return this.kept(space, name); // made with them, as set
      this.forgetNamespaceIfEmpty(space);
      return undefined;
    }
    if (typeof capacity === "number") resource.capacity = capacity;
    if (concurrency !== undefined) resource.concurrency = concurrency ?? Number.POSITIVE_INFINITY;
    if (lanes !== undefined) this.withLanes(space, resource).configure(lanes ?? undefined);
    if (rates !== undefined) {
      const specs = space.rates.get(name);
      resource.rate = specs === undefined ? undefined : new RateState(specs, resource.rate, now);
    }
    this.pump(resource, now);
    this.forgetIfIdle(space, resource);
    return space.resources.get(name);
  }

  /**
   * An operator ends live request `id` (a holder, or a waiter) as `revoked`, saying why. A
   * holder's units are held back for `grace` (see `finish`). Undefined if it is not live.
   */
  revoke(ns: string, id: string, reason: string): Request | undefined {
    const req = this.get(ns, id);
    if (req === undefined || req.resource === undefined) return undefined;
    req.reason = reason;
    this.finish(req, "revoked", this.clock.now());
    return req;
  }

  /** Ends a live request and hands its room on. */
  private finish(req: Request, state: RequestState, now: number): void {
    const resource = req.resource!;
    // The holder may still believe it holds: its lock delay, if it ended without a release;
    // revoked, at least `grace` — its client learns of it within a round trip, or gives the
    // lease up within `grace` of its last answered message (the liveness rule).
    const delay =
      state === "revoked"
        ? Math.max(req.lockDelay, this.config.grace)
        : state === "dropped" || state === "expired"
          ? req.lockDelay
          : 0;
    const holdBack = req.state === "active" && delay > 0;
    if (req.state === "active") {
      resource.holders.unlink(req);
      if (!holdBack) resource.used -= req.load;
      if (resource.line instanceof Lanes) {
        const lane = resource.line.lane(req.lane);
        lane.active--;
        if (!holdBack) lane.used -= req.load;
        resource.line.forgetIfIdle(lane);
      }
    } else {
      resource.line.unlink(req);
    }
    this.end(req, state, now);
    if (holdBack) {
      // The holder may still believe it holds: keep its units from anyone else for a while.
      resource.heldBack += req.load;
      resource.heldBackCount++;
      req.heldBackOn = resource;
      this.heap.set(req, now + delay);
    }
    this.pump(resource, now);
    this.forgetIfIdle(req.ns, resource);
    this.forgetEnded(now, req.ns);
    this.onChange(req);
  }

  /** A lock delay is over: the units go to the line. */
  private endLockDelay(req: Request, now: number): void {
    const resource = req.heldBackOn!;
    req.heldBackOn = undefined;
    this.heap.delete(req);
    resource.used -= req.load;
    if (resource.line instanceof Lanes) {
      const lane = resource.line.lane(req.lane);
      lane.used -= req.load;
      resource.line.forgetIfIdle(lane);
    }
    resource.heldBack -= req.load;
    resource.heldBackCount--;
    this.onHoldBackEnd?.(req);
    this.pump(resource, now);
    this.forgetIfIdle(req.ns, resource);
  }

  private end(req: Request, state: RequestState, now: number): void {
    const session = req.session;
    const was = req.state;
    if (was === "active") {
      session.active--;
      this.activeCount--;
    } else if (was === "queued") session.queued--;
    session.remove(req);
    req.state = state;
    req.endedAt = now;
    this.observer?.ended(req, was, now);
    req.resource = undefined;
    this.heap.delete(req);
    this.liveCount--;
    this.retain(req.ns, req, now);
    if (!this.forgetSessionIfIdle(session, now)) this.scheduleSession(session);
  }

  /** Remembers ended request `req` for `retention`. */
  private retain(space: Namespace, req: Request, now: number): void {
    if (space.retainedTail) space.retainedTail.retainedNext = req;
    else {
      space.retainedHead = req;
      this.retentionHeap.set(space, now + this.config.retention);
    }
    space.retainedTail = req;
    space.retainedCount++;
    this.retainedCount++;
  }

  /** A session's liveness deadline came: end what it no longer keeps, forget it if empty. */
  private expireSession(session: Session, now: number): void {
    const dropHolders = session.active > 0 && session.holdUntil <= now;
    const dropWaiters = session.queued > 0 && session.waitUntil <= now;
    if (dropHolders || dropWaiters) {
      for (const req of [...session.requests]) {
        if ((req.state === "active" && dropHolders) || (req.state === "queued" && dropWaiters))
          this.finish(req, "dropped", now);
      }
    }
    if (!this.forgetSessionIfIdle(session, now)) this.scheduleSession(session);
  }

  /**
   * Forgets a session with nothing live and nothing open once its time is up — at once for the
   * session of one request (nobody can come back to it).
   */
  private forgetSessionIfIdle(session: Session, now: number): boolean {
    if (session.active + session.queued > 0) return false;
    if (session.id !== undefined && (session.pollers > 0 || session.holdUntil > now)) return false;
    this.sessionHeap.delete(session);
    const space = this.sessionNs.get(session);
    if (space !== undefined && session.id !== undefined) {
      this.sessionNs.delete(session);
      if (space.sessions.get(session.id) === session) space.sessions.delete(session.id);
      this.forgetNamespaceIfEmpty(space);
      this.onSessionGone(session);
    }
    return true;
  }

  private forgetIfIdle(space: Namespace, resource: Resource): void {
    if (
      resource.used === 0 &&
      resource.line.size === 0 &&
      !space.limits.has(resource.name) &&
      !space.rates.has(resource.name) &&
      !space.concurrency.has(resource.name) &&
      !space.lanes.has(resource.name) &&
      space.resources.get(resource.name) === resource
    ) {
      space.resources.delete(resource.name);
      this.resourceCount--;
      this.forgetNamespaceIfEmpty(space);
    }
  }

  /**
   * Forgets ended requests past `retention`, and those past a namespace's quota (`space`: the
   * namespace that just ended one).
   */
  private forgetEnded(now: number, space?: Namespace): void {
    if (space !== undefined && space.retainedCount > this.config.maxRetained)
      this.forgetOldest(space, now);
    for (
      let due = this.retentionHeap.peek();
      due !== undefined && due.deadline <= now;
      due = this.retentionHeap.peek()
    ) {
      this.forgetOldest(due, now);
    }
  }

  /** Forgets the namespace's oldest ends while they are past retention or over its quota. */
  private forgetOldest(space: Namespace, now: number): void {
    const horizon = now - this.config.retention;
    let r = space.retainedHead;
    while (
      r !== undefined &&
      (space.retainedCount > this.config.maxRetained || r.endedAt <= horizon)
    ) {
      space.retainedHead = r.retainedNext;
      r.retainedNext = undefined;
      space.retainedCount--;
      this.retainedCount--;
      if (space.requests.get(r.id) === r) space.requests.delete(r.id);
      r = space.retainedHead;
    }
    if (r === undefined) {
      space.retainedTail = undefined;
      this.retentionHeap.delete(space);
      this.forgetNamespaceIfEmpty(space);
    } else {
      this.retentionHeap.set(space, r.endedAt + this.config.retention);
    }
  }

  /** Puts the request's expiry or timeout in the heap. */
  private schedule(req: Request): void {
    const at =
      req.state === "active"
        ? req.expiresAt
        : req.state === "queued"
          ? req.waitUntil
          : Number.POSITIVE_INFINITY;
    if (at === Number.POSITIVE_INFINITY) this.heap.delete(req);
    else this.heap.set(req, at);
  }

  /** Puts the session's liveness deadline in its heap. */
  private scheduleSession(session: Session): void {
    const at = session.nextDeadline();
    if (at === Number.POSITIVE_INFINITY) this.sessionHeap.delete(session);
    else this.sessionHeap.set(session, at);
  }

  /**
   * A session came back from away, or went away: the lines its waiters stand in may now serve
   * someone (its own waiters again, or the present ones behind them).
   */
  private serveAround(session: Session): void {
    if (session.queued === 0) return;
    const now = this.clock.now();
    const resources = new Set<Resource>();
    for (const req of session.requests) if (req.state === "queued") resources.add(req.resource!);
    for (const resource of resources) this.pump(resource, now);
  }
}

/** `pumpLanes`' answers: where a lane's head would take its units from (see `laneRoom`). */
const OWN = 0;
const POOL = 1;
const NO_SHARE = 2;
const NO_POOL = 3;

/** The lane's first waiter whose session is present (see `serviceable`). */
function firstPresent(lane: Lane<Request>): Request | undefined {
  const head = lane.line.first();
  if (head === undefined || !head.session.away) return head;
  for (const r of lane.line) if (!r.session.away) return r;
  return undefined;
}

/** Per lane: waiting, holding, units held (for the resource's snapshot and the admin API). */
export function laneView(
  lanes: Lanes<Request>,
): Record<string, { queued: number; active: number; used: number }> {
  // fromEntries: a lane named __proto__ is an entry like any other.
  return Object.fromEntries(
    [...lanes.lanes.values()].map((lane) => [
      lane.name,
      { queued: lane.line.size, active: lane.active, used: lane.used },
    ]),
  );
}

/** Why a request of `load` in `lane` could never be granted under the resource's lanes. */
function laneRefusal(
  config: LaneConfig,
  name: string,
  lane: string,
  load: number,
  capacity: number,
): Refusal {
  const most = laneMost(config, lane, capacity);
  const detail =
    config.strategy === "strict" && most === 0
      ? `lane ${JSON.stringify(lane)} has no share of resource ${JSON.stringify(name)}, whose lanes are strict (${Object.keys(config.shares ?? {}).join(", ")}): use one of those lanes, or have an operator give it a share`
      : `load ${load} exceeds what lane ${JSON.stringify(lane)} may hold of resource ${JSON.stringify(name)} (${most}: ${config.strategy === "strict" ? "its share" : "the capacity less the units reserved for other lanes"}): it could never be granted`;
  return {
    ok: false,
    code: "capacity_mismatch",
    field: config.strategy === "strict" && most === 0 ? "lane" : "load",
    detail,
  };
}
