import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { Database, Statement } from "node-sqlite3-wasm";
// A CommonJS module without named exports that Node's ESM loader can detect: default import.
import sqlite from "node-sqlite3-wasm";
import { lockDirectory } from "./dir-lock.js";
import { Request, type SavedRequest, saved } from "./engine.js";
import type { LaneConfig } from "./internal/lanes.js";
import { namespaceId } from "./keys.js";
import type { RateLimitSpec } from "./rate.js";
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
 * SQLite catches up in the background: every `CHECKPOINT_MS` the journal is set aside (renamed
 * `journal.1.log`; new commits go to a new `journal.log`) and the writes it holds are applied in
 * one SQLite transaction, a slice of at most `CHUNK_MS` per event-loop turn so that a burst of
 * thousands never stalls the server (a request granted and released in between costs nothing
 * there); once committed, the set-aside journal is deleted. A restart replays both journals,
 * oldest first, over the database, so nothing acknowledged is lost. Like SQLite's WAL with
 * `synchronous=NORMAL`, the journal is not fsynced: an OS crash or power cut may lose the last
 * commits. SQLite itself uses its rollback journal with `synchronous=FULL` (a commit per
 * checkpoint can afford the fsyncs), not WAL: a WAL checkpoint copies every page written since
 * the last at once, which stalled the server for 13–19 ms every few thousand requests.
 */
