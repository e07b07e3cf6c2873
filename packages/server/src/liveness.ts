import type { Request } from "./engine.js";
import type { Timed } from "./internal/deadline-heap.js";

/**
 * The liveness rule, server side (the client side is `@ratequeue/core`'s `liveness.ts`; the rule
 * is written in docs/protocol.md, "Liveness"). Liveness belongs to a **session**: a client's
 * connection (a WebSocket, or a chain of HTTP session polls). Requests made without a session
 * (the per-request HTTP protocol) each get a session of their own, kept alive by their polls.
 *
 * A session is in one of three states:
 * - **attached**: a connection or poll is open. Its requests live.
 * - **between**: the server last heard from it at `t` (an answered poll, any message); all its
 *   requests live until `t + repollGrace`.
 * - **away**: its connection closed (or went silent). Holders end `grace` after that, waiters
 *   `waitGrace` after it, and meanwhile its waiters are passed over so that nobody waits on a
 *   client that may be dead.
 *
 * The invariant the client relies on: holders are never dropped sooner than `grace` after the
 * last message the server received from the session.
 */
export interface LivenessConfig {
  /** Holders of an away session end this long after it went away (ms). */
  grace: number;
  /** Waiters of an away session keep their place this long (ms). */
  waitGrace: number;
  /** A session last heard from this long ago, with nothing open, is closed (ms). */
  repollGrace: number;
}

/** What a session's deadlines need of its requests: counts, kept by the engine. */
export class Session implements Timed {
  deadline = 0;
  heapIndex = -1;
  /** Open connections and polls. */
  pollers = 0;
  /** The connection is gone: waiters are passed over; holders end at `holdUntil`. */
  away = false;
  /** With nothing open: when holders end (and an empty session is forgotten). */
  holdUntil: number;
  /** With nothing open: when waiters end. */
  waitUntil: number;
  /** The client's network address, as last seen (the admin API shows it). */
  address: string | undefined = undefined;
  /** Live requests by state, kept by the engine. */
  active = 0;
  queued = 0;
  /** Its live requests: a set for a named session, the one request of an implicit session. */
  private many: Set<Request> | undefined;
  private one: Request | undefined;

  constructor(
    /** The session's id; `undefined` for the implicit session of one request. */
    readonly id: string | undefined,
    /** Until when it lives before anything attaches (ms, clock time). */
    until: number,
  ) {
    this.holdUntil = until;
    this.waitUntil = until;
  }

  /** Its live requests. */
  get requests(): ReadonlySet<Request> | readonly Request[] {
    return this.id === undefined ? (this.one ? [this.one] : []) : (this.many ?? []);
  }

  /** A live request of this session (the engine keeps the list). */
  add(req: Request): void {
    if (this.id === undefined) {
      this.one = req;
      return;
    }
    this.many ??= new Set();
    this.many.add(req);
  }

  /** It ended. */
  remove(req: Request): void {
    if (this.id === undefined) {
      if (this.one === req) this.one = undefined;
    } else this.many?.delete(req);
  }

  /** A connection or poll opened. Returns whether the session was away (its waiters return). */
  attach(): boolean {
    this.pollers++;
    this.holdUntil = this.waitUntil = Number.POSITIVE_INFINITY;
    return this.back();
  }

  /**
   * A connection or poll ended: `answered` by the server (the client will come back at once), or
   * `closed` (the client may be gone). Only the last open one counts.
   */
  detach(how: "answered" | "closed", now: number, config: LivenessConfig): void {
    if (this.pollers === 0 || --this.pollers > 0) return;
    if (how === "answered") this.holdUntil = this.waitUntil = now + config.repollGrace;
    else this.leave(now, config);
  }

  /** A message from the client arrived with nothing open: it is alive. Returns whether it was away. */
  touch(now: number, config: LivenessConfig): boolean {
    if (this.pollers > 0) return false;
    this.holdUntil = this.waitUntil = now + config.repollGrace;
    return this.back();
  }

  /** The connection that carried the last answer closed (or went silent): the client may be gone. */
  leave(now: number, config: LivenessConfig): void {
    if (this.pollers > 0) return;
    this.away = true;
    this.holdUntil = Math.min(this.holdUntil, now + config.grace);
    this.waitUntil = Math.min(this.waitUntil, now + config.waitGrace);
  }

  /** The next liveness deadline, or Infinity while attached. */
  nextDeadline(): number {
    if (this.pollers > 0) return Number.POSITIVE_INFINITY;
    if (this.active > 0 || this.queued === 0) return this.holdUntil;
    return this.waitUntil;
  }

  private back(): boolean {
    const was = this.away;
    this.away = false;
    return was;
  }
}
