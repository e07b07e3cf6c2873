import { readFileSync } from "node:fs";
import { LIVENESS_DEFAULTS } from "@ratequeue/core";
import { parseConfig, readConfig, type ServerConfig } from "./config.js";
import type { Clock, EngineConfig } from "./engine.js";

/** Options of `startServer()` and of the `ratequeue-server` command. Durations are in ms. */
export interface ServerOptions {
  /** Interface to listen on. Default `"127.0.0.1"`. Without API keys only loopback is allowed. */
  host?: string;
  /** TCP port; `0` picks a free one (read it from `url`). Default `7420`. */
  port?: number;
  /**
   * API keys; each one is a namespace of its own. Default: none, which is open development
   * mode (loopback only): any bearer token is accepted and each token is its own namespace.
   */
  apiKeys?: readonly string[];
  /**
   * Keep live requests in this directory (SQLite), so that a restarted server still has every
   * held lease and queued request. Default for `startServer`: none, state in memory only (the
   * `ratequeue-server` command defaults to `.ratequeue/`).
   */
  dataDir?: string;
  /**
   * Keep the state in PostgreSQL (`postgres://user@host:5432/db`) instead of memory or a data
   * directory, shared by any number of replicas: one (the leader) serves, the others stand by
   * and answer 503 `not_leader` until it goes (see docs/operations.md). Implies `behindProxy`
   * (clients give a lease up `grace` after losing their replica). Default: none.
   */
  store?: string;
  /** With `store`: the PostgreSQL schema RateQueue keeps its tables in. Default `"ratequeue"`. */
  pgSchema?: string;
  /**
   * Limits to set at start: a config file's path (`--config ratequeue.json`), or its content.
   * Each entry sets a resource's `capacity`, `concurrency` and `rates` in the namespace of an
   * `apiKey` (or a `namespace` id), as the admin API's PUT would; limits it does not name stay
   * as they are. Checked before the server starts, every mistake named with its place in the
   * file. A replica applies it once, when it first serves. Default: none.
   */
  config?: string | ServerConfig;
  /**
   * Clients reach this server through a proxy or load balancer that may refuse connections
   * while the server is up. Then a refused connection does not prove the server down, and
   * clients are not told to keep their leases through a restart (`recovery: 0`): they give a
   * lease up `grace` after losing the server, as after a reset. Default `false` (clients
   * connect to the server itself). See docs/protocol.md, "Liveness".
   */
  behindProxy?: boolean;
  /**
   * After a restart with a `dataDir`, how long the clients of restored requests have to poll
   * again before their requests are dropped, in ms. Default: `pollWindow + repollGrace`, the
   * longest a live client can go without polling.
   */
  recoveryWindow?: number;
  /**
   * Longest a poll is held open before it is answered with the unchanged state, in ms; a client
   * may ask for less with `?wait=`. Default `10_000`; at most `25_000`, well below the 300 s
   * header timeout of undici and the idle timeouts of common proxies.
   */
  pollWindow?: number;
  /**
   * After a client's connection closes (its session's, or its open poll's), how long its leases
   * are kept before the next in line is served, in ms. Default `200`. Clients give a lease up
   * this long after the last message the server answered, so it is also how long a client may
   * go unanswered (a blocked event loop, a slow network) before it stops trusting its leases.
   */
  grace?: number;
  /**
   * After a client's connection closes, how long its waiters keep their place in line (passed
   * over meanwhile), in ms. Default `5_000`: a network blip or a reconnect loses no place.
   */
  waitGrace?: number;
  /**
   * After the server last heard from a client with nothing open (an answered poll), how long it
   * has to come back; also how long a WebSocket session may stay silent. Default `4_000`.
   */
  repollGrace?: number;
  /** Hold bound for a request that sets no `expiresIn`, in ms. Default `900_000` (15 min). */
  defaultExpiresIn?: number;
  /** Largest `expiresIn` accepted, in ms. Default `86_400_000` (24 h). */
  maxExpiresIn?: number;
  /** Most requests waiting on one resource; more get `409 queue_full`. Default `100_000`. */
  maxQueue?: number;
  /** How long an ended request is remembered (for retried creates and releases), in ms. Default `60_000`. */
  retention?: number;
  /**
   * Most ended requests remembered per API key; past it the key's oldest are forgotten before
   * `retention` (never another key's). Default `10_000`. Forgetting is safe for exclusion (a
   * create retried after it makes a new request, granted in turn), but remembering costs memory
   * and garbage-collection time on every grant.
   */
  maxRetained?: number;
  /** Largest request body, in bytes. Default `16_384`. */
  bodyLimit?: number;
  /**
   * Most connections open at once. At the limit, the oldest connection that has not yet made an
   * authenticated request is closed to make room (so idle, unauthenticated sockets cannot lock
   * clients out); only if there is none is the new one refused. Default: the process's file
   * descriptor limit less 128 (kept for the data directory), from 64 to 100,000; 10,000 where
   * the limit cannot be read (outside Linux).
   */
  maxConnections?: number;
  /**
   * Web origins (`https://app.example.com`) whose pages may call the server from a browser:
   * CORS answers for them, and WebSocket sessions opened by their pages are accepted. `"*"`
   * allows any origin. Default: none (browsers may only call from the server's own origin).
   * Read docs/protocol.md, "Browsers", before putting an API key in a web page.
   */
  corsOrigins?: readonly string[];
  /**
   * Keys for operators (`GET /metrics`), separate from the API keys: an application's key sees
   * its own namespace only, an admin key sees every namespace's resource names. Default: none —
   * then `/metrics` answers only in open development mode (on loopback, like everything else).
   */
  adminKeys?: readonly string[];
  /**
   * How many resources `/metrics` reports one by one (`ratequeue_resource_*`): those with the
   * longest lines, then the most units held. Default `10`; `0` for none. Totals are always there.
   */
  metricsTop?: number;
  /** Time a client has to send a request's headers, in ms. Default `10_000`. */
  headersTimeout?: number;
  /** Time a client has to send a whole request, body included, in ms. Default `30_000`. */
  requestTimeout?: number;
  /** Where the server's own lines go (the URL when ready, warnings). Default: none for `startServer`; stderr for the CLI. */
  log?: (line: string) => void;
  /**
   * Structured logs (JSON lines, Fastify's pino): `error` (failures), `warn`, `info` (leases
   * dropped or expired: a holder whose client went away), `debug` (every grant, release and
   * end; every HTTP request), `trace`, or `silent`. Default `"silent"` for `startServer`,
   * `"info"` for the command. No line ever holds an API key.
   */
  logLevel?: LogLevel;
  /** Where structured logs go. Default: stdout. */
  logStream?: { write(line: string): void };
  /** The clock, for tests. Default `Date`. */
  clock?: Clock;
}

