import type { AcquireBody } from "@ratequeue/core";
import { describe, expect, it } from "vitest";
import { Engine, type EngineConfig, type Request, saved as savedOf } from "./engine.js";

const CONFIG: EngineConfig = {
  defaultExpiresIn: 60_000,
  grace: 150,
  waitGrace: 5_000,
  repollGrace: 4_000,
  maxQueue: 1_000,
  retention: 10_000,
  maxRetained: 1_000,
};

function setup(config: Partial<EngineConfig> = {}) {
  const clock = { t: 1_000, now: () => clock.t };
  const changes: Array<[string, string]> = [];
  const engine = new Engine({ ...CONFIG, ...config }, clock, (req) =>
    changes.push([req.id, req.state]),
  );
  const acquire = (id: string, body: Partial<AcquireBody> = {}, ns = "k") => {
    const r = engine.acquire(ns, id, { resource: "lock", ...body });
    if (!r.ok) throw new Error(`refused: ${r.code} ${r.detail}`);
    return r.request;
  };
  /** Moves the clock and runs what came due, as the host's timer would. */
  const tick = (ms: number) => {
    clock.t += ms;
    engine.advance();
  };
  return { clock, engine, changes, acquire, tick };
}

describe("Engine: granting and queueing", () => {
  it("grants a free resource at once and queues the next request", () => {
    const { acquire } = setup();
    const a = acquire("a");
    const b = acquire("b");
    expect(a.state).toBe("active");
    expect(a.fencingToken).toBeGreaterThan(0);
    expect(b.state).toBe("queued");
  });

  it("hands the slot to the next waiter on release and tells the host", () => {
    const { engine, acquire, changes } = setup();
    const a = acquire("a");
    const b = acquire("b");
    expect(engine.release("k", "a")?.state).toBe("released");
    expect(b.state).toBe("active");
    expect(b.fencingToken).toBeGreaterThan(a.fencingToken);
    expect(changes).toEqual([
      ["b", "active"],
      ["a", "released"],
    ]);
  });

  it("is a semaphore with capacity N", () => {
    const { acquire } = setup();
    const states = ["a", "b", "c"].map((id) => acquire(id, { capacity: 2 }).state);
    expect(states).toEqual(["active", "active", "queued"]);
  });

  it("lets the head of the line block smaller requests behind it, so big ones never starve", () => {
    const { engine, acquire } = setup();
    acquire("a", { capacity: 3, load: 2 });
    const big = acquire("big", { load: 2 });
    const small = acquire("small", { load: 1 });
    expect(engine.resource("k", "lock")?.used).toBe(2);
    expect([big.state, small.state]).toEqual(["queued", "queued"]);
    engine.release("k", "a");
    expect([big.state, small.state]).toEqual(["active", "active"]);
  });

  it("serves higher priority first, and arrival order within a priority", () => {
    const { engine, acquire } = setup();
    acquire("holder");
    const low = acquire("low", { priority: 1 });
    const mid1 = acquire("mid1");
    const high = acquire("high", { priority: 50 });
    const mid2 = acquire("mid2");
    const order: Request[] = [];
    let current = "holder";
    for (let i = 0; i < 4; i++) {
      engine.release("k", current);
      const next = [low, mid1, high, mid2].find((r) => r.state === "active")!;
      order.push(next);
      current = next.id;
    }
    expect(order.map((r) => r.id)).toEqual(["high", "mid1", "mid2", "low"]);
  });

  it("keeps fencing tokens increasing when a resource is forgotten and created again", () => {
    const { engine, acquire } = setup();
    const first = acquire("a");
    engine.release("k", "a");
    expect(engine.stats().resources).toBe(0);
    const second = acquire("b");
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
  });

  it("seeds fencing tokens from the clock, so they grow across restarts", () => {
    const before = setup();
    const t1 = before.acquire("a").fencingToken;
    const after = setup();
    after.clock.t = before.clock.t + 1; // a restart, a millisecond later
    const restarted = new Engine(CONFIG, after.clock);
    const r = restarted.acquire("k", "a", { resource: "lock" });
    expect(r.ok && r.request.fencingToken).toBeGreaterThan(t1);
  });
});

