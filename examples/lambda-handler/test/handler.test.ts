import { createRateQueue } from "@ratequeue/sdk";
import { describe, expect, it } from "vitest";
import { ConcurrencyTracker } from "../../shared/concurrency.js";
import { isIdle, startTestServer } from "../../shared/testing.js";
import { createHandler, OrderTable } from "../handler.js";
import { localLambda } from "../harness.js";

const API_KEY = "lambda-example";

async function setup() {
  const server = await startTestServer();
  const orders = new OrderTable();
  const tracker = new ConcurrencyTracker();
  // Each execution environment loads the module: its own client, as on Lambda.
  const load = () =>
    createHandler({
      rq: createRateQueue({ apiKey: API_KEY, baseUrl: server.url }),
      orders,
      onEnter: (id) => tracker.enter(id),
      onLeave: (id) => tracker.leave(id),
    });
  const lambda = localLambda(load, { maxEnvironments: 12, timeout: 8_000 });
  return { server, orders, tracker, lambda, [Symbol.asyncDispose]: () => server.close() };
}

describe("lambda-handler", () => {
  it("runs concurrent invocations for one order one at a time, and different orders at once", async () => {
    await using t = await setup();
    const events = Array.from({ length: 80 }, (_, i) => ({ orderId: `o${i % 5}`, quantity: 2 }));
    const outcomes = await Promise.all(events.map((event) => t.lambda.invoke(event)));

    expect(outcomes.filter((o) => !o.ok)).toEqual([]);
    expect(outcomes.every((o) => o.ok && o.result.statusCode === 200)).toBe(true);
    for (let i = 0; i < 5; i++) {
      expect(await t.orders.get(`o${i}`)).toEqual({ quantity: 32, updates: 16 });
    }
    expect(t.tracker.maxPerKey).toBe(1);
    expect(t.tracker.maxOverall).toBeGreaterThan(1);
    expect(t.lambda.coldStarts).toBeGreaterThan(1); // several environments, several clients
    for (let i = 0; i < 5; i++) expect(await isIdle(t.server, `order-o${i}`, API_KEY)).toBe(true);
  }, 10_000);

  it("releases the lock when the handler throws, and the order's next invocations go through", async () => {
    await using t = await setup();
    // A bad event among good ones for the same order, all at once.
    const events = [
      ...Array.from({ length: 10 }, () => ({ orderId: "o1", quantity: 1 })),
      { orderId: "o1", quantity: -3 },
      ...Array.from({ length: 10 }, () => ({ orderId: "o1", quantity: 1 })),
    ];
    const outcomes = await Promise.all(events.map((event) => t.lambda.invoke(event)));

    const failed = outcomes.filter((o) => !o.ok);
    expect(failed).toHaveLength(1);
    expect(String(failed[0]!.ok ? "" : failed[0]!.error)).toContain("bad quantity -3");
    expect(await t.orders.get("o1")).toEqual({ quantity: 20, updates: 20 });
    expect(t.tracker.maxPerKey).toBe(1);
    expect(t.tracker.inside).toBe(0);
    // Released, not held until some expiry: free at once for a try-lock (`timeout: 0`).
    expect(await isIdle(t.server, "order-o1", API_KEY)).toBe(true);
    const probe = createRateQueue({ apiKey: API_KEY, baseUrl: t.server.url });
    await probe.acquire("order-o1", { timeout: 0 }, () => {});
  }, 10_000);

  it("answers 409 order_busy instead of waiting past its own deadline", async () => {
    await using t = await setup();
    const holder = createRateQueue({ apiKey: API_KEY, baseUrl: t.server.url });
    const lease = await holder.acquire("order-o2"); // e.g. a long invocation elsewhere
    try {
      const short = localLambda(
        () =>
          createHandler({
            rq: createRateQueue({ apiKey: API_KEY, baseUrl: t.server.url }),
            orders: t.orders,
            safetyMargin: 200,
          }),
        { timeout: 400 },
      );
      const outcome = await short.invoke({ orderId: "o2", quantity: 1 });
      expect(outcome).toMatchObject({ ok: true, result: { statusCode: 409 } });
      expect(await t.orders.get("o2")).toEqual({ quantity: 0, updates: 0 });
    } finally {
      await lease.release();
    }
    expect(await isIdle(t.server, "order-o2", API_KEY)).toBe(true); // no waiter left behind
  }, 10_000);
});
