// Runs the built ESM packages as a user would: the built server, and the built SDK (the undici
// build under Node; the fetch build with `node --conditions=browser`).
import { spawn } from "node:child_process";
import { checkName } from "@ratequeue/core";
import { Lease, ratequeue } from "@ratequeue/sdk";

const browser = process.execArgv.includes("--conditions=browser");
if (checkName("ok") !== undefined) throw new Error("core: checkName failed");
// The server is a Node program: under the browser conditions (which pick the SDK's fetch build,
// and `ws`'s browser stub) it runs as its own process, as the built bin.
const server = browser
  ? await spawnBin()
  : await (await import("@ratequeue/server")).startServer({ port: 0 });
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
console.log(`ESM dist ok (${browser ? "fetch" : "undici"} build)`);

async function spawnBin() {
  const bin = new URL("../packages/server/dist/cli.js", import.meta.url);
  const child = spawn(process.execPath, [bin.pathname, "--memory", "--port", "0"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const url = await new Promise((resolve, reject) => {
    let err = "";
    child.stderr.setEncoding("utf8").on("data", (d) => {
      err += d;
      const m = /http:\/\/127\.0\.0\.1:\d+/.exec(err);
      if (m) resolve(m[0]);
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}: ${err}`)));
  });
  return {
    url,
    close: () =>
      new Promise((resolve) => {
        child.once("exit", resolve);
        child.kill("SIGTERM");
      }),
  };
}