describe("Engine: quiet after a takeover (quietUntil)", () => {
  // A replica that takes over on PostgreSQL grants nothing on a resource with restored waiters
  // for twice its grace: a client of the leader before may hold a grant told before its commit,
  // always of a waiter the restored state still has in line.
  it("a resource with restored waiters grants nothing before the time, then serves them in order", () => {
    const before = setup();
    before.acquire("holder");
    before.acquire("w1");
    before.acquire("w2");
    before.acquire("idle", { resource: "free" });
    before.engine.release("k", "idle");
    const saved = [...before.engine.namespaceList()].flatMap((space) =>
      [...space.requests.values()].filter((r) => r.resource !== undefined).map(savedOf),
    );
    const { engine, acquire, tick, changes } = setup();
    engine.quietUntil(1_000 + 300);
    engine.restore(saved, 14_000, new Map(), 0, new Map());
    engine.release("k", "holder"); // its release had reached the old leader: units free
    const late = acquire("late");
    expect([engine.get("k", "w1")?.state, late.state]).toEqual(["queued", "queued"]);
    // A try-lock there is refused as busy: the lock may be held by a grant the store lacks.
    const tryLock = engine.acquire("k", "t", { resource: "lock", timeout: 0 });
    expect(tryLock.ok && tryLock.request.state).toBe("timed_out");
    // A resource nothing waited on is not held up.
    expect(acquire("other", { resource: "free" }).state).toBe("active");
    tick(299);
    expect(engine.get("k", "w1")?.state).toBe("queued");
    expect(engine.nextDeadline()).toBeLessThanOrEqual(1_300); // a host's timer wakes it then
    tick(1);
    expect(engine.get("k", "w1")?.state).toBe("active");
    engine.release("k", "w1");
    engine.release("k", "w2");
    expect(late.state).toBe("active");
    expect(changes.filter(([, state]) => state === "active").map(([id]) => id)).toEqual([
      "w1",
      "w2",
      "late",
    ]);
  });

  // Review: the quiet time went with the resource when its restored waiters left the line (a
  // timeout) and the resource was forgotten; a new request made it again, and was granted at once.
  it("stays quiet when its restored waiters leave and the resource is forgotten and made again", () => {
    const before = setup();
    before.acquire("holder");
    before.acquire("w", { timeout: 100 });
    const held = before.engine.get("k", "holder")!;
    const saved = [savedOf(held), savedOf(before.engine.get("k", "w")!)];
    const { engine, acquire, tick } = setup();
    engine.quietUntil(1_000 + 300);
    engine.restore(saved, 14_000, new Map(), 0, new Map());
    engine.release("k", "holder");
    tick(150); // w's timeout: the line is empty, the resource forgotten
    expect(engine.get("k", "w")?.state).toBe("timed_out");
    expect(engine.resource("k", "lock")?.capacity ?? null).toBe(null);
    const late = acquire("late");
    expect(late.state).toBe("queued");
    tick(150);
    expect(late.state).toBe("active");
  });
});

describe("Engine: refusals", () => {
  it("resumes a retried create instead of queueing it twice", () => {
    const { engine, acquire } = setup();
    acquire("a");
    const b = acquire("b");
    const again = engine.acquire("k", "b", { resource: "lock" });
    expect(again.ok && again.request).toBe(b);
    expect(again.ok && again.created).toBe(false);
    expect(engine.resource("k", "lock")?.queued).toBe(1);
  });

  it("refuses to reuse a request id for other parameters", () => {
    const { engine, acquire } = setup();
    acquire("a");
    const r = engine.acquire("k", "a", { resource: "other" });
    expect(r).toMatchObject({ ok: false, code: "request_conflict" });
  });

  it("refuses a capacity that differs from the live resource's", () => {
    const { engine, acquire } = setup();
    acquire("a", { capacity: 2 });
    expect(engine.acquire("k", "b", { resource: "lock", capacity: 3 })).toMatchObject({
      ok: false,
      code: "capacity_mismatch",
      field: "capacity",
    });
    // Without a capacity, a request joins whatever the resource is.
    expect(acquire("c").state).toBe("active");
  });

  it("refuses a load larger than the capacity, and does not keep the resource for it", () => {
    const { engine } = setup();
    expect(engine.acquire("k", "a", { resource: "lock", load: 2 })).toMatchObject({
      ok: false,
      field: "load",
    });
    expect(engine.stats()).toMatchObject({ resources: 0, live: 0 });
  });

  it("refuses to queue past maxQueue", () => {
    const { engine, acquire } = setup({ maxQueue: 2 });
    acquire("a");
    acquire("b");
    acquire("c");
    expect(engine.acquire("k", "d", { resource: "lock" })).toMatchObject({
      ok: false,
      code: "queue_full",
    });
    expect(engine.resource("k", "lock")?.queued).toBe(2);
  });
});

