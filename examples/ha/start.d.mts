// Types of start.mjs (plain Node ESM, run without a build step), for the test and for editors.

export interface ClusterOptions {
  /** How many replicas. Default 3. */
  replicas?: number;
  /** Ports to use; each one not given is a free one (another if it is taken before it is bound). */
  ports?: { haproxy?: number; stats?: number; replicas?: readonly number[] };
  /** PostgreSQL URL. Default `RATEQUEUE_STORE`, else postgres://postgres@127.0.0.1:5432/test. */
  store?: string;
  /** The replicas' schema. Default: `rq_ha_<random>`, dropped by `close()` (a given one is kept). */
  schema?: string;
  /** The replicas' `--grace`, ms. Default 1500. */
  grace?: number;
  /** The replicas' API key. Default `ha-example`. */
  apiKey?: string;
  /** HAProxy's health check interval, ms. Default 100. */
  checkInterval?: number;
  /** The replicas' `--log-level`. Default `warn`. */
  logLevel?: string;
  /** More arguments for every replica's command line. */
  serverArgs?: readonly string[];
  /** How to run the server: Node's arguments before the server's own. Default: the built CLI. */
  command?: readonly string[];
  /** The haproxy binary. Default: `findHaproxy()`. */
  haproxy?: string;
  /** Each line a replica or HAProxy writes (stdout and stderr). Default: dropped. */
  log?: (source: string, line: string) => void;
  /** Stops the start: what has started is stopped and the call rejects. */
  signal?: AbortSignal;
}

export interface Replica {
  /** `replica1`, `replica2`, …: also its server name in HAProxy. */
  readonly name: string;
  /** Its port: a free one at its first start (unless `ports.replicas` names one), then kept. */
  readonly port: number;
  /** The replica itself, not through HAProxy (set once it has listened). */
  readonly url: string;
  /** Its process id while it runs. */
  readonly pid: number | undefined;
  readonly alive: boolean;
  /** Starts it if it is not running; resolves once it listens (leading or standing by). */
  start(): Promise<void>;
  /** Sends `signal` (default SIGKILL) and resolves once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGTERM (a clean stop: the leader hands over at once), SIGKILL after 10 s. */
  stop(): Promise<void>;
  /** Kills it (if running) and starts it again on the same port: it stands by. */
  restart(): Promise<void>;
  /** What it says on `GET /v1/replica` itself; `down` if it does not answer. */
  role(): Promise<"leader" | "follower" | "down">;
}

export interface Haproxy {
  /** The frontend's port (the cluster's `url`), and the stats page's: kept across restarts. */
  readonly port: number;
  readonly statsPort: number;
  readonly pid: number | undefined;
  readonly alive: boolean;
  /** Sends `signal` (default SIGKILL) and resolves once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again (same configuration and ports) if it is not running; resolves once it listens. */
  start(): Promise<void>;
}

export interface Cluster extends AsyncDisposable {
  /** HAProxy's frontend: the `baseUrl` to give clients. */
  readonly url: string;
  /** HAProxy's stats page. */
  readonly statsUrl: string;
  readonly schema: string;
  readonly store: string;
  readonly apiKey: string;
  readonly grace: number;
  /** The generated haproxy.cfg (in a temporary directory removed by `close()`). */
  readonly configPath: string;
  /** The HAProxy process. */
  readonly haproxy: Haproxy;
  readonly replicas: readonly Replica[];
  /** The replica that answers `GET /v1/replica` 200 itself, if any; throws if two do. */
  leader(): Promise<Replica | undefined>;
  /** Each replica's state in HAProxy's stats: `{ replica1: "UP", replica2: "DOWN", … }`. */
  haproxyStatus(): Promise<Record<string, string>>;
  /** Resolves once `GET /v1/replica` through HAProxy answers 200 (polled every `every` ms). */
  serving(options?: { timeout?: number; every?: number }): Promise<void>;
  /** Stops the replicas (SIGTERM) and HAProxy, and drops the schema if it was made here. */
  close(): Promise<void>;
}

export const CLI: string;
export const DEFAULT_STORE: string;
export function findHaproxy(): string | undefined;
/** A port nothing listens on now, below the OS's ephemeral range (20000–31999). */
export function freePort(): Promise<number>;
export function startCluster(options?: ClusterOptions): Promise<Cluster>;
export function dropSchema(store: string, schema: string): Promise<void>;
