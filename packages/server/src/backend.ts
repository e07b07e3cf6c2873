import type {
  AcquireBody,
  RequestSnapshot,
  RequestState,
  ResourceSnapshot,
  ServerMessage,
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
}

/** Where a session's events go: an open WebSocket, or an HTTP session poll. */
export interface SessionLink {
  /** Events as they happen (and, on attach, the unacknowledged ones). */
  send(events: readonly ServerMessage[]): void;
  /** The server is shutting down; `recovery`: how long it keeps leases after a restart (0: none). */
  bye?(recovery: number): void;
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
