// Compiles against the built declarations of @ratequeue/sdk as a Node app with bundler
// resolution would: the Node-only options through `@ratequeue/sdk/node`.
import { createRateQueue, undiciTransport } from "@ratequeue/sdk/node";
import { Agent } from "undici";

const rq = createRateQueue({ apiKey: "k", dispatcher: new Agent() });
const viaTransport = createRateQueue({ apiKey: "k", transport: undiciTransport() });
export async function run(): Promise<void> {
  await using lease = await rq.acquire("nightly");
  await viaTransport.acquire("other", {}, () => lease.fencingToken);
}
