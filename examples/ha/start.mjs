#!/usr/bin/env node
/**
 * Three RateQueue replicas on PostgreSQL behind HAProxy, on this machine:
 *
 *   npx -y pnpm@12.4.2 build            # once: this runs the built server, packages/server/dist
 *   node examples/ha/start.mjs          # prints the URL to give clients; Ctrl-C stops it all
 *
 * The replicas share one PostgreSQL schema (`--store`, `--pg-schema`): the one holding the
 * leader lock serves, the others answer 503 and wait on the lock. HAProxy's health check
 * (`GET /v1/replica`, 200 on the leader only) sends every client to the leader. `kill -9` the
 * leader's pid: a standby takes over at once with every lease and waiter, HAProxy marks it up
 * within a check interval, and clients reconnect through the same URL (README.md).
 *
 * Environment: RATEQUEUE_STORE (default postgres://postgres@127.0.0.1:5432/test), HAPROXY (the
 * binary; default haproxy from PATH or /usr/sbin/haproxy), RATEQUEUE_HA_PORT (HAProxy's port,
 * default 7480; the replicas take the next three, the stats page the one after).
 *
 * Also a library, for tests: `startCluster()` starts the same thing on free ports with a schema
 * of its own, and `close()` stops it and drops the schema.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { haproxyConfig } from "./haproxy.cfg.mjs";

export const CLI = fileURLToPath(new URL("../../packages/server/dist/cli.js", import.meta.url));
export const DEFAULT_STORE = "postgres://postgres@127.0.0.1:5432/test";

/** The HAProxy binary: `$HAPROXY`, else `haproxy` on PATH, else /usr/sbin/haproxy; undefined if none. */
export function findHaproxy() {
  if (process.env.HAPROXY) return process.env.HAPROXY;
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin"];
  for (const dir of dirs) {
    if (dir && existsSync(join(dir, "haproxy"))) return join(dir, "haproxy");
  }
  return undefined;
}

/**
 * A TCP port nothing listens on now, below Linux's ephemeral range (32768–60999): ports the OS
 * hands out for port 0 and for outgoing connections are soon taken again on a busy machine.
 * Something may still take it before it is bound: callers retry with another (`startCluster`).
 */
