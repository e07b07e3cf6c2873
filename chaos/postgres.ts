/**
 * A private PostgreSQL cluster for the chaos run's replicas (CHAOS_REPLICAS): `initdb` into a
 * temporary directory and `pg_ctl` on a free loopback port, so that the run may stop and crash
 * it without touching the machine's shared PostgreSQL. As root, every PostgreSQL command runs as
 * the `postgres` user (`initdb` refuses root), and the directory is handed to that user.
 *
 * Settings: `fsync=off`, because the run crashes PostgreSQL's processes, never the machine — a
 * committed transaction's WAL has been written to the kernel before the commit returns
 * (`synchronous_commit` stays on), so an immediate shutdown loses nothing, and the run does not
 * wait on the disk of a shared, loaded machine. Trust authentication on 127.0.0.1 only.
 *
 *   CHAOS_PG_BIN: the directory of initdb and pg_ctl (default: `pg_config --bindir`, else the
 *   newest /usr/lib/postgresql/N/bin)
 */
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";

export type PgStopMode = "fast" | "immediate";

export interface PrivatePostgres {
  /** `postgres://postgres@127.0.0.1:PORT/postgres` */
  readonly url: string;
  readonly port: number;
  /** The temporary directory: data directory, socket and `postgres.log`. */
  readonly dir: string;
  /** Stops PostgreSQL: `fast` (sessions are ended cleanly) or `immediate` (a crash: recovery at the next start). */
  stop(mode: PgStopMode): Promise<void>;
  /** Starts it again; resolves once it is started (pg_ctl -w). */
  start(): Promise<void>;
  /** Resolves at the first moment a new connection's `SELECT 1` is answered (polled every 20 ms). */
  answering(): Promise<number>;
  /** The end of the log, for a report. */
  logTail(lines: number): string;
  /** Stops it at once (immediate) and removes the directory, unless `keep`. Synchronous: safe on exit. */
  dispose(keep?: boolean): void;
}

function binDir(): string {
  if (process.env.CHAOS_PG_BIN) return process.env.CHAOS_PG_BIN;
  try {
    const dir = execFileSync("pg_config", ["--bindir"], { encoding: "utf8" }).trim();
    if (existsSync(join(dir, "initdb"))) return dir;
  } catch {}
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, "bin", "initdb")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions[0] === undefined)
    throw new Error(
      "CHAOS_REPLICAS needs PostgreSQL's initdb and pg_ctl: install PostgreSQL, or set CHAOS_PG_BIN to their directory",
    );
  return join(root, versions[0], "bin");
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export async function startPostgres(): Promise<PrivatePostgres> {
  const bin = binDir();
  const root = process.getuid?.() === 0;
  /** argv of a PostgreSQL command, run as `postgres` when we are root. */
  const as = (cmd: string, args: string[]): [string, string[]] =>
    root ? ["runuser", ["-u", "postgres", "--", join(bin, cmd), ...args]] : [join(bin, cmd), args];
  const run = (cmd: string, args: string[]) =>
    new Promise<void>((resolve, reject) => {
      const [file, argv] = as(cmd, args);
      execFile(file, argv, { encoding: "utf8" }, (error, stdout, stderr) => {
        if (error)
          reject(
            new Error(`${cmd} ${args.join(" ")} failed: ${stderr || stdout || error.message}`),
          );
        else resolve();
      });
    });

  const dir = mkdtempSync(join(tmpdir(), "ratequeue-chaos-pg-"));
  if (root) {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }));
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }));
    chownSync(dir, uid, gid);
  }
  const data = join(dir, "data");
  const log = join(dir, "postgres.log");
  let port = 0;
  let started = false;
  const dispose = (keep = false) => {
    process.off("exit", onExit);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (started) {
      const [file, argv] = as("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      spawnSync(file, argv, { stdio: "ignore" });
      started = false;
    }
    if (keep) return;
    try {
      // A postmaster just stopped may still be letting go of its files: retried.
      rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch (error) {
      process.stderr.write(`chaos: could not remove ${dir}: ${(error as Error).message}\n`);
    }
  };
  // The cluster must not outlive the run: stopped on exit, and on Ctrl-C (which would not run
  // exit handlers otherwise). A SIGKILLed harness leaves it running: `pg_ctl -D DIR/data stop`.
  const onExit = () => dispose();
  const onSignal = () => process.exit(130);
  process.once("exit", onExit);
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    await run("initdb", ["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
  } catch (error) {
    dispose();
    throw error;
  }
  const start = async () => {
    await run("pg_ctl", [
      ...["-D", data, "-l", log, "-w", "-t", "60", "-o"],
      [
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1`,
        "-c fsync=off -c full_page_writes=off -c max_connections=60 -c shared_buffers=32MB",
      ].join(" "),
      "start",
    ]);
    started = true;
  };
  // A free port can be taken between the look and the start: try a few.
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    try {
      await start();
      break;
    } catch (error) {
      if (attempt >= 4) {
        dispose(true);
        throw new Error(`${(error as Error).message}\n(the cluster is kept in ${dir})`);
      }
    }
  }
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;

  return {
    url,
    port,
    dir,
    async stop(mode) {
      await run("pg_ctl", ["-D", data, "-m", mode, "-w", "-t", "60", "stop"]);
      started = false;
    },
    start,
    async answering() {
      for (;;) {
        const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1_000 });
        client.on("error", () => {});
        try {
          await client.connect();
          await client.query("SELECT 1");
          const at = Date.now();
          void client.end().catch(() => {});
          return at;
        } catch {
          void client.end().catch(() => {});
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    },
    logTail(lines) {
      try {
        return readFileSync(log, "utf8").split("\n").slice(-lines).join("\n");
      } catch {
        return "";
      }
    },
    dispose,
  };
}
