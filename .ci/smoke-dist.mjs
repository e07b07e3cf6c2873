// Imports the built ESM packages and runs one acquire+release through the built server.
import { checkName } from "@ratequeue/core";
import { startServer } from "@ratequeue/server";

if (checkName("ok") !== undefined) throw new Error("core: checkName failed");
const server = await startServer({ port: 0 });
const res = await fetch(`${server.url}/v1/requests/smoke?wait=0`, {
  method: "PUT",
  headers: { authorization: "Bearer smoke", "content-type": "application/json" },
  body: JSON.stringify({ resource: "smoke" }),
});
const snap = await res.json();
await server.close();
if (snap.state !== "active")
  throw new Error(`ESM dist: expected active, got ${JSON.stringify(snap)}`);
console.log("ESM dist ok");
