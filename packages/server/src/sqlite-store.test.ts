import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
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
});
