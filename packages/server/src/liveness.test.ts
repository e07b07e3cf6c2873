import type { AcquireBody } from "@ratequeue/core";
import { describe, expect, it } from "vitest";
import { Engine, type EngineConfig, type SavedRequest } from "./engine.js";
import { Session } from "./liveness.js";

/**
 * The liveness rule of `liveness.ts`, by example, on a fake clock: a session's holders are never
 * dropped sooner than `grace` after the last message from it; an away session's waiters keep
 * their place for `waitGrace` but are passed over; a session that comes back is served in its
 * original place; sessions are forgotten once nothing is left of them.
 */

const CONFIG: EngineConfig = {
  defaultExpiresIn: 600_000,
  grace: 150,
  waitGrace: 5_000,
  repollGrace: 4_000,
  maxQueue: 1_000,
  retention: 10_000,
  maxRetained: 1_000,
};
const { grace, waitGrace, repollGrace } = CONFIG;

function setup(config: Partial<EngineConfig> = {}) {
  const clock = { t: 1_000, now: () => clock.t };
  const gone: Session[] = [];
  const engine = new Engine(
    { ...CONFIG, ...config },
    clock,
    () => {},
    (s) => gone.push(s),
  );
  /** Request `id` in session `sid` (or in one of its own), which must not be refused. */
  const acquire = (id: string, sid?: string, body: Partial<AcquireBody> = {}) => {
    const r = engine.acquire("k", id, { resource: "lock", ...body }, sid);
    if (!r.ok) throw new Error(`refused: ${r.code} ${r.detail}`);
    return r.request;
  };
  const session = (sid: string) => engine.session("k", sid);
  /** Moves the clock by `ms`, running every deadline at its time, as the host's timer would. */
  const tick = (ms: number) => {
    const target = clock.t + ms;
    for (let due = engine.nextDeadline(); due !== undefined && due <= target; ) {
      clock.t = Math.max(clock.t, due);
      engine.advance();
      due = engine.nextDeadline();
    }
    clock.t = target;
    engine.advance();
  };
  return { clock, engine, gone, acquire, session, tick };
}

describe("Session (liveness.ts)", () => {
  it("lives while attached, and only the last open connection counts", () => {
    const s = new Session("s", 100);
    s.attach();
    s.attach();
    expect(s.nextDeadline()).toBe(Number.POSITIVE_INFINITY);
    s.detach("closed", 200, CONFIG);
    expect(s.away).toBe(false);
    expect(s.nextDeadline()).toBe(Number.POSITIVE_INFINITY);
    s.detach("closed", 300, CONFIG);
    expect(s.away).toBe(true);
    expect(s.holdUntil).toBe(300 + grace);
    expect(s.waitUntil).toBe(300 + waitGrace);
    // A detach with nothing open changes nothing.
    s.detach("answered", 400, CONFIG);
    expect(s.holdUntil).toBe(300 + grace);
  });

  it("is due at its holders' deadline while it has holders, else at its waiters'", () => {
    const s = new Session("s", 0);
    s.attach();
    s.detach("closed", 1_000, CONFIG);
    s.queued = 1;
    expect(s.nextDeadline()).toBe(1_000 + waitGrace);
    s.active = 1;
    expect(s.nextDeadline()).toBe(1_000 + grace);
  });

  it("comes back from away on attach or touch, and says so once", () => {
    const s = new Session("s", 0);
    s.leave(10, CONFIG);
    expect(s.away).toBe(true);
    expect(s.touch(20, CONFIG)).toBe(true);
    expect(s.away).toBe(false);
    expect(s.holdUntil).toBe(20 + repollGrace);
    expect(s.touch(30, CONFIG)).toBe(false);
    s.leave(40, CONFIG);
    expect(s.attach()).toBe(true);
    expect(s.attach()).toBe(false);
    // A touch while attached changes nothing: the open connection keeps it alive.
    expect(s.touch(50, CONFIG)).toBe(false);
    expect(s.nextDeadline()).toBe(Number.POSITIVE_INFINITY);
  });
});

