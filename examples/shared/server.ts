import { startServer } from "@ratequeue/server";

/**
 * The RateQueue server an example's `main.ts` talks to: `RATEQUEUE_URL` if it is set (a server
 * you run), else one embedded in this process, in memory. Either way the SDK's default instance,
 * `ratequeue`, reads `RATEQUEUE_URL` and `RATEQUEUE_API_KEY` from the environment at each call.
 */
export async function exampleServer(): Promise<{ url: string; close(): Promise<void> }> {
  process.env.RATEQUEUE_API_KEY ||= "examples";
  const url = process.env.RATEQUEUE_URL;
  if (url) return { url, close: async () => {} };
  const server = await startServer({ port: 0 });
  process.env.RATEQUEUE_URL = server.url;
  console.log(`embedded RateQueue server at ${server.url} (set RATEQUEUE_URL to use yours)`);
  return server;
}
