import { randomBytes } from "node:crypto";
import type pg from "pg";
import { Request, type SavedRequest, saved } from "./engine.js";
import type { RateLimitSpec } from "./rate.js";
import type { Store, StoredState } from "./store.js";

/**
 * The shared store of several replicas (`--store postgres://…`): PostgreSQL is the single source
 * of truth, and one replica at a time — the leader — serves, with the engine in its memory as a
 * cache of what PostgreSQL holds. See docs/operations.md for the design and why.
 *
 * What makes it safe:
 * - **Leadership is a PostgreSQL session-level advisory lock**, taken on the connection this
 *   store writes through. PostgreSQL releases it the moment that session ends (the replica died,
 *   its connection was cut, PostgreSQL restarted), so another replica's blocked
 *   `pg_advisory_lock` returns then: PostgreSQL's own session liveness, no heartbeat table.
 * - **Nothing is said before it is in PostgreSQL.** A commit of the operations since the last is
 *   one statement (`apply`, a function the migrations install) sent on that connection; replies
 *   and events wait for it (`flushed()`). A write on a connection that lost the lock cannot
 *   commit, so no client hears of a grant a new leader would not restore.
 * - **An epoch** bumped by each new leader is checked by every commit, under a share lock of its
 *   row: if the lock were ever not exclusive (a pooler in transaction mode, say), a stale leader's
 *   commit still fails instead of writing over the new leader's state.
 */
export class PgStore implements Store {
  readonly secret: Buffer;
  private readonly state: StoredState;
  /** Writes not yet sent, by `ns\0id`: the request (read when it is sent), or null if removed. */
  private pending = new Map<string, Request | SavedRequest | null>();
  private pendingKeyed = new Map<string, unknown>();
  /**
   * Per namespace, the fencing-token ceiling to write: `TOKEN_HEADROOM` above the latest token
   * granted whenever that came within half of it of the last ceiling. A new leader continues
   * above what it reads, so above every token this leader handed out.
   */
  private readonly tokens = new Map<string, number>();
  private dirtyTokens = new Set<string>();
  /** Per namespace, the ceiling PostgreSQL has: tokens up to it may be told before their commit. */
  private readonly durableTokens = new Map<string, number>();
  /** The ceilings of each commit on the wire, by its `gen`, durable once it is in. */
  private tokensInFlight = new Map<number, Array<[string, number]>>();
  /** Commits asked for (`commit()` with writes), and those PostgreSQL has. */
  private asked = 0;
  private done = 0;
  private sending = false;
  private waiters: Array<{ gen: number; resolve: () => void; reject: (e: Error) => void }> = [];
  private failure: Error | undefined;
  private closing = false;
  /** Send time (performance.now()) of the latest query PostgreSQL answered on the lock's session. */
  private proven = performance.now();
  private probing: Promise<void> | undefined;
  /** Queries of this store on the wire, and since when PostgreSQL has answered none of them. */
  private inFlight = 0;
  private waitingSince = 0;

  private constructor(
    private readonly client: pg.Client,
    private readonly schema: string,
    readonly epoch: number,
    secret: Buffer,
    state: StoredState,
    /** Called once when a commit fails: the replica must stop serving at once. */
    private readonly onFailure: (error: Error) => void,
    /** How old the last proof of the lock may be when something is sent, in ms (`grace`). */
    private readonly proofLimit: number,
  ) {
    this.secret = secret;
    this.state = state;
    for (const [ns, token] of state.tokens) {
      this.tokens.set(ns, token);
      this.durableTokens.set(ns, token);
    }
  }

