import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import sqlite from "node-sqlite3-wasm";
import { describe, expect, it } from "vitest";
import { namespaceId } from "./keys.js";
import { SqliteStore } from "./sqlite-store.js";

const WRITER = fileURLToPath(new URL("../test/fixtures/journal-writer.ts", import.meta.url));

/** Runs the writer fixture on a new directory, kills it with SIGKILL once it says "done". */
async function writeAndKill(...args: string[]): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "ratequeue-store-"));
  const child = spawn(process.execPath, ["--import", "tsx", WRITER, dir, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (d: string) => d.includes("done") && resolve());
    child.once("exit", (code) => reject(new Error(`writer exited with ${code}`)));
  });
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
  return dir;
}

describe("SqliteStore", () => {
  it("keeps every committed write across kill -9, from its journal, before any checkpoint", async () => {
    const dir = await writeAndKill();

    const store = new SqliteStore(dir);
    try {
      const { requests, tokens } = store.load();
      const byId = Object.fromEntries(requests.map((r) => [r.id, r]));
      // The ended stay gone, but for a revoke its holder may not know of yet.
      expect(Object.keys(byId).sort()).toEqual(["holder", "revoked", "waiter"]);
      expect(byId.holder).toMatchObject({ state: "active", fencingToken: 102, session: "s1" });
      expect(byId.revoked).toMatchObject({ state: "revoked", reason: "ops", fencingToken: 100 });
      expect(byId.waiter).toMatchObject({ state: "queued", waitUntil: Number.POSITIVE_INFINITY });
      expect(tokens.get("k")).toBe(104); // "gone" ended, but its token is not given again
      expect(store.load().rates).toEqual(
        new Map([["k\0r", [{ limit: 500, window: 60_000, kind: "sliding", counts: "load" }]]]),
      );
      expect(store.load().concurrency).toEqual(new Map([["k\0r", 20]]));
    } finally {
      store.close();
    }
    // Folded into SQLite and closed cleanly: a third opening reads the same from the database.
    const again = new SqliteStore(dir);
    try {
      const loaded = again.load();
      expect(loaded.requests.map((r) => r.id).sort()).toEqual(["holder", "revoked", "waiter"]);
      expect(loaded.requests.find((r) => r.id === "revoked")).toMatchObject({
        state: "revoked",
        reason: "ops",
      });
      expect(loaded.tokens.get("k")).toBe(104);
      expect([...loaded.rates.keys()]).toEqual(["k\0r"]);
    } finally {
      again.close();
    }
  });
});

describe("SqliteStore checkpoints", () => {
  it("keeps every committed write across kill -9 in the middle of a checkpoint", async () => {
    const dir = await writeAndKill("mid-checkpoint");
    expect(existsSync(join(dir, "journal.1.log"))).toBe(true); // it was set aside, not done
    const store = new SqliteStore(dir);
    try {
      const { requests, tokens } = store.load();
      const ids = new Set(requests.map((r) => r.id));
      expect(ids.size).toBe(503);
      for (let i = 0; i < 500; i++) expect(ids.has(`bulk-${i}`)).toBe(true);
      expect(ids.has("holder") && ids.has("waiter") && ids.has("revoked")).toBe(true);
      expect(tokens.get("k")).toBe(104);
    } finally {
      store.close();
    }
    expect(existsSync(join(dir, "journal.1.log"))).toBe(false);
  });
});

/** A data directory's database as versions that keyed requests by `(ns, id)` wrote it, then `sql`. */
function legacyDatabase(dir: string, sql: string): void {
  const db = new sqlite.Database(join(dir, "ratequeue.db"));
  db.exec(`
    CREATE TABLE requests (
      ns TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
      load INTEGER NOT NULL, priority INTEGER NOT NULL, capacity INTEGER NOT NULL,
      asked_capacity INTEGER, expires_in INTEGER NOT NULL, lock_delay INTEGER NOT NULL,
      seq INTEGER NOT NULL, state TEXT NOT NULL, token INTEGER NOT NULL,
      expires_at INTEGER NOT NULL, wait_until INTEGER,
      PRIMARY KEY (ns, id)
    );
    ${sql}
  `);
  db.close();
}

