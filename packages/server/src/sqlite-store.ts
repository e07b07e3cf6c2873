import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Database, Statement } from "node-sqlite3-wasm";
// A CommonJS module without named exports that Node's ESM loader can detect: default import.
import sqlite from "node-sqlite3-wasm";
import type { SavedRequest } from "./engine.js";
import type { Store } from "./store.js";

/**
 * The durable store: SQLite in `dir/ratequeue.db`, through node-sqlite3-wasm (SQLite compiled
 * to WebAssembly, with direct file access) — no native build, so `npx ratequeue-server` works
 * wherever Node does. WAL journal with `synchronous=NORMAL`: every commit is in the file before
 * the reply leaves, which survives the process being killed (`kill -9`); an OS crash may lose the
 * last commits. `locking_mode=EXCLUSIVE` keeps a second server off the same directory.
 */
export class SqliteStore implements Store {
  private readonly db: Database;
  private readonly upsert: Statement;
  private readonly delete: Statement;
  private readonly setToken: Statement;
  private inTransaction = false;
  private token = 0;

  private readonly pidFile: string;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "ratequeue.db");
    // node-sqlite3-wasm locks with a `<db>.lock` directory, which a killed server leaves behind.
    // Our own pid file tells a live owner from a dead one; a dead one's lock is removed.
    this.pidFile = join(dir, "server.pid");
    const owner = readOwner(this.pidFile);
    if (owner !== undefined && isAlive(owner)) {
      throw new Error(
        `cannot open the data directory ${dir}: another ratequeue-server (pid ${owner}) is using it`,
      );
    }
    rmSync(`${file}.lock`, { recursive: true, force: true });
    writeFileSync(this.pidFile, String(process.pid));
    try {
      this.db = new sqlite.Database(file);
      this.db.exec(`
        PRAGMA locking_mode = EXCLUSIVE;
        PRAGMA journal_mode = WAL;
        PRAGMA synchronous = NORMAL;
        CREATE TABLE IF NOT EXISTS requests (
          ns TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
          load INTEGER NOT NULL, priority INTEGER NOT NULL, capacity INTEGER NOT NULL,
          asked_capacity INTEGER, expires_in INTEGER NOT NULL, lock_delay INTEGER NOT NULL,
          seq INTEGER NOT NULL, state TEXT NOT NULL, token INTEGER NOT NULL,
          expires_at INTEGER NOT NULL, wait_until INTEGER,
          PRIMARY KEY (ns, id)
        );
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        BEGIN IMMEDIATE; COMMIT;
      `);
      // Added with sessions: the session a request lives by (NULL: a request of its own).
      const columns = this.db.all("PRAGMA table_info(requests)") as Array<{ name: string }>;
      if (!columns.some((c) => c.name === "session"))
        this.db.exec("ALTER TABLE requests ADD COLUMN session TEXT");
    } catch (error) {
      throw new Error(
        `cannot open the data directory ${dir}: ${(error as Error).message}${/locked/.test(String(error)) ? " (is another ratequeue-server using it?)" : ""}`,
        { cause: error },
      );
    }
    this.upsert = this.db.prepare(
      `INSERT OR REPLACE INTO requests VALUES
        (:ns, :id, :name, :load, :priority, :capacity, :asked, :expiresIn, :lockDelay, :seq, :state, :token, :expiresAt, :waitUntil, :session)`,
    );
    this.delete = this.db.prepare("DELETE FROM requests WHERE ns = ? AND id = ?");
    this.setToken = this.db.prepare("INSERT OR REPLACE INTO meta VALUES ('token', ?)");
  }

  load(): { requests: SavedRequest[]; tokenFloor: number } {
    const rows = this.db.all("SELECT * FROM requests") as Array<
      Record<string, number | string | null>
    >;
    const meta = this.db.get("SELECT value FROM meta WHERE key = 'token'") as {
      value: number;
    } | null;
    this.token = Number(meta?.value ?? 0);
    const requests = rows.map((r) => ({
      ns: String(r.ns),
      id: String(r.id),
      session: r.session === null || r.session === undefined ? undefined : String(r.session),
      name: String(r.name),
      load: Number(r.load),
      priority: Number(r.priority),
      capacity: Number(r.capacity),
      askedCapacity: r.asked_capacity === null ? undefined : Number(r.asked_capacity),
      expiresIn: Number(r.expires_in),
      lockDelay: Number(r.lock_delay),
      seq: Number(r.seq),
      state: r.state === "active" ? ("active" as const) : ("queued" as const),
      fencingToken: Number(r.token),
      expiresAt: Number(r.expires_at),
      waitUntil: r.wait_until === null ? Number.POSITIVE_INFINITY : Number(r.wait_until),
    }));
    for (const r of requests) this.token = Math.max(this.token, r.fencingToken);
    return { requests, tokenFloor: this.token };
  }

  save(r: SavedRequest): void {
    this.begin();
    this.upsert.run({
      ":ns": r.ns,
      ":id": r.id,
      ":name": r.name,
      ":load": r.load,
      ":priority": r.priority,
      ":capacity": r.capacity,
      ":asked": r.askedCapacity ?? null,
      ":expiresIn": r.expiresIn,
      ":lockDelay": r.lockDelay,
      ":seq": r.seq,
      ":state": r.state,
      ":token": r.fencingToken,
      ":expiresAt": r.expiresAt,
      ":waitUntil": Number.isFinite(r.waitUntil) ? r.waitUntil : null,
      ":session": r.session ?? null,
    });
    if (r.fencingToken > this.token) {
      this.token = r.fencingToken;
      this.setToken.run([r.fencingToken]);
    }
  }

  remove(ns: string, id: string): void {
    this.begin();
    this.delete.run([ns, id]);
  }

  commit(): void {
    if (!this.inTransaction) return;
    this.db.exec("COMMIT");
    this.inTransaction = false;
  }

  close(): void {
    this.commit();
    this.upsert.finalize();
    this.delete.finalize();
    this.setToken.finalize();
    this.db.close();
    rmSync(this.pidFile, { force: true });
  }

  private begin(): void {
    if (this.inTransaction) return;
    this.db.exec("BEGIN");
    this.inTransaction = true;
  }
}

function readOwner(pidFile: string): number | undefined {
  try {
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0); // signal 0: only checks that the process exists
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