export class SqliteStore implements Store {
  readonly secret!: Buffer;
  private readonly db!: Database;
  private readonly upsert!: Statement;
  private readonly delete!: Statement;
  private readonly setToken!: Statement;
  private journal!: number;
  private readonly journalFile!: string;
  private readonly unlock: () => void;
  /**
   * The checkpoint under way, if any: the writes it still has to apply (as `pending`). They are
   * one transaction, open across event-loop turns until the last is applied.
   */
  private applying: Map<string, Request | SavedRequest | null> | undefined;
  /** Records of the current operation, written by `commit()`. */
  private records: string[] = [];
  /**
   * Writes not yet in SQLite, by `ns\0id`: the request (a live one is read when it is written:
   * no copy is kept meanwhile, which for 10,000 waiters is 3 MB), or null if removed.
   */
  private pending = new Map<string, Request | SavedRequest | null>();
  /**
   * The row id of each key SQLite holds (or the checkpoint under way has written). A request
   * saved and removed between two checkpoints — most of them — never touches SQLite. Rows are
   * keyed by an id the store hands out in increasing order, not by `(ns, id)`: new rows append
   * to the table's last page instead of dirtying a random page of an index each (a checkpoint of
   * 10,000 new waiters: 4× less work, and no commit that stalls the server).
   */
  private readonly rows = new Map<string, number>();
  private nextRow = 1;
  /** Highest fencing token per namespace, and those not yet in SQLite. */
  private readonly tokens = new Map<string, number>();
  private dirtyTokens = new Set<string>();
  /**
   * Writes to the small keyed tables (`recovering`: a restored session's deadline; `limits`: an
   * operator's capacity) not yet in SQLite, by `table\0ns\0key`: the value, or null if removed.
   */
  private pendingKeyed = new Map<string, number | string | null>();
  private journalBytes = 0;
  private checkpointTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    this.unlock = lockDirectory(dir);
    try {
      const file = join(dir, "ratequeue.db");
      // node-sqlite3-wasm locks with a `<db>.lock` directory, which a killed server leaves
      // behind; the directory lock above is what keeps a second server out.
      rmSync(`${file}.lock`, { recursive: true, force: true });
      this.db = new sqlite.Database(file);
      this.db.exec(`
        PRAGMA locking_mode = EXCLUSIVE;
        PRAGMA journal_mode = PERSIST;
        PRAGMA synchronous = FULL;
        PRAGMA cache_size = -256;
        CREATE TABLE IF NOT EXISTS requests (${REQUEST_COLUMNS});
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS tokens (ns TEXT PRIMARY KEY, token INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS limits (
          ns TEXT NOT NULL, name TEXT NOT NULL, capacity INTEGER NOT NULL,
          PRIMARY KEY (ns, name)
        );
        CREATE TABLE IF NOT EXISTS concurrency (
          ns TEXT NOT NULL, name TEXT NOT NULL, holders INTEGER NOT NULL,
          PRIMARY KEY (ns, name)
        );
        CREATE TABLE IF NOT EXISTS lanes (
          ns TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL,
          PRIMARY KEY (ns, name)
        );
        CREATE TABLE IF NOT EXISTS rates (
          ns TEXT NOT NULL, name TEXT NOT NULL, specs TEXT NOT NULL,
          PRIMARY KEY (ns, name)
        );
        CREATE TABLE IF NOT EXISTS recovering (
          ns TEXT NOT NULL, session TEXT NOT NULL, until INTEGER NOT NULL,
          PRIMARY KEY (ns, session)
        );
        BEGIN IMMEDIATE; COMMIT;
      `);
      // Added with sessions: the session a request lives by (NULL: a request of its own).
      const columns = this.db.all("PRAGMA table_info(requests)") as Array<{ name: string }>;
      if (!columns.some((c) => c.name === "session"))
        this.db.exec("ALTER TABLE requests ADD COLUMN session TEXT");
      // Added with revokes: why an operator revoked a request (state `revoked`).
      if (!columns.some((c) => c.name === "reason"))
        this.db.exec("ALTER TABLE requests ADD COLUMN reason TEXT");
      // Added with lanes: the request's lane (NULL: the default lane).
      if (!columns.some((c) => c.name === "lane"))
        this.db.exec("ALTER TABLE requests ADD COLUMN lane TEXT");
      // Keyed by `(ns, id)` before row ids (see `rows`): copied once into the new form.
      if (!columns.some((c) => c.name === "rid")) {
        const copied = COPIED_COLUMNS.join(", ");
        this.db.exec(`
          BEGIN;
          CREATE TABLE requests_by_row (${REQUEST_COLUMNS});
          INSERT INTO requests_by_row (${copied}) SELECT ${copied} FROM requests;
          DROP TABLE requests;
          ALTER TABLE requests_by_row RENAME TO requests;
          COMMIT;
        `);
      }
      this.secret = readSecret(join(dir, "secret.key"), this.holdsData());
      this.upsert = this.db.prepare(
        `INSERT OR REPLACE INTO requests (rid, ${COPIED_COLUMNS.join(", ")})
          VALUES (?${", ?".repeat(COPIED_COLUMNS.length)})`,
      );
      this.delete = this.db.prepare("DELETE FROM requests WHERE rid = ?");
      this.readRows();
      this.setToken = this.db.prepare(
        "INSERT INTO tokens VALUES (?, ?) ON CONFLICT (ns) DO UPDATE SET token = max(token, excluded.token)",
      );
      this.journalFile = join(dir, "journal.log");
      this.replay(setAside(this.journalFile)); // a checkpoint the kill interrupted: older writes
      this.replay(this.journalFile);
      this.journal = openSync(this.journalFile, "a");
      this.checkpointNow(); // the replayed records go to SQLite, and the journals are emptied
      if (this.hashNamespaces()) this.readRows(); // keyed by the hashed namespaces now
    } catch (error) {
      // Leave nothing open and nothing held: the caller may try again in this process.
      if (this.journal !== undefined) closeSync(this.journal);
      try {
        this.db?.close();
      } catch {}
      this.unlock();
      throw new Error(`cannot open the data directory ${dir}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  /** Whether the database holds anything a previous run stored. */
  private holdsData(): boolean {
    return (
      this.db.get("SELECT 1 AS x FROM requests LIMIT 1") !== null ||
      this.db.get("SELECT 1 AS x FROM tokens LIMIT 1") !== null ||
      this.db.get("SELECT 1 AS x FROM meta LIMIT 1") !== null
    );
  }

  load(): StoredState {
    const rows = this.db.all("SELECT * FROM requests") as Array<
      Record<string, number | string | null>
    >;
    // Only a finite number counts (an older version's replay once wrote a string here).
    const meta = (key: string) => {
      const value = Number(
        (this.db.get("SELECT value FROM meta WHERE key = ?", [key]) as { value: number } | null)
          ?.value ?? 0,
      );
      return Number.isFinite(value) ? value : 0;
    };
    // Stores written before tokens were per namespace kept one counter for all: a floor for all.
    const legacy = meta("token");
    for (const row of this.db.all("SELECT ns, token FROM tokens") as Array<{
      ns: string;
      token: number;
    }>)
      this.raiseToken(row.ns, Number(row.token));
    const requests = rows.map(
      (r): SavedRequest => ({
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
        state: r.state === "active" || r.state === "revoked" ? r.state : "queued",
        ...(r.reason === null || r.reason === undefined ? {} : { reason: String(r.reason) }),
        ...(r.lane === null || r.lane === undefined ? {} : { lane: String(r.lane) }),
        fencingToken: Number(r.token),
        expiresAt: Number(r.expires_at),
        waitUntil: r.wait_until === null ? Number.POSITIVE_INFINITY : Number(r.wait_until),
      }),
    );
    for (const r of requests) this.raiseToken(r.ns, r.fencingToken);
    if (legacy > 0) for (const ns of this.tokens.keys()) this.raiseToken(ns, legacy);
    this.dirtyTokens.clear();
    const numbers = (table: KeyedTable) =>
      new Map([...this.readKeyed(table)].map(([k, v]) => [k, Number(v)]));
    const recovering = numbers("recovering");
    const limits = numbers("limits");
    const concurrency = numbers("concurrency");
    const rates = new Map(
      [...this.readKeyed("rates")].map(([k, v]) => [k, JSON.parse(String(v)) as RateLimitSpec[]]),
    );
    const lanes = new Map(
      [...this.readKeyed("lanes")].map(([k, v]) => [k, JSON.parse(String(v)) as LaneConfig]),
    );
    return {
      requests,
      recovering,
      limits,
      rates,
      concurrency,
      lanes,
      tokens: new Map(this.tokens),
      tokenFloor: Math.max(legacy, meta("token_hwm")),
    };
  }

  save(request: Request | SavedRequest): void {
    const r = request instanceof Request ? saved(request) : request;
    this.pending.set(`${r.ns}\0${r.id}`, request);
    this.raiseToken(r.ns, r.fencingToken);
    this.records.push(JSON.stringify(["s", r])); // JSON writes Infinity (no timeout) as null
  }

  remove(ns: string, id: string): void {
    const key = `${ns}\0${id}`;
    if (this.rows.has(key) || this.applying?.has(key)) this.pending.set(key, null);
    else this.pending.delete(key);
    this.records.push(JSON.stringify(["r", ns, id]));
  }

  recovering(ns: string, session: string, until: number): void {
    this.pendingKeyed.set(`recovering\0${ns}\0${session}`, until);
    this.records.push(JSON.stringify(["u", ns, session, until]));
  }

  limit(ns: string, name: string, capacity: number | undefined): void {
    this.pendingKeyed.set(`limits\0${ns}\0${name}`, capacity ?? null);
    this.records.push(JSON.stringify(["l", ns, name, capacity ?? null]));
  }

  rates(ns: string, name: string, specs: readonly RateLimitSpec[] | undefined): void {
    this.pendingKeyed.set(`rates\0${ns}\0${name}`, specs ? JSON.stringify(specs) : null);
    this.records.push(JSON.stringify(["g", ns, name, specs ?? null]));
  }

  concurrency(ns: string, name: string, holders: number | undefined): void {
    this.pendingKeyed.set(`concurrency\0${ns}\0${name}`, holders ?? null);
    this.records.push(JSON.stringify(["c", ns, name, holders ?? null]));
  }

  lanes(ns: string, name: string, config: LaneConfig | undefined): void {
    this.pendingKeyed.set(`lanes\0${ns}\0${name}`, config ? JSON.stringify(config) : null);
    this.records.push(JSON.stringify(["n", ns, name, config ?? null]));
  }

  recovered(ns: string, session: string): void {
    this.pendingKeyed.set(`recovering\0${ns}\0${session}`, null);
    this.records.push(JSON.stringify(["x", ns, session]));
  }

  /** A small keyed table, by `ns\0key`. */
  private readKeyed(table: KeyedTable): Map<string, number | string> {
    const rows = this.db.all(
      `SELECT ns, ${KEYED[table]} AS k, ${VALUE[table]} AS v FROM ${table}`,
    ) as Array<{ ns: string; k: string; v: number | string }>;
    return new Map(rows.map((r) => [`${r.ns}\0${r.k}`, r.v]));
  }

  /** Makes the current operation's writes durable: one append to the journal. */
  commit(): void {
    if (this.records.length === 0) return;
    const text = `${this.records.join("\n")}\n`;
    this.records = [];
    this.journalBytes += writeSync(this.journal, text);
    if (this.checkpointTimer === undefined) {
      const soon = this.journalBytes > JOURNAL_MAX;
      this.checkpointTimer = setTimeout(() => this.checkpoint(), soon ? 0 : CHECKPOINT_MS);
      this.checkpointTimer.unref();
    }
  }

  close(): void {
    this.commit();
    this.checkpointNow();
    closeSync(this.journal);
    this.upsert.finalize();
    this.delete.finalize();
    this.setToken.finalize();
    this.db.close();
    this.unlock();
  }

  /**
   * Starts applying the writes since the last checkpoint to SQLite: sets the journal aside, then
   * applies a chunk per event-loop turn in one transaction, and deletes the set-aside journal
   * once it is committed. One runs at a time; writes made meanwhile wait for the next.
   */
  private checkpoint(): void {
    clearTimeout(this.checkpointTimer);
    this.checkpointTimer = undefined;
    if (this.applying !== undefined) {
      this.checkpointTimer = setTimeout(() => this.checkpoint(), CHECKPOINT_MS);
      this.checkpointTimer.unref();
      return;
    }
    if (!this.startCheckpoint()) {
      // Nothing to apply, yet the journal holds records: requests saved and removed since the
      // last checkpoint, which SQLite never held. They cancel out: empty it, or it would grow
      // for as long as only such requests come (waiters that time out behind a long hold).
      if (this.journalBytes > 0) {
        ftruncateSync(this.journal, 0);
        this.journalBytes = 0;
      }
      return;
    }
    // One transaction, applied a slice per turn: new rows append to the table's last pages, so
    // its commit writes few pages (committing per slice rewrote the same pages many times). A
    // kill before the commit leaves SQLite as it was; the set-aside journal, replayed, redoes it.
    const step = () => {
      if (this.applying === undefined) return; // finished by checkpointNow()
      this.applyChunk(CHUNK_MS);
      if (this.applying.size > 0) setImmediate(step);
      else this.finishCheckpoint();
    };
    step();
  }

  /** Finishes any checkpoint under way, then applies everything else, at once (start, close). */
  private checkpointNow(): void {
    clearTimeout(this.checkpointTimer);
    this.checkpointTimer = undefined;
    if (this.applying !== undefined) {
      this.applyChunk(Number.POSITIVE_INFINITY);
      this.finishCheckpoint();
    }
    // All at once, so the journal need not be set aside: it is emptied below.
    if (this.startCheckpoint({ setAside: false })) {
      this.applyChunk(Number.POSITIVE_INFINITY);
      this.finishCheckpoint();
    }
    // Everything is in SQLite: a torn line (a write a kill interrupted) must not stay ahead of
    // the appends to come, which replay would then never reach.
    ftruncateSync(this.journal, 0);
    this.journalBytes = 0;
  }

  /**
   * Takes what the journal holds to apply, and begins the checkpoint's transaction with the
   * tokens and the small tables; the requests go in `applying`. First sets the journal aside
   * (new commits go to a new one) unless told not to. False if there was nothing to apply.
   */
  private startCheckpoint({ setAside: rotate } = { setAside: true }): boolean {
    if (this.pending.size === 0 && this.dirtyTokens.size === 0 && this.pendingKeyed.size === 0)
      return false;
    if (rotate) {
      closeSync(this.journal);
      renameSync(this.journalFile, setAside(this.journalFile));
      this.journal = openSync(this.journalFile, "a");
      this.journalBytes = 0;
    }
    this.applying = this.pending;
    this.pending = new Map();
    this.db.exec("BEGIN");
    this.saveTokens([...this.dirtyTokens].map((ns) => [ns, this.tokens.get(ns)!] as const));
    this.dirtyTokens = new Set();
    // Few (a session per restart, a limit per operator's change): at once.
    for (const [key, value] of this.pendingKeyed) {
      const [table, ns, k] = key.split("\0") as [KeyedTable, string, string];
      if (value === null)
        this.db.run(`DELETE FROM ${table} WHERE ns = ? AND ${KEYED[table]} = ?`, [ns, k]);
      else this.db.run(`INSERT OR REPLACE INTO ${table} VALUES (?, ?, ?)`, [ns, k, value]);
    }
    this.pendingKeyed = new Map();
    return true;
  }

  /**
   * Saves namespaces' token high-water marks, and the highest of all (a floor for namespaces
   * the store has never seen: tokens never go back, whatever happens to a namespace's id).
   */
  private saveTokens(tokens: ReadonlyArray<readonly [string, number]>): void {
    if (tokens.length === 0) return;
    let highest = 0;
    for (const [ns, token] of tokens) {
      this.setToken.run([ns, token]);
      highest = Math.max(highest, token);
    }
    this.db.run(
      "INSERT INTO meta VALUES ('token_hwm', ?) ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
      [highest],
    );
  }

  /**
   * Applies writes of the checkpoint under way, in its transaction, until `budget` ms have passed
   * (checked every few writes; one costs µs to tens of µs through WASM).
   */
  private applyChunk(budget: number): void {
    const end = performance.now() + budget;
    let n = 0;
    for (const [key, r] of this.applying!) {
      this.applying!.delete(key);
      const row = this.rows.get(key);
      if (r === null) {
        // Removed: unless SQLite no longer holds it (the checkpoint before deleted it, and the
        // id was used again and ended meanwhile).
        if (row !== undefined) {
          this.rows.delete(key);
          this.delete.run([row]);
        }
      } else if (row === undefined) {
        this.rows.set(key, this.nextRow);
        this.write(this.nextRow++, r instanceof Request ? saved(r) : r);
      } else {
        this.write(row, r instanceof Request ? saved(r) : r);
      }
      if (++n % 8 === 0 && performance.now() >= end) break;
    }
  }

  private finishCheckpoint(): void {
    this.db.exec("COMMIT");
    this.applying = undefined;
    rmSync(setAside(this.journalFile), { force: true });
  }

  /** Positional parameters, in `COPIED_COLUMNS`' order: named ones cost 2.5× as much through WASM. */
  private write(row: number, r: SavedRequest): void {
    this.upsert.run([
      row,
      r.ns,
      r.id,
      r.name,
      r.load,
      r.priority,
      r.capacity,
      r.askedCapacity ?? null,
      r.expiresIn,
      r.lockDelay,
      r.seq,
      r.state,
      r.fencingToken,
      r.expiresAt,
      Number.isFinite(r.waitUntil) ? r.waitUntil : null,
      r.session ?? null,
      r.reason ?? null,
      r.lane ?? null,
    ]);
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
      } else if (record[0] === "u") {
        this.recovering(record[1], record[2], record[3]);
      } else if (record[0] === "x") {
        this.recovered(record[1], record[2]);
      } else if (record[0] === "l") {
        this.limit(record[1], record[2], record[3] ?? undefined);
      } else if (record[0] === "c") {
        this.concurrency(record[1], record[2], record[3] ?? undefined);
      } else if (record[0] === "n") {
        this.lanes(record[1], record[2], record[3] ?? undefined);
      } else if (record[0] === "g") {
        this.rates(record[1], record[2], record[3] ?? undefined);
      } else if (record[0] === "t" && Number.isFinite(record[1])) {
        // A journal of a version with one token counter for all namespaces.
        this.db.run(
          "INSERT OR REPLACE INTO meta VALUES ('token', max(?, coalesce((SELECT value FROM meta WHERE key = 'token'), 0)))",
          [record[1]],
        );
      }
      // Anything else is a record of a later version: skipped, so that a downgrade keeps what it
      // knows (versions before this one took any unknown record for a token: stop a server
      // cleanly before downgrading it — a clean stop leaves an empty journal).
    }
    this.records = [];
  }

  /**
   * Data directories of versions that stored API keys in clear, as namespaces: stored as keyed
   * hashes from now on (once, in one transaction). True if it did.
   */
  private hashNamespaces(): boolean {
    if (this.db.get("SELECT value FROM meta WHERE key = 'ns_hashed'")) return false;
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
    return true;
  }

  /** The row id of every request SQLite holds (see `rows`). */
  private readRows(): void {
    this.rows.clear();
    for (const r of this.db.all("SELECT rid, ns, id FROM requests") as Array<{
      rid: number;
      ns: string;
      id: string;
    }>) {
      this.rows.set(`${r.ns}\0${r.id}`, Number(r.rid));
      this.nextRow = Math.max(this.nextRow, Number(r.rid) + 1);
    }
  }
}

/** A journal record: save a request, remove one, or (older versions) raise the one token counter. */
type JournalRecord =
  | ["s", SavedRequest]
  | ["r", string, string]
  | ["u", string, string, number]
  | ["x", string, string]
  | ["l", string, string, number | null]
  | ["g", string, string, RateLimitSpec[] | null]
  | ["c", string, string, number | null]
  | ["n", string, string, LaneConfig | null]
  | ["t", number];

/** The requests table: a row id the store hands out (see `rows`), then the saved request. */
const REQUEST_COLUMNS = `
  rid INTEGER PRIMARY KEY,
  ns TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
  load INTEGER NOT NULL, priority INTEGER NOT NULL, capacity INTEGER NOT NULL,
  asked_capacity INTEGER, expires_in INTEGER NOT NULL, lock_delay INTEGER NOT NULL,
  seq INTEGER NOT NULL, state TEXT NOT NULL, token INTEGER NOT NULL,
  expires_at INTEGER NOT NULL, wait_until INTEGER, session TEXT, reason TEXT, lane TEXT`;
/** The saved request's columns (all but the row id). */
const COPIED_COLUMNS = [
  "ns",
  "id",
  "name",
  "load",
  "priority",
  "capacity",
  "asked_capacity",
  "expires_in",
  "lock_delay",
  "seq",
  "state",
  "token",
  "expires_at",
  "wait_until",
  "session",
  "reason",
  "lane",
];

/** The small keyed tables: their key column, and their value column. */
type KeyedTable = "recovering" | "limits" | "rates" | "concurrency" | "lanes";
const KEYED = {
  recovering: "session",
  limits: "name",
  rates: "name",
  concurrency: "name",
  lanes: "name",
} as const;
const VALUE = {
  recovering: "until",
  limits: "capacity",
  rates: "specs",
  concurrency: "holders",
  lanes: "config",
} as const;

/**
 * How long a checkpoint may run per event-loop turn, ms: a request waiting on the server waits
 * at most this (and a commit) behind it.
 */
const CHUNK_MS = 1;

/** Where a checkpoint sets the journal aside while it applies it. */
function setAside(journal: string): string {
  return journal.replace(/\.log$/, ".1.log");
}

/** How often SQLite catches up with the journal, ms. */
const CHECKPOINT_MS = 200;
/** ...or at the next turn once the journal holds this many bytes. */
const JOURNAL_MAX = 4 * 1024 * 1024;

/**
 * The directory's secret (32 random bytes, readable by its owner only), made on first use —
 * only then: stored namespaces are hashes under it, so a directory that holds data and lost its
 * secret cannot be served (keys would map to new namespaces, beside the old ones' live locks).
 */
function readSecret(file: string, holdsData: boolean): Buffer {
  if (!existsSync(file)) {
    if (holdsData) {
      throw new Error(
        `${file} is missing, but the directory holds stored requests hashed under it: restore the file (it is copied with the directory), or empty the directory to start afresh`,
      );
    }
    const temporary = `${file}.${process.pid}.tmp`;
    const fd = openSync(temporary, "w", 0o600);
    try {
      writeSync(fd, randomBytes(32));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, file);
  }
  const secret = readFileSync(file);
  if (secret.length !== 32) {
    throw new Error(
      `${file} is damaged (${secret.length} bytes, not 32): restore it from a copy of the directory`,
    );
  }
  return secret;
}
