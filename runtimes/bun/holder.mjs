// Takes a lease in its own Bun process and holds it until killed.
import { createRateQueue } from "@ratequeue/sdk";

const [baseUrl, apiKey, name, transport] = process.argv.slice(2);
const lease = await createRateQueue({ apiKey, baseUrl, session: transport }).acquire(name);
console.log(`held ${lease.fencingToken}`);
setInterval(() => {}, 60_000);
