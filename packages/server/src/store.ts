import type { Request, SavedRequest } from "./engine.js";
import type { LaneConfig } from "./internal/lanes.js";
import type { RateLimitSpec } from "./rate.js";

/** What a store hands back at start: the live requests and the fencing tokens to continue from. */
export interface StoredState {
  requests: SavedRequest[];
  /** Per namespace, the highest fencing token it has handed out. */
  tokens: Map<string, number>;
  /** Where a namespace the store has never seen starts its tokens from (at least). */
  tokenFloor: number;
  /**
   * Sessions restored by an earlier restart that have not come back since, by `ns\0session`:
   * when their recovery window ends. A restart does not give them a new one.
   */
  recovering: Map<string, number>;
  /** Operators' limits (admin API), by `ns\0name`: the capacity. */
  limits: Map<string, number>;
  /** Operators' rate limits (admin API), by `ns\0name`. */
  rates: Map<string, RateLimitSpec[]>;
  /** Operators' concurrency limits (admin API), by `ns\0name`: requests holding at once. */
  concurrency: Map<string, number>;
  /** Operators' lanes (admin API), by `ns\0name`. */
  lanes: Map<string, LaneConfig>;
}

/**
 * Where a server keeps its live requests so that they survive a restart (`--data-dir`).
 * Writes happen inside the operation that causes them and are committed before its reply is
 * sent, so no client is told of a grant the store could forget.
 */
export interface Store {
  /**
   * The secret API keys are hashed with (`keys.ts`): namespaces are stored as keyed hashes, never
   * as the keys themselves. Created with the store, and kept as long as it.
   */
  readonly secret: Buffer;
  /** Everything saved by the previous run. */
  load(): StoredState;
  /**
   * Creates or updates a live request. A store may keep the `Request` itself and read it again
   * when it writes it out later: by then it holds the same or a later committed state.
   */
  save(request: Request | SavedRequest): void;
  /** Forgets an ended request. */
  remove(ns: string, id: string): void;
  /** Session `session`, restored by a restart, has until `until` (clock ms) to come back. */
  recovering(ns: string, session: string, until: number): void;
  /** An operator set resource `name`'s capacity (`undefined`: lifted the limit). */
  limit(ns: string, name: string, capacity: number | undefined): void;
  /** An operator set resource `name`'s rate limits (`undefined`: lifted them). */
  rates(ns: string, name: string, specs: readonly RateLimitSpec[] | undefined): void;
  /** An operator set how many requests may hold `name` at once (`undefined`: lifted it). */
  concurrency(ns: string, name: string, holders: number | undefined): void;
  /** An operator set resource `name`'s lanes (`undefined`: lifted them). */
  lanes(ns: string, name: string, config: LaneConfig | undefined): void;
  /** Session `session` came back (or ended): a later restart gives it a window of its own. */
  recovered(ns: string, session: string): void;
  /** Commits what the current operation wrote (or, for an asynchronous store, starts to). */
  commit(): void;
  /**
   * An asynchronous store (PostgreSQL): a promise of everything committed so far being durable,
   * or undefined if it already is; rejected once the store has failed. Nothing that reflects a
   * commit may leave the server before it resolves. Synchronous stores leave it out.
   */
  flushed?(): Promise<void> | undefined;
  /**
   * An asynchronous store whose grants may be told before their commit: whether the grant of
   * fencing token `token` in namespace `ns` may be (a leader taking over after a crash hands out
   * only higher tokens). Its restore, after another leader's, grants nothing for twice `grace`
   * on a resource with waiters.
   */
  provisional?(ns: string, token: number): boolean;
  /** Another leader served this state before (its provisional grants may be out there). */
  readonly inherited?: boolean;
  close(): void | Promise<void>;
}
