import http from "node:http";
import { describe, expect, it } from "vitest";
import { client, eventually, settledWithin, startTestServer } from "./helpers.js";

const WINDOW = 10_000;

describe("HTTP: queued locking", () => {
  it("makes the second client wait, then answers its open poll as soon as the first releases", async () => {
    await using server = await startTestServer();
    const api = client(server);
    const a = await api.acquire("a", { resource: "user-update-42" });
    expect(a.status).toBe(200);
    expect(a.body).toMatchObject({ id: "a", state: "active", resource: "user-update-42" });

    const b = api.acquire("b", { resource: "user-update-42" }, WINDOW);
    expect(await settledWithin(b, 200)).toBe("pending");

    const released = await api.release("a");
    const t0 = performance.now();
    expect(released.body.state).toBe("released");
    const granted = await b;
    // Answered by the release, not by the end of the 10 s window.
    expect(performance.now() - t0).toBeLessThan(1_000);
    expect(granted.body).toMatchObject({ id: "b", state: "active" });
    expect(granted.body.fencingToken).toBeGreaterThan(a.body.fencingToken!);
  });

  it("answers a queued poll with the unchanged state when its window ends", async () => {
    await using server = await startTestServer();
    const api = client(server);
    await api.acquire("a", { resource: "r" });
    const b = await api.acquire("b", { resource: "r" }, 50);
    expect(b.body.state).toBe("queued");
    const again = await api.poll("b", "queued", 50);
    expect(again.body.state).toBe("queued");
  });

  it("answers a poll at once when the state the client knows is already stale", async () => {
    await using server = await startTestServer();
    const api = client(server);
    await api.acquire("a", { resource: "r" });
    const t0 = performance.now();
    const r = await api.poll("a", "queued", WINDOW);
    expect(r.body.state).toBe("active");
    expect(performance.now() - t0).toBeLessThan(1_000);
  });

  it("holds a holder's poll open while it holds, and answers it when the hold expires", async () => {
    await using server = await startTestServer();
    const api = client(server);
    await api.acquire("a", { resource: "r", expiresIn: 300 });
    const r = await api.poll("a", "active", WINDOW);
    expect(r.body.state).toBe("expired");
  });

  it("releases idempotently and cancels a waiter without granting it", async () => {
    await using server = await startTestServer();
    const api = client(server);
    await api.acquire("a", { resource: "r" });
    await api.acquire("b", { resource: "r" }, 0);
    expect((await api.release("b")).body.state).toBe("cancelled");
    expect((await api.release("a")).body.state).toBe("released");
    const again = await api.release("a");
    expect(again.status).toBe(200);
    expect(again.body.state).toBe("released");
    expect((await api.resource("r")).body).toMatchObject({ used: 0, queued: 0, capacity: null });
  });

  it("resumes a retried create instead of queueing a second request", async () => {
    await using server = await startTestServer();
    const api = client(server);
    await api.acquire("a", { resource: "r" });
    await api.acquire("b", { resource: "r" }, 0);
    const retried = await api.acquire("b", { resource: "r" }, 0);
    expect(retried.body.state).toBe("queued");
    expect((await api.resource("r")).body).toMatchObject({ active: 1, queued: 1 });
  });

  it("is a semaphore with capacity and load, and reports the resource's state", async () => {
    await using server = await startTestServer();
    const api = client(server);
    await api.acquire("a", { resource: "gpu pool/eu", capacity: 3, load: 2 });
    const b = await api.acquire("b", { resource: "gpu pool/eu", load: 2 }, 0);
    expect(b.body).toMatchObject({ state: "queued", capacity: 3 });
    const state = await api.resource("gpu pool/eu");
    expect(state.body).toMatchObject({
      name: "gpu pool/eu",
      capacity: 3,
      used: 2,
      active: 1,
      queued: 1,
    });
    expect(state.body.holders).toEqual([expect.objectContaining({ id: "a", load: 2 })]);
  });

  it("with timeout 0 is a try-lock that never joins the line", async () => {
    await using server = await startTestServer();
    const api = client(server);
    await api.acquire("a", { resource: "r" });
    const b = await api.acquire("b", { resource: "r", timeout: 0 });
    expect(b.body.state).toBe("timed_out");
    expect((await api.resource("r")).body).toMatchObject({ queued: 0 });
  });

  it("refuses a capacity that differs from the live resource's with 409", async () => {
    await using server = await startTestServer();
    const api = client(server);
    await api.acquire("a", { resource: "r", capacity: 2 });
    const b = await api.acquire("b", { resource: "r", capacity: 5 });
    expect(b.status).toBe(409);
    expect(b.body).toMatchObject({ code: "capacity_mismatch", field: "capacity" });
  });

  it("refuses to queue past maxQueue with 409 queue_full", async () => {
    await using server = await startTestServer({ maxQueue: 1 });
    const api = client(server);
    await api.acquire("a", { resource: "r" });
    await api.acquire("b", { resource: "r" }, 0);
    const c = await api.acquire("c", { resource: "r" }, 0);
    expect(c.status).toBe(409);
    expect(c.body).toMatchObject({ code: "queue_full" });
  });
});