describe("Engine liveness: holders", () => {
  it("drops a session's holders exactly `grace` after its connection closed", () => {
    const { engine, clock, acquire, session, tick } = setup();
    const s = session("s");
    engine.attachSession(s);
    const a = acquire("a", "s");
    tick(60_000); // attached: alive however long
    expect(a.state).toBe("active");
    const closedAt = clock.t;
    engine.detachSession(s, "closed");
    tick(grace - 1);
    expect(a.state).toBe("active");
    tick(1);
    expect(a.state).toBe("dropped");
    expect(a.endedAt).toBe(closedAt + grace);
  });

  it("never drops a holder while its session is attached, whatever else happens", () => {
    const { engine, acquire, session, tick } = setup();
    const s = session("s");
    engine.attachSession(s);
    const a = acquire("a", "s");
    engine.leave(s); // a stray leave with a connection open
    engine.detachSession(s, "answered"); // nothing else open: this one counts
    engine.attachSession(s);
    tick(repollGrace * 3);
    expect(a.state).toBe("active");
    expect(s.away).toBe(false);
  });

  it("gives repollGrace after an answered detach", () => {
    const { engine, clock, acquire, session, tick } = setup();
    const s = session("s");
    engine.attachSession(s);
    const a = acquire("a", "s");
    tick(10_000);
    const answeredAt = clock.t;
    engine.detachSession(s, "answered");
    tick(repollGrace - 1);
    expect(a.state).toBe("active");
    tick(1);
    expect(a.state).toBe("dropped");
    expect(a.endedAt).toBe(answeredAt + repollGrace);
  });

  it("cuts repollGrace to `grace` when the answer's connection closes, never below the rule", () => {
    const { engine, clock, acquire, session, tick } = setup();
    const s = session("s");
    engine.attachSession(s);
    const a = acquire("a", "s");
    engine.detachSession(s, "answered");
    const answeredAt = clock.t;
    tick(1_000);
    engine.leave(s);
    const leftAt = clock.t;
    tick(grace - 1);
    expect(a.state).toBe("active");
    tick(1);
    expect(a.endedAt).toBe(leftAt + grace);
    expect(a.endedAt).toBeGreaterThanOrEqual(answeredAt + grace);
  });

  it("counts every message as a contact: acquire, release, touch", () => {
    const { engine, clock, acquire, session, tick } = setup();
    const s = session("s");
    const a = acquire("a", "s"); // created by its first message: contact now
    tick(repollGrace - 1);
    acquire("b", "s", { resource: "other" }); // contact
    tick(repollGrace - 1);
    engine.release("k", "b"); // contact
    tick(repollGrace - 1);
    engine.touch(s); // contact
    const touchedAt = clock.t;
    tick(repollGrace - 1);
    acquire("a", "s"); // a retried create of a live request: contact
    const retriedAt = clock.t;
    expect(a.state).toBe("active");
    tick(repollGrace - 1);
    expect(a.state).toBe("active");
    tick(1);
    expect(a.state).toBe("dropped");
    expect(a.endedAt).toBe(retriedAt + repollGrace);
    expect(retriedAt).toBe(touchedAt + repollGrace - 1);
  });
});