export const MAX_POLL_WINDOW = 25_000;

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Every option with its default, in one place. */
export interface ResolvedServerOptions extends EngineConfig {
  dataDir: string | undefined;
  store: string | undefined;
  pgSchema: string;
  config: ServerConfig | undefined;
  behindProxy: boolean;
  recoveryWindow: number;
  host: string;
  port: number;
  apiKeys: readonly string[];
  adminKeys: readonly string[];
  metricsTop: number;
  pollWindow: number;
  maxExpiresIn: number;
  bodyLimit: number;
  maxConnections: number;
  corsOrigins: readonly string[];
  headersTimeout: number;
  requestTimeout: number;
  log: (line: string) => void;
  logLevel: LogLevel;
  logStream: { write(line: string): void } | undefined;
  clock: Clock;
}

export function resolveServerOptions(options: ServerOptions = {}): ResolvedServerOptions {
  const resolved: ResolvedServerOptions = {
    host: options.host ?? "127.0.0.1",
    port: options.port ?? 7420,
    apiKeys: options.apiKeys ?? [],
    adminKeys: options.adminKeys ?? [],
    metricsTop: options.metricsTop ?? 10,
    pollWindow: options.pollWindow ?? 10_000,
    grace: options.grace ?? LIVENESS_DEFAULTS.grace,
    waitGrace: options.waitGrace ?? LIVENESS_DEFAULTS.waitGrace,
    repollGrace: options.repollGrace ?? LIVENESS_DEFAULTS.repollGrace,
    defaultExpiresIn: options.defaultExpiresIn ?? 900_000,
    maxExpiresIn: options.maxExpiresIn ?? 86_400_000,
    maxQueue: options.maxQueue ?? 100_000,
    retention: options.retention ?? 60_000,
    maxRetained: options.maxRetained ?? 10_000,
    bodyLimit: options.bodyLimit ?? 16_384,
    maxConnections: options.maxConnections ?? defaultMaxConnections(),
    corsOrigins: options.corsOrigins ?? [],
    headersTimeout: options.headersTimeout ?? 10_000,
    requestTimeout: options.requestTimeout ?? 30_000,
    log: options.log ?? (() => {}),
    logLevel: options.logLevel ?? "silent",
    logStream: options.logStream,
    clock: options.clock ?? Date,
    dataDir: options.dataDir,
    store: options.store,
    pgSchema: options.pgSchema ?? "ratequeue",
    config:
      options.config === undefined
        ? undefined
        : typeof options.config === "string"
          ? readConfig(options.config)
          : parseConfig(options.config),
    behindProxy: (options.behindProxy ?? false) || options.store !== undefined,
    recoveryWindow: 0,
  };
  // With a store on PostgreSQL, at least 2 × grace (see below).
  resolved.recoveryWindow =
    options.recoveryWindow ??
    Math.max(
      resolved.pollWindow + resolved.repollGrace,
      options.store === undefined ? 0 : 2 * resolved.grace,
    );
  if (
    resolved.dataDir !== undefined &&
    (typeof resolved.dataDir !== "string" || resolved.dataDir === "")
  ) {
    throw new TypeError("dataDir must be a directory path");
  }
  if (resolved.config !== undefined && resolved.apiKeys.length > 0) {
    for (const [i, entry] of resolved.config.limits.entries())
      if (entry.apiKey !== undefined && !resolved.apiKeys.includes(entry.apiKey))
        throw new TypeError(
          `config: limits[${i}].apiKey is not one of the server's API keys (--api-key): its limits would apply to a namespace nobody can use`,
        );
  }
  if (resolved.store !== undefined) {
    if (typeof resolved.store !== "string" || !/^postgres(ql)?:\/\//.test(resolved.store))
      throw new TypeError(
        `store must be a PostgreSQL URL such as "postgres://postgres@127.0.0.1:5432/test", got ${JSON.stringify(resolved.store)}`,
      );
    if (resolved.dataDir !== undefined)
      throw new TypeError("give store or dataDir, not both: the state lives in one place");
    // A new leader keeps restored leases this long; a client may trust its old replica up to
    // 2 × grace after that replica's last proof of leadership (docs/operations.md).
    if (resolved.recoveryWindow < 2 * resolved.grace)
      throw new TypeError(
        `recoveryWindow (${resolved.recoveryWindow}) must be at least 2 × grace (${2 * resolved.grace}) with store: a new leader must keep restored leases while their clients may still trust the old one`,
      );
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(resolved.pgSchema))
      throw new TypeError(
        `pgSchema must be lower-case letters, digits and _ (at most 63, not starting with a digit), got ${JSON.stringify(resolved.pgSchema)}`,
      );
  }
  integer("port", resolved.port, 0, 65_535);
  integer("pollWindow", resolved.pollWindow, 1, MAX_POLL_WINDOW);
  integer("grace", resolved.grace, 0, 60_000);
  integer("repollGrace", resolved.repollGrace, 1, 60_000);
  integer("recoveryWindow", resolved.recoveryWindow, 0, 3_600_000);
  integer("waitGrace", resolved.waitGrace, resolved.grace, 600_000);
  if (resolved.repollGrace < resolved.grace)
    throw new TypeError(
      `repollGrace (${resolved.repollGrace}) must be at least grace (${resolved.grace}): clients count on grace after every answer`,
    );
  integer("maxExpiresIn", resolved.maxExpiresIn, 1, 2_147_483_647);
  integer("defaultExpiresIn", resolved.defaultExpiresIn, 1, resolved.maxExpiresIn);
  integer("maxQueue", resolved.maxQueue, 1, 100_000_000);
  integer("retention", resolved.retention, 0, 86_400_000);
  integer("maxRetained", resolved.maxRetained, 0, 100_000_000);
  integer("bodyLimit", resolved.bodyLimit, 1024, 1_048_576);
  integer("maxConnections", resolved.maxConnections, 1, 1_000_000);
  integer("requestTimeout", resolved.requestTimeout, 1_000, 600_000);
  integer("headersTimeout", resolved.headersTimeout, 1_000, resolved.requestTimeout);
  for (const origin of resolved.corsOrigins) {
    if (origin !== "*" && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new TypeError(
        `corsOrigins: ${JSON.stringify(origin)} is not an origin: give scheme, host and port only, e.g. https://app.example.com`,
      );
    }
  }
  integer("metricsTop", resolved.metricsTop, 0, 1_000);
  if (!(LOG_LEVELS as readonly string[]).includes(resolved.logLevel)) {
    throw new TypeError(
      `logLevel must be one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(resolved.logLevel)}`,
    );
  }
  for (const [name, keys] of [
    ["apiKeys", resolved.apiKeys],
    ["adminKeys", resolved.adminKeys],
  ] as const) {
    for (const key of keys) {
      if (typeof key !== "string" || key.length === 0 || /[\s,]/.test(key)) {
        throw new TypeError(
          `${name}: each key must be a non-empty string without spaces or commas`,
        );
      }
    }
  }
  for (const key of resolved.adminKeys) {
    if (resolved.apiKeys.includes(key)) {
      throw new TypeError(
        "adminKeys: an admin key must not also be an API key (give operators a key of their own)",
      );
    }
  }
  if (resolved.apiKeys.length === 0 && !isLoopback(resolved.host)) {
    throw new TypeError(
      `host ${resolved.host} is not loopback: without API keys the server runs in open development mode, which is loopback only. Pass --api-key (or RATEQUEUE_API_KEYS), or listen on 127.0.0.1`,
    );
  }
  return resolved;
}

/** The file descriptor limit less what the data directory and the process need, when it can be read. */
function defaultMaxConnections(): number {
  try {
    const limits = readFileSync("/proc/self/limits", "utf8");
    const soft = Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1]);
    if (Number.isFinite(soft)) return Math.max(64, Math.min(100_000, soft - FD_RESERVE));
  } catch {
    // not Linux: no way to read the limit without a native module
  }
  return 10_000;
}

/** File descriptors kept for the data directory, the log and the process itself. */
const FD_RESERVE = 128;

function integer(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** Why open development mode refused a request. */
export const OPEN_MODE_HOSTS =
  "open development mode answers only requests addressed to a loopback name (127.0.0.1, localhost, [::1]): use that address, or start the server with --api-key";

/** A `Host` header naming this machine's loopback (any port). */
export function loopbackHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  // `name:port`, or `[v6]:port`: the name without port and brackets.
  const name = host.startsWith("[") ? host.slice(1, host.indexOf("]")) : host.split(":")[0]!;
  return isLoopback(name);
}
