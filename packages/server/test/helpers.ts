import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LIVENESS_DEFAULTS, type RequestSnapshot } from "@ratequeue/core";
import { afterAll, expect } from "vitest";
import { type RunningServer, type ServerOptions, startServer } from "../src/index.js";

/**
 * The store the tests' servers keep their state in, from `RATEQUEUE_TEST_STORE`: unset (or
 * `memory`) for memory, `sqlite` for a data directory of its own per server, or a PostgreSQL URL
 * (`postgres://postgres@127.0.0.1:5432/test`) for a schema of its own per server, `rq_t_…`,
 * dropped when the test file ends. The same tests run on each (vitest.config.ts: the `-pg` and
 * `-sqlite` projects). A test that names its own `dataDir` or `store` keeps it.
 */
export const TEST_STORE = testStore(process.env.RATEQUEUE_TEST_STORE);

function testStore(value: string | undefined) {
  if (value === undefined || value === "" || value === "memory") return { kind: "memory" } as const;
  if (value === "sqlite") return { kind: "sqlite" } as const;
  if (/^postgres(ql)?:\/\//.test(value)) return { kind: "postgres", url: value } as const;
  throw new Error(
    `RATEQUEUE_TEST_STORE must be memory, sqlite or a postgres:// URL, got ${JSON.stringify(value)}`,
  );
}

/** Schemas made by this test file (dropped at its end; never another run's). */
const schemas = new Set<string>();
/** Directories made by this test file (removed at its end). */
const dirs = new Set<string>();
/** Directories from `stateDir()`, and the schema each stands for on PostgreSQL. */
const dirSchemas = new Map<string, string>();
/** Every server started through the helpers, closed before its store is dropped. */
const servers = new Set<RunningServer>();

/**
 * A schema no other server, file or run uses: `rq_t_<ms since 1970, base 36>_<random>`, dropped
 * when the test file ends (for replicas sharing one: `startTestServer({ pgSchema })`).
 */
export function freshSchema(): string {
  const schema = `rq_t_${Date.now().toString(36)}_${randomBytes(6).toString("hex")}`;
  schemas.add(schema);
  return schema;
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "ratequeue-test-"));
  dirs.add(dir);
  return dir;
}

/**
 * A place for a server's state that a restarted server (`startTestServer({ dataDir })` again)
 * finds: a data directory, or on PostgreSQL the same schema. For tests of what survives a
 * restart that do not look at the directory's files (those take a `mkdtempSync` of their own,
 * and stay on SQLite whatever the store).
 */
export function stateDir(): string {
  const dir = tempDir();
  if (TEST_STORE.kind === "postgres") dirSchemas.set(dir, freshSchema());
  return dir;
}

/** `options` with the test store filled in, unless they name a store of their own. */
export function withTestStore(options: ServerOptions): ServerOptions {
  if (options.store !== undefined) return options;
  if (options.dataDir !== undefined) {
    const schema = dirSchemas.get(options.dataDir);
    if (schema === undefined || TEST_STORE.kind !== "postgres") return options;
    const { dataDir: _, ...rest } = options;
    return { ...rest, store: TEST_STORE.url, pgSchema: schema, log: withStepDowns(rest.log) };
  }
  switch (TEST_STORE.kind) {
    case "memory":
      return options;
    case "sqlite":
      return { ...options, dataDir: tempDir() };
    case "postgres":
      return {
        ...options,
        store: TEST_STORE.url,
        pgSchema: options.pgSchema ?? freshSchema(),
        log: withStepDowns(options.log),
      };
  }
}

/**
 * A replica's step-downs go to stderr too, with the test they happened in: a leader that stops
 * serving closes every connection, which the test sees as a reset it cannot explain.
 */
function withStepDowns(log: ((line: string) => void) | undefined): (line: string) => void {
  return (line) => {
    if (line.includes("stepping down"))
      process.stderr.write(`${line} (in "${expect.getState().currentTestName}")\n`);
    log?.(line);
  };
}

