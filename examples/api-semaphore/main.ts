/**
 * `pnpm -C examples api-semaphore`: 30 workers × 5 calls of 1–4 tokens against a fake API that
 * allows 4 requests and 8 tokens in flight; first straight at it (429s), then through RateQueue
 * (none).
 */
import { exampleServer } from "../shared/server.js";
import { createApiClient, RateLimitedError } from "./client.js";
import { startFakeApi } from "./fake-api.js";

const limits = { maxInFlight: 4, tokenBudget: 8 };
const rqServer = await exampleServer();

type Call = (tokens: number) => Promise<unknown>;

async function run(label: string, connect: (url: string) => Call) {
  const api = await startFakeApi(limits);
  const call = connect(api.url);
  let limited = 0;
  await Promise.all(
    Array.from({ length: 30 }, async (_, worker) => {
      for (let i = 0; i < 5; i++) {
        await call(1 + ((worker + i) % 4)).catch((error) => {
          if (error instanceof RateLimitedError) limited++;
          else throw error;
        });
      }
    }),
  );
  console.log(
    `${label}: ${api.stats.served} calls served, ${api.stats.rejected} answered 429 (${limited} seen by workers); peak ${api.stats.peakInFlight} requests / ${api.stats.peakTokens} tokens in flight`,
  );
  await api.close();
}

await run("straight at the API", (url) => async (tokens) => {
  const res = await fetch(url, { method: "POST", headers: { "x-tokens": String(tokens) } });
  if (res.status === 429) throw new RateLimitedError();
  return res.json();
});
await run("through RateQueue  ", (url) => createApiClient(url, limits));
await rqServer.close();
