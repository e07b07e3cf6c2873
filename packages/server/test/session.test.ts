import { describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { startTestServer, TEST_STORE } from "./helpers.js";

/** A raw WebSocket session client: sends frames, collects every message the server sends. */
async function connect(url: string) {
  const ws = new WebSocket(`${url.replace(/^http/, "ws")}/v1/session`);
  const received: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  let closed: { code: number } | undefined;
  ws.on("message", (data) => {
    const parsed = JSON.parse(String(data));
    received.push(...(Array.isArray(parsed) ? parsed : [parsed]));
    for (const w of waiters.splice(0)) w();
  });
  ws.on("close", (code) => {
    closed = { code };
    for (const w of waiters.splice(0)) w();
  });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  /** Waits (bounded by `ms`) until `n` messages have arrived, or the socket closed. */
  const until = async (n: number, ms = 5_000) => {
    const deadline = Date.now() + ms;
    while (received.length < n && closed === undefined && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
    return received;
  };
  return {
    send: (frame: unknown) => ws.send(typeof frame === "string" ? frame : JSON.stringify(frame)),
    until,
    received,
    closed: () => closed,
    close: () => ws.close(),
  };
}

async function post(url: string, path: string, body: unknown, key = "k") {
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, type: res.headers.get("content-type"), body: await res.json() };
}

describe("the WebSocket session", () => {
  it("welcomes a hello with the liveness terms, answers in order, and pushes grants as events", async () => {
    await using server = await startTestServer({ grace: 300 });
    const a = await connect(server.url);
    a.send([
      { t: "hello", key: "k", session: "s-1" },
      { t: "acquire", id: "a1", resource: "lock" },
      { t: "acquire", id: "a2", resource: "lock" },
      { t: "ping", n: 1 },
    ]);
    const [welcome, first, second, pong] = await a.until(4);
    expect(welcome).toMatchObject({ t: "welcome", session: "s-1", resumed: false, grace: 300 });
    expect(welcome!.ping).toBeGreaterThan(0);
    // In memory nothing survives a restart; replicas on PostgreSQL promise no recovery either
    // (clients give a lease up grace after losing their replica); a data directory keeps
    // the leases for its recovery window.
    expect(welcome!.recovery).toBe(TEST_STORE.kind === "sqlite" ? 14_000 : 0);
    expect(first).toMatchObject({ t: "state", id: "a1", state: "active" });
    expect(second).toMatchObject({ t: "state", id: "a2", state: "queued" });
    expect(pong).toEqual({ t: "pong", n: 1 });
    a.send({ t: "release", id: "a1" });
    const events = await a.until(6);
    // The grant of a2 is an event (numbered); the release's answer is not.
    expect(events.slice(4)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ t: "state", id: "a2", state: "active", seq: 1 }),
        expect.objectContaining({ t: "state", id: "a1", state: "released" }),
      ]),
    );
    a.close();
  });

  it("replays unacknowledged events to a session that resumes on a new connection", async () => {
    await using server = await startTestServer({ grace: 2_000 });
    const holder = await connect(server.url);
    holder.send([
      { t: "hello", key: "k", session: "holder" },
      { t: "acquire", id: "h", resource: "lock" },
    ]);
    await holder.until(2);
    const waiter = await connect(server.url);
    waiter.send([
      { t: "hello", key: "k", session: "waiter" },
      { t: "acquire", id: "w", resource: "lock" },
    ]);
    await waiter.until(2);
    waiter.close(); // its waiter keeps its place (waitGrace)
    holder.send({ t: "release", id: "h" });
    await holder.until(3);
    const again = await connect(server.url);
    again.send({ t: "hello", key: "k", session: "waiter", after: 0 });
    const [welcome, event] = await again.until(2);
    expect(welcome).toMatchObject({ t: "welcome", resumed: true });
    expect(event).toMatchObject({ t: "state", seq: 1, id: "w", state: "active" });
    again.close();
    holder.close();
  });

  it("says bye, with what it keeps across a restart, when it shuts down", async () => {
    const server = await startTestServer();
    const a = await connect(server.url);
    a.send({ t: "hello", key: "k", session: "s" });
    await a.until(1);
    await server.close();
    const messages = await a.until(2);
    if (TEST_STORE.kind === "postgres") {
      // A replica says no bye: the next replica serves its leases (replica.ts). It just closes.
      expect(messages[1]).toBeUndefined();
      expect(a.closed()).toBeDefined();
    } else {
      // Memory keeps nothing; a data directory keeps the leases for the recovery window.
      const recovery = TEST_STORE.kind === "sqlite" ? 14_000 : 0;
      expect(messages[1]).toEqual({ t: "bye", recovery });
    }
  });

  it("works through a burst of 10,000 acquires a slice at a time: another session's ping is answered meanwhile", async () => {
    await using server = await startTestServer();
    const a = await connect(server.url);
    a.send({ t: "hello", key: "k", session: "a" });
    await a.until(1);
    const b = await connect(server.url);
    b.send({ t: "hello", key: "k", session: "b" });
    await b.until(1);
    const burst = Array.from({ length: 10_000 }, (_, i) => ({
      t: "acquire",
      id: `b${i}`,
      resource: "q",
    }));
    b.send(burst);
    // Sent after the whole burst is on the wire, and answered before the burst is done.
    await new Promise((r) => setTimeout(r, 5));
    a.send({ t: "ping", n: 1 });
    await a.until(2);
    const answeredWhenPonged = b.received.length - 1;
    expect(a.received[1]).toEqual({ t: "pong", n: 1 });
    // Bounded generously: with a shared store every slice waits for its commit, and CI's
    // conformance run on PostgreSQL (2 loaded cores) once took longer than 5 s for them all.
    await b.until(10_001, 60_000);
    expect(b.received.length - 1).toBe(10_000);
    expect(answeredWhenPonged).toBeLessThan(10_000);
    a.close();
    b.close();
  }, 90_000);

  describe("refuses bad input with a problem that says what to fix", () => {
    it.each([
      ["a frame that is not JSON", "{nope", /must be JSON/],
      ["a first message that is not hello", { t: "ping", n: 1 }, /first message must be/],
      ["a session id with bad characters", { t: "hello", key: "k", session: "a b" }, /session id/],
      ["a hello without a key", { t: "hello", session: "s" }, /Authorization|token/],
    ])("%s, then closes", async (_what, frame, detail) => {
      await using server = await startTestServer();
      const a = await connect(server.url);
      a.send(frame);
      const [error] = await a.until(1);
      expect(error).toMatchObject({ t: "error" });
      expect(String(error!.detail)).toMatch(detail);
      expect([400, 401]).toContain(error!.status);
      await a.until(2); // the close
      expect(a.closed()?.code).toBe(1008);
    });

    it("a key the server does not know: 401", async () => {
      await using server = await startTestServer({ apiKeys: ["right"] });
      const a = await connect(server.url);
      a.send({ t: "hello", key: "wrong", session: "s" });
      const [error] = await a.until(1);
      expect(error).toMatchObject({ t: "error", status: 401, code: "unauthorized" });
    });

    it.each([
      [{ t: "acquire", id: "x" }, "resource", /resource/],
      [{ t: "acquire", id: "x", resource: "r", load: 0 }, "load", /load/],
      [{ t: "acquire", id: "x", resource: "r", lane: "a b" }, "lane", /letters, digits/],
      [{ t: "acquire", id: "x", resource: "r", lane: "x".repeat(65) }, "lane", /at most 64/],
      [{ t: "acquire", resource: "r" }, "id", /request id/],
      [{ t: "teleport", id: "x" }, "t", /unknown message type/],
      [{ t: "ping" }, undefined, /integer `n`/],
    ])("%j → 400 naming %s, and the session stays open", async (message, field, detail) => {
      await using server = await startTestServer();
      const a = await connect(server.url);
      a.send([{ t: "hello", key: "k", session: "s" }, message, { t: "ping", n: 9 }]);
      const [, error, pong] = await a.until(3);
      expect(error).toMatchObject({ t: "error", status: 400, code: "invalid_request" });
      if (field !== undefined) expect(error!.field).toBe(field);
      expect(String(error!.detail)).toMatch(detail);
      expect(pong).toEqual({ t: "pong", n: 9 });
      a.close();
    });
  });

  it("closes a session that stays silent for repollGrace, and hands its lease on grace later", async () => {
    await using server = await startTestServer({ repollGrace: 300, grace: 100 });
    const a = await connect(server.url);
    a.send([
      { t: "hello", key: "k", session: "quiet" },
      { t: "acquire", id: "q", resource: "lock" },
    ]);
    await a.until(2);
    const next = await post(server.url, "/v1/sessions/next?wait=0", [
      { t: "acquire", id: "n", resource: "lock" },
    ]);
    expect(next.body.messages[0]).toMatchObject({ state: "queued" });
    // The silent socket is closed by the server; the next waiter's poll then hears of its grant.
    await a.until(3);
    expect(a.closed()).toBeDefined();
    const answer = await post(server.url, "/v1/sessions/next?wait=5000", []);
    expect(answer.body.messages).toEqual([
      expect.objectContaining({ id: "n", state: "active", seq: 1 }),
    ]);
  });
});

