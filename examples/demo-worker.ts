/**
 * One worker of `pnpm demo`: takes `user-update-42` a few times through the SDK, and tells the
 * parent process what it does. It knows nothing about being killed.
 */
import { createRateQueue } from "@ratequeue/sdk";

const [baseUrl, turns] = process.argv.slice(2) as [string, string];
const rq = createRateQueue({ apiKey: "demo", baseUrl });
const tell = (event: string, token?: number) => process.send?.({ event, token, at: Date.now() });

for (let turn = 0; turn < Number(turns); turn++) {
  tell("asks");
  await rq.acquire("user-update-42", {}, async (lease) => {
    tell("holds", lease.fencingToken);
    await new Promise((r) => setTimeout(r, 120)); // the critical section: update the user
    tell("releases", lease.fencingToken);
  });
  await new Promise((r) => setTimeout(r, 30)); // other work between turns
}
process.disconnect?.();