describe("SqliteStore without a kill", () => {
  const request = (id: string, token: number) => ({
    ns: "k",
    id,
    session: "s1",
    name: "r",
    load: 1,
    priority: 10,
    capacity: 1,
    askedCapacity: undefined,
    expiresIn: 60_000,
    lockDelay: 0,
    seq: token,
    state: "active" as const,
    fencingToken: token,
    expiresAt: Date.now() + 60_000,
    waitUntil: Number.POSITIVE_INFINITY,
  });
  const ids = (store: SqliteStore) =>
    store
      .load()
      .requests.map((r) => r.id)
      .sort();

  it("removes what SQLite holds, and what it never held, across checkpoints and reopenings", () => {
    const dir = mkdtempSync(join(tmpdir(), "ratequeue-store-"));
    const first = new SqliteStore(dir);
    first.save(request("kept", 1));
    first.commit();
    first.save(request("brief", 2)); // saved and removed between two checkpoints
    first.commit();
    first.remove("k", "brief");
    first.commit();
    first.close(); // a checkpoint: "kept" is in SQLite now
    const second = new SqliteStore(dir);
    expect(ids(second)).toEqual(["kept"]);
    second.remove("k", "kept"); // held by SQLite since the last opening
    second.save(request("late", 3));
    second.commit();
    second.close();
    const third = new SqliteStore(dir);
    expect(ids(third)).toEqual(["late"]);
    expect(third.load().tokens.get("k")).toBe(3);
    third.close();
  });

  it("does not grow its journal while only requests SQLite never holds come and go", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ratequeue-store-"));
    const store = new SqliteStore(dir);
    try {
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < 200; i++) {
          store.save({ ...request(`w-${round}-${i}`, 0), state: "queued" as const });
          store.commit();
          store.remove("k", `w-${round}-${i}`);
          store.commit();
        }
        await new Promise((resolve) => setTimeout(resolve, 400)); // past a checkpoint
        expect(statSync(join(dir, "journal.log")).size).toBe(0);
      }
    } finally {
      store.close();
    }
  });

  it("keeps removals and saves made while a checkpoint is half applied", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ratequeue-store-"));
    const store = new SqliteStore(dir);
    const expected = new Set<string>();
    for (let i = 0; i < 3_000; i++) {
      store.save({ ...request(`w-${i}`, 0), state: "queued" as const });
      expected.add(`w-${i}`);
    }
    store.save(request("kept", 1));
    expected.add("kept");
    store.commit();
    store.close(); // "kept" and the waiters in SQLite
    const second = new SqliteStore(dir);
    second.remove("k", "kept");
    expected.delete("kept");
    for (let i = 0; i < 3_000; i += 2) {
      second.remove("k", `w-${i}`);
      expected.delete(`w-${i}`);
    }
    for (let i = 0; i < 3_000; i++)
      second.save({ ...request(`n-${i}`, 2), state: "queued" as const });
    second.commit();
    // A checkpoint begins and applies its first slice; the rest waits for later turns.
    const internals = second as unknown as { checkpoint(): void; applying?: Map<string, unknown> };
    internals.checkpoint();
    expect(internals.applying?.size).toBeGreaterThan(0);
    // Meanwhile: removals of rows applied, not yet applied, and never in SQLite; new saves.
    for (let i = 0; i < 3_000; i += 3) {
      second.remove("k", `n-${i}`);
      if (i % 2 === 1) {
        second.remove("k", `w-${i}`);
        expected.delete(`w-${i}`);
      }
    }
    for (let i = 0; i < 3_000; i++) if (i % 3 !== 0) expected.add(`n-${i}`);
    second.save(request("late", 3));
    expected.add("late");
    second.commit();
    await new Promise((resolve) => setTimeout(resolve, 50)); // the checkpoint ends, or nearly
    second.close();
    const third = new SqliteStore(dir);
    try {
      expect(new Set(ids(third))).toEqual(expected);
    } finally {
      third.close();
    }
  });

  it("a request removed while the checkpoint that deletes it is half applied, then made and removed again, is removed once", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ratequeue-store-"));
    const first = new SqliteStore(dir);
    first.save(request("K", 1));
    first.commit();
    first.close(); // K in SQLite
    const store = new SqliteStore(dir);
    for (let i = 0; i < 20_000; i++)
      store.save({ ...request(`w-${i}`, 0), state: "queued" as const });
    store.remove("k", "K"); // last in the checkpoint: not reached by its first slice
    store.commit();
    const internals = store as unknown as { checkpoint(): void; applying?: Map<string, unknown> };
    internals.checkpoint();
    expect(internals.applying?.has("k\0K")).toBe(true);
    store.save(request("K", 2)); // the id used again, and ended again
    store.commit();
    store.remove("k", "K");
    store.commit();
    await new Promise((resolve) => setTimeout(resolve, 300)); // that checkpoint, and the next
    store.close();
    const again = new SqliteStore(dir);
    try {
      expect(ids(again)).not.toContain("K");
      expect(ids(again)).toHaveLength(20_000);
    } finally {
      again.close();
    }
  });

  it("skips a journal record of a later version, and a token counter an older replay spoiled", () => {
    const dir = mkdtempSync(join(tmpdir(), "ratequeue-store-"));
    new SqliteStore(dir).close();
    const db = new sqlite.Database(join(dir, "ratequeue.db"));
    db.run("INSERT OR REPLACE INTO meta VALUES ('token', 'k')"); // what max('k', 0) once left
    db.close();
    const later = JSON.stringify(["z", "k", "r", 5]);
    const saved = JSON.stringify(["s", request("kept", 9)]);
    writeFileSync(join(dir, "journal.log"), `${later}\n${saved}\n`);
    const store = new SqliteStore(dir);
    try {
      const loaded = store.load();
      expect(Number.isFinite(loaded.tokenFloor)).toBe(true);
      expect(loaded.requests.map((r) => r.id)).toEqual(["kept"]);
      expect(loaded.tokens.get("k")).toBe(9);
    } finally {
      store.close();
    }
  });

  it("opens a database of the version that kept API keys in clear: hashed, its requests are removed and saved by the hashed namespace", () => {
    const dir = mkdtempSync(join(tmpdir(), "ratequeue-store-"));
    legacyDatabase(
      dir,
      `INSERT INTO requests VALUES ('secret-api-key', 'held', 'r', 1, 10, 1, NULL, 60000, 0, 7, 'active', 7, ${
        Date.now() + 60_000
      }, NULL)`,
    );
    const secret = Buffer.alloc(32, 7);
    writeFileSync(join(dir, "secret.key"), secret, { mode: 0o600 });
    const hashed = namespaceId(secret, "secret-api-key");

    const store = new SqliteStore(dir);
    expect(store.load().requests).toEqual([
      expect.objectContaining({ ns: hashed, id: "held", state: "active" }),
    ]);
    store.remove(hashed, "held");
    store.save({ ...request("next", 8), ns: hashed });
    store.commit();
    store.close();
    const again = new SqliteStore(dir);
    try {
      expect(again.load().requests.map((r) => [r.ns, r.id])).toEqual([[hashed, "next"]]);
    } finally {
      again.close();
    }
  });

  it("opens a database of the version that keyed requests by (ns, id) in WAL mode, and keeps its requests", () => {
    const dir = mkdtempSync(join(tmpdir(), "ratequeue-store-"));
    legacyDatabase(
      dir,
      `PRAGMA journal_mode = WAL;
      ALTER TABLE requests ADD COLUMN session TEXT;
      ALTER TABLE requests ADD COLUMN reason TEXT;
      CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
      INSERT INTO meta VALUES ('ns_hashed', 1);
      INSERT INTO requests VALUES ('k', 'old-holder', 'r', 1, 10, 1, NULL, 60000, 0, 7, 'active', 7, ${
        Date.now() + 60_000
      }, NULL, 's1', NULL);
      INSERT INTO requests VALUES ('k', 'old-waiter', 'r', 1, 10, 1, NULL, 60000, 0, 8, 'queued', 0, 0, NULL, 's1', NULL);`,
    );
    writeFileSync(join(dir, "secret.key"), Buffer.alloc(32, 1), { mode: 0o600 });

    const store = new SqliteStore(dir);
    expect(store.load().requests).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ id: "old-holder", state: "active", fencingToken: 7 }),
        expect.objectContaining({ id: "old-waiter", state: "queued", session: "s1" }),
      ]),
    );
    // Rows of the old form are updated and removed in place, beside new ones.
    store.remove("k", "old-holder");
    store.save({ ...request("old-waiter", 9), state: "active" as const });
    store.save(request("new", 10));
    store.commit();
    store.close();
    const again = new SqliteStore(dir);
    try {
      expect(ids(again)).toEqual(["new", "old-waiter"]);
      expect(again.load().requests.find((r) => r.id === "old-waiter")).toMatchObject({
        state: "active",
        fencingToken: 9,
      });
    } finally {
      again.close();
    }
  });
});
