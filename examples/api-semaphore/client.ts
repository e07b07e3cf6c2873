/**
 * Calling a rate-limited API from many workers — in this process, other processes, other
 * machines — without ever being answered 429: every call first takes its share of two RateQueue
 * semaphores that mirror the API's limits.
 *
 * - `${api}-requests`, `capacity: maxInFlight`, `load: 1`: a slot per request in flight;
 * - `${api}-tokens`, `capacity: tokenBudget`, `load: cost`: the call's tokens. A large call
 *   waits until enough tokens are free; it is not overtaken by small ones (the head of the line
 *   is never passed), so it is not starved.
 *
 * Every caller takes them in the same order (tokens, then a request slot), so two callers can
 * never each hold what the other waits for.
 */
import { type RateQueue, ratequeue } from "@ratequeue/sdk";

export interface ApiLimits {
  /** Requests in flight at most. */
  maxInFlight: number;
  /** Tokens in flight at most, all requests together. */
  tokenBudget: number;
}

export class RateLimitedError extends Error {
  override name = "RateLimitedError";
}

export function createApiClient(
  url: string,
  limits: ApiLimits,
  { rq = ratequeue, name = "partner-api" }: { rq?: RateQueue; name?: string } = {},
) {
  /** Calls the API with a request that costs `tokens`; resolves with its JSON answer. */
  return function call(tokens: number): Promise<unknown> {
    return rq.acquire(`${name}-tokens`, { capacity: limits.tokenBudget, load: tokens }, () =>
      rq.acquire(`${name}-requests`, { capacity: limits.maxInFlight }, async () => {
        const res = await fetch(url, {
          method: "POST",
          headers: { "x-tokens": String(tokens) },
          signal: AbortSignal.timeout(10_000),
        });
        if (res.status === 429) throw new RateLimitedError(await res.text());
        if (!res.ok) throw new Error(`API answered ${res.status}`);
        return res.json(); // read the whole answer before the slots are released
      }),
    );
  };
}
