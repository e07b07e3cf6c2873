/**
 * Calling an LLM API from many workers without a 429: every call first waits in RateQueue's
 * line for the resource `name`, whose rate limits mirror the API's (requests and tokens per
 * window). The operator sets them once (`setLlmLimits`, the admin API); the workers only say
 * how many tokens each call takes (`load`).
 */
import { type RateQueue, ratequeue } from "@ratequeue/sdk";
import type { LlmLimits } from "./fake-llm.js";

export class RateLimitedError extends Error {
  override name = "RateLimitedError";
}

/**
 * Sets the API's limits on resource `name` of namespace `ns` (admin API): requests and tokens
 * per window, sliding, and no cap on tokens in flight. RateQueue's window is `margin` ms longer
 * than the API's: a call reaches the API a little after its grant, and those delays differ, so
 * two grants a full window apart may arrive closer together. The margin must cover the spread
 * of that delay: a few ms on one quiet machine, more across a network or on a busy one.
 */
export async function setLlmLimits(
  serverUrl: string,
  ns: string,
  name: string,
  limits: LlmLimits,
  { adminKey = "", margin = 20 }: { adminKey?: string; margin?: number } = {},
): Promise<void> {
  const window = limits.window + margin;
  const res = await fetch(`${serverUrl}/v1/admin/namespaces/${ns}/limits/${name}`, {
    method: "PUT",
    headers: { "content-type": "application/json", authorization: `Bearer ${adminKey}` },
    body: JSON.stringify({
      capacity: 1_000_000_000, // tokens in flight: the API does not cap them
      rates: [
        { limit: limits.rpm, window },
        { limit: limits.tpm, window, counts: "load" },
      ],
    }),
  });
  if (!res.ok) throw new Error(`setting the limits: ${res.status} ${await res.text()}`);
}

/**
 * The id of the namespace `rq`'s API key maps to (the admin API names namespaces by id, a keyed
 * hash of the key): the one where a lease this client holds on `name` shows.
 */
export async function namespaceOf(
  serverUrl: string,
  rq: RateQueue,
  name: string,
  adminKey = "",
): Promise<string> {
  const headers = { authorization: `Bearer ${adminKey}` };
  const get = async (path: string) => {
    const res = await fetch(`${serverUrl}/v1/admin${path}`, { headers });
    return res.ok ? res.json() : undefined;
  };
  await using lease = await rq.acquire(name);
  const { namespaces } = (await get("/namespaces")) as { namespaces: Array<{ id: string }> };
  for (const { id } of namespaces) {
    const resource = await get(`/namespaces/${id}/resources/${encodeURIComponent(name)}`);
    if (resource?.holders.some((h: { id: string }) => h.id === lease.id)) return id;
  }
  throw new Error(`no namespace shows the lease ${lease.id} on ${name}`);
}

/** Calls the API with a prompt of `tokens` tokens, once RateQueue's limits let it. */
export function createLlmClient(
  url: string,
  { rq = ratequeue, name = "llm" }: { rq?: RateQueue; name?: string } = {},
) {
  return (tokens: number): Promise<unknown> =>
    rq.acquire(name, { load: tokens }, async () => {
      const res = await fetch(url, {
        method: "POST",
        headers: { "x-tokens": String(tokens) },
        signal: AbortSignal.timeout(10_000),
      });
      if (res.status === 429) throw new RateLimitedError(await res.text());
      if (!res.ok) throw new Error(`API answered ${res.status}`);
      return res.json();
    });
}