describe("Engine: every request ends", () => {
  it("ends a hold as expired after expiresIn and serves the next", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a", { expiresIn: 500 });
    const b = acquire("b");
    engine.attach(a);
    engine.attach(b);
    tick(499);
    expect(a.state).toBe("active");
    tick(1);
    expect(a.state).toBe("expired");
    expect(b.state).toBe("active");
  });

  it("uses the default hold bound when the request sets none", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a");
    engine.attach(a);
    tick(CONFIG.defaultExpiresIn - 1);
    expect(a.state).toBe("active");
    tick(1);
    expect(a.state).toBe("expired");
  });

  it("drops a request `grace` ms after its client closes the poll", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a");
    const b = acquire("b");
    engine.attach(a);
    engine.attach(b);
    engine.detach(a, false);
    tick(CONFIG.grace - 1);
    expect(a.state).toBe("active");
    tick(1);
    expect(a.state).toBe("dropped");
    expect(b.state).toBe("active");
  });

  it("gives a client repollGrace to poll again after an answered poll", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a");
    engine.attach(a);
    engine.detach(a, true);
    tick(CONFIG.repollGrace - 1);
    engine.attach(a); // the next poll arrives in time
    tick(CONFIG.repollGrace * 10);
    expect(a.state).toBe("active");
    engine.detach(a, true);
    tick(CONFIG.repollGrace);
    expect(a.state).toBe("dropped");
  });

  it("shortens repollGrace to grace when the connection of the last answer closes", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a");
    engine.attach(a);
    engine.detach(a, true);
    tick(10);
    engine.hasten(a);
    tick(CONFIG.grace);
    expect(a.state).toBe("dropped");
  });

  it("does not hasten a request that has a poll open", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a");
    engine.attach(a);
    engine.hasten(a);
    tick(CONFIG.repollGrace * 2);
    expect(a.state).toBe("active");
  });

  it("gives an at-once answered poll repollGrace, and leaves an open poll alone", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a");
    tick(CONFIG.repollGrace - 1);
    engine.answered(a); // a poll answered at once: the client is alive
    tick(CONFIG.repollGrace - 1);
    expect(a.state).toBe("active");
    engine.attach(a);
    engine.answered(a); // another poll, answered, while one stays open
    tick(CONFIG.repollGrace * 3);
    expect(a.state).toBe("active");
    engine.detach(a, true);
    tick(CONFIG.repollGrace);
    expect(a.state).toBe("dropped");
  });

  it("keeps a request alive while any of several polls is open", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a");
    engine.attach(a);
    engine.attach(a);
    engine.detach(a, false);
    tick(CONFIG.grace * 10);
    expect(a.state).toBe("active");
  });

  it("cleans up a request whose client never polls", () => {
    const { acquire, tick } = setup();
    const a = acquire("a");
    tick(CONFIG.repollGrace);
    expect(a.state).toBe("dropped");
  });

  it("with timeout 0, grants at once or ends timed_out without joining the line", () => {
    const { engine, acquire } = setup();
    expect(acquire("a", { timeout: 0 }).state).toBe("active");
    const b = acquire("b", { timeout: 0 });
    expect(b.state).toBe("timed_out");
    expect(engine.resource("k", "lock")?.queued).toBe(0);
  });

  it("ends a queued request as timed_out when its timeout elapses", () => {
    const { engine, acquire, tick } = setup();
    engine.attach(acquire("a"));
    const b = acquire("b", { timeout: 300 });
    engine.attach(b);
    tick(299);
    expect(b.state).toBe("queued");
    tick(1);
    expect(b.state).toBe("timed_out");
  });

  it("lets a big blocked head time out and then serves the small ones behind it", () => {
    const { engine, acquire, tick } = setup();
    engine.attach(acquire("a", { capacity: 2 }));
    const big = acquire("big", { load: 2, timeout: 100 });
    const small = acquire("small");
    engine.attach(big);
    engine.attach(small);
    expect(small.state).toBe("queued");
    tick(100);
    expect(big.state).toBe("timed_out");
    expect(small.state).toBe("active");
  });

  it("releases idempotently, and cancels a queued request", () => {
    const { engine, acquire } = setup();
    acquire("a");
    acquire("b");
    expect(engine.release("k", "b")?.state).toBe("cancelled");
    expect(engine.release("k", "a")?.state).toBe("released");
    expect(engine.release("k", "a")?.state).toBe("released");
    expect(engine.release("k", "nope")).toBeUndefined();
  });

  it("remembers an ended request for `retention`, then forgets it and its namespace", () => {
    const { engine, acquire, tick } = setup();
    acquire("a");
    engine.release("k", "a");
    expect(engine.nextDeadline()).toBe(1_000 + CONFIG.retention);
    tick(CONFIG.retention - 1);
    expect(engine.get("k", "a")?.state).toBe("released");
    tick(1);
    expect(engine.get("k", "a")).toBeUndefined();
    expect(engine.stats()).toEqual({
      namespaces: 0,
      resources: 0,
      live: 0,
      retained: 0,
      timers: 0,
      sessions: 0,
    });
  });

  it("keeps a quota of ended requests per namespace: one key's ends never make another's forgotten", () => {
    // repro 04: key B's 10,001 try-locks evicted key A's just-ended request; A's retried create
    // then made a second grant.
    const { engine, acquire } = setup({ maxRetained: 100 });
    const a = acquire("a-1", { resource: "invoice" }, "A");
    engine.release("A", "a-1");
    acquire("b-holder", { resource: "x" }, "B");
    for (let i = 0; i < 1_000; i++) acquire(`b-${i}`, { resource: "x", timeout: 0 }, "B");
    engine.release("B", "b-holder");
    expect(engine.get("A", "a-1")?.state).toBe("released");
    const retried = engine.acquire("A", "a-1", { resource: "invoice" });
    expect(retried.ok && retried.request).toBe(a); // resumed, not granted twice
    // B's own oldest are forgotten past its quota, B's newest kept.
    expect(engine.get("B", "b-0")).toBeUndefined();
    expect(engine.get("B", "b-999")?.state).toBe("timed_out");
    expect(engine.stats().retained).toBe(101);
  });

  it("enforces the quota on try-locks that end at once", () => {
    // repro 05: the try-lock path once skipped the cap (100,000 ends kept, +89 MB).
    const { engine, acquire } = setup({ maxRetained: 50 });
    acquire("holder", { resource: "x" });
    for (let i = 0; i < 5_000; i++) acquire(`try-${i}`, { resource: "x", timeout: 0 });
    expect(engine.stats().retained).toBe(50);
    expect(engine.get("k", "try-4949")).toBeUndefined();
    expect(engine.get("k", "try-4950")?.state).toBe("timed_out");
  });

  it("forgets each namespace's ends `retention` after they ended", () => {
    const { engine, acquire, tick } = setup();
    acquire("a", {}, "A");
    engine.release("A", "a");
    tick(4_000);
    acquire("b", {}, "B");
    engine.release("B", "b");
    expect(engine.nextDeadline()).toBe(1_000 + CONFIG.retention);
    tick(CONFIG.retention - 4_000);
    expect(engine.get("A", "a")).toBeUndefined();
    expect(engine.get("B", "b")?.state).toBe("released");
    expect(engine.nextDeadline()).toBe(5_000 + CONFIG.retention);
    tick(4_000);
    expect(engine.get("B", "b")).toBeUndefined();
    expect(engine.stats()).toMatchObject({ namespaces: 0, retained: 0 });
  });

  it("keeps memory flat over a million one-off lock names", () => {
    const { engine } = setup({ maxRetained: 1_000 });
    for (let i = 0; i < 1_000_000; i++) {
      const id = `r${i}`;
      engine.acquire("k", id, { resource: `job-${i}` });
      engine.release("k", id);
    }
    expect(engine.stats()).toEqual({
      namespaces: 1,
      resources: 0,
      live: 0,
      retained: 1_000,
      timers: 0,
      sessions: 0,
    });
  });

  it("keeps namespaces apart", () => {
    const { engine, acquire } = setup();
    acquire("a", {}, "k1");
    expect(acquire("a", {}, "k2").state).toBe("active");
    expect(engine.release("k2", "b")).toBeUndefined();
    expect(engine.get("k1", "a")?.state).toBe("active");
  });
});

