// Takes a lease in its own Deno process and holds it until killed.
import { createRateQueue } from "@ratequeue/sdk";

const [baseUrl, apiKey, name, transport] = Deno.args;
const lease = await createRateQueue({ apiKey, baseUrl, session: transport }).acquire(name);
console.log(`held ${lease.fencingToken}`);
setInterval(() => {}, 60_000);
