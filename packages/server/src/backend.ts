import type {
  AcquireBody,
  RequestSnapshot,
  RequestState,
  ResourceSnapshot,
  ServerMessage,
  SessionTerms,
} from "@ratequeue/core";
import type { Refusal } from "./engine.js";

/** How a poll may wait. */
export interface PollOptions {
  /** At most this long, in ms. */
  wait: number;
  /** Aborted when the client closes this poll before it is answered (it died, or gave up). */
  signal: AbortSignal;
  /**
   * Aborted when the client's connection closes, even after this poll is answered: a client
   * killed between two polls is then dropped after `grace`, not `repollGrace`.
   */
  connection?: AbortSignal;
  /** The client's network address (the admin API shows it). */
  address?: string;
}

/** Where a session's events go: an open WebSocket, or an HTTP session poll. */
export interface SessionLink {
  /** Events as they happen (and, on attach, the unacknowledged ones). */
  send(events: readonly ServerMessage[]): void;
  /** The server is shutting down; `recovery`: how long it keeps leases after a restart (0: none). */
  bye?(recovery: number): void;
  /** The client's network address (the admin API shows it). */
  address?: string;
}

/**
 * What the HTTP layer needs from a store of queues. The in-memory backend implements it on the
 * pure engine; a PostgreSQL-backed one can implement it for several replicas. Every method
 * answers a value: refusals are values, not exceptions.
 */
export interface Backend {
  /**
   * Creates or resumes request `id`. Answers at once unless the request is queued; then holds
   * until it is granted or ends, `poll.wait` elapses, or `poll.signal` aborts.
   */
  acquire(
    ns: string,
    id: string,
    body: AcquireBody,
    poll: PollOptions,
  ): Promise<RequestSnapshot | Refusal>;
  /**
   * A long-poll on request `id`: holds while its state is still `known` (the liveness of the
   * request), answers at once otherwise. Undefined if the request is unknown.
   */
  poll(
    ns: string,
    id: string,
    known: RequestState | undefined,
    poll: PollOptions,
  ): Promise<RequestSnapshot | undefined>;
  /** Releases (active) or cancels (queued) request `id`; idempotent. Undefined if unknown. */
  release(ns: string, id: string): Promise<RequestSnapshot | undefined>;
  /** A resource's state; undefined when nothing holds or waits on it. */
  resource(ns: string, name: string): Promise<ResourceSnapshot | undefined>;
  /** Answers every open poll and stops the backend's timers. */
  close(): Promise<void>;
}

/**
 * What the session transports (WebSocket and HTTP session polls, `session.ts`) need. The
 * in-memory backend answers synchronously, which keeps a WebSocket's answers in message order
 * for free; a backend on a shared database will need these to return promises (handled in
 * order per connection).
 */
export interface SessionBackend {
  /** Liveness terms announced to clients (`welcome`, HTTP session replies). */
  readonly terms: SessionTerms;
  /**
   * This server process's run: events are numbered per session and per run (a restarted server
   * numbers them from 1 again), so an `after` or `ack` counts only for the run it was read from.
   */
  readonly run: string;
  /** A connection (or poll) of session `id` opened; events after `after` go to `link`. */
  attachSession(
    ns: string,
    id: string,
    after: number | undefined,
    link: SessionLink,
  ): { known: boolean };
  /** A connection or poll of session `id` ended: answered by the server, or closed by the client. */
  detachSession(ns: string, id: string, link: SessionLink, how: "answered" | "closed"): void;
  /** The socket of session `id`'s last answered poll closed before its next poll. */
  leaveSession(ns: string, id: string): void;
  /** A message of session `id` arrived; `ack`: the last event its client has. */
  touchSession(ns: string, id: string, ack?: number, address?: string): { known: boolean };
  /** Creates or resumes request `id` of session `sessionId`, answering at once. */
  acquireInSession(
    ns: string,
    sessionId: string,
    id: string,
    body: AcquireBody,
  ): RequestSnapshot | Refusal;
  /**
   * Runs `fn` — the handling of several messages — as one operation: one durable commit at its
   * end, before anything it answers leaves.
   */
  batch<T>(fn: () => T): T;
  /** Releases or cancels request `id`; undefined if unknown. */
  releaseNow(ns: string, id: string): RequestSnapshot | undefined;
  /**
   * With an asynchronous store: a promise of everything done so far being durable (undefined if
   * it already is; rejected if the store failed). Messages wait for it before they leave.
   */
  durable?(): Promise<void> | undefined;
  /**
   * Whether a grant event (fencing token `token`, namespace `ns`) may leave before `durable`
   * resolves, marked `provisional` (docs/protocol.md, "Sessions").
   */
  provisional?(ns: string, token: number): boolean;
  /** Session `id`'s unacknowledged events after `after`. */
  pendingEvents(ns: string, id: string, after: number | undefined): ServerMessage[];
}