describe("Engine: lock delay", () => {
  it("holds a dropped holder's slot back for its lockDelay before the next grant", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a", { lockDelay: 1_000 });
    const b = acquire("b");
    engine.attach(a);
    engine.attach(b);
    engine.detach(a, false); // the holder's process died
    tick(CONFIG.grace);
    expect(a.state).toBe("dropped");
    expect(b.state).toBe("queued");
    expect(engine.resource("k", "lock")).toMatchObject({ used: 1, heldBack: 1, active: 0 });
    tick(999);
    expect(b.state).toBe("queued");
    tick(1);
    expect(b.state).toBe("active");
    expect(engine.resource("k", "lock")).toMatchObject({ used: 1, heldBack: 0, active: 1 });
  });

  it("applies after an expiry too, but not after a clean release", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a", { lockDelay: 500, expiresIn: 100 });
    const b = acquire("b", { lockDelay: 500 });
    const c = acquire("c");
    for (const r of [a, b, c]) engine.attach(r);
    tick(100);
    expect(a.state).toBe("expired");
    expect(b.state).toBe("queued");
    tick(500);
    expect(b.state).toBe("active");
    engine.release("k", "b");
    expect(c.state).toBe("active");
  });

  it("keeps a held-back resource from being forgotten and recreated around the delay", () => {
    const { engine, acquire, tick } = setup();
    engine.attach(acquire("a", { lockDelay: 1_000 }));
    engine.detach(engine.get("k", "a")!, false);
    tick(CONFIG.grace);
    const late = acquire("late");
    expect(late.state).toBe("queued");
    engine.attach(late);
    tick(1_000);
    expect(late.state).toBe("active");
  });

  it("holds back only the dead holder's units of a semaphore", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a", { capacity: 2, lockDelay: 1_000 });
    engine.attach(acquire("b"));
    engine.attach(a);
    engine.detach(a, false);
    tick(CONFIG.grace);
    expect(acquire("c").state).toBe("queued");
    engine.release("k", "b");
    expect(engine.get("k", "c")!.state).toBe("active");
  });
});

describe("Engine: operators' limits (admin API)", () => {
  it("a raise grants waiters at once; a cut lets holders finish and grants nothing until they fit", () => {
    const { engine, acquire } = setup();
    const holders = [acquire("h1", { capacity: 2 }), acquire("h2", { capacity: 2 })];
    const waiters = ["w1", "w2", "w3"].map((id) => acquire(id, { capacity: 2 }));
    expect(waiters.map((w) => w.state)).toEqual(["queued", "queued", "queued"]);

    engine.setLimit("k", "lock", 4); // raise: two more at once, in order
    expect(waiters.map((w) => w.state)).toEqual(["active", "active", "queued"]);

    engine.setLimit("k", "lock", 2); // cut: 4 held, nobody is taken off
    expect(holders.every((h) => h.state === "active")).toBe(true);
    engine.release("k", "h1");
    engine.release("k", "h2");
    expect(waiters[2]!.state).toBe("queued"); // 2 held: at the new capacity
    engine.release("k", "w1");
    expect(waiters[2]!.state).toBe("active"); // 2 held again, never more
    expect(engine.resource("k", "lock")).toMatchObject({ capacity: 2, used: 2 });
  });

  it("a limit wins over what requests ask, and keeps the resource while idle; lifted, it goes", () => {
    const { engine, acquire } = setup();
    engine.setLimit("k", "api", 3);
    expect(engine.resource("k", "api")).toMatchObject({ capacity: 3, used: 0 });
    const a = acquire("a", { resource: "api", capacity: 10 }); // no capacity_mismatch: 3 holds
    expect(a.capacity).toBe(3);
    engine.release("k", "a");
    expect(engine.resource("k", "api")).toMatchObject({ capacity: 3, used: 0 }); // kept
    engine.setLimit("k", "api", undefined);
    expect(engine.resource("k", "api")).toBeUndefined(); // idle and unlimited: forgotten
    expect(acquire("b", { resource: "api", capacity: 5 }).capacity).toBe(5);
  });

  it("refuses a capacity below a live request's load, naming it", () => {
    const { engine, acquire } = setup();
    acquire("big", { resource: "pool", capacity: 10, load: 6 });
    const refused = engine.setLimit("k", "pool", 5);
    expect(refused).toMatchObject({ ok: false, code: "capacity_mismatch", field: "capacity" });
    expect((refused as { detail: string }).detail).toMatch(/load \(6\) of request big/);
    expect(engine.resource("k", "pool")).toMatchObject({ capacity: 10 });
  });

  it("restores a limited namespace's tokens from the store, not from the clock", () => {
    // Found by the operator chaos run: limits were restored before the tokens, so a namespace
    // with a limit restarted its tokens from the clock (backwards, had the clock stepped back).
    const { engine, clock, acquire } = setup();
    clock.t = 1; // the clock says 1 ms: 1,000 µs, far below the saved token
    engine.restore([], 1_000, new Map([["k", 5_000]]), 0, new Map(), new Map([["k\0lock", 2]]));
    expect(acquire("a").fencingToken).toBe(5_001);
  });

  it("restores limits before requests: a restored resource has its operator's capacity", () => {
    const { engine } = setup();
    engine.restore([], 1_000, new Map(), 0, new Map(), new Map([["k\0api", 7]]));
    expect(engine.resource("k", "api")).toMatchObject({ capacity: 7, used: 0 });
  });
});

