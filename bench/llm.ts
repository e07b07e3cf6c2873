import { createLlmClient, namespaceOf, setLlmLimits } from "../examples/llm-rate-limits/client.js";
import { type LlmLimits, startFakeLlm } from "../examples/llm-rate-limits/fake-llm.js";
import { efficiency, workload } from "../examples/llm-rate-limits/run.js";
import { createRateQueue } from "../packages/sdk/src/node.js";

/**
 * The LLM example's workload (examples/llm-rate-limits) against the server at `url`: 30 workers
 * call a fake API through a resource with its limits; how many were answered 429, and what
 * share of the most the API allows was served.
 */
export async function llmThroughput(url: string, quick: boolean) {
  const limits: LlmLimits = { rpm: 50, tpm: 1_000_000, window: 1_000 };
  const calls = quick ? 4 : 10; // per worker: 120 calls (2.4 windows) or 300 (6)
  const api = await startFakeLlm(limits);
  const rq = createRateQueue({ apiKey: "bench-llm", baseUrl: url });
  try {
    const ns = await namespaceOf(url, rq, "llm");
    await setLlmLimits(url, ns, "llm", limits);
    const tokens = (worker: number, i: number) => 50 + ((worker * 7 + i * 13) % 150);
    const { limited } = await workload(createLlmClient(api.url, { rq }), 30, calls, tokens);
    const { served, first, last } = api.stats;
    return {
      limits,
      limited,
      served,
      span: last - first,
      share: efficiency(served, first, last, limits.rpm, limits.window),
    };
  } finally {
    await api.close();
    await rq.close?.();
  }
}
