import { spawn } from "node:child_process";
import { getEventListeners } from "node:events";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { deferred, ENTRIES, eventually, resourceState, startTestServer } from "./helpers.js";

const HOLDER = fileURLToPath(new URL("./fixtures/holder.ts", import.meta.url));

describe.each(ENTRIES)("SDK over $transport", ({ sdk, session }) => {
  const {
    AcquireTimeoutError,
    AuthenticationError,
    LeaseLostError,
    RateQueueError,
    ServiceUnavailableError,
    ValidationError,
    createRateQueue,
  } = sdk;

  async function setup(serverOptions = {}) {
    const server = await startTestServer(serverOptions);
    const rq = createRateQueue({ apiKey: "test-key", baseUrl: server.url, session });
    return { server, rq, [Symbol.asyncDispose]: () => server.close() };
  }

  describe("the contract", () => {
    it("runs fn while holding the slot, returns its result, and releases", async () => {
      await using t = await setup();
      const result = await t.rq.acquire("user-update-42", {}, async (lease) => {
        expect(lease.name).toBe("user-update-42");
        expect(lease.fencingToken).toBeGreaterThan(0);
        expect(lease.signal.aborted).toBe(false);
        expect((await resourceState(t.server, "user-update-42")).used).toBe(1);
        return { saved: true };
      });
      expect(result).toEqual({ saved: true });
      expect(await resourceState(t.server, "user-update-42")).toMatchObject({ used: 0, queued: 0 });
    });

    it("releases when fn throws, and rejects with fn's own error", async () => {
      await using t = await setup();
      const boom = new Error("boom");
      await expect(
        t.rq.acquire("r", {}, () => {
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect((await resourceState(t.server, "r")).used).toBe(0);
    });

    it("releases at the end of an `await using` block", async () => {
      await using t = await setup();
      {
        await using lease = await t.rq.acquire("invoice-7");
        expect(lease.id).toMatch(/^[0-9a-f-]{36}$/);
        expect((await resourceState(t.server, "invoice-7")).used).toBe(1);
      }
      expect((await resourceState(t.server, "invoice-7")).used).toBe(0);
    });

    it("releases idempotently", async () => {
      await using t = await setup();
      const lease = await t.rq.acquire("r");
      const first = lease.release();
      expect(lease.release()).toBe(first);
      await first;
      await lease[Symbol.asyncDispose]();
      expect((await resourceState(t.server, "r")).used).toBe(0);
    });

    it("reads its defaults from RATEQUEUE_URL and RATEQUEUE_API_KEY", async () => {
      await using t = await setup();
      const saved = { url: process.env.RATEQUEUE_URL, key: process.env.RATEQUEUE_API_KEY };
      process.env.RATEQUEUE_URL = t.server.url;
      process.env.RATEQUEUE_API_KEY = "env-key";
      try {
        await sdk.ratequeue.acquire("from-env", {}, async () => {
          expect((await resourceState(t.server, "from-env", "env-key")).used).toBe(1);
        });
      } finally {
        process.env.RATEQUEUE_URL = saved.url;
        process.env.RATEQUEUE_API_KEY = saved.key;
        if (saved.url === undefined) delete process.env.RATEQUEUE_URL;
        if (saved.key === undefined) delete process.env.RATEQUEUE_API_KEY;
      }
    });

    it("lets per-call options win over the instance's", async () => {
      await using t = await setup({ apiKeys: ["good-key"] });
      const rq = createRateQueue({ apiKey: "bad-key", baseUrl: "http://127.0.0.1:9" });
      await rq.acquire("r", { apiKey: "good-key", baseUrl: t.server.url }, async () => {
        expect((await resourceState(t.server, "r", "good-key")).used).toBe(1);
      });
    });
  });

  describe("guarantees", () => {
    // Issue 12: an operator force-releases a holder through the admin API. Guarantee 6 (lost is
    // loud, with the operator's reason) and 9 (told before anyone else is granted) hold.
    it("6, 9. a lease an operator revokes: LeaseLostError with the reason, before the next holds", async () => {
      await using t = await setup();
      const lease = await t.rq.acquire("deploy");
      let lostAt = Number.POSITIVE_INFINITY;
      lease.signal.addEventListener("abort", () => {
        lostAt = performance.now();
      });
      const next = createRateQueue({ apiKey: "test-key", baseUrl: t.server.url, session })
        .acquire("deploy")
        .then((l) => ({ lease: l, grantedAt: performance.now() }));
      await eventually(async () => (await resourceState(t.server, "deploy")).queued === 1);
      const admin = (path: string, init?: RequestInit) =>
        fetch(`${t.server.url}/v1/admin${path}`, init).then((r) => r.json());
      const [{ id: ns }] = (await admin("/namespaces")).namespaces;
      const revoked = await admin(`/namespaces/${ns}/requests/${lease.id}/revoke`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ reason: "deploy frozen by ops" }),
      });
      expect(revoked.state).toBe("revoked");
      const { lease: nextLease, grantedAt } = await next;
      expect(lease.signal.reason).toBeInstanceOf(LeaseLostError);
      expect(lease.signal.reason).toMatchObject({
        code: "lease_lost",
        reason: "deploy frozen by ops",
      });
      expect(String(lease.signal.reason.message)).toMatch(
        /an operator revoked it: deploy frozen by ops/,
      );
      expect(lostAt).toBeLessThan(grantedAt);
      expect(nextLease.fencingToken).toBeGreaterThan(lease.fencingToken);
      await lease.release(); // resolves: the lease was already lost, and said so
      await nextLease.release();
    });

    it("1. exclusion: never more holders than the capacity", async () => {
      await using t = await setup();
      let holding = 0;
      let max = 0;
      await Promise.all(
        Array.from({ length: 12 }, () =>
          t.rq.acquire("pool", { capacity: 3 }, async () => {
            max = Math.max(max, ++holding);
            await new Promise((r) => setTimeout(r, 5));
            holding--;
          }),
        ),
      );
      expect(max).toBe(3);
    });

    it("2. order: arrival order within a priority, higher priority first", async () => {
      await using t = await setup();
      const holder = await t.rq.acquire("r");
      const order: string[] = [];
      const waits: Promise<void>[] = [];
      for (const [who, priority] of [
        ["a", 10],
        ["b", 10],
        ["low", 0],
        ["urgent", 50],
        ["c", 10],
      ] as const) {
        waits.push(t.rq.acquire("r", { priority }, () => void order.push(who)));
        await eventually(async () => (await resourceState(t.server, "r")).queued === waits.length);
      }
      await holder.release();
      await Promise.all(waits);
      expect(order).toEqual(["urgent", "a", "b", "c", "low"]);
    });

    it("3. fencing: tokens strictly increase from grant to grant", async () => {
      await using t = await setup();
      const tokens: number[] = [];
      await Promise.all(
        Array.from({ length: 10 }, () =>
          t.rq.acquire("r", {}, (l) => void tokens.push(l.fencingToken)),
        ),
      );
      for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    });

    it("6. lost is loud: lease.signal aborts, and the call rejects with LeaseLostError after fn settles", async () => {
      await using t = await setup();
      let settled = false;
      const call = t.rq.acquire("r", { expiresIn: 150 }, async (lease) => {
        const reason = await new Promise((resolve) =>
          lease.signal.addEventListener("abort", () => resolve(lease.signal.reason)),
        );
        expect(reason).toBeInstanceOf(LeaseLostError);
        settled = true;
        return "done";
      });
      const error = await call.catch((e) => e);
      expect(settled).toBe(true);
      expect(error).toBeInstanceOf(LeaseLostError);
      expect(error.code).toBe("lease_lost");
      expect(error.message).toMatch(/expired/);
    });

    it("6. lost is loud: a lease the server forgot before its release rejects with LeaseLostError", async () => {
      const first = await startTestServer();
      const port = new URL(first.url).port;
      const rq = createRateQueue({ apiKey: "test-key", baseUrl: first.url, session });
      let second: Awaited<ReturnType<typeof startTestServer>> | undefined;
      const call = rq.acquire("r", {}, async () => {
        // The server restarts (state in memory: the lease is forgotten) while fn runs.
        await first.close();
        second = await startTestServer({ port: Number(port) });
        return "done";
      });
      try {
        const error = await call.catch((e) => e);
        expect(error).toBeInstanceOf(LeaseLostError);
        // The server said so as it shut down (it keeps nothing), or, restarted, no longer knew it.
        expect(error.message).toMatch(/keeps nothing|no longer knows/);
      } finally {
        await second?.close();
      }
    });

    it("a waiter whose server restarted without its data asks again, and is served", async () => {
      const first = await startTestServer();
      const port = Number(new URL(first.url).port);
      const holder = createRateQueue({ apiKey: "test-key", baseUrl: first.url, session });
      const rq = createRateQueue({ apiKey: "test-key", baseUrl: first.url, session });
      await holder.acquire("r");
      const waiting = rq.acquire("r", {}, (lease) => lease.fencingToken);
      await eventually(async () => (await resourceState(first, "r")).queued === 1);
      await first.close(); // in memory: the restarted server knows neither of them
      await using second = await startTestServer({ port });
      expect(await waiting).toBeGreaterThan(0); // re-queued on the new server, and granted
      expect((await resourceState(second, "r")).used).toBe(0);
    });

    it("hears the grants of a server restarted without its data (its events count from 1 again)", async () => {
      const first = await startTestServer();
      const port = Number(new URL(first.url).port);
      const other = createRateQueue({ apiKey: "test-key", baseUrl: first.url, session });
      const rq = createRateQueue({ apiKey: "test-key", baseUrl: first.url, session });
      // A grant that comes as an event (seq 1) on the first server.
      let held = await other.acquire("q");
      let waiting = rq.acquire("q", {}, () => "granted");
      await eventually(async () => (await resourceState(first, "q")).queued === 1);
      await held.release();
      expect(await waiting).toBe("granted");
      await first.close();
      // The same again on a new server: its first event is seq 1 too.
      await using second = await startTestServer({ port });
      held = await other.acquire("q");
      waiting = rq.acquire("q", {}, () => "granted");
      await eventually(async () => (await resourceState(second, "q")).queued === 1);
      await held.release();
      expect(await waiting).toBe("granted");
    });

    it("7. cancel is clean: an aborted wait rejects with the signal's reason and leaves no ghost", async () => {
      await using t = await setup();
      const holder = await t.rq.acquire("r");
      const controller = new AbortController();
      const waiting = t.rq.acquire("r", { signal: controller.signal });
      await eventually(async () => (await resourceState(t.server, "r")).queued === 1);
      controller.abort();
      const error = await waiting.catch((e) => e);
      expect(error).toBe(controller.signal.reason);
      expect(error.name).toBe("AbortError");
      expect(await resourceState(t.server, "r")).toMatchObject({ queued: 0, used: 1 });
      await holder.release();
    });

    it("7. cancel is clean: a custom abort reason is what the call rejects with", async () => {
      await using t = await setup();
      const holder = await t.rq.acquire("r");
      const controller = new AbortController();
      const waiting = t.rq.acquire("r", { signal: controller.signal });
      const reason = new Error("shutting down");
      controller.abort(reason);
      await expect(waiting).rejects.toBe(reason);
      await holder.release();
    });

    it("7. cancel is clean: a timeout rejects with AcquireTimeoutError and leaves the line", async () => {
      await using t = await setup();
      const holder = await t.rq.acquire("r");
      const error = await t.rq.acquire("r", { timeout: 100 }).catch((e) => e);
      expect(error).toBeInstanceOf(AcquireTimeoutError);
      expect(error.code).toBe("acquire_timeout");
      expect(await resourceState(t.server, "r")).toMatchObject({ queued: 0, used: 1 });
      await holder.release();
    });

    it("7. timeout 0 is a try-lock: granted at once, or AcquireTimeoutError without queueing", async () => {
      await using t = await setup();
      const lease = await t.rq.acquire("r", { timeout: 0 });
      await expect(t.rq.acquire("r", { timeout: 0 })).rejects.toBeInstanceOf(AcquireTimeoutError);
      expect((await resourceState(t.server, "r")).queued).toBe(0);
      await lease.release();
    });

    it("7. a grant that races the abort is released at once", async () => {
      const server = await startTestServer();
      await using _ = server;
      const controller = new AbortController();
      // The caller's signal aborts the instant the grant arrives, before the SDK sees it: on a
      // WebSocket session through a wrapped socket, on an HTTP session through the transport.
      const base = sdk.fetchTransport();
      const nodeWs = sdk === ENTRIES[0].sdk ? ENTRIES[0].sdk.nodeWebSocket() : undefined;
      const rq = createRateQueue({
        apiKey: "test-key",
        baseUrl: server.url,
        session,
        transport: async (req) => {
          const res = await base(req);
          if (req.method !== "POST") return res;
          const text = await res.text();
          if (text.includes('"active"')) controller.abort();
          return { ...res, text: async () => text };
        },
        webSocket: nodeWs && {
          open: (url) => {
            const ws = nodeWs.open(url);
            return {
              get readyState() {
                return ws.readyState;
              },
              send: (data) => ws.send(data),
              close: (code, reason) => ws.close(code, reason),
              addEventListener: (type, listener) =>
                ws.addEventListener(type, (event: { data?: unknown }) => {
                  if (type === "message" && String(event.data).includes('"active"'))
                    controller.abort();
                  listener(event);
                }),
            };
          },
        },
      });
      const error = await rq.acquire("r", { signal: controller.signal }).catch((e) => e);
      expect(controller.signal.aborted).toBe(true);
      expect(error).toBe(controller.signal.reason);
      await eventually(async () => (await resourceState(server, "r")).used === 0);
    });
  });

  describe("lanes", () => {
    it("a burst in lane batch delays lane interactive by one turn at most", async () => {
      await using t = await setup();
      const holder = await t.rq.acquire("gpu", { lane: "batch" });
      const order: string[] = [];
      const work = (lane: string) => async () => {
        order.push(lane);
      };
      const burst = Array.from({ length: 300 }, () =>
        t.rq.acquire("gpu", { lane: "batch" }, work("batch")),
      );
      await eventually(
        async () => (await resourceState(t.server, "gpu")).lanes?.batch?.queued === 300,
      );
      // The lowest priority: between lanes, turns decide, not priorities.
      const interactive = t.rq.acquire(
        "gpu",
        { lane: "interactive", priority: -1 },
        work("interactive"),
      );
      await eventually(
        async () => (await resourceState(t.server, "gpu")).lanes?.interactive?.queued === 1,
      );
      await holder.release();
      await Promise.all([...burst, interactive]);
      // batch's turn (its head), then interactive's: 300 waiting in batch cost it one grant.
      expect(order.indexOf("interactive")).toBeLessThanOrEqual(1);
      expect(order).toHaveLength(301);
      expect(await resourceState(t.server, "gpu")).toMatchObject({ used: 0, queued: 0 });
    }, 60_000);
  });

  describe("input is checked before any network call", () => {
    const cases: Array<[string, string, Record<string, unknown>, RegExp]> = [
      ["an empty name", "", {}, /name must not be empty/],
      ["a control character", "a\u0007b", {}, /printable/],
      ["a 300-byte name", "x".repeat(300), {}, /at most 256 UTF-8 bytes/],
      ["a fractional load", "r", { load: 1.5 }, /load must be an integer/],
      ["a negative timeout", "r", { timeout: -1 }, /timeout must be from 0/],
      ["a load above the capacity", "r", { capacity: 2, load: 3 }, /never be granted/],
      ["a string priority", "r", { priority: "high" }, /priority must be an integer/],
      ["an unknown option", "r", { timout: 5 }, /timout is not an acquire option/],
      ["an empty lane", "r", { lane: "" }, /lane must be a non-empty string/],
      ["a lane with a space", "r", { lane: "tenant 1" }, /lane may contain only letters/],
      ["a 65-character lane", "r", { lane: "x".repeat(65) }, /lane must be at most 64/],
      ["a non-signal signal", "r", { signal: "stop" }, /signal must be an AbortSignal/],
      ["an empty apiKey", "r", { apiKey: "" }, /apiKey is missing/],
      ["a bad baseUrl", "r", { baseUrl: "localhost:7420" }, /baseUrl must be an http\(s\) URL/],
    ];
    it.each(cases)("rejects %s with ValidationError", async (_what, name, options, message) => {
      let calls = 0;
      const rq = createRateQueue({
        apiKey: "k",
        baseUrl: "http://127.0.0.1:9",
        session,
        transport: async () => {
          calls++;
          throw new Error("no network call expected");
        },
      });
      const error = await rq.acquire(name, options as never).catch((e) => e);
      expect(error).toBeInstanceOf(ValidationError);
      expect(error).toBeInstanceOf(RateQueueError);
      expect(error.name).toBe("ValidationError");
      expect(error.message).toMatch(message);
      expect(calls).toBe(0);
    });

    it("offers lane among the options it expects", async () => {
      const rq = createRateQueue({ apiKey: "k", baseUrl: "http://127.0.0.1:9", session });
      const error = await rq.acquire("r", { timout: 5 } as never).catch((e) => e);
      expect(error.message).toMatch(/expected some of: .*priority, lane, /);
    });
  });

  describe("configuration", () => {
    it("needs no API key against a server on loopback in open development mode", async () => {
      await using server = await startTestServer();
      const saved = process.env.RATEQUEUE_API_KEY;
      delete process.env.RATEQUEUE_API_KEY;
      try {
        const rq = createRateQueue({ baseUrl: server.url, session });
        expect(await rq.acquire("r", {}, (lease) => lease.fencingToken)).toBeGreaterThan(0);
      } finally {
        if (saved !== undefined) process.env.RATEQUEUE_API_KEY = saved;
      }
    });

    it("without a key against another host, says how to pass one, a Worker's bindings included", async () => {
      const saved = process.env.RATEQUEUE_API_KEY;
      delete process.env.RATEQUEUE_API_KEY;
      try {
        const rq = createRateQueue({ baseUrl: "https://locks.example.com", session });
        const error = await rq.acquire("r").catch((e) => e);
        expect(error).toBeInstanceOf(ValidationError);
        expect(error.message).toMatch(/env\.RATEQUEUE_API_KEY/);
      } finally {
        if (saved !== undefined) process.env.RATEQUEUE_API_KEY = saved;
      }
    });
  });

  describe("errors", () => {
    it("keeps the field the server names when it refuses an acquire", async () => {
      await using t = await setup();
      await using _held = await t.rq.acquire("r", { capacity: 1 });
      const error = await t.rq.acquire("r", { load: 2 }).catch((e) => e);
      expect(error).toBeInstanceOf(RateQueueError);
      expect(error).toMatchObject({ code: "capacity_mismatch", field: "load", status: 409 });
      expect(error.message).toMatch(/load 2 exceeds the capacity/);
    });

    it("rejects an unknown key with AuthenticationError", async () => {
      await using t = await setup({ apiKeys: ["right"] });
      const rq = createRateQueue({ apiKey: "wrong", baseUrl: t.server.url, session });
      const error = await rq.acquire("r").catch((e) => e);
      expect(error).toBeInstanceOf(AuthenticationError);
      expect(error).toMatchObject({ code: "unauthorized", status: 401 });
      expect(error.message).not.toContain("wrong");
    });

    it("gives up with ServiceUnavailableError when the server cannot be reached", async () => {
      const rq = createRateQueue({
        apiKey: "k",
        baseUrl: "http://127.0.0.1:9",
        session,
        retry: { retries: 2, minDelay: 1, maxDelay: 5 },
      });
      const error = await rq.acquire("r").catch((e) => e);
      expect(error).toBeInstanceOf(ServiceUnavailableError);
      expect(error.cause).toBeDefined();
    });
  });

  it("leaves no listener on a caller's signal after 1,000 acquires", async () => {
    await using t = await setup();
    const controller = new AbortController();
    for (let i = 0; i < 1_000; i++) {
      await t.rq.acquire(`leak-${i % 7}`, { signal: controller.signal, timeout: 5_000 }, () => {});
    }
    // Waits that end by timeout and by a queue both add and must remove their listeners too.
    const holder = await t.rq.acquire("busy");
    await t.rq.acquire("busy", { signal: controller.signal, timeout: 0 }).catch(() => {});
    await t.rq.acquire("busy", { signal: controller.signal, timeout: 30 }).catch(() => {});
    await holder.release();
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });
});

