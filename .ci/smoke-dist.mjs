// Runs the built ESM packages as a user would: the built server, and the built SDK (the undici
// build under Node; the fetch build with `node --conditions=browser`).
import { checkName } from "@ratequeue/core";
import { Lease, ratequeue } from "@ratequeue/sdk";
import { startServer } from "@ratequeue/server";

if (checkName("ok") !== undefined) throw new Error("core: checkName failed");
const server = await startServer({ port: 0 });
try {
  const result = await ratequeue.acquire(
    "smoke",
    { apiKey: "smoke", baseUrl: server.url },
    (lease) => {
      if (!(lease instanceof Lease) || !(lease.fencingToken > 0)) throw new Error("no lease");
      return "ran";
    },
  );
  if (result !== "ran") throw new Error(`ESM dist: expected fn's result, got ${result}`);
  // (`await using` does not parse on Node 20; this is what it calls.)
  const lease = await ratequeue.acquire("smoke", { apiKey: "smoke", baseUrl: server.url });
  if (lease.signal.aborted) throw new Error("lease lost at once");
  await lease[Symbol.asyncDispose]();
} finally {
  await server.close();
}
console.log(
  `ESM dist ok (${process.execArgv.includes("--conditions=browser") ? "fetch" : "undici"} build)`,
);
