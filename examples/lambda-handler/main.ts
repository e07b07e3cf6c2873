/**
 * `pnpm -C examples lambda-handler`: invokes the handler 60 times at once for 4 orders (up to
 * 10 execution environments, each with its own client, as on Lambda), then once with a bad
 * event that makes it throw, and shows every order's updates were all applied.
 */
import { createRateQueue } from "@ratequeue/sdk";
import { exampleServer } from "../shared/server.js";
import { createHandler, OrderTable } from "./handler.js";
import { localLambda } from "./harness.js";

const rqServer = await exampleServer();
const orders = new OrderTable(); // the database every environment shares
// Each environment's module load makes its own client, as `export const handler` does on Lambda.
const lambda = localLambda(() => createHandler({ rq: createRateQueue(), orders }), {
  maxEnvironments: 10,
});

const events = Array.from({ length: 60 }, (_, i) => ({ orderId: `A${i % 4}`, quantity: 1 }));
const outcomes = await Promise.all(events.map((event) => lambda.invoke(event)));
console.log(
  `${outcomes.filter((o) => o.ok).length}/${events.length} invocations succeeded on ${lambda.coldStarts} environments`,
);
for (const orderId of ["A0", "A1", "A2", "A3"]) {
  console.log(`  order ${orderId}: ${(await orders.get(orderId)).quantity} items (expected 15)`);
}
const bad = await lambda.invoke({ orderId: "A0", quantity: -1 });
console.log(`a bad event: ${bad.ok ? "succeeded?!" : String(bad.error)}`);
const after = await lambda.invoke({ orderId: "A0", quantity: 1 });
console.log(`the next event for A0: ${after.ok ? after.result.body : String(after.error)}`);
await rqServer.close();
