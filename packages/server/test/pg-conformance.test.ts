/**
 * What only replicas on a shared store (PostgreSQL) add to the conformance suite, beyond what
 * replica.test.ts covers (roles, takeover with lease, waiter and token order, a lost or silent
 * session, a stale epoch): the recovery window across a leader change — a holder that never
 * comes back to the new leader is handed on when its window ends, not before — and fencing
 * tokens above every token any leader handed out, in every resource. Runs in the `server-pg`
 * project only (vitest.config.ts: `RATEQUEUE_TEST_STORE=postgres://…`), where the rest of the
 * suite runs on one replica each.
 */
import { describe, expect, it } from "vitest";
import type { ServerOptions } from "../src/index.js";
import type { ReplicaServer } from "../src/replica.js";
import { client, eventually, freshSchema, startTestServer, TEST_STORE } from "./helpers.js";

/**
 * Two replicas on one fresh schema (dropped when the file ends); the first to start leads. Their
 * `grace` is 2 s: a leader steps down when its probe of PostgreSQL has not been answered for
 * `grace`, which a loaded machine can make happen at 200 ms; these tests are about the leader
 * changes they make themselves.
 */
async function replicas(options: ServerOptions = {}) {
  const pgSchema = freshSchema();
  const start = async () =>
    (await startTestServer({
      grace: 2_000,
      recoveryWindow: 30_000,
      ...options,
      pgSchema,
    })) as ReplicaServer;
  const a = await start();
  const b = await start();
  expect([a.role(), b.role()]).toEqual(["leader", "follower"]);
  return { a, b };
}

describe.skipIf(TEST_STORE.kind !== "postgres")("replicas on one PostgreSQL schema", () => {
  it("a holder that does not come back to the new leader is dropped when its recovery window ends, not before, and the next is served", async () => {
    const window = 2_500; // at least 2 × grace with a store (options.ts)
    const { a, b } = await replicas({ grace: 1_000, recoveryWindow: window });
    await client(a).acquire("gone", { resource: "r" });
    await client(a).acquire("next", { resource: "r" }, 0);
    const stopped = performance.now();
    await a.close();
    await eventually(() => b.role() === "leader", 10_000);
    const api = client(b);
    // "next" comes back to the new leader and waits; "gone" never does.
    let snap = (await api.poll("next", "queued", 0)).body;
    expect(snap.state).toBe("queued");
    while (snap.state === "queued") snap = (await api.poll("next", "queued", 5_000)).body;
    expect(snap.state).toBe("active");
    // The window is counted from the takeover, which came after the stop.
    expect(performance.now()).toBeGreaterThanOrEqual(stopped + window - 50);
    expect((await api.poll("gone")).body.state).toBe("dropped");
  });

  it("a new leader grants fencing tokens above every token any leader handed out, in every resource", async () => {
    const { a, b } = await replicas();
    const api = client(a);
    const tokens: number[] = [];
    for (const resource of ["r1", "r2", "r3"]) {
      const snap = (await api.acquire(`x-${resource}`, { resource })).body;
      tokens.push(snap.fencingToken!);
      await api.release(`x-${resource}`);
    }
    const held = (await api.acquire("held", { resource: "r1" })).body;
    tokens.push(held.fencingToken!);
    await a.close();
    await eventually(() => b.role() === "leader", 10_000);
    const fresh = (await client(b).acquire("n", { resource: "new" })).body;
    expect(fresh.state).toBe("active");
    expect(fresh.fencingToken).toBeGreaterThan(Math.max(...tokens));
    // And the held lease kept its own token.
    expect((await client(b).poll("held", "queued", 0)).body).toMatchObject({
      state: "active",
      fencingToken: held.fencingToken,
    });
  });
});