/** The crash tests run over both session transports: the holder process uses the one named. */
describe.each([
  { session: "auto", transport: "a WebSocket session" },
  { session: "http", transport: "an HTTP session" },
] as const)("lease liveness over $transport", ({ session }) => {
  it("keeps a lease held for longer than several poll windows and silence timeouts", async () => {
    const { createRateQueue } = ENTRIES[0].sdk;
    // A hold three times the server's repollGrace (its longest silence) and its grace: the lease
    // lives only because the session keeps talking (pings, or HTTP polls).
    await using server = await startTestServer({ pollWindow: 100, repollGrace: 500, grace: 500 });
    const rq = createRateQueue({ apiKey: "test-key", baseUrl: server.url, session });
    await rq.acquire("r", {}, async (lease) => {
      await new Promise((r) => setTimeout(r, 1_500));
      expect(lease.signal.aborted).toBe(false);
      expect((await resourceState(server, "r")).used).toBe(1);
    });
  });

  it("keeps a lease taken after the session went idle (nothing live) in between", async () => {
    const { createRateQueue } = ENTRIES[0].sdk;
    await using server = await startTestServer({ repollGrace: 500, grace: 500 });
    const rq = createRateQueue({ apiKey: "test-key", baseUrl: server.url, session });
    await rq.acquire("first", {}, () => {});
    // Nothing live: the session idles (no pings, no session polls) — a state with no event to
    // wait on; its last poll ends within one ping interval (125 ms here).
    await new Promise((r) => setTimeout(r, 400));
    await rq.acquire("r", {}, async (lease) => {
      await new Promise((r) => setTimeout(r, 1_500));
      expect(lease.signal.aborted).toBe(false);
      expect((await resourceState(server, "r")).used).toBe(1);
    });
  });

  /** Starts a process that takes `name` through the SDK and holds it; resolves with its token. */
  async function spawnHolder(url: string, name: string, lockDelay?: number) {
    const args = ["--import", "tsx", HOLDER, url, name, String(lockDelay ?? 0), session];
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    const held = deferred<number>();
    child.stdout.setEncoding("utf8").on("data", (line: string) => {
      const m = /holding (\d+)/.exec(line);
      if (m) held.resolve(Number(m[1]));
    });
    return { child, token: await held.promise, [Symbol.dispose]: () => child.kill("SIGKILL") };
  }

  it("4. release on exit: a holder killed with SIGKILL frees its slot for the next waiter", async () => {
    const { createRateQueue } = ENTRIES[0].sdk;
    await using server = await startTestServer();
    using holder = await spawnHolder(server.url, "r");
    const rq = createRateQueue({ apiKey: "test-key", baseUrl: server.url, session });
    const next = rq.acquire("r", { timeout: 5_000 }, (lease) => lease.fencingToken);
    await eventually(async () => (await resourceState(server, "r")).queued === 1);
    holder.child.kill("SIGKILL");
    // Served well before the 5 s timeout: liveness is the dead process's closed poll, not a TTL.
    expect(await next).toBeGreaterThan(holder.token);
  });

  it("4. release on exit: a waiter killed with SIGKILL leaves the line", async () => {
    const { createRateQueue } = ENTRIES[0].sdk;
    await using server = await startTestServer({ waitGrace: 1_000 });
    const rq = createRateQueue({ apiKey: "test-key", baseUrl: server.url, session });
    const lease = await rq.acquire("r");
    // The fixture process queues behind the lease; it never gets to print "holding".
    const child = spawn(
      process.execPath,
      ["--import", "tsx", HOLDER, server.url, "r", "0", session],
      {
        stdio: "ignore",
      },
    );
    try {
      // A child process that loads TypeScript: slow to start on a loaded machine.
      await eventually(async () => (await resourceState(server, "r")).queued === 1, 20_000);
      child.kill("SIGKILL");
      // At once it is passed over (`away`): it delays nobody. It keeps its place for waitGrace
      // (in case it was a network blip), then leaves the line.
      await eventually(async () => (await resourceState(server, "r")).away === 1);
      const next = rq.acquire("r", {}, (l) => l.fencingToken);
      await eventually(async () => (await resourceState(server, "r")).queued === 2);
      await lease.release();
      expect(await next).toBeGreaterThan(lease.fencingToken); // served, not the dead waiter
      await eventually(async () => (await resourceState(server, "r")).queued === 0);
      expect((await resourceState(server, "r")).used).toBe(0);
    } finally {
      child.kill("SIGKILL");
      await lease.release();
    }
  }, 40_000);

  it("a holder frozen mid-hold (a suspended serverless invocation, SIGSTOP) is handed on, and on thaw learns its lease is lost", async () => {
    const { createRateQueue } = ENTRIES[0].sdk;
    // A frozen process keeps its connection open but says nothing: the server ends its session
    // after repollGrace of silence, and its lease grace later.
    await using server = await startTestServer({ repollGrace: 1_000 });
    using holder = await spawnHolder(server.url, "r");
    let said = "";
    holder.child.stdout.on("data", (d: string) => {
      said += d;
    });
    const rq = createRateQueue({ apiKey: "test-key", baseUrl: server.url, session });
    const next = rq.acquire("r", { timeout: 15_000 }, (lease) => lease.fencingToken);
    await eventually(async () => (await resourceState(server, "r")).queued === 1);
    holder.child.kill("SIGSTOP");
    try {
      expect(await next).toBeGreaterThan(holder.token);
    } finally {
      holder.child.kill("SIGCONT");
    }
    await eventually(() => said.includes("lost"));
  });

  it("lockDelay holds a killed holder's slot back that long before the next grant", async () => {
    const { createRateQueue } = ENTRIES[0].sdk;
    await using server = await startTestServer();
    using holder = await spawnHolder(server.url, "r", 800);
    const rq = createRateQueue({ apiKey: "test-key", baseUrl: server.url, session });
    const next = rq.acquire("r", { timeout: 10_000 }, () => performance.now());
    await eventually(async () => (await resourceState(server, "r")).queued === 1);
    const killedAt = performance.now();
    holder.child.kill("SIGKILL");
    await eventually(async () => (await resourceState(server, "r")).heldBack === 1);
    expect((await next) - killedAt).toBeGreaterThanOrEqual(800);
  });
});

