import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
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
import { lockDirectory } from "./dir-lock.js";
import type { SavedRequest } from "./engine.js";
import { namespaceId } from "./keys.js";
import type { Store, StoredState } from "./store.js";

/**
 * The durable store: SQLite in `dir/ratequeue.db`, through node-sqlite3-wasm (SQLite compiled
 * to WebAssembly, with direct file access) — no native build, so `npx ratequeue-server` works
 * wherever Node does. The directory is held with an OS file lock (`dir-lock.ts`) for as long as
 * the server runs, so a second server cannot open it, and a killed one never blocks a restart.
 *
 * A commit is one `write(2)` of the operation's records to `journal.log` (a redo log): once in
 * the kernel, it survives the process being killed (`kill -9`), and it costs a few µs where a
 * SQLite write through the WASM file layer costs tens — on the path of every grant and release.
 * SQLite catches up in the background: every `CHECKPOINT_MS` the writes since the last
 * checkpoint are applied in one transaction (a request granted and released in between costs
 * nothing there), then the journal is emptied. A restart replays the journal over the database,
 * so nothing acknowledged is lost. Like SQLite's WAL with `synchronous=NORMAL`, it is not
 * fsynced: an OS crash or power cut may lose the last commits.
 */
export class SqliteStore implements Store {
  readonly secret: Buffer;
  private readonly db: Database;
  private readonly upsert: Statement;
  private readonly delete: Statement;
  private readonly setToken: Statement;
  private readonly journal: number;
  private readonly unlock: () => void;
  /** Records of the current operation, written by `commit()`. */
  private records: string[] = [];
  /** Writes not yet in SQLite, by `ns\0id`: the request's latest form, or null if removed. */
  private pending = new Map<string, SavedRequest | null>();
  /** Highest fencing token per namespace, and those not yet in SQLite. */
  private readonly tokens = new Map<string, number>();
  private dirtyTokens = new Set<string>();
  private journalBytes = 0;
  private checkpointTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    this.unlock = lockDirectory(dir);
    try {
      this.secret = readSecret(join(dir, "secret.key"));
      const file = join(dir, "ratequeue.db");
      // node-sqlite3-wasm locks with a `<db>.lock` directory, which a killed server leaves
      // behind; the directory lock above is what keeps a second server out.
      rmSync(`${file}.lock`, { recursive: true, force: true });
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
        CREATE TABLE IF NOT EXISTS tokens (ns TEXT PRIMARY KEY, token INTEGER NOT NULL);
        BEGIN IMMEDIATE; COMMIT;
      `);
      // Added with sessions: the session a request lives by (NULL: a request of its own).
      const columns = this.db.all("PRAGMA table_info(requests)") as Array<{ name: string }>;
      if (!columns.some((c) => c.name === "session"))
        this.db.exec("ALTER TABLE requests ADD COLUMN session TEXT");
    } catch (error) {
      this.unlock();
      throw new Error(`cannot open the data directory ${dir}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    this.upsert = this.db.prepare(
      `INSERT OR REPLACE INTO requests VALUES
        (:ns, :id, :name, :load, :priority, :capacity, :asked, :expiresIn, :lockDelay, :seq, :state, :token, :expiresAt, :waitUntil, :session)`,
    );
    this.delete = this.db.prepare("DELETE FROM requests WHERE ns = ? AND id = ?");
    this.setToken = this.db.prepare(
      "INSERT INTO tokens VALUES (?, ?) ON CONFLICT (ns) DO UPDATE SET token = max(token, excluded.token)",
    );
    const journalFile = join(dir, "journal.log");
    this.replay(journalFile);
    this.journal = openSync(journalFile, "a");
    this.checkpoint(); // the replayed records go to SQLite, and the journal is emptied
    this.hashNamespaces();
  }

  load(): StoredState {
    const rows = this.db.all("SELECT * FROM requests") as Array<
      Record<string, number | string | null>
    >;
    const legacy = this.db.get("SELECT value FROM meta WHERE key = 'token'") as {
      value: number;
    } | null;
    for (const row of this.db.all("SELECT ns, token FROM tokens") as Array<{
      ns: string;
      token: number;
    }>)
      this.raiseToken(row.ns, Number(row.token));
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
    for (const r of requests) this.raiseToken(r.ns, r.fencingToken);
    this.dirtyTokens.clear();
    return { requests, tokens: new Map(this.tokens), tokenFloor: Number(legacy?.value ?? 0) };
  }

