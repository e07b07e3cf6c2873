import { randomUUID } from "node:crypto";
import { appendFileSync } from "node:fs";
import {
  type AcquireBody,
  pingInterval,
  type RequestSnapshot,
  type RequestState,
  type ResourceSnapshot,
  type ServerMessage,
  type SessionTerms,
} from "@ratequeue/core";
import type { Backend, PollOptions, SessionBackend, SessionLink } from "./backend.js";
import {
  type Clock,
  Engine,
  type EngineConfig,
  type Refusal,
  type Request,
  type Session,
} from "./engine.js";
import type { LaneConfig } from "./internal/lanes.js";
import type { RateLimitSpec } from "./rate.js";
import type { Store } from "./store.js";

/** A session's events (grants, and ends its client did not ask for) until its client acknowledges them. */
interface SessionLog {
  seq: number;
  /** Unacknowledged events, oldest first, with the request each is about. */
  events: Array<{ seq: number; req: Request; message: ServerMessage }>;
  /** Where events go as they happen (a WebSocket, or an HTTP poll), if any. */
  links: Set<SessionLink>;
}

/** An open long-poll. */
interface Poll {
  req: Request;
  resolve: (snap: RequestSnapshot) => void;
  timer: ReturnType<typeof setTimeout>;
  signal: AbortSignal;
  onAbort: () => void;
  connection: AbortSignal | undefined;
}

/** The connection that carried a live request's last answered poll, watched until the next poll. */
interface LastConnection {
  signal: AbortSignal;
  onClose: () => void;
}

/**
 * The single-process backend: the pure engine, one timer for its next deadline, and the open
 * long-polls, which it answers the moment their request changes.
 */
/**
 * RATEQUEUE_TRACE=file: a line per grant, end, restore and session attach/detach, appended
 * synchronously (slow: for chasing a bug, as the chaos run does with CHAOS_TRACE).
 */
const traceFile = typeof process === "undefined" ? undefined : process.env.RATEQUEUE_TRACE;
const trace =
  traceFile === undefined || traceFile === ""
    ? undefined
    : (line: string) => appendFileSync(traceFile, `${Date.now()} ${process.pid} ${line}\n`);