describe("HTTP: liveness without heartbeats", () => {
  it("drops a holder whose poll socket closes, after the grace, and serves the next waiter", async () => {
    await using server = await startTestServer({ grace: 100 });
    const api = client(server);
    await api.acquire("a", { resource: "r" });
    // The holder keeps its lease by keeping a poll open, on a socket of its own.
    const url = new URL(`${server.url}/v1/requests/a?state=active&wait=${WINDOW}`);
    const holder = http.request(url, {
      agent: false,
      headers: { authorization: "Bearer test-token" },
    });
    holder.on("error", () => {});
    holder.end();
    await new Promise((r) => holder.once("socket", (s) => s.once("connect", r)));

    const b = api.acquire("b", { resource: "r" }, WINDOW);
    expect(await settledWithin(b, 300)).toBe("pending");
    const t0 = performance.now();
    holder.destroy(); // the holder's process dies: its socket closes
    const granted = await b;
    expect(granted.body.state).toBe("active");
    expect(performance.now() - t0).toBeLessThan(2_000);
    expect((await api.poll("a")).body.state).toBe("dropped");
  });

  it("drops a holder killed between two polls after the grace, not the repoll grace", async () => {
    await using server = await startTestServer({ grace: 100, repollGrace: 30_000 });
    const api = client(server);
    // The holder's poll is answered when its short window ends; then its connection closes
    // while no poll is open (the process died between two polls).
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const answered = await new Promise<string>((resolve, reject) => {
      const req = http.request(`${server.url}/v1/requests/a?wait=50`, {
        method: "PUT",
        agent,
        headers: { authorization: "Bearer test-token", "content-type": "application/json" },
      });
      req.on("error", reject);
      req.on("response", (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (c: string) => {
          body += c;
        });
        res.on("end", () => resolve(body));
      });
      req.end(JSON.stringify({ resource: "r" }));
    });
    expect(JSON.parse(answered).state).toBe("active");
    const b = api.acquire("b", { resource: "r" }, WINDOW);
    expect(await settledWithin(b, 300)).toBe("pending");
    agent.destroy(); // closes the idle keep-alive socket
    expect((await b).body.state).toBe("active");
    expect((await api.poll("a")).body.state).toBe("dropped");
  });

  it("watches only the connection of the last answer: closing an older one drops nothing", async () => {
    // repro 11-stale-watch: a status check answered at once on a second connection, while a
    // poll was open on the first, left a watcher on the second that outlived later answers.
    await using server = await startTestServer({ grace: 100, repollGrace: 4_000 });
    const one = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const two = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const on = (agent: http.Agent, method: string, path: string, body?: unknown) =>
      rawCall(server.url, agent, method, path, body);
    expect((await on(one, "PUT", "/v1/requests/a?wait=0", { resource: "r" })).state).toBe("active");
    const open = on(one, "GET", "/v1/requests/a?state=active&wait=300");
    expect((await on(two, "GET", "/v1/requests/a?state=queued&wait=0")).state).toBe("active");
    expect((await open).state).toBe("active"); // the last answer came over connection one
    two.destroy(); // the client closes its idle second connection
    await new Promise((resolve) => setTimeout(resolve, 400)); // well past grace, inside repollGrace
    expect((await on(one, "GET", "/v1/requests/a?state=active&wait=0")).state).toBe("active");
    one.destroy();
  });

  it("passes over a waiter whose poll socket closes, then drops it after waitGrace", async () => {
    await using server = await startTestServer({ grace: 100, waitGrace: 300 });
    const api = client(server);
    await api.acquire("a", { resource: "r" });
    const controller = new AbortController();
    const waiter = api
      .acquire("b", { resource: "r" }, WINDOW, controller.signal)
      .catch((e: Error) => e);
    await eventually(async () => (await api.resource("r")).body.queued === 1);
    controller.abort();
    await waiter;
    await eventually(async () => (await api.resource("r")).body.away === 1);
    await eventually(async () => (await api.poll("b")).body.state === "dropped");
    expect((await api.resource("r")).body).toMatchObject({ queued: 0 });
  });

  it("cleans up a request whose client never polls after creating it", async () => {
    await using server = await startTestServer({ repollGrace: 200 });
    const api = client(server);
    await api.acquire("a", { resource: "r" }, 0);
    await eventually(async () => (await api.poll("a")).body.state === "dropped");
    expect((await api.acquire("b", { resource: "r" }, 0)).body.state).toBe("active");
  });

  it("keeps a lease alive across many polls that each end with the window", async () => {
    await using server = await startTestServer({ pollWindow: 100, repollGrace: 300 });
    const api = client(server);
    await api.acquire("a", { resource: "r" });
    for (let i = 0; i < 8; i++) expect((await api.poll("a", "active")).body.state).toBe("active");
  });
});

