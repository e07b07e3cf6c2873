// Requires the built CJS packages and runs one acquire+release through the built server.
const { checkName } = require("@ratequeue/core");
const { startServer } = require("@ratequeue/server");

(async () => {
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
    throw new Error(`CJS dist: expected active, got ${JSON.stringify(snap)}`);
  console.log("CJS dist ok");
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