  /**
   * Takes the store over on `client`, which must hold the leader lock (`Leadership`): bumps the
   * epoch and reads everything the previous leader committed.
   */
  static async take(
    client: pg.Client,
    schema: string,
    onFailure: (error: Error) => void,
    proofLimit: number,
  ): Promise<PgStore> {
    const s = ident(schema);
    const start = performance.now();
    const { rows } = await client.query<{ epoch: string }>(
      `UPDATE ${s}.leader SET epoch = epoch + 1 RETURNING epoch`,
    );
    const epoch = Number(rows[0]!.epoch);
    const secretRow = await client.query<{ value: string }>(
      `SELECT value FROM ${s}.meta WHERE key = 'secret'`,
    );
    const secret = Buffer.from(secretRow.rows[0]!.value, "base64");
    const requests = (
      await client.query<{ data: SavedRequest & { waitUntil: number | null } }>(
        `SELECT data FROM ${s}.requests`,
      )
    ).rows.map(({ data }) => ({
      ...data,
      waitUntil: data.waitUntil === null ? Number.POSITIVE_INFINITY : data.waitUntil,
    }));
    const tokens = new Map<string, number>();
    let floor = 0;
    for (const row of (
      await client.query<{ ns: string; token: string }>(`SELECT ns, token FROM ${s}.tokens`)
    ).rows) {
      tokens.set(row.ns, Number(row.token));
      floor = Math.max(floor, Number(row.token));
    }
    const keyed = (
      await client.query<{ tbl: string; ns: string; k: string; v: unknown }>(
        `SELECT tbl, ns, k, v FROM ${s}.keyed`,
      )
    ).rows;
    const table = <T>(name: string) =>
      new Map(keyed.filter((r) => r.tbl === name).map((r) => [`${r.ns}\0${r.k}`, r.v as T]));
    return new PgStore(
      client,
      schema,
      epoch,
      secret,
      {
        requests,
        tokens,
        tokenFloor: floor,
        recovering: table<number>("recovering"),
        limits: table<number>("limits"),
        rates: table<RateLimitSpec[]>("rates"),
        concurrency: table<number>("concurrency"),
        lanes: table("lanes"),
      },
      onFailure,
      proofLimit,
    ).proving(start);
  }

  private proving(sentAt: number): this {
    this.proven = sentAt;
    return this;
  }

  load(): StoredState {
    return this.state;
  }

  save(request: Request | SavedRequest): void {
    const ns = request instanceof Request ? request.ns.key : request.ns;
    this.pending.set(`${ns}\0${request.id}`, request);
    this.raiseToken(ns, request.fencingToken);
  }

  remove(ns: string, id: string): void {
    this.pending.set(`${ns}\0${id}`, null);
  }

  recovering(ns: string, session: string, until: number): void {
    this.pendingKeyed.set(`recovering\0${ns}\0${session}`, until);
  }

  recovered(ns: string, session: string): void {
    this.pendingKeyed.set(`recovering\0${ns}\0${session}`, null);
  }

  limit(ns: string, name: string, capacity: number | undefined): void {
    this.pendingKeyed.set(`limits\0${ns}\0${name}`, capacity ?? null);
  }

  rates(ns: string, name: string, specs: readonly RateLimitSpec[] | undefined): void {
    this.pendingKeyed.set(`rates\0${ns}\0${name}`, specs ?? null);
  }

  concurrency(ns: string, name: string, holders: number | undefined): void {
    this.pendingKeyed.set(`concurrency\0${ns}\0${name}`, holders ?? null);
  }

  lanes(ns: string, name: string, config: Parameters<Store["lanes"]>[2]): void {
    this.pendingKeyed.set(`lanes\0${ns}\0${name}`, config ?? null);
  }

  /**
   * Asks for the writes so far to be committed. At most one commit is on the wire at a time;
   * the writes made meanwhile go together in the next (group commit), so a burst costs a round
   * trip, not one per operation.
   */
  commit(): void {
    if (this.pending.size === 0 && this.pendingKeyed.size === 0 && this.dirtyTokens.size === 0)
      return;
    this.asked++;
    if (!this.sending) this.send();
  }