describe("Engine liveness: waiters of an away session", () => {
  /** Holder `h` on the lock (session h, attached), then waiters `a` (session a) and `b`. */
  function line() {
    const t = setup();
    const { engine, acquire, session } = t;
    const h = session("h");
    engine.attachSession(h);
    const holder = acquire("h", "h");
    const sa = session("a");
    engine.attachSession(sa);
    const a = acquire("a", "a");
    const sb = session("b");
    engine.attachSession(sb);
    const b = acquire("b", "b");
    return { ...t, h, holder, sa, a, sb, b };
  }

  it("keeps an away waiter's place for waitGrace, passing it over meanwhile", () => {
    const { engine, clock, sa, a, b, tick } = line();
    const closedAt = clock.t;
    engine.detachSession(sa, "closed");
    expect(engine.resource("k", "lock")?.away).toBe(1);
    engine.release("k", "h");
    // The later waiter of a present session goes first.
    expect(b.state).toBe("active");
    expect(a.state).toBe("queued");
    engine.release("k", "b");
    // Nobody else waits: the lock stays free rather than go to a client that may be dead.
    expect(a.state).toBe("queued");
    expect(engine.resource("k", "lock")?.used).toBe(0);
    tick(waitGrace - 1);
    expect(a.state).toBe("queued");
    tick(1);
    expect(a.state).toBe("dropped");
    expect(a.endedAt).toBe(closedAt + waitGrace);
    expect(engine.resource("k", "lock")).toBeUndefined();
  });

  it("drops an away session's holders at grace and keeps its waiters until waitGrace", () => {
    const { engine, clock, acquire, session, tick } = setup();
    const other = acquire("o", undefined, { resource: "lock2" }); // a request of its own session
    engine.attach(other);
    const s = session("s");
    engine.attachSession(s);
    const holder = acquire("x", "s");
    const waiter = acquire("y", "s", { resource: "lock2" });
    expect([holder.state, waiter.state]).toEqual(["active", "queued"]);
    const closedAt = clock.t;
    engine.detachSession(s, "closed");
    tick(grace - 1);
    expect(holder.state).toBe("active");
    tick(1);
    expect(holder.state).toBe("dropped");
    expect(holder.endedAt).toBe(closedAt + grace);
    expect(waiter.state).toBe("queued");
    tick(waitGrace - grace - 1);
    expect(waiter.state).toBe("queued");
    tick(1);
    expect(waiter.state).toBe("dropped");
    expect(waiter.endedAt).toBe(closedAt + waitGrace);
    expect(other.state).toBe("active");
  });

  it("puts a returning session's waiter back ahead of those that came after it", () => {
    const { engine, acquire, session, sa, a, b, tick } = line();
    engine.detachSession(sa, "closed");
    tick(1_000);
    const sc = session("c");
    engine.attachSession(sc);
    const c = acquire("c", "c"); // arrives while a is away
    engine.release("k", "h");
    expect(b.state).toBe("active"); // a passed over
    tick(waitGrace - 2_000);
    engine.attachSession(sa); // back before waitGrace
    expect(engine.resource("k", "lock")?.away).toBe(0);
    engine.release("k", "b");
    expect(a.state).toBe("active"); // its old place: ahead of c
    expect(c.state).toBe("queued");
    engine.release("k", "a");
    expect(c.state).toBe("active");
  });

  it("serves a returning session's waiter before later waiters even if it was passed over", () => {
    const { engine, sa, a, b, tick } = line();
    engine.detachSession(sa, "closed");
    tick(100);
    engine.attachSession(sa);
    engine.release("k", "h");
    expect(a.state).toBe("active");
    expect(b.state).toBe("queued");
  });

  it("brings an away session back on a touch, serving its waiter if there is room", () => {
    const { engine, clock, sa, a, tick } = line();
    engine.detachSession(sa, "closed");
    engine.release("k", "h");
    engine.release("k", "b");
    expect(a.state).toBe("queued"); // the lock is free, but a is away
    tick(grace * 3);
    engine.touch(sa);
    const touchedAt = clock.t;
    expect(sa.away).toBe(false);
    expect(a.state).toBe("active");
    // Back, but between connections: it lives repollGrace from the touch.
    tick(repollGrace - 1);
    expect(a.state).toBe("active");
    tick(1);
    expect(a.state).toBe("dropped");
    expect(a.endedAt).toBe(touchedAt + repollGrace);
  });

  it("brings an away session back on a new acquire in it", () => {
    const { engine, acquire, sa, a } = line();
    engine.detachSession(sa, "closed");
    engine.release("k", "h");
    engine.release("k", "b");
    expect(a.state).toBe("queued");
    acquire("a2", "a", { resource: "elsewhere" });
    expect(sa.away).toBe(false);
    expect(a.state).toBe("active");
  });
});

