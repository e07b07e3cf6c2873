/**
 * `pnpm -C examples llm-rate-limits`: 30 workers call a fake LLM API that allows 20 requests
 * and 4,000 tokens per second (sliding), first straight at it (429s), then through RateQueue with
 * the same limits set on a resource (none, and close to the most the API allows).
 */
import { createRateQueue } from "@ratequeue/sdk";
import { exampleServer } from "../shared/server.js";
import { createLlmClient, namespaceOf, RateLimitedError, setLlmLimits } from "./client.js";
import { type LlmLimits, startFakeLlm } from "./fake-llm.js";
import { efficiency, workload } from "./run.js";

const limits: LlmLimits = { rpm: 20, tpm: 4_000, window: 1_000 };
const tokens = (worker: number, i: number) => 50 + ((worker * 7 + i * 13) % 150);
const rqServer = await exampleServer();
const rq = createRateQueue();

async function run(label: string, call: (url: string) => (tokens: number) => Promise<unknown>) {
  const api = await startFakeLlm(limits);
  const { completed, limited } = await workload(call(api.url), 30, 4, tokens);
  const share = efficiency(
    api.stats.served,
    api.stats.first,
    api.stats.last,
    limits.rpm,
    limits.window,
  );
  console.log(
    `${label}: ${completed} calls answered, ${limited} answered 429; ${api.stats.served} served in ${((api.stats.last - api.stats.first) / 1000).toFixed(1)} s = ${(share * 100).toFixed(0)}% of the most the API allows`,
  );
  await api.close();
}

await run("straight at the API", (url) => async (n) => {
  const res = await fetch(url, { method: "POST", headers: { "x-tokens": String(n) } });
  if (res.status === 429) throw new RateLimitedError();
  return res.json();
});
const ns = await namespaceOf(rqServer.url, rq, "llm", process.env.RATEQUEUE_ADMIN_KEY);
await setLlmLimits(rqServer.url, ns, "llm", limits, { adminKey: process.env.RATEQUEUE_ADMIN_KEY });
await run("through RateQueue  ", (url) => createLlmClient(url, { rq }));
await rqServer.close();