  save(r: SavedRequest): void {
    this.pending.set(`${r.ns}\0${r.id}`, r);
    this.raiseToken(r.ns, r.fencingToken);
    this.records.push(JSON.stringify(["s", { ...r, waitUntil: finite(r.waitUntil) }]));
  }

  remove(ns: string, id: string): void {
    this.pending.set(`${ns}\0${id}`, null);
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
    this.unlock();
  }

  /** Applies the writes since the last checkpoint to SQLite in one transaction, then empties the journal. */
  private checkpoint(): void {
    clearTimeout(this.checkpointTimer);
    this.checkpointTimer = undefined;
    if (this.pending.size > 0 || this.dirtyTokens.size > 0) {
      this.db.exec("BEGIN");
      for (const [key, r] of this.pending) {
        if (r !== null) this.write(r);
        else this.delete.run(key.split("\0"));
      }
      for (const ns of this.dirtyTokens) this.setToken.run([ns, this.tokens.get(ns)!]);
      this.db.exec("COMMIT");
      this.pending = new Map();
      this.dirtyTokens = new Set();
    }
    ftruncateSync(this.journal, 0);
    this.journalBytes = 0;
  }

  private write(r: SavedRequest): void {
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
  }

  private raiseToken(ns: string, token: number): void {
    if (token > (this.tokens.get(ns) ?? 0)) {
      this.tokens.set(ns, token);
      this.dirtyTokens.add(ns);
    }
  }

  /** Takes in the journal a killed server left behind (a torn last line is ignored). */
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
      if (record[0] === "s") {
        record[1].waitUntil ??= Number.POSITIVE_INFINITY;
        this.save(record[1]);
      } else if (record[0] === "r") {
        this.remove(record[1], record[2]);
      } else {
        // A journal of a version with one token counter for all namespaces.
        this.db.run(
          "INSERT OR REPLACE INTO meta VALUES ('token', max(?, coalesce((SELECT value FROM meta WHERE key = 'token'), 0)))",
          [record[1]],
        );
      }
    }
    this.records = [];
  }

  /**
   * Data directories of versions that stored API keys in clear, as namespaces: stored as keyed
   * hashes from now on (once, in one transaction).
   */
  private hashNamespaces(): void {
    if (this.db.get("SELECT value FROM meta WHERE key = 'ns_hashed'")) return;
    this.db.exec("BEGIN");
    for (const table of ["requests", "tokens"]) {
      const rows = this.db.all(`SELECT DISTINCT ns FROM ${table}`) as Array<{ ns: string }>;
      for (const { ns } of rows) {
        const id = namespaceId(this.secret, ns);
        this.db.run(`UPDATE ${table} SET ns = ? WHERE ns = ?`, [id, ns]);
      }
    }
    this.db.run("INSERT OR REPLACE INTO meta VALUES ('ns_hashed', 1)");
    this.db.exec("COMMIT");
    this.tokens.clear(); // read again, hashed, by load()
  }
}

/** A journal record: save a request, remove one, or (older versions) raise the one token counter. */
type JournalRecord = ["s", SavedRequest] | ["r", string, string] | ["t", number];

/** How often SQLite catches up with the journal, ms. */
const CHECKPOINT_MS = 200;
/** ...or as soon as the journal holds this many bytes. */
const JOURNAL_MAX = 4 * 1024 * 1024;

/** JSON has no Infinity: a request without a timeout is saved with `null`. */
function finite(n: number): number | null {
  return Number.isFinite(n) ? n : null;
}

/** The directory's secret (32 random bytes, readable by its owner only), made on first use. */
function readSecret(file: string): Buffer {
  if (!existsSync(file)) writeFileSync(file, randomBytes(32), { mode: 0o600, flag: "wx" });
  const secret = readFileSync(file);
  if (secret.length < 32)
    throw new Error(`${file} is damaged: remove it (stored state is then lost)`);
  return secret;
}
