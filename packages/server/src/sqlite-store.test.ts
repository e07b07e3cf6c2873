import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { SqliteStore } from "./sqlite-store.js";

const WRITER = fileURLToPath(new URL("../test/fixtures/journal-writer.ts", import.meta.url));

describe("SqliteStore", () => {
  it("keeps every committed write across kill -9, from its journal, before any checkpoint", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ratequeue-store-"));
    const child = spawn(process.execPath, ["--import", "tsx", WRITER, dir], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding("utf8").on("data", (d: string) => d.includes("done") && resolve());
      child.once("exit", (code) => reject(new Error(`writer exited with ${code}`)));
    });
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;

    const store = new SqliteStore(dir);
    try {
      const { requests, tokens } = store.load();
      const byId = Object.fromEntries(requests.map((r) => [r.id, r]));
      expect(Object.keys(byId).sort()).toEqual(["holder", "waiter"]); // the ended stay gone
      expect(byId.holder).toMatchObject({ state: "active", fencingToken: 102, session: "s1" });
      expect(byId.waiter).toMatchObject({ state: "queued", waitUntil: Number.POSITIVE_INFINITY });
      expect(tokens.get("k")).toBe(104); // "gone" ended, but its token is not given again
    } finally {
      store.close();
    }
    // Folded into SQLite and closed cleanly: a third opening reads the same from the database.
    const again = new SqliteStore(dir);
    try {
      const loaded = again.load();
      expect(loaded.requests.map((r) => r.id).sort()).toEqual(["holder", "waiter"]);
      expect(loaded.tokens.get("k")).toBe(104);
    } finally {
      again.close();
    }
  });
});