describe("closing a client", () => {
  const { createRateQueue, LeaseLostError, RateQueueError } = ENTRIES[0].sdk;

  it("rejects its waiters, releases its leases (their signal aborts), and can acquire again later", async () => {
    await using server = await startTestServer();
    const other = createRateQueue({ apiKey: "test-key", baseUrl: server.url });
    const held = await other.acquire("busy");
    const rq = createRateQueue({ apiKey: "test-key", baseUrl: server.url });
    const lease = await rq.acquire("mine");
    const waiting = rq.acquire("busy").catch((e: unknown) => e);
    await eventually(async () => (await resourceState(server, "busy")).queued === 1);

    await rq.close();
    const error = await waiting;
    expect(error).toBeInstanceOf(RateQueueError);
    expect(error).toMatchObject({ code: "client_closed" });
    expect(lease.signal.aborted).toBe(true);
    expect(lease.signal.reason).toBeInstanceOf(LeaseLostError);
    // Nothing left on the server: the lease released at once, the waiter out of the line.
    expect(await resourceState(server, "mine")).toMatchObject({ used: 0 });
    expect(await resourceState(server, "busy")).toMatchObject({ used: 1, queued: 0 });
    // The instance stays usable: a new session.
    expect(await rq.acquire("mine", {}, (l) => l.fencingToken)).toBeGreaterThan(lease.fencingToken);
    await held.release();
    await rq.close();
    await other.close();
  });

  it("is what `await using` on a client does", async () => {
    await using server = await startTestServer();
    let signal: AbortSignal | undefined;
    {
      await using rq = createRateQueue({ apiKey: "test-key", baseUrl: server.url });
      signal = (await rq.acquire("r")).signal;
    }
    expect(signal?.aborted).toBe(true);
    expect(await resourceState(server, "r")).toMatchObject({ used: 0 });
  });
});
