import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createRateQueue } from "@ratequeue/sdk";
import { describe, expect, it } from "vitest";
import { ConcurrencyTracker } from "../../shared/concurrency.js";
import { isIdle, startTestServer } from "../../shared/testing.js";
import { createApp, updateUser } from "../app.js";
import { UserStore } from "../store.js";

const API_KEY = "express-example";

/** The app on a free port, over real HTTP; closed (connections too) when the test ends. */
async function setup(options: { waitTimeout?: number } = {}) {
  const server = await startTestServer();
  const rq = createRateQueue({ apiKey: API_KEY, baseUrl: server.url });
  const store = new UserStore();
  const tracker = new ConcurrencyTracker();
  const http: Server = createApp({ rq, store, tracker, ...options }).listen(0, "127.0.0.1");
  await new Promise((resolve) => http.once("listening", resolve));
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  const put = (id: string, body: object = {}) =>
    fetch(`${base}/users/${id}`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(8_000), // nothing waits past the test's deadline
    });
  return {
    server,
    rq,
    store,
    tracker,
    put,
    async [Symbol.asyncDispose]() {
      http.closeAllConnections();
      await new Promise((resolve) => http.close(resolve));
      await server.close();
    },
  };
}

describe("express-user-lock", () => {
  it("loses no update of a user under concurrent PUTs, and does not serialise different users", async () => {
    await using t = await setup();
    const others = Array.from({ length: 8 }, (_, i) => `user-${i}`);
    const requests = [
      ...Array.from({ length: 40 }, (_, n) => t.put("alice", { name: `alice #${n}` })),
      ...others.flatMap((id) => Array.from({ length: 5 }, () => t.put(id, { email: `${id}@x` }))),
    ];
    const responses = await Promise.all(requests);
    expect(responses.map((r) => r.status)).toEqual(requests.map(() => 200));

    // Nothing lost: every PUT's read-modify-write saw the previous one's write.
    expect((await t.store.get("alice"))?.version).toBe(40);
    for (const id of others) expect((await t.store.get(id))?.version).toBe(5);
    // Each version was written once: the answers carry 1..40 for alice, each exactly once.
    const versions = await Promise.all(
      responses.slice(0, 40).map(async (r) => ((await r.json()) as { version: number }).version),
    );
    expect(versions.sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));

    // One update of a user at a time, but several users' updates at once.
    expect(t.tracker.maxPerKey).toBe(1);
    expect(t.tracker.maxOverall).toBeGreaterThan(1);
    expect(t.tracker.inside).toBe(0);
    // Nobody left holding or waiting.
    for (const id of ["alice", ...others]) {
      expect(await isIdle(t.server, `user-update-${id}`, API_KEY)).toBe(true);
    }
  }, 10_000);

  it("the same burst without the lock does lose updates (the test can see a lost update)", async () => {
    const store = new UserStore();
    await Promise.all(Array.from({ length: 40 }, () => updateUser(store, "bob", {})));
    expect((await store.get("bob"))?.version).toBeLessThan(40);
  }, 10_000);

  it("answers 503 with Retry-After when the user's lock is not free within waitTimeout", async () => {
    await using t = await setup({ waitTimeout: 100 });
    // Someone else (another instance of the app, a batch job…) holds alice's lock.
    const lease = await t.rq.acquire("user-update-alice");
    try {
      const res = await t.put("alice", { name: "late" });
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("1");
      expect(await res.json()).toEqual({ error: "acquire_timeout" });
      expect(await t.store.get("alice")).toBeUndefined(); // the update did not run
    } finally {
      await lease.release();
    }
    // Released: the next PUT goes through, and the timed-out one left no waiter behind.
    expect((await t.put("alice", { name: "on time" })).status).toBe(200);
    expect(await isIdle(t.server, "user-update-alice", API_KEY)).toBe(true);
  }, 10_000);

  it("answers 400 for an id too long to name a lock, without touching the store", async () => {
    await using t = await setup();
    const res = await t.put("x".repeat(300), { name: "too long" });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: "invalid_request", field: "name" });
  }, 10_000);
});
