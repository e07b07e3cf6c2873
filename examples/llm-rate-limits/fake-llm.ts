/**
 * A fake LLM API with the limits LLM providers publish: at most `rpm` requests and `tpm` tokens
 * in any `window` ms (a sliding window; real providers count per minute). Over either it answers
 * `429`. Each request says its size in `x-tokens`. It keeps the numbers it saw, so a test or the
 * benchmark can check what the clients did to it.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

export interface LlmLimits {
  /** Requests per window at most. */
  rpm: number;
  /** Tokens per window at most, all requests together. */
  tpm: number;
  /** The window, ms. */
  window: number;
}

export interface LlmStats {
  served: number;
  rejected: number;
  tokens: number;
  /** When the first and the last request were served (ms, performance.now()). */
  first: number;
  last: number;
}

export async function startFakeLlm(limits: LlmLimits, { latencyMs = 5 } = {}) {
  const stats: LlmStats = { served: 0, rejected: 0, tokens: 0, first: 0, last: 0 };
  /** Accepted requests within the window: when, and their tokens. */
  const log: Array<{ at: number; tokens: number }> = [];
  const server = createServer((req, res) => {
    const tokens = Number(req.headers["x-tokens"] ?? 1);
    if (!Number.isInteger(tokens) || tokens < 1) {
      res.writeHead(400).end();
      return;
    }
    const now = performance.now();
    while (log.length > 0 && log[0]!.at <= now - limits.window) log.shift();
    const used = log.reduce((n, r) => n + r.tokens, 0);
    if (log.length + 1 > limits.rpm || used + tokens > limits.tpm) {
      stats.rejected++;
      res.writeHead(429, { "retry-after": "1", "content-type": "application/json" });
      res.end(JSON.stringify({ error: "rate_limited", requests: log.length, tokens: used }));
      return;
    }
    log.push({ at: now, tokens });
    stats.served++;
    stats.tokens += tokens;
    stats.first ||= now;
    stats.last = now;
    setTimeout(() => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: true, tokens }));
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
