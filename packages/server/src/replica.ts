import { createServer, type Server } from "node:http";
import type { Socket } from "node:net";
import pg from "pg";
import type { ResolvedServerOptions } from "./options.js";
import { migrate, PgStore } from "./pg-store.js";
import { problem } from "./problem.js";
import { type RunningServer, serve } from "./server.js";

/** A replica on PostgreSQL: the URL it listens on, and whether it serves now. */
export interface ReplicaServer extends RunningServer {
  /** `leader` while this replica serves; `follower` while it stands by. */
  role(): "leader" | "follower";
}

/** How long a replica waits before trying PostgreSQL again after losing it, in ms. */
const RETRY_MS = 250;

/**
 * One replica of a server whose state is in PostgreSQL (`--store`). It listens at once; while
 * another replica leads, it answers every request `503 not_leader` (a load balancer's health
 * check on `GET /v1/replica` sends traffic to the leader only) and waits on the leader lock.
 * When it gets the lock it reads the state and serves it, exactly as a restarted server serves
 * its data directory: restored sessions have their recovery window to come back.
 *
 * A leader stops serving — it closes every connection, says nothing more, and stands by
 * again — the moment it cannot prove it still holds the lock: a commit fails, its PostgreSQL
 * connection ends, or PostgreSQL has not answered a probe sent within the last `grace`. So it
 * stops talking to clients at most `grace` after its last proof, and a new leader keeps every
 * restored lease for the recovery window (far longer than `grace` on top): no client still
 * trusting the old leader can meet a regrant (docs/operations.md, "Failures").
 */
export async function startReplica(resolved: ResolvedServerOptions): Promise<ReplicaServer> {
  const replica = new Replica(resolved);
  await replica.start();
  return replica;
}

class Replica implements ReplicaServer {
  url = "";
  private port: number;
  private leading: RunningServer | undefined;
  private standby: Server | undefined;
  /** The connection waiting on the leader lock, while this replica stands by. */
  private waiting: pg.Client | undefined;
  private stopped = false;
  private closed: Promise<void> | undefined;
  private lockClient: pg.Client | undefined;
  private warm = false;
  /** Whether this process has set its config file's limits (the first time it served). */
  private configured = false;

  constructor(private readonly options: ResolvedServerOptions) {
    this.port = options.port;
  }

  role(): "leader" | "follower" {
    return this.leading === undefined ? "follower" : "leader";
  }

  async start(): Promise<void> {
    let client: pg.Client | undefined;
    try {
      client = await this.connectAndMigrate();
    } catch (error) {
      if (!unavailable(error))
        throw new Error(
          `cannot use the PostgreSQL store at ${redact(this.options.store!)}: ${(error as Error).message}`,
          { cause: error },
        );
      // PostgreSQL is down (or starting): stand by and try again, as a replica that loses it does.
      await this.standBy();
      this.options.log(
        `[ratequeue] standing by on ${this.url}: PostgreSQL at ${redact(this.options.store!)} does not answer (${(error as Error).message}); retrying every ${RETRY_MS} ms`,
      );
      void this.campaign();
      return;
    }
    const { rows } = await client.query<{ got: boolean }>(
      "SELECT pg_try_advisory_lock($1, hashtext($2)) AS got",
      [LOCK_CLASS, this.options.pgSchema],
    );
    if (rows[0]?.got) {
      await this.lead(client);
    } else {
      await this.standBy();
      this.options.log(
        `[ratequeue] standing by on ${this.url}: another replica serves schema ${this.options.pgSchema}`,
      );
      void this.campaign(client);
    }
  }

  /** A connection, with the schema migrated (idempotent: the migrations that ran are recorded). */
  private async connectAndMigrate(): Promise<pg.Client> {
    const client = await connect(this.options.store!);
    try {
      await migrate(client, this.options.pgSchema);
      return client;
    } catch (error) {
      end(client);
      throw error;
    }
  }

  /** Waits for the leader lock (on `client`, or a new connection), then leads. */
  private async campaign(client?: pg.Client): Promise<void> {
    let failing = false;
    while (!this.stopped) {
      try {
        client ??= await this.connectAndMigrate();
        this.waiting = client;
        await client.query("SELECT pg_advisory_lock($1, hashtext($2))", [
          LOCK_CLASS,
          this.options.pgSchema,
        ]);
        this.waiting = undefined;
        if (this.stopped) break;
        await this.lead(client);
        return;
      } catch (error) {
        this.waiting = undefined;
        if (client) end(client);
        client = undefined;
        if (this.stopped) return;
        if (!failing) {
          failing = true; // once per outage, not every retry
          this.options.log(
            `[ratequeue] PostgreSQL: ${(error as Error).message}; retrying every ${RETRY_MS} ms`,
          );
        }
        if (this.standby === undefined) await this.standBy().catch(() => {});
        await sleep(RETRY_MS);
      }
    }
    if (client) end(client);
  }

