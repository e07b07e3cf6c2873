/**
 * The liveness rule, client side, and the numbers both sides share. docs/protocol.md ("Liveness")
 * states the rule; `packages/server/src/engine.ts` (sessions) applies it on the server.
 *
 * The rule in one line: **the server never drops a session's holders sooner than `grace` after
 * the last message it received from that session**, and the client never believes in a lease
 * later than `grace` (less a margin) after sending the last message the server has answered.
 *
 * Why it is enough: the server receives a message no earlier than the client sent it, so its drop
 * time is at least `sentAt + grace` for any answered message — whatever then happens to the
 * connection (a reset, a silence, a blocked event loop on either side). Both sides measure with
 * monotonic clocks, whose rates differ by far less than the margin.
 *
 * Two extensions, both announced by the server, let a holder ride out a restart of a durable
 * server (`recovery > 0`: it restores every lease and gives its clients `recovery` ms to return):
 * - the server says `bye` before a graceful shutdown: from then on it grants nothing;
 * - the client finds the server's port closed (ECONNREFUSED) before its budget ran out: nothing
 *   listens there, so the server that could regrant is down, and a restarted one waits `recovery`.
 */

/** Server defaults (ms); `resolveServerOptions` takes them from here. */
export const LIVENESS_DEFAULTS = {
  /**
   * After a session's connection closes (or goes silent), how long its holders keep their units
   * before the next in line is served. A killed holder is handed on this fast.
   */
  grace: 200,
  /**
   * After a session's connection closes, how long its waiters keep their places in line (they
   * are passed over meanwhile, so a dead waiter delays nobody). Covers network blips and client
   * reconnects.
   */
  waitGrace: 5_000,
  /**
   * A session with no open connection or poll that was last heard from this long ago is closed;
   * likewise a WebSocket that sends nothing for this long.
   */
  repollGrace: 4_000,
} as const;

/** How often a client pings a session that has live requests, for a given `grace`: ms. */
export function pingInterval(grace: number): number {
  return Math.max(5, Math.floor(grace / 4));
}

/** How much sooner than `grace` the client gives up: timer and clock-rate slack, ms. */
export function safetyMargin(grace: number): number {
  return Math.max(2, Math.min(50, Math.floor(grace / 8)));
}

/** What a server tells its clients about liveness (in its `welcome` and session replies). */
export interface LivenessTerms {
  /** See `LIVENESS_DEFAULTS.grace`. */
  grace: number;
  /** Ping at least this often while the session has live requests (ms). */
  ping: number;
  /**
   * After a restart on its data directory, how long the server keeps restored leases for their
   * clients to come back (ms); `0` when it keeps nothing across a restart (`--memory`).
   */
  recovery: number;
}

/**
 * The client's side of the rule for one session: until when its held leases are certainly its
 * own. Pure bookkeeping on `performance.now()` times; the session arms a timer on `safeUntil`.
 */
export class LivenessBudget {
  /** `performance.now()` until which the session's leases are safe; `-Infinity`: unknown. */
  safeUntil = Number.NEGATIVE_INFINITY;
  /** The latest send time the server has confirmed. */
  private confirmedSentAt = Number.NEGATIVE_INFINITY;
  /** What confirmations alone earned: `confirmedSentAt + grace − margin`. */
  private earnedUntil = Number.NEGATIVE_INFINITY;
  /** When the server was found down, while that extends the budget; Infinity otherwise. */
  private downAt = Number.POSITIVE_INFINITY;

  constructor(public terms: LivenessTerms) {}

  /** The server answered a message sent at `sentAt`: it had the session alive then. */
  confirm(sentAt: number): void {
    if (sentAt <= this.confirmedSentAt) return;
    this.confirmedSentAt = sentAt;
    this.earnedUntil = sentAt + this.terms.grace - safetyMargin(this.terms.grace);
    if (sentAt >= this.downAt) {
      // A server took a message sent after it was found down: it is up (restarted), and holds
      // the session by the grace rule again — the recovery extension is void, and may not
      // outlive the outage (a reset right after the restart is handed on after `grace`).
      this.downAt = Number.POSITIVE_INFINITY;
      this.safeUntil = this.earnedUntil;
    } else {
      this.extendTo(this.earnedUntil);
    }
  }

  /**
   * The server is down (its port refused a connection at `at`, or it said `bye`): if that was
   * within the budget, a durable server cannot hand the leases on before `at + recovery`.
   */
  serverDown(at: number): void {
    // Only within what confirmations earned: a refusal seen later proves nothing (the server may
    // have been up, and handed the lease on, in between) — and refusals during an extension do
    // not extend it again, so a server that never comes back ends the wait.
    if (this.terms.recovery <= 0 || at >= this.earnedUntil) return;
    this.downAt = Math.min(this.downAt, at);
    this.extendTo(at + this.terms.recovery - safetyMargin(this.terms.grace));
  }

  /**
   * A message sent at `sentAt` may have reached a server (a WebSocket opened, or an HTTP
   * exchange failed otherwise than by a refused port): if the server is up again, it holds the
   * session by the grace rule from when it heard that message — whether or not its answer ever
   * comes. So a recovery extension is cut to `sentAt + grace − margin` (never below what
   * confirmations earned), and ends.
   */
  contacted(sentAt: number): void {
    if (sentAt < this.downAt) return;
    this.downAt = Number.POSITIVE_INFINITY;
    const cap = sentAt + this.terms.grace - safetyMargin(this.terms.grace);
    this.safeUntil = Math.max(this.earnedUntil, Math.min(this.safeUntil, cap));
  }

  /** The budget is spent: nothing extends it again until a new confirmation. */
  spent(now: number): boolean {
    return now >= this.safeUntil;
  }

  private extendTo(until: number): void {
    if (until > this.safeUntil) this.safeUntil = until;
  }
}