describe("the HTTP session (POST /v1/sessions/{id})", () => {
  it("carries the same messages, and long-polls for events", async () => {
    await using server = await startTestServer();
    const first = await post(server.url, "/v1/sessions/h1?wait=0", [
      { t: "acquire", id: "a", resource: "lock" },
      { t: "acquire", id: "b", resource: "lock" },
    ]);
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ session: "h1", known: false, grace: 200 });
    expect(first.body.messages.map((m: { state: string }) => m.state)).toEqual([
      "active",
      "queued",
    ]);
    const poll = post(server.url, "/v1/sessions/h1?wait=5000", []);
    await post(server.url, "/v1/sessions/h1?wait=0", [{ t: "release", id: "a" }]);
    const answered = await poll;
    expect(answered.body.known).toBe(true);
    expect(answered.body.messages).toEqual([
      expect.objectContaining({ t: "state", seq: 1, id: "b", state: "active" }),
    ]);
    // Acknowledged with `after`: not sent again.
    const later = await post(server.url, "/v1/sessions/h1?after=1&wait=0", []);
    expect(later.body.messages).toEqual([]);
  });

  it("counts `after` only in the run it names: another run's (before a restart) acknowledges nothing", async () => {
    await using server = await startTestServer();
    await post(server.url, "/v1/sessions/h3?wait=0", [
      { t: "acquire", id: "a", resource: "lock" },
      { t: "acquire", id: "b", resource: "lock" },
    ]);
    const { run } = (await post(server.url, "/v1/sessions/h3?wait=0", [])).body;
    expect(typeof run).toBe("string");
    await post(server.url, "/v1/sessions/h3?wait=0", [{ t: "release", id: "a" }]);
    const grant = expect.objectContaining({ seq: 1, id: "b", state: "active" });
    // A client that counted 7 events in a previous run of the server has seen none of this one's.
    const stale = await post(server.url, "/v1/sessions/h3?after=7&run=earlier&wait=0", []);
    expect(stale.body).toMatchObject({ run, messages: [grant] });
    // Counted in this run, it acknowledges.
    const acked = await post(server.url, `/v1/sessions/h3?after=1&run=${run}&wait=0`, []);
    expect(acked.body.messages).toEqual([]);
  });

  it.each([
    ["/v1/sessions/h1?wait=soon", [], "wait"],
    ["/v1/sessions/h1?after=-1", [], "after"],
    ["/v1/sessions/bad%20id", [], "id"],
    ["/v1/sessions/h1", { t: "ping", n: 1 }, "body"],
  ])("%s with %j → 400 naming %s", async (path, body, field) => {
    await using server = await startTestServer();
    const res = await post(server.url, path, body);
    expect(res.status).toBe(400);
    expect(res.type).toMatch(/application\/problem\+json/);
    expect(res.body).toMatchObject({ code: "invalid_request", field });
  });

  it("says how long it held a long-poll open: at least its wait, at most the client's round trip", async () => {
    await using server = await startTestServer();
    await post(server.url, "/v1/sessions/h2?wait=0", [{ t: "acquire", id: "a", resource: "r" }]);
    const sent = performance.now();
    const poll = await post(server.url, "/v1/sessions/h2?wait=120", []);
    const roundTrip = performance.now() - sent;
    expect(poll.body.messages).toEqual([]);
    expect(poll.body.held).toBeGreaterThanOrEqual(119); // a timer fires no sooner than asked
    expect(poll.body.held).toBeLessThanOrEqual(roundTrip);
    // An answer at once holds nothing: no `held` to count on.
    const now = await post(server.url, "/v1/sessions/h2?wait=0", []);
    expect(now.body.held).toBeUndefined();
  });

  it("needs a known key", async () => {
    await using server = await startTestServer({ apiKeys: ["right"] });
    const res = await post(server.url, "/v1/sessions/h1?wait=0", [], "wrong");
    expect(res.status).toBe(401);
  });
});
