// workerd (through Miniflare): each conformance case runs in a request of its own to a real
// Worker bundled with the `workerd` condition, without `nodejs_compat`, over both transports.
// Then the workerd-only checks: the default instance with and without `nodejs_compat`, and a
// lease kept past the request that acquired it.
// Usage: node runner.mjs <baseUrl> <apiKey> <controlUrl> [cases]
import { createRequire } from "node:module";
import { cases } from "../conformance/cases.mjs";
import { bundleWorker, COMPATIBILITY_DATE, startWorker } from "./load.mjs";

const [baseUrl, apiKey, control, only] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const { sdkFiles } = await bundleWorker();
console.log(
  `# miniflare ${require("miniflare/package.json").version}, workerd ${createRequire(require.resolve("miniflare"))("workerd/package.json").version}, compatibility date ${COMPATIBILITY_DATE}; bundled ${sdkFiles.join(", ")}`,
);
if (
  !sdkFiles.some((f) => /packages\/sdk\/dist\/index\.js$/.test(f)) ||
  !sdkFiles.some((f) => /packages\/core\/dist\/index\.js$/.test(f)) ||
  sdkFiles.some((f) => /node\.js$/.test(f) || /\/src\//.test(f))
) {
  console.log(
    `FAIL workerd resolve: the workerd bundle took ${sdkFiles.join(", ")}, not the built sdk and core dist/index.js`,
  );
  process.exit(1);
}

async function get(mf, path, ms = 15_000) {
  const res = await mf.dispatchFetch(`http://worker${path}`, { signal: AbortSignal.timeout(ms) });
  return JSON.parse(await res.text());
}

let failed = 0;
const mf = await startWorker({
  bindings: { RATEQUEUE_URL: baseUrl, RATEQUEUE_API_KEY: `${apiKey}-env` },
});
try {
  for (const transport of ["websocket", "http"]) {
    for (const name of only ? only.split(",") : Object.keys(cases)) {
      const q = new URLSearchParams({ case: name, transport, baseUrl, apiKey, control });
      try {
        const out = await get(mf, `/run?${q}`);
        for (const line of out.lines) console.log(line);
        failed += out.failed;
      } catch (error) {
        failed++;
        console.log(
          `FAIL workerd ${transport} ${name}: the request failed: ${error?.message ?? error}`,
        );
      }
    }
  }
} finally {
  await mf.dispose();
}

// workerd-only checks, each printed as `ok|FAIL workerd - <check>`.
function check(name, ok, note) {
  if (!ok) failed++;
  console.log(`${ok ? "ok" : "FAIL"} workerd - ${name} # ${note}`);
}
if (!only) {
  const bindings = { RATEQUEUE_URL: baseUrl, RATEQUEUE_API_KEY: `${apiKey}-env` };
  for (const nodejsCompat of [false, true]) {
    const flag = nodejsCompat ? "with-nodejs_compat" : "without-nodejs_compat";
    const w = await startWorker({ nodejsCompat, bindings });
    try {
      const explicit = await get(w, `/explicit?name=env-explicit-${flag}`);
      check(
        `explicit-options-${flag}`,
        explicit.ok,
        explicit.ok
          ? "createRateQueue({ apiKey: env.RATEQUEUE_API_KEY, baseUrl: env.RATEQUEUE_URL }) works"
          : explicit.error,
      );
      const byDefault = await get(w, `/default-instance?name=env-default-${flag}`);
      // Without nodejs_compat there is no process.env: the default instance cannot see the
      // bindings (it falls back to its built-in default server, or says the key is missing),
      // so it must not work here. With it (and a compatibility date from 2025-04-01),
      // process.env holds the string bindings, and it works.
      if (nodejsCompat)
        check(
          `default-instance-${flag}`,
          byDefault.ok,
          byDefault.ok
            ? "ratequeue.acquire() reads the bindings through process.env"
            : byDefault.error,
        );
      else
        check(
          `default-instance-${flag}`,
          !byDefault.ok,
          `ratequeue.acquire() does not see the bindings -> ${byDefault.error ?? "ok"}`,
        );
    } finally {
      await w.dispose();
    }
  }
  // A lease should not outlive the request that acquired it. Kept past the response anyway, it
  // ends on the server by its expiresIn at the latest (over HTTP, sooner: the finished request's
  // polls stop; over a WebSocket, workerd keeps the socket and its pings going), and a later
  // request that still has the Lease object gets an answer from release(), not a hang.
  const KEPT_EXPIRES_IN = 1_000;
  for (const transport of ["websocket", "http"]) {
    const w = await startWorker({ bindings });
    try {
      const name = `kept-${transport}-${Date.now()}`;
      await get(w, `/keep?name=${name}&transport=${transport}&expiresIn=${KEPT_EXPIRES_IN}`);
      const answered = Date.now();
      let snapshot;
      while (Date.now() - answered < KEPT_EXPIRES_IN + 2_000) {
        const res = await fetch(`${baseUrl}/v1/resources/${name}`, {
          headers: { authorization: `Bearer ${apiKey}-env` },
        });
        snapshot = await res.json();
        if (snapshot.active === 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const endedAfter = Date.now() - answered;
      check(
        `lease-ends-with-its-request-${transport}`,
        snapshot.active === 0,
        snapshot.active === 0
          ? `the server ended the lease ${endedAfter} ms after the request that took it answered (expiresIn ${KEPT_EXPIRES_IN} ms)`
          : `the server still shows the lease held (active=${snapshot.active}) ${endedAfter} ms after the request that took it answered`,
      );
      const used = await get(w, `/use-kept?name=${name}`);
      check(
        `lease-used-from-next-request-${transport}`,
        // It must answer soon (released, or an error that says why); not hang on a dead link.
        used.releaseMs < 3_000,
        `in the next request: lease.signal aborted=${used.signalAborted}${used.signalReason ? ` (${used.signalReason})` : ""}; lease.release() -> ${used.release} after ${used.releaseMs} ms; the same client's next acquire -> ${used.sameClientAgain}`,
      );
    } finally {
      await w.dispose();
    }
  }
}
process.exit(failed === 0 ? 0 : 1);
