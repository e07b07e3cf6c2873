// Compiles against the built declarations of @ratequeue/sdk as an edge app would.
import { createRateQueue, type Lease, LeaseLostError } from "@ratequeue/sdk";

declare const env: { RATEQUEUE_API_KEY: string };
const rq = createRateQueue({ apiKey: env.RATEQUEUE_API_KEY, baseUrl: "https://locks.internal" });
export async function handle(): Promise<number> {
  const token = await rq.acquire(
    "report",
    { timeout: 1_000 },
    (lease: Lease) => lease.fencingToken,
  );
  const lease = await rq.acquire("report");
  try {
    return token + lease.fencingToken;
  } catch (error) {
    if (error instanceof LeaseLostError) return -1;
    throw error;
  } finally {
    await lease[Symbol.asyncDispose]();
  }
}