  /** Holds the lock on `client`: takes the store over and serves it until the term ends. */
  private async lead(client: pg.Client): Promise<void> {
    let resolveLost!: (reason: Error) => void;
    const lost = new Promise<Error>((resolve) => {
      resolveLost = resolve;
    });
    let over = false;
    const stepDown = (reason: Error) => {
      if (over) return;
      over = true;
      resolveLost(reason);
    };
    this.lockClient = client;
    client.on("error", (error) => stepDown(error));
    client.on("end", () => stepDown(new Error("the PostgreSQL connection ended")));
    let store: PgStore | undefined;
    try {
      store = await PgStore.take(client, this.options.pgSchema, stepDown, this.options.grace);
      await this.closeStandby();
      this.leading = await serve({ ...this.options, port: this.port }, store, !this.configured);
      this.configured = true;
    } catch (error) {
      store?.abandon(error as Error);
      this.leading = undefined;
      this.lockClient = undefined;
      end(client);
      throw error;
    }
    this.setUrl(this.leading.url);
    this.options.log(
      `[ratequeue] leading on ${this.url} (epoch ${store.epoch}, schema ${this.options.pgSchema})`,
    );
    // Probes keep the proof of the lock fresh (the store holds back what would leave on an old
    // one). A replica steps down when PostgreSQL leaves a query of the lock's session unanswered
    // for longer than `grace` — judged after the event loop has read what arrived (setImmediate),
    // so a stall of this process alone is not taken for a silent PostgreSQL.
    const grace = this.options.grace;
    const every = Math.max(5, Math.floor(grace / 8));
    const watchdog = setInterval(() => {
      if (store.unanswered() > grace) {
        setImmediate(() => {
          if (store.unanswered() > grace)
            stepDown(new Error(`PostgreSQL has not answered for ${grace} ms (--grace)`));
        });
        return;
      }
      if (store.wantsProbe(every)) store.probe().catch((error: Error) => stepDown(error));
    }, every);
    watchdog.unref();
    void lost.then(async (reason) => {
      clearInterval(watchdog);
      if (this.stopped) return;
      store.abandon(reason); // nothing waiting for a commit leaves now
      this.options.log(`[ratequeue] stepping down: ${reason.message}`);
      const server = this.leading;
      this.leading = undefined;
      this.lockClient = undefined;
      await server?.close().catch(() => {});
      end(client); // only now: the lock outlives every connection this term served
      if (this.stopped) return;
      await this.standBy().catch(() => {});
      void this.campaign();
    });
  }

  /**
   * Builds a whole server once and closes it, while nothing waits on it: the first server a
   * process builds costs ~100 ms more than the next (modules, JIT), which a takeover would pay.
   */
  private async warmUp(): Promise<void> {
    if (this.warm) return;
    this.warm = true;
    const quiet = { log: () => {}, logLevel: "silent" as const };
    const server = await serve(
      {
        ...this.options,
        ...quiet,
        store: undefined,
        config: undefined,
        port: 0,
        host: "127.0.0.1",
      },
      undefined,
      false,
    ).catch(() => undefined);
    await server?.close();
  }

  /** Listens, answering `503 not_leader` to everything, until this replica leads. */
  private async standBy(): Promise<void> {
    if (this.standby !== undefined || this.stopped) return;
    await this.warmUp();
    const body = JSON.stringify(
      problem(
        503,
        "not_leader",
        "this replica is standing by: another replica serves (retry, or try the next URL; a load balancer should check GET /v1/replica)",
      ),
    );
    const server = createServer((req, res) => {
      const replicaCheck = req.url?.split("?")[0] === "/v1/replica";
      res.writeHead(503, {
        "content-type": replicaCheck ? "application/json" : "application/problem+json",
        "retry-after": "1",
        connection: "close",
      });
      res.end(replicaCheck ? JSON.stringify({ role: "follower" }) : body);
    });
    server.on("upgrade", (_req, socket: Socket) => {
      socket.on("error", () => {}); // a client that resets it must not take the process down
      socket.end(
        `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    });
    this.standby = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, this.options.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address();
    if (typeof address === "object" && address !== null) this.port = address.port;
    const host = this.options.host.includes(":") ? `[${this.options.host}]` : this.options.host;
    this.setUrl(`http://${host}:${this.port}`);
  }

  private async closeStandby(): Promise<void> {
    const server = this.standby;
    this.standby = undefined;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private setUrl(url: string): void {
    this.url = url;
    const port = Number(new URL(url).port);
    if (port > 0) this.port = port;
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      this.stopped = true;
      if (this.waiting) end(this.waiting);
      const server = this.leading;
      const client = this.lockClient;
      this.leading = undefined;
      // A clean stop: the server answers its polls and commits what is left, then the lock goes
      // with the connection and a standing-by replica takes over at once.
      await server?.close();
      if (client) {
        await Promise.race([client.end().catch(() => {}), sleep(2_000)]);
        end(client);
      }
      await this.closeStandby();
    })();
    return this.closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** The advisory lock class of RateQueue's leader locks ("rq"); the key is the schema's hash. */
const LOCK_CLASS = 0x7271;

/** A connection for a replica: PostgreSQL notices a replica that vanished within ~5 s. */
async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: url,
    keepAlive: true,
    connectionTimeoutMillis: 5_000,
    application_name: "ratequeue",
  });
  client.on("error", () => {}); // a lost connection fails its queries: handled there
  await client.connect();
  // Without a FIN (a dead host, a cut network) PostgreSQL would keep the replica's session, and
  // so its leader lock, for hours: its own keepalives and user timeout end it within ~5 s.
  await client.query(
    "SET tcp_keepalives_idle = 2; SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 3; SET tcp_user_timeout = 5000",
  );
  return client;
}

/** Ends a connection without waiting on a network that may not answer. */
function end(client: pg.Client): void {
  void client.end().catch(() => {});
  (
    client as unknown as { connection?: { stream?: { destroy(): void } } }
  ).connection?.stream?.destroy();
}

/**
 * Whether `error` says PostgreSQL is not there right now (down, starting, restarting, out of
 * reach) rather than that the settings are wrong (a bad password, no such database).
 */
function unavailable(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? "";
  const message = (error as Error).message ?? "";
  return (
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EPIPE"].includes(
      code,
    ) ||
    code.startsWith("08") || // connection exceptions
    code === "57P01" || // admin shutdown
    code === "57P02" || // crash shutdown
    code === "57P03" || // cannot connect now (starting up)
    /timeout|terminated|Connection terminated/i.test(message)
  );
}

/** A PostgreSQL URL without its password, for messages. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(an invalid URL)";
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
