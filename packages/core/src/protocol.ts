/**
 * The RateQueue wire protocol (v1): the shapes that cross HTTP, their limits and defaults.
 * `docs/protocol.md` is the prose version of this file; keep the two in step.
 *
 * Durations are milliseconds, as in `fetch`, undici and ky.
 */

/** Path prefix of every versioned route. */
export const API_PREFIX = "/v1";

/** Largest resource name, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 256;
/** Largest client-chosen request id, in characters (`[A-Za-z0-9._~-]`). */
export const MAX_REQUEST_ID_LENGTH = 128;
/** Largest capacity a resource may have. */
export const MAX_CAPACITY = 1_000_000;
/** Priorities range over `[MIN_PRIORITY, MAX_PRIORITY]`; higher is served first. */
export const MIN_PRIORITY = -1_000_000;
export const MAX_PRIORITY = 1_000_000;
/** Largest `timeout` (ms to stay queued): the longest a JavaScript timer can wait (~24.8 days). */
export const MAX_TIMEOUT = 2_147_483_647;

/** Longest lane name, in characters (`[A-Za-z0-9._-]`). */
export const MAX_LANE_LENGTH = 64;
/** The lane of a request that names none. */
export const DEFAULT_LANE = "default";

/** Capacity of a resource created by a request that names none: a lock. */
export const DEFAULT_CAPACITY = 1;
/** Units a request takes when it names none. */
export const DEFAULT_LOAD = 1;
/** Priority of a request that names none (as in the hosted product). */
export const DEFAULT_PRIORITY = 10;

/**
 * Where a request stands.
 * - `queued`: waiting in line for room.
 * - `active`: holding its units; keep a poll open on it to keep it.
 * - `released`: ended by its client while active.
 * - `cancelled`: ended by its client while queued.
 * - `timed_out`: its `timeout` elapsed while queued (with `timeout: 0`, at once).
 * - `expired`: held longer than its `expiresIn`.
 * - `dropped`: its client stopped polling (closed its poll and did not come back within the grace).
 */
export type RequestState =
  | "queued"
  | "active"
  | "released"
  | "cancelled"
  | "timed_out"
  | "expired"
  | "dropped"
  /** Ended by an operator (the admin API's revoke), with a `reason`. */
  | "revoked";

/** The states a request never leaves. */
export const FINAL_STATES: ReadonlySet<RequestState> = new Set([
  "released",
  "cancelled",
  "timed_out",
  "expired",
  "dropped",
  "revoked",
]);

/** Body of `PUT /v1/requests/{id}`: create the request, or resume it if it exists. */
export interface AcquireBody {
  /** Resource name: 1–256 UTF-8 bytes of printable Unicode (`/` and spaces allowed). */
  resource: string;
  /** Capacity in units, used when this request creates the resource. Default 1. */
  capacity?: number;
  /** Units this request takes. Default 1; at most the resource's capacity. */
  load?: number;
  /** Higher is served first within its lane. Default 10. */
  priority?: number;
  /**
   * The lane it waits in: 1–64 characters of `A-Z a-z 0-9 . _ -`. Each lane is a line of its own
   * (priority, then arrival); the resource's lane strategy decides between lanes. Default `default`.
   */
  lane?: string;
  /** Longest time to stay queued, in ms. `0`: granted at once or `timed_out`. Default: no limit. */
  timeout?: number;
  /** Longest hold, in ms, counted from the grant. Default and maximum are set by the server. */
  expiresIn?: number;
  /**
   * Lock delay, in ms (as Chubby's): if this request's hold ends without a release (its client
   * died, or the hold expired), its units are held back this long before anyone else gets them.
   * For stores that cannot check fencing tokens. Default 0; at most `MAX_LOCK_DELAY`.
   */
  lockDelay?: number;
}

/** Largest `lockDelay`, in ms. */
export const MAX_LOCK_DELAY = 300_000;

/** What the server says about one request: every successful request route answers with this. */
export interface RequestSnapshot {
  id: string;
  resource: string;
  state: RequestState;
  load: number;
  priority: number;
  /** Capacity of the resource when the snapshot was taken. */
  capacity: number;
  /** Present once granted: strictly greater than every earlier grant's on this resource. */
  fencingToken?: number;
  /** While `active`: ms until the server ends the hold as `expired`. */
  expiresIn?: number;
  /**
   * While queued or active: the server's repoll grace — if no poll reaches it within this many
   * ms of this answer, the request is dropped. A holder that cannot confirm its lease within it
   * must consider the lease lost.
   */
  pollWithin?: number;
  /** When `revoked`: why, in the operator's words. */
  reason?: string;
}