  /** A promise of everything asked so far being in PostgreSQL; undefined if it already is. */
  flushed(): Promise<void> | undefined {
    if (this.failure) return Promise.reject(this.failure);
    this.commit(); // everything done so far, whether or not its operation has asked yet
    // An old proof (a stalled event loop, a slow commit): what is to leave waits for a new one.
    if (this.stale()) return this.probe().then(() => this.flushed());
    if (this.done >= this.asked) return undefined;
    const gen = this.asked;
    return new Promise((resolve, reject) => this.waiters.push({ gen, resolve, reject }));
  }

  /** Whether a leader served before this one (the first leader of a schema has epoch 1). */
  get inherited(): boolean {
    return this.epoch > 1;
  }

  /**
   * Whether a grant with fencing token `token` in namespace `ns` may be told before its commit
   * (docs/operations.md, "Grants before their commit"): its token is at or below a ceiling
   * PostgreSQL already has, so a leader that takes over after a crash before the commit hands
   * out only higher tokens.
   */
  provisional(ns: string, token: number): boolean {
    return (
      this.failure === undefined && !this.stale() && token <= (this.durableTokens.get(ns) ?? 0)
    );
  }

  /**
   * A query on the lock's session: once answered, the proof is as fresh as its send time. One at
   * a time; a failure fails the store.
   */
  probe(): Promise<void> {
    this.probing ??= (async () => {
      const sent = performance.now();
      this.sentAt(sent);
      try {
        await this.client.query("SELECT 1");
      } catch (error) {
        this.fail(error as Error);
        throw this.failure;
      } finally {
        this.probing = undefined;
        this.answered();
      }
      this.prove(sent);
    })();
    return this.probing;
  }

  /**
   * Whether a probe would tell anything new: none is needed while a query is on the wire (its
   * answer proves the lock, and `unanswered` watches it) or while the proof is younger than
   * `fresh` ms. Commits prove the lock as probes do, so a busy leader sends no probes: each
   * would wait behind a commit, and the commit after it behind the probe.
   */
  wantsProbe(fresh: number): boolean {
    return this.inFlight === 0 && performance.now() - this.proven > fresh;
  }

  /**
   * How long PostgreSQL has had a query of this session to answer and not answered any, in ms
   * (0 with none waiting). A replica steps down when this passes `grace`.
   */
  unanswered(): number {
    return this.inFlight === 0 ? 0 : performance.now() - this.waitingSince;
  }

  private sentAt(at: number): void {
    if (this.inFlight++ === 0) this.waitingSince = at;
  }

  private answered(): void {
    this.inFlight--;
    this.waitingSince = performance.now();
  }