describe("Engine liveness: forgetting sessions", () => {
  it("forgets an empty explicit session repollGrace after it was last heard from", () => {
    const { engine, gone, session, tick } = setup();
    const s = session("s");
    expect(engine.stats().sessions).toBe(1);
    tick(repollGrace - 1);
    expect(engine.findSession("k", "s")).toBe(s);
    tick(1);
    expect(engine.findSession("k", "s")).toBeUndefined();
    expect(gone).toEqual([s]);
    expect(engine.stats()).toMatchObject({ sessions: 0, namespaces: 0, timers: 0 });
  });

  it("keeps an empty session while attached, and forgets it `grace` after it closes", () => {
    const { engine, clock, session, tick } = setup();
    const s = session("s");
    engine.attachSession(s);
    tick(repollGrace * 10);
    expect(engine.findSession("k", "s")).toBe(s);
    expect(engine.stats().timers).toBe(0);
    engine.detachSession(s, "closed");
    const closedAt = clock.t;
    tick(grace - 1);
    expect(engine.stats().sessions).toBe(1);
    tick(1);
    expect(engine.stats().sessions).toBe(0);
    expect(clock.t).toBe(closedAt + grace);
  });

  it("forgets a session once its last request ended and its time is up, not before", () => {
    const { engine, clock, acquire, tick } = setup();
    acquire("a", "s");
    tick(1_000);
    engine.release("k", "a"); // a contact: the client may send more
    const releasedAt = clock.t;
    expect(engine.stats()).toMatchObject({ sessions: 1, live: 0 });
    tick(repollGrace - 1);
    expect(engine.stats().sessions).toBe(1);
    tick(1);
    expect(engine.stats().sessions).toBe(0);
    expect(clock.t).toBe(releasedAt + repollGrace);
    tick(CONFIG.retention);
    expect(engine.stats()).toEqual({
      namespaces: 0,
      resources: 0,
      live: 0,
      retained: 0,
      timers: 0,
      sessions: 0,
    });
  });

  it("starts a new session when a forgotten one's id is used again", () => {
    const { engine, acquire, session, tick } = setup();
    const first = session("s");
    tick(repollGrace);
    expect(engine.findSession("k", "s")).toBeUndefined();
    const a = acquire("a", "s");
    expect(a.session).not.toBe(first);
    expect(engine.findSession("k", "s")).toBe(a.session);
    expect(a.session.away).toBe(false);
  });

  it("forgets a request's own session with the request, even with a poll open", () => {
    const { engine, acquire, tick } = setup();
    const a = acquire("a");
    engine.attach(a);
    // Only named sessions count as sessions; a's expiry is a timer, its attached session is not.
    expect(engine.stats()).toMatchObject({ sessions: 0, timers: 1 });
    acquire("b", undefined, { resource: "other" });
    expect(engine.stats().timers).toBe(3); // and b's expiry, and b's session (no poll yet)
    engine.release("k", "a");
    engine.release("k", "b");
    expect(engine.stats()).toMatchObject({ sessions: 0, timers: 0, live: 0, retained: 2 });
    engine.detach(a, false); // the poll ends after the request: nothing to do
    expect(a.session.pollers).toBe(1);
    tick(CONFIG.retention);
    expect(engine.stats()).toMatchObject({ timers: 0, retained: 0, namespaces: 0 });
  });

  it("drops a request of its own session repollGrace after its create if nobody polls", () => {
    const { clock, acquire, tick } = setup();
    const createdAt = clock.t;
    const a = acquire("a");
    tick(repollGrace - 1);
    expect(a.state).toBe("active");
    tick(1);
    expect(a.state).toBe("dropped");
    expect(a.endedAt).toBe(createdAt + repollGrace);
  });
});