export async function freePort() {
  for (let attempt = 0; ; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise((resolve) => {
      const server = createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
    if (free) return port;
    if (attempt > 50) throw new Error("no free TCP port found");
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** GET `url` (no keep-alive pool of ours to go stale): the status, or 0 if nothing answered. */
async function status(url, timeout = 1_000) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeout) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** Resolves when `child` has exited (at once if it has). */
function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/** Calls `onLine` with each line `stream` writes. */
function lines(stream, onLine) {
  let rest = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk) => {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop() ?? "";
    for (const line of parts) onLine(line);
  });
  stream.on("end", () => {
    if (rest) onLine(rest);
  });
}

/**
 * Starts the replicas and HAProxy; resolves once HAProxy sends clients to a leader and has
 * marked the standing-by replicas down. See start.d.mts for the options and the result.
 *
 * @param {import("./start.d.mts").ClusterOptions} [options]
 * @returns {Promise<import("./start.d.mts").Cluster>}
 */
export async function startCluster(options = {}) {
  const count = options.replicas ?? 3;
  const store = options.store ?? (process.env.RATEQUEUE_STORE || DEFAULT_STORE);
  const ownSchema = options.schema === undefined;
  const schema = options.schema ?? `rq_ha_${randomBytes(4).toString("hex")}`;
  const grace = options.grace ?? 1_500;
  const apiKey = options.apiKey ?? "ha-example";
  const checkInterval = options.checkInterval ?? 100;
  const log = options.log ?? (() => {});
  const haproxyBin = options.haproxy ?? findHaproxy();
  if (haproxyBin === undefined)
    throw new Error(
      "no haproxy binary: install it (Debian: apt-get install -y --no-install-recommends haproxy) or set HAPROXY",
    );
  // The built command by default; a test runs the sources (`["--import", "tsx", ".../cli.ts"]`).
  const command = options.command ?? [CLI];
  if (options.command === undefined && !existsSync(CLI))
    throw new Error(`${CLI} is missing: build the packages first (npx -y pnpm@12.4.2 build)`);
  const ports = options.ports ?? {};

  const dir = mkdtempSync(join(tmpdir(), "ratequeue-ha-"));
  const configPath = join(dir, "haproxy.cfg");

  /**
   * Every process started here and not yet exited: killed if this process exits first (the
   * schema is then left behind: a crash cannot wait for PostgreSQL).
   */
  const children = new Set();
  const killChildren = () => {
    for (const child of children) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", killChildren);
  const track = (child) => {
    children.add(child);
    child.once("exit", () => children.delete(child));
    return child;
  };

  const args = (port) => [
    ...command,
    "--store",
    store,
    "--pg-schema",
    schema,
    "--port",
    String(port),
    "--grace",
    String(grace),
    "--api-key",
    apiKey,
    "--log-level",
    options.logLevel ?? "warn",
    ...(options.serverArgs ?? []),
  ];

  /** Spawns one replica: the process, and a promise of it listening (leading or standing by). */
  const spawnReplica = (name, port) => {
    if (closed) throw new Error("the cluster is closed");
    const child = track(
      spawn(process.execPath, args(port), {
        stdio: ["ignore", "pipe", "pipe"],
        // Its own process group: Ctrl-C reaches this script only, which stops the replicas in
        // order (SIGTERM) and then drops the schema.
        detached: true,
      }),
    );
    const ready = new Promise((resolve, reject) => {
      const output = [];
      const onLine = (line) => {
        output.push(line);
        if (output.length > 50) output.shift();
        log(name, line);
        const ready = /^RateQueue server ready at (\S+)/.exec(line);
        if (ready) resolve(ready[1]);
      };
      lines(child.stdout, onLine);
      lines(child.stderr, onLine);
      child.once("error", reject);
      child.once("exit", (code, signal) =>
        reject(
          new Error(
            `replica ${name} exited (${signal ?? code}) before it listened:\n${output.join("\n")}`,
          ),
        ),
      );
    });
    return { child, ready };
  };

  const replicas = Array.from({ length: count }, (_, i) => {
    const name = `replica${i + 1}`;
    /** @type {import("node:child_process").ChildProcess | undefined} */
    let child;
    const replica = {
      name,
      /** 0 until it first listens (on a free port unless `ports.replicas` names one): then kept. */
      port: ports.replicas?.[i] ?? 0,
      url: "",
      get pid() {
        return child?.pid;
      },
      get alive() {
        return child !== undefined && child.exitCode === null && child.signalCode === null;
      },
      async start() {
        if (replica.alive) return;
        for (let attempt = 1; ; attempt++) {
          // The first start takes a free port (another if it is taken meanwhile); later starts
          // keep it: HAProxy's configuration names it.
          const port =
            replica.url === "" && ports.replicas?.[i] === undefined
              ? await freePort()
              : replica.port;
          const started = spawnReplica(name, port);
          child = started.child;
          try {
            replica.url = await started.ready;
            replica.port = Number(new URL(replica.url).port);
            return;
          } catch (error) {
            if (!String(error?.message).includes("EADDRINUSE") || attempt >= 5) throw error;
            await sleep(100);
          }
        }
      },
      async kill(signal = "SIGKILL") {
        if (!replica.alive) return;
        const dead = exited(child);
        child.kill(signal);
        await dead;
      },
      async stop() {
        if (!replica.alive) return;
        const dead = exited(child);
        child.kill("SIGTERM");
        const timer = setTimeout(() => child?.kill("SIGKILL"), 10_000);
        await dead;
        clearTimeout(timer);
      },
      async restart() {
        await replica.kill();
        await replica.start();
      },
      async role() {
        if (!replica.alive) return "down";
        // A generous timeout: on a loaded machine an answer can take a second.
        const s = await status(`${replica.url}/v1/replica`, 5_000);
        return s === 200 ? "leader" : s === 503 ? "follower" : "down";
      },
    };
    return replica;
  });

  let closed;

  /** HAProxy: its ports are chosen at its first start (free ones unless given), then kept. */
  let haproxyProc;
  /** Resolves when the current HAProxy exits (rejects: the cluster start waits on it). */
  let haproxyExited;
  const haproxy = {
    port: ports.haproxy ?? 0,
    statsPort: ports.stats ?? 0,
    get pid() {
      return haproxyProc?.pid;
    },
    get alive() {
      return (
        haproxyProc !== undefined &&
        haproxyProc.exitCode === null &&
        haproxyProc.signalCode === null
      );
    },
    async kill(signal = "SIGKILL") {
      if (!haproxy.alive) return;
      const dead = exited(haproxyProc);
      haproxyProc.kill(signal);
      await dead;
    },
    /** Starts it if it is not running; resolves once it listens. */
    async start() {
      if (haproxy.alive) return;
      for (let attempt = 1; ; attempt++) {
        if (closed) throw new Error("the cluster is closed");
        const fresh = cluster.url === "";
        const port = fresh && ports.haproxy === undefined ? await freePort() : haproxy.port;
        const statsPort = fresh && ports.stats === undefined ? await freePort() : haproxy.statsPort;
        writeFileSync(
          configPath,
          haproxyConfig({
            port,
            statsPort,
            checkInterval,
            servers: replicas.map((r) => ({ name: r.name, port: r.port })),
          }),
        );
        const proc = track(
          spawn(haproxyBin, ["-db", "-f", configPath], {
            stdio: ["ignore", "pipe", "pipe"],
            detached: true,
          }),
        );
        haproxyProc = proc;
        const output = [];
        const onLine = (line) => {
          output.push(line);
          if (output.length > 50) output.shift();
          log("haproxy", line);
        };
        lines(proc.stdout, onLine);
        lines(proc.stderr, onLine);
        haproxyExited = new Promise((_, reject) => {
          proc.once("error", reject);
          proc.once("exit", (code, signal) =>
            reject(new Error(`haproxy exited (${signal ?? code}):\n${output.join("\n")}`)),
          );
        });
        haproxyExited.catch(() => {});
        const stats = `http://127.0.0.1:${statsPort}`;
        const listening = (async () => {
          for (;;) {
            // Exited: `haproxyExited` says why; this never settles.
            if (proc.exitCode !== null || proc.signalCode !== null) return new Promise(() => {});
            if ((await status(stats, 500)) === 200) return;
            await sleep(10);
          }
        })();
        try {
          await Promise.race([haproxyExited, listening]);
          haproxy.port = port;
          haproxy.statsPort = statsPort;
          cluster.url = `http://127.0.0.1:${port}`;
          cluster.statsUrl = stats;
          return;
        } catch (error) {
          // A port taken between its choice and HAProxy's bind: others (first start only).
          const taken = output.some((line) => line.includes("cannot bind socket"));
          if (!taken || !fresh || attempt >= 5) throw error;
        }
      }
    },
  };

  const cluster = {
    url: "",
    statsUrl: "",
    schema,
    store,
    apiKey,
    grace,
    configPath,
    replicas,
    haproxy,
    /** The replica that answers `GET /v1/replica` 200 itself (not through HAProxy), if any. */
    async leader() {
      const roles = await Promise.all(replicas.map((r) => r.role()));
      const leaders = replicas.filter((_, i) => roles[i] === "leader");
      if (leaders.length > 1)
        throw new Error(`${leaders.map((r) => r.name).join(" and ")} both say they lead`);
      return leaders[0];
    },
    /** Each server's state as HAProxy sees it (its stats CSV): `{ replica1: "UP", … }`. */
    async haproxyStatus() {
      const res = await fetch(`${cluster.statsUrl}/;csv`, { signal: AbortSignal.timeout(2_000) });
      const text = await res.text();
      const [header, ...rows] = text.split("\n").filter(Boolean);
      const cols = header.replace(/^# /, "").split(",");
      const at = (name) => cols.indexOf(name);
      const out = {};
      for (const row of rows) {
        const cells = row.split(",");
        if (cells[at("pxname")] === "replicas" && cells[at("svname")].startsWith("replica"))
          out[cells[at("svname")]] = cells[at("status")];
      }
      return out;
    },
    /**
     * Resolves once HAProxy sends clients to a leader: `GET /v1/replica` through it answers 200
     * (polled every `every` ms). Rejects after `timeout` ms.
     */
    async serving({ timeout = 10_000, every = 5 } = {}) {
      const deadline = performance.now() + timeout;
      while ((await status(`${cluster.url}/v1/replica`, 1_000)) !== 200) {
        if (performance.now() > deadline)
          throw new Error(`no leader answered through HAProxy within ${timeout} ms`);
        await sleep(every);
      }
    },
    async close() {
      closed ??= (async () => {
        await Promise.all(replicas.map((r) => r.stop()));
        await haproxy.kill("SIGTERM");
        process.off("exit", killChildren);
        rmSync(dir, { recursive: true, force: true });
        if (ownSchema) await dropSchema(store, schema);
      })();
      return closed;
    },
    [Symbol.asyncDispose]() {
      return cluster.close();
    },
  };

  const aborted = () => {
    if (options.signal?.aborted) throw options.signal.reason ?? new Error("aborted");
  };
  // Stopped while starting (Ctrl-C): close what has started, and reject.
  const onAbort = () => void cluster.close().catch(() => {});
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    aborted();
    // The first replica takes the lock and leads; the others stand by.
    const [first, ...others] = replicas;
    await first.start();
    await Promise.all(others.map((r) => r.start()));
    aborted();
    await haproxy.start();
    // Ready: a leader behind the frontend, and every replica standing by marked down.
    await Promise.race([
      haproxyExited,
      (async () => {
        await cluster.serving({ timeout: 15_000 });
        const deadline = performance.now() + 10_000;
        for (;;) {
          const states = Object.values(await cluster.haproxyStatus());
          if (states.filter((s) => s === "UP").length === 1 && states.length === count) break;
          if (performance.now() > deadline)
            throw new Error(`HAProxy did not settle on one replica: ${JSON.stringify(states)}`);
          await sleep(20);
        }
      })(),
    ]);
    aborted();
  } catch (error) {
    await cluster.close().catch(() => {});
    throw options.signal?.aborted ? (options.signal.reason ?? error) : error;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
  return cluster;
}

/** Drops `schema` (its tables, functions and all) from the PostgreSQL at `store`. */
export async function dropSchema(store, schema) {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new Error(`not a schema name: ${schema}`);
  const { default: pg } = await import("pg");
  const client = new pg.Client({ connectionString: store, connectionTimeoutMillis: 5_000 });
  client.on("error", () => {});
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await client.end();
  }
}

// As a command: start the cluster on fixed ports, print where it is, stop it on Ctrl-C/SIGTERM.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const base = Number(process.env.RATEQUEUE_HA_PORT ?? 7480);
  const colors = { replica1: 36, replica2: 35, replica3: 33, haproxy: 32 };
  const stopping = new AbortController();
  let cluster;
  const stop = (signal) => {
    if (stopping.signal.aborted) return;
    stopping.abort(new Error(signal));
    process.stderr.write(`${signal}: stopping the replicas and HAProxy, dropping the schema\n`);
    // Still starting: startCluster closes what it started, and rejects (below).
    cluster?.close().then(
      () => process.exit(0),
      (error) => {
        process.stderr.write(`${error.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  cluster = await startCluster({
    signal: stopping.signal,
    ports: { haproxy: base, replicas: [base + 1, base + 2, base + 3], stats: base + 4 },
    log: (source, line) =>
      process.stderr.write(`\x1b[${colors[source] ?? 0}m[${source}]\x1b[0m ${line}\n`),
  }).catch((error) => {
    if (stopping.signal.aborted) process.exit(0); // Ctrl-C while starting: all stopped
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  });
  const leader = await cluster.leader();
  process.stdout.write(
    [
      "",
      `RateQueue behind HAProxy at ${cluster.url}  (API key: ${cluster.apiKey})`,
      `HAProxy stats: ${cluster.statsUrl}`,
      `PostgreSQL schema: ${cluster.schema} (dropped on exit)`,
      ...cluster.replicas.map(
        (r) => `  ${r.name}  ${r.url}  pid ${r.pid}${r === leader ? "  <- leader" : ""}`,
      ),
      "",
      `Fail over: kill -9 ${leader?.pid}   Stop everything: Ctrl-C`,
      "",
    ].join("\n"),
  );
}
