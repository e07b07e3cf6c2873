/**
 * `pnpm -C examples cloudflare-worker`: bundles worker.ts, runs it in workerd (Miniflare), and
 * sends it 60 increments at once over 3 counters; every counter ends at 20.
 */
import { ensureSdkBuilt } from "../shared/runtimes.js";
import { exampleServer } from "../shared/server.js";
import { startCountersStore } from "./counters.js";
import { startWorker } from "./local.js";

await ensureSdkBuilt(); // the bundle takes the SDK's dist/ (its `workerd` export condition)
const rqServer = await exampleServer();
const store = await startCountersStore();
const worker = await startWorker({
  RATEQUEUE_URL: process.env.RATEQUEUE_URL!,
  RATEQUEUE_API_KEY: process.env.RATEQUEUE_API_KEY!,
  COUNTERS_URL: store.url,
});
try {
  const keys = ["a", "b", "c"];
  const started = Date.now();
  const responses = await Promise.all(
    Array.from({ length: 60 }, (_, i) =>
      worker.dispatchFetch(`http://worker/counters/${keys[i % 3]}/increment`, { method: "POST" }),
    ),
  );
  const statuses = new Map<number, number>();
  for (const res of responses) {
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    await res.arrayBuffer();
  }
  console.log(
    `60 requests in ${Date.now() - started} ms: ${[...statuses].map(([s, n]) => `${n}× ${s}`).join(", ")}`,
  );
  for (const key of keys) console.log(`  counter ${key}: ${store.value(key)} (expected 20)`);
  console.log(
    `  one key's read-modify-writes at once, at most: ${store.tracker.maxPerKey}; all keys: ${store.tracker.maxOverall}`,
  );
} finally {
  await worker.dispose();
  await store.close();
  await rqServer.close();
}
