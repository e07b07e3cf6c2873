/**
 * A Cloudflare Worker whose `POST /counters/:key/increment` reads a counter from a store, adds
 * one and writes it back — a read-modify-write that concurrent requests (on one isolate or on
 * many machines) would interleave, losing updates. It holds the lock `counter-${key}` around it.
 *
 * - Configured from its bindings (`wrangler.toml` `[vars]` and secrets), no `nodejs_compat`: a
 *   Worker has no `process.env`, so the SDK's default instance cannot see them.
 * - A client per request, closed before the response (`await using`): in workerd a connection
 *   belongs to the request that opened it, and a lease cannot be used from another request.
 * - The callback form releases the lock when the work returns or throws — before responding —
 *   and `expiresIn` bounds the hold if the isolate is evicted mid-request.
 * - The write carries `lease.fencingToken`: the store refuses a write older than the last one it
 *   accepted, so a request whose lease was lost cannot overwrite its successor's.
 */
import { AcquireTimeoutError, createRateQueue } from "@ratequeue/sdk";

export interface Env {
  RATEQUEUE_URL: string;
  RATEQUEUE_API_KEY: string;
  /** The counters store: a database behind HTTP. */
  COUNTERS_URL: string;
}

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const match = /^\/counters\/([\w-]{1,64})\/increment$/.exec(new URL(request.url).pathname);
    if (!match || request.method !== "POST") return json({ error: "not_found" }, 404);
    const key = match[1]!;

    await using rq = createRateQueue({ apiKey: env.RATEQUEUE_API_KEY, baseUrl: env.RATEQUEUE_URL });
    try {
      const value = await rq.acquire(
        `counter-${key}`,
        { timeout: 10_000, expiresIn: 30_000 },
        async (lease) => {
          const url = `${env.COUNTERS_URL}/counters/${key}`;
          const read = await fetch(url, { signal: lease.signal });
          if (!read.ok) throw new Error(`reading ${key}: HTTP ${read.status}`);
          const { value } = (await read.json()) as { value: number };
          const write = await fetch(url, {
            method: "PUT",
            headers: {
              "content-type": "application/json",
              "x-fencing-token": `${lease.fencingToken}`,
            },
            body: JSON.stringify({ value: value + 1 }),
            signal: lease.signal,
          });
          if (!write.ok) throw new Error(`writing ${key}: HTTP ${write.status}`);
          return value + 1;
        },
      );
      return json({ key, value });
    } catch (error) {
      // Waited 10 s in line: tell the client to come back rather than hold the request open.
      if (error instanceof AcquireTimeoutError) return json({ error: "busy" }, 503);
      return json({ error: error instanceof Error ? error.message : String(error) }, 502);
    }
  },
};
