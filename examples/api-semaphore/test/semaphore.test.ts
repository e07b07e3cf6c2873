import { createRateQueue, ValidationError } from "@ratequeue/sdk";
import { describe, expect, it } from "vitest";
import { isIdle, random, startTestServer } from "../../shared/testing.js";
import { createApiClient, RateLimitedError } from "../client.js";
import { startFakeApi } from "../fake-api.js";

const API_KEY = "semaphore-example";
const LIMITS = { maxInFlight: 4, tokenBudget: 8 };
const WORKERS = 30;
const CALLS = 5;

/** WORKERS workers × CALLS calls of 1–4 tokens each (seeded); counts results and 429s. */
async function workload(call: (tokens: number) => Promise<unknown>, seed: number) {
  const rand = random(seed);
  const costs = Array.from({ length: WORKERS }, () =>
    Array.from({ length: CALLS }, () => 1 + Math.floor(rand() * 4)),
  );
  let completed = 0;
  let limited = 0;
  await Promise.all(
    costs.map(async (mine) => {
      for (const tokens of mine) {
        try {
          expect(await call(tokens)).toEqual({ ok: true, cost: tokens });
          completed++;
        } catch (error) {
          if (!(error instanceof RateLimitedError)) throw error;
          limited++;
        }
      }
    }),
  );
  return { completed, limited };
}

async function setup() {
  const server = await startTestServer();
  const api = await startFakeApi(LIMITS);
  const rq = createRateQueue({ apiKey: API_KEY, baseUrl: server.url });
  return {
    server,
    api,
    rq,
    async [Symbol.asyncDispose]() {
      await api.close();
      await server.close();
    },
  };
}

describe("api-semaphore", () => {
  it("30 workers through RateQueue: zero 429s, every call completed", async () => {
    await using t = await setup();
    const call = createApiClient(t.api.url, LIMITS, { rq: t.rq });
    const { completed, limited } = await workload(call, 1);

    expect(limited).toBe(0);
    expect(t.api.stats.rejected).toBe(0);
    expect(completed).toBe(WORKERS * CALLS);
    expect(t.api.stats.served).toBe(WORKERS * CALLS);
    expect(t.api.stats.peakInFlight).toBeLessThanOrEqual(LIMITS.maxInFlight);
    expect(t.api.stats.peakTokens).toBeLessThanOrEqual(LIMITS.tokenBudget);
    expect(t.api.stats.peakInFlight).toBeGreaterThan(1); // a semaphore, not a lock
    expect(await isIdle(t.server, "partner-api-tokens", API_KEY)).toBe(true);
    expect(await isIdle(t.server, "partner-api-requests", API_KEY)).toBe(true);
  }, 10_000);

  it("the same workload straight at the API is answered 429 (the API does enforce its limits)", async () => {
    await using t = await setup();
    const { completed, limited } = await workload(async (tokens) => {
      const res = await fetch(t.api.url, {
        method: "POST",
        headers: { "x-tokens": String(tokens) },
        signal: AbortSignal.timeout(5_000),
      });
      if (res.status === 429) throw new RateLimitedError(await res.text());
      return res.json();
    }, 1);
    expect(limited).toBeGreaterThan(0);
    expect(t.api.stats.rejected).toBe(limited);
    expect(completed + limited).toBe(WORKERS * CALLS);
  }, 10_000);

  it("a call larger than the whole budget fails at once with ValidationError, not a wait forever", async () => {
    await using t = await setup();
    const call = createApiClient(t.api.url, LIMITS, { rq: t.rq });
    const error = await call(LIMITS.tokenBudget + 1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: "invalid_request", field: "load" });
    expect(t.api.stats.served + t.api.stats.rejected).toBe(0);
  }, 10_000);
});