describe("Engine liveness: restore", () => {
  const base: Omit<SavedRequest, "id" | "session" | "state" | "seq" | "fencingToken"> = {
    ns: "k",
    name: "lock",
    load: 1,
    priority: 0,
    capacity: 1,
    askedCapacity: undefined,
    expiresIn: 600_000,
    lockDelay: 0,
    expiresAt: 10_000_000,
    waitUntil: Number.POSITIVE_INFINITY,
  };
  const saved: SavedRequest[] = [
    { ...base, id: "h", session: "s", state: "active", seq: 1, fencingToken: 5_000_000 },
    { ...base, id: "w", session: undefined, state: "queued", seq: 2, fencingToken: 0 },
    { ...base, id: "x", session: "t", state: "queued", seq: 3, fencingToken: 0 },
  ];
  const recovery = 14_000; // longer than repollGrace: a window for clients to come back

  it("gives restored sessions the recovery window, then drops what did not come back", () => {
    const { engine, clock, tick } = setup();
    const restoredAt = clock.t;
    engine.restore(saved, recovery);
    const [h, w, x] = ["h", "w", "x"].map((id) => engine.get("k", id)!);
    expect([h!.state, w!.state, x!.state]).toEqual(["active", "queued", "queued"]);
    expect(engine.stats()).toMatchObject({ live: 3, sessions: 2 });
    tick(recovery - 1);
    expect([h!.state, w!.state, x!.state]).toEqual(["active", "queued", "queued"]);
    tick(1);
    expect(h!.state).toBe("dropped");
    expect(h!.endedAt).toBe(restoredAt + recovery);
    // The waiters' sessions were as silent: they end at the same time.
    expect(w!.state).toBe("dropped");
    expect(x!.state).toBe("dropped");
    expect(engine.stats()).toMatchObject({ live: 0, sessions: 0, resources: 0 });
  });

  it("keeps what a returning client claims, and serves the line in its old order", () => {
    const { engine, clock, tick } = setup();
    engine.restore(saved, recovery);
    const [h, w, x] = ["h", "w", "x"].map((id) => engine.get("k", id)!);
    tick(recovery - 100);
    engine.attachSession(engine.session("k", "s"));
    engine.attach(w!);
    engine.touch(engine.session("k", "t"));
    const touchedAt = clock.t;
    tick(1_000);
    expect([h!.state, w!.state, x!.state]).toEqual(["active", "queued", "queued"]);
    engine.release("k", "h");
    expect(w!.state).toBe("active");
    expect(w!.fencingToken).toBeGreaterThan(5_000_000);
    engine.release("k", "w");
    expect(x!.state).toBe("active");
    tick(touchedAt + repollGrace - clock.t - 1);
    expect(x!.state).toBe("active");
    tick(1);
    expect(x!.state).toBe("dropped");
  });
});

/** Bugs the property test found (engine.property.test.ts), fixed, and pinned here. */
describe("Engine liveness: found by the property test", () => {
  it("a retried create in a session touches the live session of that id", () => {
    const { engine, clock, acquire, tick } = setup({ repollGrace: 1_000, retention: 2_000 });
    acquire("r0", "s");
    tick(1_000); // r0 dropped: nothing heard from s; s is forgotten
    expect(engine.get("k", "r0")?.state).toBe("dropped");
    expect(engine.findSession("k", "s")).toBeUndefined();
    const r1 = acquire("r1", "s"); // a new session s
    tick(900);
    // The client retries r0's create (remembered for `retention`): a message from session s.
    const retry = engine.acquire("k", "r0", { resource: "lock" }, "s");
    expect(retry.ok).toBe(true);
    const heardAt = clock.t;
    tick(grace);
    // The rule: r1 is not dropped sooner than grace after that message. It is, at 3000 (the
    // live session s was last touched at 2000), because the retry touched the forgotten one.
    expect(r1.state === "dropped" ? r1.endedAt : Number.POSITIVE_INFINITY).toBeGreaterThanOrEqual(
      heardAt + grace,
    );
  });

  it("a session going away lets a present waiter behind its waiter be served", () => {
    const { engine, acquire, session, tick } = setup();
    const pool = { resource: "pool", capacity: 3 };
    const h = session("h");
    engine.attachSession(h);
    acquire("h", "h", { ...pool, load: 1 });
    const sa = session("a");
    engine.attachSession(sa);
    const a = acquire("a", "a", { ...pool, load: 3 }); // waits: 1 + 3 > 3
    const sb = session("b");
    engine.attachSession(sb);
    const b = acquire("b", "b", { ...pool, load: 1 }); // fits, but may not pass a
    expect([a.state, b.state]).toEqual(["queued", "queued"]);
    engine.detachSession(sa, "closed"); // a is away: passed over from now on
    tick(1);
    // b fits and nobody present is ahead of it; it waits until a's waitGrace ends instead.
    expect(b.state).toBe("active");
  });
});