export class LocalBackend implements Backend, SessionBackend {
  readonly engine: Engine;
  private readonly polls = new Map<Request, Set<Poll>>();
  private readonly lastConnection = new Map<Request, LastConnection>();
  /** Requests the engine reported changed during the current operation. */
  private changed: Request[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private closed = false;
  private readonly logs = new Map<Session, SessionLog>();
  /** Sessions a restart restored that have not come back yet (`ns\0id`): see `Store.recovering`. */
  private readonly recoveringSessions = new Set<string>();
  /** The request whose change the current operation answers directly (no event for it). */
  private answering: Request | undefined;
  readonly terms: SessionTerms;
  readonly run = randomUUID();

  constructor(
    config: EngineConfig,
    private readonly clock: Clock = Date,
    /** Where live requests are kept across restarts; none keeps them in memory only. */
    private readonly store?: Store,
    /** After a restart, how long restored clients have to poll again, in ms. */
    recoveryWindow = 0,
    /** Clients come through a proxy that may refuse while this server is up: promise no recovery. */
    behindProxy = false,
  ) {
    this.terms = {
      grace: config.grace,
      ping: pingInterval(config.grace),
      // What a client may count on when this server's port refuses it (see liveness.ts).
      recovery: store === undefined || behindProxy ? 0 : recoveryWindow,
    };
    this.engine = new Engine(
      config,
      clock,
      (req) => {
        trace?.(
          `${req.id} ${req.state} ${req.name} token=${req.fencingToken} session=${req.session.id}`,
        );
        if (this.polls.has(req)) this.changed.push(req);
        if (req.session.id !== undefined && req !== this.answering) this.log(req);
        if (req.resource === undefined) {
          this.unwatch(req); // ended: nothing to hasten
          // A revoked holder may not have heard yet: kept, until its units go back, so that a
          // restart in between still holds them back for it (see `SavedRequest.state`).
          if (req.state === "revoked" && req.heldBackOn !== undefined) this.store?.save(req);
          else this.store?.remove(req.ns.key, req.id);
        } else {
          this.store?.save(req); // granted
        }
      },
      (session) => this.logs.delete(session),
    );
    this.engine.onHoldBackEnd = (req) => {
      if (req.state === "revoked") this.store?.remove(req.ns.key, req.id);
    };
    if (store) {
      // A store whose grants may be told before their commit (PostgreSQL): the leader before
      // this one may have told a client of a grant it never committed. That client holds it
      // until its budget runs out: `grace` after a message the old leader answered, which it did
      // only within `grace` of its last proof of the lock — before this takeover. So nothing is
      // granted for twice `grace` (docs/operations.md, "Grants before their commit").
      if (store.provisional !== undefined && store.inherited)
        this.engine.quietUntil(clock.now() + 2 * config.grace);
      const { requests, tokens, tokenFloor, recovering, limits, rates, concurrency, lanes } =
        store.load();
      for (const r of requests)
        trace?.(
          `${r.id} restored ${r.state} ${r.name} token=${r.fencingToken} session=${r.session}`,
        );
      const { sessions, revoked } = this.engine.restore(
        requests,
        recoveryWindow,
        tokens,
        tokenFloor,
        recovering,
        limits,
        rates,
        concurrency,
        lanes,
      );
      // A revoke the client may not have heard of before the restart: its session's first
      // event when it comes back (a request without a session hears it from its next poll).
      for (const req of revoked) if (req.session.id !== undefined) this.log(req);
      // Each restored session has until its deadline to come back — the first restart's, if
      // it has not come back since: restarts in a row must not keep a dead client's leases.
      for (const { ns, session, until } of sessions) {
        const key = `${ns}\0${session}`;
        this.recoveringSessions.add(key);
        if (recovering.get(key) !== until) store.recovering(ns, session, until);
      }
      for (const key of recovering.keys()) {
        if (this.recoveringSessions.has(key)) continue;
        const [ns, session] = key.split("\0");
        store.recovered(ns!, session!); // nothing of it left to restore
      }
      this.settle();
    }
  }

  async acquire(
    ns: string,
    id: string,
    body: AcquireBody,
    poll: PollOptions,
  ): Promise<RequestSnapshot | Refusal> {
    const result = this.engine.acquire(ns, id, body);
    if (result.ok && result.created && result.request.resource !== undefined) {
      this.store?.save(result.request);
    }
    if (result.ok && poll.address !== undefined) result.request.session.address = poll.address;
    this.settle();
    if (!result.ok) return result;
    return this.wait(result.request, "queued", poll);
  }

  async poll(ns: string, id: string, known: RequestState | undefined, poll: PollOptions) {
    const req = this.engine.get(ns, id);
    if (req === undefined) return undefined;
    // Its client asks after it, and hears it ended: units held back for it go back soon.
    if (known !== undefined && req.resource === undefined) {
      this.engine.toldOfEnd(req);
      this.arm();
    }
    return this.wait(req, known, poll);
  }

  async release(ns: string, id: string): Promise<RequestSnapshot | undefined> {
    return this.releaseNow(ns, id);
  }

  /** `release`, synchronously (the session transports answer in the same turn). */
  releaseNow(ns: string, id: string): RequestSnapshot | undefined {
    this.answering = this.engine.get(ns, id);
    let req: Request | undefined;
    try {
      req = this.engine.release(ns, id);
    } finally {
      this.answering = undefined;
    }
    this.settle();
    return req === undefined ? undefined : this.engine.snapshot(req);
  }

  // --- sessions ------------------------------------------------------------------------------

  /**
   * Attaches a link (an open WebSocket, or an HTTP session poll) to session `id`: the session
   * lives while one is attached, and events go to it. Events after `after` not yet acknowledged
   * are delivered at once. `known`: the session existed before (its requests are as they were).
   */
  attachSession(ns: string, id: string, after: number | undefined, link: SessionLink) {
    const known = this.engine.findSession(ns, id) !== undefined;
    trace?.(`session ${id} attached (known ${known}, after ${after})`);
    const session = this.engine.session(ns, id);
    this.engine.attachSession(session);
    if (link.address !== undefined) session.address = link.address;
    this.cameBack(ns, id);
    const log = this.logOf(session);
    if (after !== undefined) this.trim(log, after);
    log.links.add(link);
    this.settle();
    if (log.events.length > 0) link.send(this.render(log));
    return { known };
  }

  /** Session `id` was heard from: if a restart restored it, it is back (a later one gives it a new window). */
  private cameBack(ns: string, id: string): void {
    if (this.recoveringSessions.size === 0) return;
    const key = `${ns}\0${id}`;
    if (this.recoveringSessions.delete(key)) this.store?.recovered(ns, id);
  }

  /** A link ended: `answered` (an HTTP poll the server answered) or `closed` (the client went). */
  detachSession(ns: string, id: string, link: SessionLink, how: "answered" | "closed"): void {
    const session = this.engine.findSession(ns, id);
    if (session === undefined) return;
    const log = this.logs.get(session);
    if (log === undefined || !log.links.delete(link) || this.closed) return;
    trace?.(`session ${id} detached (${how})`);
    this.engine.detachSession(session, how);
    this.settle();
  }

  /** The connection that carried session `id`'s last answered poll closed. */
  leaveSession(ns: string, id: string): void {
    const session = this.engine.findSession(ns, id);
    if (session === undefined || this.closed) return;
    this.engine.leave(session);
    this.settle();
  }

  /** A message from session `id`'s client arrived: it is alive. `ack`: events it has received. */
  touchSession(ns: string, id: string, ack?: number, address?: string): { known: boolean } {
    const known = this.engine.findSession(ns, id) !== undefined;
    if (this.closed) return { known };
    const session = this.engine.session(ns, id);
    this.engine.touch(session);
    if (address !== undefined) session.address = address;
    this.cameBack(ns, id);
    if (ack !== undefined) this.trim(this.logOf(session), ack);
    this.settle();
    return { known };
  }

  /** Creates or resumes request `id` in session `sessionId`; answers at once. */
  acquireInSession(
    ns: string,
    sessionId: string,
    id: string,
    body: AcquireBody,
  ): RequestSnapshot | Refusal {
    const result = this.engine.acquire(ns, id, body, sessionId);
    if (result.ok && result.created && result.request.resource !== undefined) {
      this.store?.save(result.request);
    }
    this.settle();
    return result.ok ? this.engine.snapshot(result.request) : result;
  }

  /** Events of session `id` after `after` (for an HTTP poll that found some pending). */
  pendingEvents(ns: string, id: string, after: number | undefined): ServerMessage[] {
    const session = this.engine.findSession(ns, id);
    const log = session && this.logs.get(session);
    if (log === undefined) return [];
    if (after !== undefined) this.trim(log, after);
    return this.render(log);
  }

  /**
   * The log's events as sent now: an active request's `expiresIn` counts from now, so a client
   * that counts it from when it sent the message this answers never overestimates its hold.
   */
  private render(log: SessionLog): ServerMessage[] {
    const now = this.clock.now();
    const rendered = log.events.map(({ req, message }) => {
      if (message.t !== "state") return message;
      if (message.state === "active")
        return { ...message, expiresIn: Math.max(0, req.expiresAt - now) };
      this.engine.toldOfEnd(req); // being sent: a revoked holder hears of it now
      return message;
    });
    this.arm(); // its units may go back sooner now
    return rendered;
  }

  private logOf(session: Session): SessionLog {
    let log = this.logs.get(session);
    if (log === undefined) {
      log = { seq: 0, events: [], links: new Set() };
      this.logs.set(session, log);
    }
    return log;
  }

  private log(req: Request): void {
    const log = this.logOf(req.session);
    const seq = ++log.seq;
    const message: ServerMessage = { t: "state", seq, ...this.engine.snapshot(req) };
    log.events.push({ seq, req, message });
    for (const link of log.links) link.send([message]);
  }

  private trim(log: SessionLog, upTo: number): void {
    let n = 0;
    while (n < log.events.length && log.events[n]!.seq <= upTo) n++;
    if (n > 0) log.events.splice(0, n);
  }

  /** An operator changes resource `name`'s limits at once (`Engine.setLimits`); kept in the store. */
  setLimits(
    ns: string,
    name: string,
    change: {
      capacity?: number | null;
      rates?: readonly RateLimitSpec[] | null;
      concurrency?: number | null;
      lanes?: LaneConfig | null;
    },
  ) {
    const result = this.engine.setLimits(ns, name, change);
    if (!(result !== undefined && "ok" in result)) {
      if (change.concurrency !== undefined)
        this.store?.concurrency(ns, name, change.concurrency ?? undefined);
      if (change.capacity !== undefined) this.store?.limit(ns, name, change.capacity ?? undefined);
      if (change.rates !== undefined)
        this.store?.rates(ns, name, change.rates?.length ? change.rates : undefined);
      if (change.lanes !== undefined) this.store?.lanes(ns, name, change.lanes ?? undefined);
    }
    this.settle();
    return result;
  }

  /** An operator ends live request `id` (admin API): its client is told, with `reason`. */
  revoke(ns: string, id: string, reason: string): RequestSnapshot | undefined {
    const req = this.engine.revoke(ns, id, reason);
    this.settle();
    return req === undefined ? undefined : this.engine.snapshot(req);
  }

  /** Open session links (WebSockets, HTTP session polls) and per-request long-polls: the metrics' gauges. */
  openLinks(): { sessions: number; polls: number } {
    let sessions = 0;
    for (const log of this.logs.values()) sessions += log.links.size;
    let polls = 0;
    for (const set of this.polls.values()) polls += set.size;
    return { sessions, polls };
  }

  async resource(ns: string, name: string): Promise<ResourceSnapshot | undefined> {
    return this.engine.resource(ns, name);
  }

  async close(): Promise<void> {
    this.closed = true;
    // Replicas on a shared store (PostgreSQL): another replica serves these leases next, so no
    // `bye` — its `recovery: 0` would tell clients that the leases are gone. They see the
    // connection close and reconnect under the grace rule, as after a failover.
    if (this.store?.flushed === undefined)
      for (const log of this.logs.values())
        for (const link of log.links) link.bye?.(this.terms.recovery);
    for (const set of this.polls.values()) for (const p of set) this.answer(p, true);
    for (const req of [...this.lastConnection.keys()]) this.unwatch(req);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.store?.close();
  }

  /**
   * With an asynchronous store: a promise of everything done so far being durable (undefined if
   * it is). Every reply and event waits for it before it leaves (`http.ts`, `session.ts`).
   */
  durable(): Promise<void> | undefined {
    return this.store?.flushed?.();
  }

  /**
   * Whether a grant (fencing token `token`, namespace `ns`) may be told before it is
   * durable: only with a store that says so (see `Store.provisional`).
   */
  provisional(ns: string, token: number): boolean {
    return this.store?.provisional?.(ns, token) ?? false;
  }

  /**
   * Holds a poll on `req` while its state is `known`. Without `known` it is a plain read, which
   * does not count as a sign of life (a dashboard looking must not keep a dead client's lease).
   */
  private wait(
    req: Request,
    known: RequestState | undefined,
    poll: PollOptions,
  ): Promise<RequestSnapshot> | RequestSnapshot {
    if (known === undefined) return this.engine.snapshot(req);
    this.unwatch(req);
    if (req.state !== known || poll.wait <= 0 || this.closed || poll.signal.aborted) {
      // An answered poll still proves the client alive: restart its repoll grace. While another
      // poll is open, that poll's connection is the one that tells whether the client went.
      this.engine.answered(req);
      if (req.session.pollers === 0) this.watch(req, poll.connection);
      this.settle();
      return this.engine.snapshot(req);
    }
    this.engine.attach(req);
    this.settle();
    return new Promise<RequestSnapshot>((resolve) => {
      const p: Poll = {
        req,
        resolve,
        signal: poll.signal,
        timer: setTimeout(() => this.answer(p, true), poll.wait),
        onAbort: () => this.answer(p, false),
        connection: poll.connection,
      };
      poll.signal.addEventListener("abort", p.onAbort, { once: true });
      const set = this.polls.get(req);
      if (set) set.add(p);
      else this.polls.set(req, new Set([p]));
    });
  }

  /** Ends a poll: `answered` by the server, or closed by the client. */
  private answer(p: Poll, answered: boolean): void {
    const set = this.polls.get(p.req);
    if (set === undefined || !set.delete(p)) return;
    if (set.size === 0) this.polls.delete(p.req);
    clearTimeout(p.timer);
    p.signal.removeEventListener("abort", p.onAbort);
    this.engine.detach(p.req, answered);
    if (answered && p.req.session.pollers === 0) this.watch(p.req, p.connection);
    p.resolve(this.engine.snapshot(p.req));
    this.settle();
  }

  /** Until its next poll, a live request is hastened if the connection of its last answer closes. */
  private watch(req: Request, connection: AbortSignal | undefined): void {
    this.unwatch(req); // only the connection of the latest answer counts
    if (connection === undefined || req.resource === undefined || this.closed) return;
    if (connection.aborted) {
      this.engine.hasten(req);
      return;
    }
    const onClose = () => {
      this.lastConnection.delete(req);
      this.engine.hasten(req);
      this.settle();
    };
    connection.addEventListener("abort", onClose, { once: true });
    this.lastConnection.set(req, { signal: connection, onClose });
  }

  private unwatch(req: Request): void {
    const last = this.lastConnection.get(req);
    if (last === undefined) return;
    this.lastConnection.delete(req);
    last.signal.removeEventListener("abort", last.onClose);
  }

  /** Operations under way in `batch`: they settle once, at the end. */
  private batching = 0;

  batch<T>(fn: () => T): T {
    this.batching++;
    try {
      return fn();
    } finally {
      if (--this.batching === 0) this.settle();
    }
  }

  /** After every engine operation: answer the polls of changed requests, and re-arm the timer. */
  private settle(): void {
    if (this.batching > 0) return; // the batch settles at its end
    // Before any reply leaves: no client may hear of a grant the store could forget.
    this.store?.commit();
    while (this.changed.length > 0) {
      const changed = this.changed;
      this.changed = [];
      for (const req of changed) {
        const set = this.polls.get(req);
        if (set) for (const p of [...set]) this.answer(p, true);
      }
    }
    this.arm();
  }

  private arm(): void {
    if (this.closed) return;
    const next = this.engine.nextDeadline();
    if (next === undefined || next >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = next;
    this.timer = setTimeout(this.fire, Math.max(1, next - this.clock.now()));
    this.timer.unref?.();
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    this.engine.advance();
    this.settle();
  };
}