/** `GET /v1/resources/{name}`. */
export interface ResourceSnapshot {
  name: string;
  /** Null when nothing holds or waits on the resource: it is forgotten, and its next request sets the capacity. */
  capacity: number | null;
  /** Units held now, including `heldBack`. */
  used: number;
  /** Units held back by the lock delay of holders that ended without a release. */
  heldBack: number;
  /** Requests holding units (at most the first 100 are listed in `holders`). */
  active: number;
  /** Requests waiting in line (`away` included). */
  queued: number;
  /**
   * Waiters whose client's connection closed: they keep their place for the server's
   * `waitGrace`, but are passed over until their client comes back.
   */
  away: number;
  holders: Array<{ id: string; load: number; fencingToken: number; expiresIn: number }>;
  /**
   * Per lane, once the resource has lanes (a request named one, or an operator configured them):
   * requests waiting, requests holding, and units held (held back included).
   */
  lanes?: Record<string, { queued: number; active: number; used: number }>;
}

/** An error body (RFC 9457 `application/problem+json`), with RateQueue's stable `code`. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  /** Stable, machine-readable: what the SDK maps to an error class. */
  code: ProblemCode;
  /** For `invalid_request`: the field (or `body`, `query.wait`, ...) to fix. */
  field?: string;
}

export type ProblemCode =
  | "invalid_request"
  | "unauthorized"
  | "forbidden_host"
  | "admin_key_required"
  | "not_found"
  | "request_conflict"
  | "capacity_mismatch"
  | "queue_full"
  | "payload_too_large"
  | "uri_too_long"
  | "headers_too_large"
  | "request_timeout"
  | "unsupported_media_type"
  | "shutting_down"
  | "not_leader"
  | "internal";

// --- The session protocol (docs/protocol.md, "Sessions") ------------------------------------

/** Messages a client sends in a session. */
export type ClientMessage =
  /**
   * First message on a WebSocket: authenticates and opens (or resumes) session `session`.
   * `after`: the last event seq seen, counted in server run `run` (from the last welcome).
   */
  | {
      t: "hello";
      key: string;
      session: string;
      after?: number;
      run?: string;
      /** The client takes grants marked `provisional` (and their `recorded`). */
      provisional?: boolean;
    }
  /** Create or resume request `id` (as `PUT /v1/requests/{id}`): answered with a `state`. */
  | ({ t: "acquire"; id: string } & AcquireBody)
  /** Release or cancel request `id` (as `DELETE`): answered with a `state`. */
  | { t: "release"; id: string }
  /** Liveness: answered with a `pong` carrying the same `n`. `ack`: events up to it were received. */
  | { t: "ping"; n: number; ack?: number };

/** What a server says about liveness (see `@ratequeue/core`'s liveness.ts). */
export interface SessionTerms {
  grace: number;
  ping: number;
  recovery: number;
}

/** Messages a server sends in a session. */
export type ServerMessage =
  /**
   * `run`: the server process's run. Events are numbered per run: a server restarted on its
   * data directory numbers a restored session's events from 1 again.
   */
  | ({ t: "welcome"; session: string; resumed: boolean; run?: string } & SessionTerms)
  /**
   * A request's snapshot: the answer to an `acquire` or `release` (without `seq`), or an event
   * (with `seq`: a grant, or an end the client did not ask for) — events are replayed on resume
   * until acknowledged.
   */
  | ({
      t: "state";
      seq?: number;
      /**
       * A grant told before it is durable (only to a client that said `provisional` in its
       * hello): the lease holds once `recorded` follows; if the connection ends first, it may
       * never have been, and the client gives it up.
       */
      provisional?: true;
    } & RequestSnapshot)
  /** The provisional grant of request `id` is durable. */
  | { t: "recorded"; id: string }
  /** An `acquire` or `release` refused: the same problem the HTTP route would answer. */
  | { t: "error"; id?: string; status: number; code: string; detail: string; field?: string }
  | { t: "pong"; n: number }
  /** The server is shutting down; with `recovery > 0` it keeps every lease for that long after it restarts. */
  | { t: "bye"; recovery: number };

/** Path of the WebSocket session endpoint. */
export const SESSION_PATH = "/session";