  /**
   * Commits what is left, then lets go of the connection (the caller ends it). A PostgreSQL that
   * does not answer (a cut network) holds a stop up `CLOSE_WAIT_MS` at most.
   */
  async close(): Promise<void> {
    this.closing = true;
    const left = this.failure === undefined ? this.flushed() : undefined;
    if (left === undefined) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      left.catch(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
  }

  /**
   * PostgreSQL answered a query sent at `sentAt` (performance.now()) on the lock's session: the
   * lock was held then, or later. Nothing leaves on a proof older than `proofLimit` (see
   * `flushed`): a message sent now is sent within `proofLimit` of a query PostgreSQL answered
   * while this replica held the lock, whatever its timers did meanwhile (docs/operations.md).
   */
  private prove(sentAt: number): void {
    if (sentAt > this.proven) this.proven = sentAt;
  }

  /** Whether the last proof of the lock is older than `proofLimit`. */
  stale(): boolean {
    return performance.now() - this.proven > this.proofLimit;
  }

  private send(): void {
    this.sending = true;
    const gen = this.asked;
    this.sendChunk(this.takeChunks(gen), 0, gen);
  }

  /**
   * Sends chunk `i` of a group commit; once PostgreSQL has the last, everything asked up to
   * `gen` is durable. Each chunk's answer proves the lock, so a burst of thousands of writes
   * never leaves the lock unproven (or PostgreSQL "unanswered") for longer than one chunk takes.
   */
  private sendChunk(chunks: string[], i: number, gen: number): void {
    const sentAt = performance.now();
    this.sentAt(sentAt);
    // A named statement: PostgreSQL parses and plans it once per connection, not per commit.
    const text = `SELECT ${ident(this.schema)}.apply($1, $2::jsonb)`;
    this.client.query({ name: "ratequeue_apply", text, values: [this.epoch, chunks[i]] }).then(
      () => {
        this.answered();
        if (this.failure) return;
        this.prove(sentAt);
        if (i + 1 < chunks.length) {
          this.sendChunk(chunks, i + 1, gen);
          return;
        }
        this.done = gen;
        for (const [ns, ceiling] of this.tokensInFlight.get(gen) ?? [])
          if (ceiling > (this.durableTokens.get(ns) ?? 0)) this.durableTokens.set(ns, ceiling);
        this.tokensInFlight.delete(gen);
        // Nothing leaves on an old proof (a commit that took longer than `grace` proves too
        // little): the answers it holds wait for a probe.
        const release = () => {
          const ready = this.waiters.filter((w) => w.gen <= this.done);
          this.waiters = this.waiters.filter((w) => w.gen > this.done);
          for (const w of ready) w.resolve();
        };
        if (this.stale()) this.probe().then(release, () => {});
        else release();
        this.sending = false;
        if (this.asked > this.done && this.failure === undefined) this.send();
      },
      (error: Error) => {
        this.answered();
        this.fail(error);
      },
    );
  }

  /**
   * The replica stops serving (it could not prove its leadership in time): from now on nothing
   * waiting for a commit is released, whatever PostgreSQL answers later.
   */
  abandon(reason: Error): void {
    this.closing = true;
    this.fail(reason);
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = new Error(`PostgreSQL commit failed: ${error.message}`, { cause: error });
    for (const w of this.waiters) w.reject(this.failure);
    this.waiters = [];
    if (!this.closing) this.onFailure(this.failure);
  }

  /**
   * The writes since the last commit, as the `apply` function takes them, in chunks of at most
   * `CHUNK` writes. Nothing leaves before the last chunk is in, but a replica can die between
   * two, so the order makes every prefix safe to restore: fencing tokens first (a grant is never
   * durable before its token's raise, above which a new leader continues); then the operators'
   * settings and recovery windows; then what frees units or waits (removals, queued and revoked
   * requests); grants (active requests) last. So no prefix holds a grant without every release
   * made before it — the units a grant took were free in what a new leader restores. What frees
   * units is safe to restore alone: the client let go (a release), its session ended, its own
   * timer ended the hold (an expiry), or the units stay held back until it is told (a revoke).
   */
  private takeChunks(gen: number): string[] {
    const tokens: Array<[string, number]> = [];
    for (const ns of this.dirtyTokens) tokens.push([ns, this.tokens.get(ns)!]);
    if (tokens.length > 0) this.tokensInFlight.set(gen, tokens);
    const keyed: unknown[] = [];
    for (const [key, v] of this.pendingKeyed) keyed.push([...key.split("\0"), v]);
    const del: string[][] = [];
    const frees: SavedRequest[] = [];
    const grants: SavedRequest[] = [];
    for (const [key, r] of this.pending) {
      if (r === null) del.push(key.split("\0"));
      else {
        const s = r instanceof Request ? saved(r) : r;
        (s.state === "active" ? grants : frees).push(s);
      }
    }
    this.pending = new Map();
    this.pendingKeyed = new Map();
    this.dirtyTokens = new Set();
    // In commit order; within a chunk `apply` deletes, then saves, then writes tokens and
    // settings — one transaction, so only the order between chunks matters.
    const writes: Array<["keyed" | "del" | "save", unknown]> = [
      ...keyed.map((k) => ["keyed", k] as ["keyed", unknown]),
      ...del.map((d) => ["del", d] as ["del", unknown]),
      ...[...frees, ...grants].map((r) => ["save", r] as ["save", unknown]),
    ];
    const chunks: string[] = [];
    let chunk = { save: [] as unknown[], del: [] as unknown[], keyed: [] as unknown[], tokens };
    let size = tokens.length;
    for (const [kind, write] of writes) {
      if (size >= CHUNK) {
        chunks.push(JSON.stringify(chunk));
        chunk = { save: [], del: [], keyed: [], tokens: [] };
        size = 0;
      }
      chunk[kind].push(write);
      size++;
    }
    // JSON writes Infinity (a wait without a timeout) as null; `take` reads it back.
    chunks.push(JSON.stringify(chunk));
    return chunks;
  }

  private raiseToken(ns: string, token: number): void {
    const ceiling = this.tokens.get(ns) ?? 0;
    if (token > ceiling - TOKEN_HEADROOM / 2) {
      this.tokens.set(ns, Math.max(ceiling, token + TOKEN_HEADROOM));
      this.dirtyTokens.add(ns);
    }
  }
}

/**
 * How far above the latest fencing token granted the stored ceiling is set (see `tokens`). Tokens
 * count a millisecond as 1,000, so a new leader skips at most a second's worth, and the ceiling is
 * written once per 500,000 grants of a namespace rather than with every grant.
 */
const TOKEN_HEADROOM = 1_000_000;

/**
 * Most writes in one commit of a group: a commit of 10,000 took longer than `grace` on a loaded
 * machine, and a leader whose query goes unanswered that long steps down.
 */
const CHUNK = 256;

/** How long a stop waits for the last commit, in ms. */
const CLOSE_WAIT_MS = 5_000;

/** A schema name as SQL: checked, then quoted. */
export function ident(schema: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema))
    throw new Error(
      `the PostgreSQL schema name must be lower-case letters, digits and _ (at most 63, not starting with a digit), got ${JSON.stringify(schema)}`,
    );
  return `"${schema}"`;
}

