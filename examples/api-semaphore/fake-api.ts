/**
 * A rate-limited API, as many partners' are: it answers 429 when more than `maxInFlight`
 * requests are in flight, or when the requests in flight together ask for more than
 * `tokenBudget` tokens (each request says how many in `x-tokens`, e.g. an LLM call's size).
 * It keeps the numbers it saw, so a test can check what the clients did to it.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeApiOptions {
  maxInFlight: number;
  tokenBudget: number;
  /** How long a call takes, ms. Default 5. */
  latencyMs?: number;
}

export interface FakeApiStats {
  served: number;
  rejected: number;
  peakInFlight: number;
  peakTokens: number;
}

export async function startFakeApi({ maxInFlight, tokenBudget, latencyMs = 5 }: FakeApiOptions) {
  const stats: FakeApiStats = { served: 0, rejected: 0, peakInFlight: 0, peakTokens: 0 };
  let inFlight = 0;
  let tokens = 0;
  const server = createServer((req, res) => {
    const cost = Number(req.headers["x-tokens"] ?? 1);
    if (!Number.isInteger(cost) || cost < 1) {
      res.writeHead(400).end();
      return;
    }
    if (inFlight + 1 > maxInFlight || tokens + cost > tokenBudget) {
      stats.rejected++;
      res.writeHead(429, { "retry-after": "1", "content-type": "application/json" });
      res.end(JSON.stringify({ error: "rate_limited", inFlight, tokens }));
      return;
    }
    inFlight++;
    tokens += cost;
    stats.peakInFlight = Math.max(stats.peakInFlight, inFlight);
    stats.peakTokens = Math.max(stats.peakTokens, tokens);
    setTimeout(() => {
      // Counted out before the answer leaves: a client that has its answer is no longer in flight.
      inFlight--;
      tokens -= cost;
      stats.served++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: true, cost }));
    }, latencyMs);
  });
  server.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stats,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