describe("Engine: rate limits stacked with the capacity", () => {
  const rate = (limit: number, window: number, more: object = {}) => ({
    limit,
    window,
    kind: "sliding" as const,
    counts: "requests" as const,
    ...more,
  });

  it("grants no more than the limit in any window, in arrival order, and wakes the line when it may", () => {
    const { engine, acquire, tick } = setup();
    expect(engine.setRates("k", "api", [rate(2, 1_000)])).not.toHaveProperty("ok");
    const a = acquire("a", { resource: "api", capacity: 10 });
    tick(100);
    const b = acquire("b", { resource: "api", capacity: 10 });
    const c = acquire("c", { resource: "api", capacity: 10 });
    const d = acquire("d", { resource: "api", capacity: 10, priority: 1 });
    expect([a.state, b.state, c.state]).toEqual(["active", "active", "queued"]);
    engine.release("k", "a"); // a release gives no rate back
    expect(c.state).toBe("queued");
    expect(engine.nextDeadline()).toBe(1_000 + 1_000); // a's grant leaves the window
    tick(899);
    expect(c.state).toBe("queued");
    tick(1);
    expect([c.state, d.state]).toEqual(["active", "queued"]); // b still counts
    tick(100);
    expect(d.state).toBe("active");
  });

  it("counts load when told to, refuses a load no window could hold, and keeps the head first", () => {
    const { engine, acquire, tick } = setup();
    engine.setRates("k", "llm", [rate(100, 60_000, { counts: "load" }), rate(3, 60_000)]);
    const big = engine.acquire("k", "x", { resource: "llm", capacity: 200, load: 101 });
    expect(big).toMatchObject({ ok: false, code: "capacity_mismatch", field: "load" });
    expect(!big.ok && big.detail).toContain("100 units of load per 60000 ms");
    const a = acquire("a", { resource: "llm", capacity: 200, load: 60 });
    const b = acquire("b", { resource: "llm", capacity: 200, load: 50 });
    const c = acquire("c", { resource: "llm", capacity: 200, load: 1 });
    // b does not fit the 100 tokens; c would, but never passes b.
    expect([a.state, b.state, c.state]).toEqual(["active", "queued", "queued"]);
    for (const r of [a, b, c]) engine.attach(r); // a poll open on each: they live on
    tick(60_000);
    expect([b.state, c.state]).toEqual(["active", "active"]);
  });

  it("counts fixed windows on the clock's boundaries", () => {
    const { engine, acquire, tick, clock } = setup();
    clock.t = 10_900; // 100 ms before a 1 s boundary
    engine.setRates("k", "api", [rate(1, 1_000, { kind: "fixed" })]);
    const a = acquire("a", { resource: "api", capacity: 5 });
    const b = acquire("b", { resource: "api", capacity: 5 });
    expect([a.state, b.state]).toEqual(["active", "queued"]);
    tick(99);
    expect(b.state).toBe("queued");
    tick(1); // 11,000: a new window
    expect(b.state).toBe("active");
  });

  it("stacks with the capacity: a request waits while any limit would be exceeded", () => {
    const { engine, acquire, tick } = setup();
    engine.setRates("k", "api", [rate(10, 1_000)]);
    const a = acquire("a", { resource: "api", capacity: 1 });
    const b = acquire("b", { resource: "api", capacity: 1 });
    expect(b.state).toBe("queued"); // room in the rate, none in the capacity
    tick(2_000);
    expect(b.state).toBe("queued");
    engine.release("k", a.id);
    expect(b.state).toBe("active");
  });

  it("refuses limits a waiter could never fit, applies new ones to the line at once, and lifts them", () => {
    const { engine, acquire } = setup();
    engine.setRates("k", "api", [rate(1, 10_000)]);
    acquire("a", { resource: "api", capacity: 5 });
    const b = acquire("b", { resource: "api", capacity: 5, load: 3 });
    expect(b.state).toBe("queued");
    expect(engine.setRates("k", "api", [rate(2, 10_000, { counts: "load" })])).toMatchObject({
      ok: false,
      field: "rates",
    });
    // A raise counts the grants already made (a's), and serves b at once.
    engine.setRates("k", "api", [rate(2, 10_000)]);
    expect(b.state).toBe("active");
    const c = acquire("c", { resource: "api", capacity: 5 });
    expect(c.state).toBe("queued");
    engine.setRates("k", "api", undefined);
    expect(c.state).toBe("active");
  });

  it("keeps a rate-limited resource while idle, so that a new request cannot reset its count", () => {
    const { engine, acquire } = setup();
    engine.setRates("k", "api", [rate(1, 60_000)]);
    acquire("a", { resource: "api" });
    engine.release("k", "a");
    const b = acquire("b", { resource: "api", capacity: 3 }); // idle: its capacity is b's
    expect(b.state).toBe("queued");
    expect(engine.resource("k", "api")).toMatchObject({ capacity: 3, queued: 1 });
  });

  it("after a restart, a rate-limited resource keeps the capacity its saved requests had", () => {
    const { engine, acquire } = setup();
    const held = {
      ns: "k",
      id: "h",
      session: "s",
      name: "api",
      load: 1,
      priority: 10,
      capacity: 5,
      askedCapacity: 5,
      expiresIn: 60_000,
      lockDelay: 0,
      seq: 1,
      state: "active" as const,
      fencingToken: 1,
      expiresAt: 61_000,
      waitUntil: Number.POSITIVE_INFINITY,
    };
    engine.restore(
      [held],
      14_000,
      new Map(),
      0,
      new Map(),
      new Map(),
      new Map([["k\0api", [rate(5, 1_000)]]]),
    );
    expect(engine.resource("k", "api")).toMatchObject({ capacity: 5, used: 1 });
    expect(acquire("a", { resource: "api", capacity: 5 }).state).toBe("queued"); // full window
  });

  it("after a restart counts each limit as full for the window that holds it", () => {
    const { engine, acquire, tick } = setup();
    engine.restore(
      [],
      14_000,
      new Map(),
      0,
      new Map(),
      new Map(),
      new Map([["k\0api", [rate(5, 1_000)]]]),
    );
    const a = acquire("a", { resource: "api", capacity: 5 });
    expect(a.state).toBe("queued");
    tick(999);
    expect(a.state).toBe("queued");
    tick(1);
    expect(a.state).toBe("active");
  });
});

