import { createRateQueue } from "@ratequeue/sdk";
import { describe, expect, it } from "vitest";
import { startTestServer } from "../../shared/testing.js";
import { createLlmClient, namespaceOf, RateLimitedError, setLlmLimits } from "../client.js";
import { type LlmLimits, startFakeLlm } from "../fake-llm.js";
import { workload } from "../run.js";

async function setup(limits: LlmLimits) {
  const server = await startTestServer();
  const api = await startFakeLlm(limits);
  const rq = createRateQueue({ apiKey: "llm-example", baseUrl: server.url });
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

describe("llm-rate-limits", () => {
  it.each([
    ["requests per window bind", { rpm: 10, tpm: 100_000, window: 1_000 }],
    ["tokens per window bind", { rpm: 1_000, tpm: 1_000, window: 1_000 }],
  ])(
    "30 workers through RateQueue, %s: zero 429s, every call answered",
    { timeout: 30_000 },
    async (_, limits) => {
      await using t = await setup(limits);
      const ns = await namespaceOf(t.server.url, t.rq, "llm");
      // A wide margin: the API counts a call when it arrives, and on a busy 2-core machine running
      // the whole suite a call has reached it 150+ ms after its grant (4 429s with a 150 ms margin).
      await setLlmLimits(t.server.url, ns, "llm", limits, { margin: 400 });
      const tokens = (worker: number, i: number) => 100 + ((worker * 7 + i * 13) % 200);
      const { completed, limited } = await workload(
        createLlmClient(t.api.url, { rq: t.rq }),
        30,
        2,
        tokens,
      );
      expect(limited).toBe(0);
      expect(t.api.stats.rejected).toBe(0);
      expect(completed).toBe(60);
      expect(t.api.stats.served).toBe(60);
    },
  );

  it("the same workload straight at the API is answered 429 (the fake API enforces its limits)", async () => {
    const limits = { rpm: 10, tpm: 100_000, window: 500 };
    await using t = await setup(limits);
    const straight = async (n: number) => {
      const res = await fetch(t.api.url, { method: "POST", headers: { "x-tokens": String(n) } });
      if (res.status === 429) throw new RateLimitedError();
      return res.json();
    };
    const { limited } = await workload(straight, 30, 2, () => 100);
    expect(limited).toBeGreaterThan(0);
    expect(t.api.stats.rejected).toBe(limited);
  });
});
