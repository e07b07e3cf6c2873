import { RateLimitedError } from "./client.js";

/**
 * `workers` workers, each making `calls` calls of `tokens(worker, i)` tokens, one after the
 * other: counts the calls answered and the 429s.
 */
export async function workload(
  call: (tokens: number) => Promise<unknown>,
  workers: number,
  calls: number,
  tokens: (worker: number, i: number) => number,
): Promise<{ completed: number; limited: number }> {
  let completed = 0;
  let limited = 0;
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      for (let i = 0; i < calls; i++) {
        try {
          await call(tokens(worker, i));
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

/**
 * What share of the most the API allows was served: `served` requests took from `first` to
 * `last`, where a limit of `perWindow` per sliding window of `window` ms needs at least
 * (⌈served ÷ perWindow⌉ − 1) windows (the first `perWindow` may go at once).
 */
export function efficiency(
  served: number,
  first: number,
  last: number,
  perWindow: number,
  window: number,
): number {
  const fastest = (Math.ceil(served / perWindow) - 1) * window;
  return fastest === 0 ? 1 : fastest / Math.max(fastest, last - first);
}
