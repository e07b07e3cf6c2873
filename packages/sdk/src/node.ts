/**
 * `@ratequeue/sdk` on Node.js: the same API, over undici (a keep-alive connection pool with
 * explicit timeouts above the server's poll window). Selected by the `node` export condition.
 *
 * @example
 * ```ts
 * import { ratequeue } from "@ratequeue/sdk";
 * const saved = await ratequeue.acquire("user-update-42", {}, (lease) => save(user, lease.fencingToken));
 * ```
 */
import { nodeWebSocket, type UndiciTransportOptions, undiciTransport } from "@ratequeue/core/node";
import { readEnv } from "./internal/env.js";
import { makeRateQueue, type RateQueue } from "./internal/rate-queue.js";
import type { RateQueueOptions } from "./options.js";

export * from "./internal/exports.js";
export { nodeWebSocket, type UndiciTransportOptions, undiciTransport };

const defaults = { transport: () => undiciTransport(), webSocket: nodeWebSocket, env: readEnv };

/**
 * A RateQueue client with its own defaults; per-call options override them. On Node.js,
 * `dispatcher` sends through an undici dispatcher of yours (a `Pool`, or `MockAgent` in tests).
 *
 * @example
 * ```ts
 * const rq = createRateQueue({ apiKey: process.env.RATEQUEUE_API_KEY });
 * ```
 */
export function createRateQueue(
  options: RateQueueOptions & Pick<UndiciTransportOptions, "dispatcher"> = {},
): RateQueue {
  const { dispatcher, ...rest } = options;
  return makeRateQueue(
    dispatcher === undefined || rest.transport !== undefined
      ? rest
      : { ...rest, transport: undiciTransport({ dispatcher }) },
    defaults,
  );
}

/** The default client, configured from `RATEQUEUE_API_KEY` and `RATEQUEUE_URL` at each call. */
export const ratequeue: RateQueue = createRateQueue();