describe("Engine: concurrency, requests holding at once whatever their load", () => {
  it("grants at most N requests at once beside the capacity in units, and counts a held-back one", () => {
    const { engine, acquire, tick } = setup();
    engine.setLimits("k", "llm", { capacity: 1_000, concurrency: 2 });
    const [a, b, c] = ["a", "b", "c"].map((id) => acquire(id, { resource: "llm", load: 100 }));
    expect([a!.state, b!.state, c!.state]).toEqual(["active", "active", "queued"]);
    engine.revoke("k", "a", "operator"); // its units are held back for grace: it may still believe
    expect(c!.state).toBe("queued");
    expect(engine.findNamespace("k")?.resources.get("llm")?.heldBackCount).toBe(1);
    tick(CONFIG.grace);
    expect(c!.state).toBe("active");
    engine.setLimits("k", "llm", { concurrency: null });
    const d = acquire("d", { resource: "llm", load: 100 });
    expect(d.state).toBe("active"); // lifted: only the capacity counts
    expect(engine.resource("k", "llm")).toMatchObject({ active: 3, used: 300 });
  });
});

describe("Engine: lanes", () => {
  /** Grants `n` times on `lock`, releasing the oldest holder each time; the lanes served, in order. */
  function serve(engine: Engine, holders: Request[], all: Request[], n: number): string[] {
    const served: string[] = [];
    for (let i = 0; i < n; i++) {
      engine.release("k", holders.shift()!.id);
      const next = all.find((r) => r.state === "active" && !holders.includes(r));
      if (next === undefined) break;
      holders.push(next);
      served.push(next.lane);
    }
    return served;
  }

  it("fair: a burst of 10,000 in one lane delays another lane's next request by one turn at most", () => {
    const { engine, acquire } = setup({ maxQueue: 20_000 });
    const first = acquire("first", { lane: "batch" });
    const burst = Array.from({ length: 10_000 }, (_, i) => acquire(`b${i}`, { lane: "batch" }));
    const interactive = acquire("i0", { lane: "interactive", priority: 0 });
    engine.release("k", first.id); // batch's turn: its head goes first…
    expect(burst[0]!.state).toBe("active");
    engine.release("k", burst[0]!.id); // …then interactive's
    expect(interactive.state).toBe("active");
    expect(burst[1]!.state).toBe("queued");
  });

  it("fair: lanes with waiters take turns in proportion to their weights", () => {
    const { engine, acquire } = setup();
    engine.setLimits("k", "lock", { lanes: { strategy: "fair", weights: { a: 2 } } });
    const holder = acquire("h", { lane: "a" });
    const all = [holder];
    for (let i = 0; i < 6; i++) all.push(acquire(`a${i}`, { lane: "a" }));
    for (let i = 0; i < 6; i++) all.push(acquire(`b${i}`, { lane: "b" }));
    expect(serve(engine, [holder], all, 9).join(" ")).toBe("a a b a a b a a b");
  });

  it("keeps priority, then arrival, within a lane, and never passes a lane's head", () => {
    const { engine, acquire } = setup();
    const h = acquire("h", { capacity: 3, load: 3, lane: "a" });
    const big = acquire("big", { capacity: 3, load: 3, lane: "a" });
    const small = acquire("small", { capacity: 3, load: 1, lane: "a" });
    const urgent = acquire("urgent", { capacity: 3, load: 1, lane: "a", priority: 99 });
    engine.release("k", h.id);
    expect([urgent.state, big.state, small.state]).toEqual(["active", "queued", "queued"]);
  });

  it("strict: each lane owns its share; a lane never takes another's, and one without a share is refused", () => {
    const { engine, acquire } = setup();
    engine.setLimits("k", "lock", {
      capacity: 4,
      lanes: { strategy: "strict", shares: { interactive: 1, batch: 3 } },
    });
    const batch = Array.from({ length: 5 }, (_, i) => acquire(`b${i}`, { lane: "batch" }));
    expect(batch.map((r) => r.state)).toEqual(["active", "active", "active", "queued", "queued"]);
    const i0 = acquire("i0", { lane: "interactive" });
    const i1 = acquire("i1", { lane: "interactive" });
    expect([i0.state, i1.state]).toEqual(["active", "queued"]);
    engine.release("k", i0.id);
    expect(i1.state).toBe("active"); // its own share; batch's waiters never get it
    expect(batch[3]!.state).toBe("queued");
    const r = engine.acquire("k", "x", { resource: "lock" });
    expect(r).toMatchObject({ ok: false, code: "capacity_mismatch", field: "lane" });
    expect(!r.ok && r.detail).toMatch(/lane "default" has no share.*interactive, batch/);
    const over = engine.acquire("k", "y", { resource: "lock", lane: "interactive", load: 2 });
    expect(over).toMatchObject({ ok: false, code: "capacity_mismatch", field: "load" });
    expect(engine.resource("k", "lock")?.lanes).toEqual({
      interactive: { queued: 0, active: 1, used: 1 },
      batch: { queued: 2, active: 3, used: 3 },
    });
  });

  it("reserved: units held for a lane are never taken by others, whatever their priority", () => {
    const { engine, acquire } = setup();
    engine.setLimits("k", "lock", {
      capacity: 3,
      lanes: { strategy: "fair", reserved: { interactive: 1 } },
    });
    const others = ["a", "b", "c"].map((id) => acquire(id, { priority: 1_000 }));
    expect(others.map((r) => r.state)).toEqual(["active", "active", "queued"]);
    const i0 = acquire("i0", { lane: "interactive", priority: -5 });
    expect(i0.state).toBe("active"); // its reservation, though others wait ahead of it
    // Its reservation first, then the pool, in turn with the others.
    const i1 = acquire("i1", { lane: "interactive" });
    engine.release("k", others[0]!.id);
    expect([others[2]!.state, i1.state]).toEqual(["active", "queued"]);
    const r = engine.acquire("k", "big", { resource: "lock", load: 3 });
    expect(r).toMatchObject({ ok: false, code: "capacity_mismatch", field: "load" });
  });

  it("refuses shares and reservations beyond the capacity, or without an operator's capacity", () => {
    const { engine, acquire } = setup();
    acquire("a");
    expect(
      engine.setLimits("k", "lock", { lanes: { strategy: "strict", shares: { a: 1 } } }),
    ).toMatchObject({ ok: false, field: "lanes", detail: expect.stringMatching(/set "capacity"/) });
    expect(
      engine.setLimits("k", "lock", {
        capacity: 2,
        lanes: { strategy: "fair", reserved: { a: 2, b: 1 } },
      }),
    ).toMatchObject({ ok: false, field: "lanes", detail: expect.stringMatching(/add up to 3/) });
    engine.setLimits("k", "lock", { capacity: 3, lanes: { strategy: "fair", reserved: { a: 2 } } });
    expect(engine.setLimits("k", "lock", { capacity: 1 })).toMatchObject({
      ok: false,
      field: "capacity",
    });
    expect(engine.setLimits("k", "lock", { capacity: null })).toMatchObject({
      ok: false,
      field: "capacity",
    });
    // A waiter that would then never be granted: refused, as for a capacity.
    expect(acquire("w").state).toBe("queued"); // the pool (3 - 2) is taken by "a"
    expect(
      engine.setLimits("k", "lock", { lanes: { strategy: "strict", shares: { a: 2 } } }),
    ).toMatchObject({ ok: false, field: "lanes", detail: expect.stringMatching(/request w/) });
  });

  it("a resource without lanes keeps its single line; lanes come with the first request that names one", () => {
    const { engine, acquire } = setup();
    acquire("a", { capacity: 2 });
    expect(engine.resource("k", "lock")?.lanes).toBeUndefined();
    acquire("b", { capacity: 2, lane: "x" });
    acquire("c", { capacity: 2, lane: "x" });
    expect(engine.resource("k", "lock")?.lanes).toEqual({
      default: { queued: 0, active: 1, used: 1 },
      x: { queued: 1, active: 1, used: 1 },
    });
  });

  it("a retried create in another lane is a conflict", () => {
    const { engine, acquire } = setup();
    acquire("a", { lane: "x" });
    expect(engine.acquire("k", "a", { resource: "lock", lane: "y" })).toMatchObject({
      ok: false,
      code: "request_conflict",
    });
    expect(engine.acquire("k", "a", { resource: "lock", lane: "x" })).toMatchObject({ ok: true });
  });

  it("a lane named like an object's own methods (toString, constructor, __proto__) is a lane like any other", () => {
    const { engine, acquire } = setup();
    engine.setLimits("k", "lock", {
      capacity: 4,
      lanes: { strategy: "strict", shares: { a: 2 } },
    });
    for (const lane of ["toString", "constructor", "__proto__", "hasOwnProperty"]) {
      // No share: refused at once, as any lane without one (it used to wait for ever).
      const r = engine.acquire("k", `s-${lane}`, { resource: "lock", lane });
      expect(r).toMatchObject({ ok: false, code: "capacity_mismatch", field: "lane" });
    }
    engine.setLimits("k", "pool", {
      capacity: 4,
      lanes: { strategy: "fair", reserved: { gold: 3 } },
    });
    const r = engine.acquire("k", "big", { resource: "pool", lane: "toString", load: 4 });
    expect(r).toMatchObject({ ok: false, code: "capacity_mismatch", field: "load" });
    const silver = acquire("silver", { resource: "pool", lane: "silver" });
    expect(silver.state).toBe("active"); // the pool's one unit: nothing blocks it
  });

  it("fair: a lane served out of turn does not give the lane whose turn it is more than its weight", () => {
    const { engine, tick } = setup();
    engine.setLimits("k", "lock", { lanes: { strategy: "fair", weights: { a: 3 } } });
    // Each hold expires after 100 ms: a step is one hand-over.
    const make = (id: string, lane: string, session: string) => {
      const r = engine.acquire("k", id, { resource: "lock", lane, expiresIn: 100 }, session);
      if (!r.ok) throw new Error(r.detail);
    };
    make("h", "x", "sh");
    for (let i = 0; i < 10; i++) make(`a${i}`, "a", "sa");
    for (let i = 0; i < 4; i++) make(`b${i}`, "b", "sb");
    for (let i = 0; i < 4; i++) make(`c${i}`, "c", "sc");
    const order: string[] = [];
    const step = () => {
      for (const id of ["sa", "sb", "sc", "sh"]) {
        const session = engine.findSession("k", id);
        if (session && !session.away) engine.touch(session);
      }
      tick(100);
      const holder = engine.findNamespace("k")!.resources.get("lock")!.holders.head;
      if (holder) order.push(holder.id);
    };
    step();
    step(); // a0 a1: a's turn has one grant left
    engine.leave(engine.findSession("k", "sa")!);
    step(); // a's waiters away: b is served out of turn
    engine.touch(engine.findSession("k", "sa")!);
    for (let i = 0; i < 5; i++) step();
    // a's turn: a0 a1, (b0 out of turn), a2 — three, its weight — then c, b, and a's next turn.
    expect(order.join(" ")).toBe("a0 a1 b0 a2 c0 b1 a3 a4");
  });

  it("restores fair lanes without an operator's capacity on the capacity their requests gave", () => {
    const { engine, acquire, clock } = setup();
    engine.setLimits("k", "lock", { lanes: { strategy: "fair", weights: { a: 2 } } });
    acquire("h", { capacity: 5, load: 3, lane: "a" });
    acquire("w", { capacity: 5, load: 3, lane: "b" });
    const saved = [...engine.liveRequests()].map((r) => ({ ...savedOf(r) }));
    const next = new Engine(CONFIG, clock);
    next.restore(
      saved,
      5_000,
      new Map(),
      0,
      new Map(),
      new Map(),
      new Map(),
      new Map(),
      new Map([["k\0lock", { strategy: "fair", weights: { a: 2 } } as const]]),
    );
    expect(next.resource("k", "lock")).toMatchObject({ capacity: 5, used: 3, queued: 1 });
    next.release("k", "h");
    expect(next.get("k", "w")?.state).toBe("active"); // it used to find a capacity of 1
  });

  it("restores requests into their lanes, after the lanes", () => {
    const { engine, acquire, clock } = setup();
    engine.setLimits("k", "lock", {
      capacity: 2,
      lanes: { strategy: "strict", shares: { a: 1, b: 1 } },
    });
    for (const [id, lane] of [
      ["a0", "a"],
      ["a1", "a"],
      ["b0", "b"],
    ] as const)
      acquire(id, { lane });
    const saved = [...engine.liveRequests()].map((r) => ({ ...savedOf(r) }));
    const next = new Engine(CONFIG, clock);
    next.restore(
      saved,
      5_000,
      new Map(),
      0,
      new Map(),
      new Map([["k\0lock", 2]]),
      new Map(),
      new Map(),
      new Map([["k\0lock", { strategy: "strict", shares: { a: 1, b: 1 } } as const]]),
    );
    expect(next.resource("k", "lock")?.lanes).toEqual({
      a: { queued: 1, active: 1, used: 1 },
      b: { queued: 0, active: 1, used: 1 },
    });
    next.release("k", "a0");
    expect(next.get("k", "a1")?.state).toBe("active");
  });
});
