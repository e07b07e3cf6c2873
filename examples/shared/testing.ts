import type { ResourceSnapshot } from "@ratequeue/core";
import { type RunningServer, startServer } from "@ratequeue/server";

/**
 * A real RateQueue server on a free port, in memory, for one test. Its `grace` is 1 s instead
 * of 200 ms, as in the SDK's own tests: a holder gives its lease up when the server has not
 * answered it for `grace`, and a test process sharing 2 loaded cores with the rest of the suite
 * can stall that long. Nothing else differs from `startServer({ port: 0 })`.
 */
export function startTestServer(): Promise<RunningServer> {
  return startServer({ port: 0, grace: 1_000 });
}

/** What the server says about a resource (not what a client believes): `used`, `queued`, … */
export async function resourceState(
  server: { url: string },
  name: string,
  apiKey: string,
): Promise<ResourceSnapshot> {
  const res = await fetch(`${server.url}/v1/resources/${encodeURIComponent(name)}`, {
    headers: { authorization: `Bearer ${apiKey}` },
    signal: AbortSignal.timeout(5_000),
  });
  return (await res.json()) as ResourceSnapshot;
}

/** Nobody holds `name` and nobody waits for it: what every example must leave behind. */
export async function isIdle(server: { url: string }, name: string, apiKey: string) {
  const { used, queued } = await resourceState(server, name, apiKey);
  return used === 0 && queued === 0;
}

/** A small seeded PRNG (mulberry32), so a failing run can be replayed with the same numbers. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
