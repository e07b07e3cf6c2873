/**
 * `RATEQUEUE_API_KEY` and `RATEQUEUE_URL`, where a `process.env` exists and may be read (Node,
 * Bun, Deno's compat layer). Deno without `--allow-env` throws on the read: that is no env, not
 * an error — explicit options work without the permission.
 */
export function readEnv(): { apiKey?: string; baseUrl?: string } {
  let env: Record<string, string | undefined> | undefined;
  try {
    env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
    return {
      apiKey: env?.RATEQUEUE_API_KEY || undefined,
      baseUrl: env?.RATEQUEUE_URL || undefined,
    };
  } catch {
    return {};
  }
}
