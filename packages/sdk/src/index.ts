/**
 * `@ratequeue/sdk` for runtimes with `fetch` (edge workers, Bun, Deno, browsers). On Node.js the
 * package's `node` export condition selects the undici build instead; the API is the same.
 *
 * @example
 * ```ts
 * import { ratequeue } from "@ratequeue/sdk";
 * await ratequeue.acquire(`billing-update-${customerId}`, { apiKey }, async (lease) => {
 *   await updateBillingRecord(customerId, data, { fence: lease.fencingToken });
 * });
 * ```
 */
import { fetchTransport, globalWebSocket } from "@ratequeue/core";
import { readEnv } from "./internal/env.js";
import { makeRateQueue, type RateQueue } from "./internal/rate-queue.js";
import type { RateQueueOptions } from "./options.js";

export * from "./internal/exports.js";

const defaults = { transport: () => fetchTransport(), webSocket: globalWebSocket, env: readEnv };

/**
 * A RateQueue client with its own defaults; per-call options override them.
 *
 * @example
 * ```ts
 * const rq = createRateQueue({ apiKey: env.RATEQUEUE_API_KEY, baseUrl: "https://locks.internal" });
 * await using lease = await rq.acquire("nightly-report", { timeout: 0 });
 * ```
 */
export function createRateQueue(options: RateQueueOptions = {}): RateQueue {
  return makeRateQueue(options, defaults);
}

/** The default client, configured from `RATEQUEUE_API_KEY` and `RATEQUEUE_URL` at each call. */
export const ratequeue: RateQueue = createRateQueue();
