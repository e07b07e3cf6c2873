// Requires the built CJS packages and takes a lock through the built SDK and server.
const { checkName } = require("@ratequeue/core");
const { ratequeue, AcquireTimeoutError } = require("@ratequeue/sdk");
const { startServer } = require("@ratequeue/server");

(async () => {
  if (checkName("ok") !== undefined) throw new Error("core: checkName failed");
  const server = await startServer({ port: 0 });
  try {
    const opts = { apiKey: "smoke", baseUrl: server.url };
    const lease = await ratequeue.acquire("smoke", opts);
    // p-retry and the backoff run inside the CJS build: a try-lock on a held lock must time out.
    const err = await ratequeue.acquire("smoke", { ...opts, timeout: 0 }).catch((e) => e);
    if (!(err instanceof AcquireTimeoutError))
      throw new Error(`CJS dist: expected AcquireTimeoutError, got ${err}`);
    await lease.release();
    const down = await require("@ratequeue/sdk")
      .createRateQueue({
        apiKey: "x",
        baseUrl: "http://127.0.0.1:9",
        retry: { retries: 1, minDelay: 1 },
      })
      .acquire("smoke")
      .catch((e) => e);
    if (down.name !== "ServiceUnavailableError")
      throw new Error(`CJS dist: retries broken: ${down}`);
  } finally {
    await server.close();
  }
  console.log("CJS dist ok");
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