/** Starts a server on the test store; it is closed (at the latest) when the test file ends. */
export async function startWithTestStore(options: ServerOptions): Promise<RunningServer> {
  const server = await startServer(withTestStore(options));
  servers.add(server);
  return server;
}

afterAll(async () => {
  await Promise.allSettled([...servers].map((s) => s.close()));
  servers.clear();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
  if (TEST_STORE.kind === "postgres") await dropSchemas(TEST_STORE.url, [...schemas]);
  schemas.clear();
}, 60_000);

/**
 * Drops this file's schemas, and those a killed run left more than a day ago (by the time in
 * their name: a run going on now made its own schemas within the day, and only drops those).
 */
async function dropSchemas(url: string, own: string[]): Promise<void> {
  const { default: pg } = await import("pg");
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const { rows } = await db.query<{ name: string }>(
      "SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE 'rq\\_t\\_%'",
    );
    const stale = rows
      .map((r) => r.name)
      .filter((name) => {
        const born = Number.parseInt(/^rq_t_([0-9a-z]+)_[0-9a-f]+$/.exec(name)?.[1] ?? "", 36);
        return born > 0 && Date.now() - born > 86_400_000;
      });
    for (const schema of new Set([...own, ...stale])) {
      if (!/^rq_t_[0-9a-z_]+$/.test(schema)) continue;
      await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  } finally {
    await db.end();
  }
}

/**
 * On PostgreSQL, a server started again on the same schema is a replica taking over from another:
 * it grants nothing for twice its grace (docs/operations.md, "Grants before their commit").
 * Resolves once that has passed — at once on the other stores — for tests of what a restart
 * keeps that then expect grants at once.
 */
export async function pastTakeover(options: ServerOptions = {}): Promise<void> {
  if (TEST_STORE.kind !== "postgres") return;
  const grace = options.grace ?? LIVENESS_DEFAULTS.grace;
  await new Promise((resolve) => setTimeout(resolve, 2 * grace + 20));
}

/** A server on a free port (on the test store), disposed with `await using`. */
export function startTestServer(options: ServerOptions = {}): Promise<RunningServer> {
  return startWithTestStore({ port: 0, ...options });
}

export interface Reply<T = RequestSnapshot> {
  status: number;
  type: string | null;
  body: T;
}

/** A tiny protocol client for tests: real HTTP over a real socket, via fetch. */
export function client(server: { url: string }, token = "test-token") {
  const call = async <T = RequestSnapshot>(
    method: string,
    path: string,
    body?: unknown,
    signal?: AbortSignal,
  ): Promise<Reply<T>> => {
    const res = await fetch(server.url + path, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    const text = await res.text();
    return {
      status: res.status,
      type: res.headers.get("content-type"),
      body: text ? JSON.parse(text) : undefined,
    };
  };
  return {
    call,
    acquire: (id: string, body: Record<string, unknown>, wait?: number, signal?: AbortSignal) =>
      call("PUT", `/v1/requests/${id}${wait === undefined ? "" : `?wait=${wait}`}`, body, signal),
    poll: (id: string, state?: string, wait?: number) => {
      const q = new URLSearchParams();
      if (state) q.set("state", state);
      if (wait !== undefined) q.set("wait", String(wait));
      return call("GET", `/v1/requests/${id}?${q}`);
    },
    release: (id: string) => call("DELETE", `/v1/requests/${id}`),
    resource: (name: string) =>
      call<Record<string, unknown>>("GET", `/v1/resources/${encodeURIComponent(name)}`),
  };
}

/** Resolves with the promise's value, or with "pending" if it has not settled within `ms`. */
export async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<T | "pending"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = new Promise<"pending">((resolve) => {
    timer = setTimeout(() => resolve("pending"), ms);
  });
  try {
    return await Promise.race([promise, pending]);
  } finally {
    clearTimeout(timer);
  }
}

export { eventually } from "../../../test-support/eventually.js";