describe("HTTP: guarantees under contention", () => {
  it("never lets more than `capacity` hold at once, and grants with increasing tokens", async () => {
    await using server = await startTestServer();
    const api = client(server);
    const capacity = 2;
    let holding = 0;
    let maxHolding = 0;
    const tokens: number[] = [];
    const worker = async (w: number) => {
      for (let turn = 0; turn < 5; turn++) {
        const id = `w${w}-t${turn}`;
        let snap = (await api.acquire(id, { resource: "pool", capacity })).body;
        while (snap.state === "queued") snap = (await api.poll(id, "queued")).body;
        expect(snap.state).toBe("active");
        holding++;
        maxHolding = Math.max(maxHolding, holding);
        tokens.push(snap.fencingToken!);
        await new Promise((r) => setTimeout(r, 2));
        holding--;
        await api.release(id);
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    expect(maxHolding).toBeLessThanOrEqual(capacity);
    expect(maxHolding).toBe(capacity); // the test did contend
    expect(tokens).toHaveLength(40);
    expect(new Set(tokens).size).toBe(40);
  });

  it("grants in arrival order within a priority, and higher priority first", async () => {
    await using server = await startTestServer();
    const api = client(server);
    await api.acquire("holder", { resource: "r" });
    const order: string[] = [];
    const waiters = [];
    for (const [id, priority] of [
      ["low", 1],
      ["first", 10],
      ["second", 10],
      ["urgent", 99],
      ["third", 10],
    ] as const) {
      waiters.push(
        (async () => {
          let snap = (await api.acquire(id, { resource: "r", priority }, 0)).body;
          while (snap.state === "queued") snap = (await api.poll(id, "queued")).body;
          order.push(id);
          await api.release(id);
        })(),
      );
      // Arrival order is the order the server saw the creates in.
      await eventually(async () => (await api.resource("r")).body.queued === waiters.length);
    }
    await api.release("holder");
    await Promise.all(waiters);
    expect(order).toEqual(["urgent", "first", "second", "third", "low"]);
  });
});

/** One request over a given keep-alive agent (so that a test controls which connection carries it). */
function rawCall(
  base: string,
  agent: http.Agent,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ state?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, {
      method,
      agent,
      headers: {
        authorization: "Bearer test-token",
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
    });
    req.on("error", reject);
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => {
        text += c;
      });
      res.on("end", () => resolve(JSON.parse(text)));
    });
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}