/**
 * The schema's migrations, in order: each runs once, in its own transaction, recorded in
 * `migrations` (idempotent at every start, and safe when replicas start together: they take a
 * transaction-level advisory lock first).
 */
const MIGRATIONS: ReadonlyArray<(s: string) => string> = [
  (s) => `
    CREATE TABLE ${s}.meta (key text PRIMARY KEY, value text NOT NULL);
    INSERT INTO ${s}.meta VALUES ('secret', '${randomBytes(32).toString("base64")}');
    CREATE TABLE ${s}.leader (epoch bigint NOT NULL);
    INSERT INTO ${s}.leader VALUES (0);
    CREATE TABLE ${s}.requests (
      ns text NOT NULL, id text NOT NULL, data jsonb NOT NULL, PRIMARY KEY (ns, id)
    );
    CREATE TABLE ${s}.tokens (ns text PRIMARY KEY, token bigint NOT NULL);
    CREATE TABLE ${s}.keyed (
      tbl text NOT NULL, ns text NOT NULL, k text NOT NULL, v jsonb NOT NULL,
      PRIMARY KEY (tbl, ns, k)
    );
    CREATE FUNCTION ${s}.apply(p_epoch bigint, ops jsonb) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM 1 FROM ${s}.leader WHERE epoch = p_epoch FOR SHARE;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'ratequeue: leader epoch % is no longer current', p_epoch
          USING ERRCODE = 'RQ001';
      END IF;
      DELETE FROM ${s}.requests r USING jsonb_array_elements(ops->'del') d
        WHERE r.ns = d->>0 AND r.id = d->>1;
      INSERT INTO ${s}.requests (ns, id, data)
        SELECT x->>'ns', x->>'id', x FROM jsonb_array_elements(ops->'save') x
        ON CONFLICT (ns, id) DO UPDATE SET data = excluded.data;
      INSERT INTO ${s}.tokens (ns, token)
        SELECT t->>0, (t->>1)::bigint FROM jsonb_array_elements(ops->'tokens') t
        ON CONFLICT (ns) DO UPDATE SET token = greatest(${s}.tokens.token, excluded.token);
      DELETE FROM ${s}.keyed k USING jsonb_array_elements(ops->'keyed') x
        WHERE k.tbl = x->>0 AND k.ns = x->>1 AND k.k = x->>2 AND jsonb_typeof(x->3) = 'null';
      INSERT INTO ${s}.keyed (tbl, ns, k, v)
        SELECT x->>0, x->>1, x->>2, x->3 FROM jsonb_array_elements(ops->'keyed') x
        WHERE jsonb_typeof(x->3) <> 'null'
        ON CONFLICT (tbl, ns, k) DO UPDATE SET v = excluded.v;
    END $$;
  `,
  // 2: deletes by primary key, one at a time. The set-based DELETE … USING
  // jsonb_array_elements(…) above was planned for 100 rows (the planner's guess for a set
  // function) and so scanned the whole table: 1.1 ms a commit with 4,000 requests in line, for
  // one or two deletes. A loop runs the cached index-scan plan once per key.
  (s) => `
    CREATE OR REPLACE FUNCTION ${s}.apply(p_epoch bigint, ops jsonb) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
      e jsonb;
    BEGIN
      PERFORM 1 FROM ${s}.leader WHERE epoch = p_epoch FOR SHARE;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'ratequeue: leader epoch % is no longer current', p_epoch
          USING ERRCODE = 'RQ001';
      END IF;
      FOR e IN SELECT jsonb_array_elements(ops->'del') LOOP
        DELETE FROM ${s}.requests WHERE ns = e->>0 AND id = e->>1;
      END LOOP;
      INSERT INTO ${s}.requests (ns, id, data)
        SELECT x->>'ns', x->>'id', x FROM jsonb_array_elements(ops->'save') x
        ON CONFLICT (ns, id) DO UPDATE SET data = excluded.data;
      INSERT INTO ${s}.tokens (ns, token)
        SELECT t->>0, (t->>1)::bigint FROM jsonb_array_elements(ops->'tokens') t
        ON CONFLICT (ns) DO UPDATE SET token = greatest(${s}.tokens.token, excluded.token);
      FOR e IN SELECT jsonb_array_elements(ops->'keyed') LOOP
        IF jsonb_typeof(e->3) = 'null' THEN
          DELETE FROM ${s}.keyed WHERE tbl = e->>0 AND ns = e->>1 AND k = e->>2;
        END IF;
      END LOOP;
      INSERT INTO ${s}.keyed (tbl, ns, k, v)
        SELECT x->>0, x->>1, x->>2, x->3 FROM jsonb_array_elements(ops->'keyed') x
        WHERE jsonb_typeof(x->3) <> 'null'
        ON CONFLICT (tbl, ns, k) DO UPDATE SET v = excluded.v;
    END $$;
  `,
];

/** Creates the schema and runs the migrations it has not had yet. */
export async function migrate(client: pg.Client, schema: string): Promise<void> {
  const s = ident(schema);
  await client.query("BEGIN");
  try {
    // Replicas starting together: one migrates, the others wait and then find nothing to do.
    await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [
      `ratequeue:migrate:${schema}`,
    ]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${s}.migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    const { rows } = await client.query<{ v: number | null }>(
      `SELECT max(version) AS v FROM ${s}.migrations`,
    );
    const from = rows[0]?.v ?? 0;
    if (from > MIGRATIONS.length)
      throw new Error(
        `the PostgreSQL schema ${schema} was migrated by a newer RateQueue (version ${from}; this one knows ${MIGRATIONS.length}): upgrade this replica`,
      );
    for (let v = from + 1; v <= MIGRATIONS.length; v++) {
      await client.query(MIGRATIONS[v - 1]!(s));
      await client.query(`INSERT INTO ${s}.migrations (version) VALUES ($1)`, [v]);
    }
    await client.query("COMMIT");
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  }
}
