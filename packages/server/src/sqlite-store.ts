import {
  closeSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { Database, Statement } from "node-sqlite3-wasm";
// A CommonJS module without named exports that Node's ESM loader can detect: default import.
import sqlite from "node-sqlite3-wasm";
import type { SavedRequest } from "./engine.js";
import type { Store } from "./store.js";

/**
 * The durable store: SQLite in `dir/ratequeue.db`, through node-sqlite3-wasm (SQLite compiled
 * to WebAssembly, with direct file access) — no native build, so `npx ratequeue-server` works
 * wherever Node does. `locking_mode=EXCLUSIVE` keeps a second server off the same directory.
 *
 * A commit is one `write(2)` of the operation's records to `journal.log` (a redo log): once in
 * the kernel, it survives the process being killed (`kill -9`), and it costs a few µs where a
 * SQLite commit through the WASM file layer costs 60–100 µs — on the path of every grant and
 * release. The records are applied to SQLite at once, inside a transaction that is committed in
 * the background every `CHECKPOINT_MS` (then the journal is emptied); a restart replays the
 * journal over the database, so nothing acknowledged is lost. Like SQLite's WAL with
 * `synchronous=NORMAL`, it is not fsynced: an OS crash or power cut may lose the last commits.
 */
export class SqliteStore implements Store {
  private readonly db: Database;
  private readonly upsert: Statement;
  private readonly delete: Statement;
  private readonly setToken: Statement;
  private inTransaction = false;
  private token = 0;
  private readonly journal: number;
  /** Records of the current operation, written by `commit()`. */
  private records: string[] = [];
  private journalBytes = 0;
  private checkpointTimer: ReturnType<typeof setTimeout> | undefined;
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
    const journalFile = join(dir, "journal.log");
    this.replay(journalFile);
    this.journal = openSync(journalFile, "a");
    this.checkpoint(); // the replayed records are in SQLite now: empty the journal
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
    this.apply(["s", r]);
    this.records.push(JSON.stringify(["s", { ...r, waitUntil: finite(r.waitUntil) }]));
    if (r.fencingToken > this.token) {
      this.token = r.fencingToken;
      this.apply(["t", r.fencingToken]);
      this.records.push(JSON.stringify(["t", r.fencingToken]));
    }
  }

  remove(ns: string, id: string): void {
    this.apply(["r", ns, id]);
    this.records.push(JSON.stringify(["r", ns, id]));
  }

  /** Makes the current operation's writes durable: one append to the journal. */
  commit(): void {
    if (this.records.length === 0) return;
    const text = `${this.records.join("\n")}\n`;
    this.records = [];
    this.journalBytes += writeSync(this.journal, text);
    if (this.journalBytes > JOURNAL_MAX) this.checkpoint();
    else if (this.checkpointTimer === undefined) {
      this.checkpointTimer = setTimeout(() => this.checkpoint(), CHECKPOINT_MS);
      this.checkpointTimer.unref();
    }
  }

  close(): void {
    this.commit();
    this.checkpoint();
    closeSync(this.journal);
    this.upsert.finalize();
    this.delete.finalize();
    this.setToken.finalize();
    this.db.close();
    rmSync(this.pidFile, { force: true });
  }

  /** Commits SQLite's transaction (everything the journal holds), then empties the journal. */
  private checkpoint(): void {
    clearTimeout(this.checkpointTimer);
    this.checkpointTimer = undefined;
    if (this.inTransaction) {
      this.db.exec("COMMIT");
      this.inTransaction = false;
    }
    ftruncateSync(this.journal, 0);
    this.journalBytes = 0;
  }

  /** Applies the journal a killed server left behind (a torn last line is ignored). */
  private replay(file: string): void {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      return; // no journal yet
    }
    for (const line of text.split("\n")) {
      if (line === "") continue;
      let record: JournalRecord;
      try {
        record = JSON.parse(line);
      } catch {
        break; // the write the kill interrupted: never acknowledged
      }
      if (record[0] === "s") record[1].waitUntil ??= Number.POSITIVE_INFINITY;
      this.apply(record);
    }
  }

  private apply(record: JournalRecord): void {
    this.begin();
    if (record[0] === "s") {
      const r = record[1];
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
    } else if (record[0] === "r") {
      this.delete.run([record[1], record[2]]);
    } else {
      this.setToken.run([record[1]]);
    }
  }

  private begin(): void {
    if (this.inTransaction) return;
    this.db.exec("BEGIN");
    this.inTransaction = true;
  }
}

/** A journal record: save a request, remove one, or raise the token high-water mark. */
type JournalRecord = ["s", SavedRequest] | ["r", string, string] | ["t", number];

/** How often the journal is folded into SQLite, ms. */
const CHECKPOINT_MS = 200;
/** ...or as soon as it holds this many bytes. */
const JOURNAL_MAX = 4 * 1024 * 1024;

/** JSON has no Infinity: a request without a timeout is saved with `null`. */
function finite(n: number): number | null {
  return Number.isFinite(n) ? n : null;
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
