/** `RATEQUEUE_API_KEY` and `RATEQUEUE_URL`, where a `process.env` exists (Node, Bun, Deno's compat). */
export function readEnv(): { apiKey?: string; baseUrl?: string } {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env;
  return { apiKey: env?.RATEQUEUE_API_KEY || undefined, baseUrl: env?.RATEQUEUE_URL || undefined };
}
