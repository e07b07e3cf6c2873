// The Worker (module syntax) that runs the conformance cases inside workerd. Bundled by esbuild
// with the `workerd` condition (as wrangler does) and loaded into Miniflare by runner.mjs.
import { createRateQueue, ratequeue } from "@ratequeue/sdk";
import { runAll } from "../conformance/cases.mjs";
import usingCase from "../conformance/using-case.mjs";

const json = (body, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
const describe = (error) =>
  error instanceof Error ? `${error.name}: ${error.message}` : String(error);

/** A lease kept in module scope by one request, for the next request to look at. */
let kept;
/** How long /use-kept waits for release() (the session gives a release up after 10 s). */
const RELEASE_WAIT = 12_000;

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const q = url.searchParams;
    switch (url.pathname) {
      // One conformance case, in this request.
      case "/run": {
        const lines = [];
        const result = await runAll(
          {
            createRateQueue,
            baseUrl: q.get("baseUrl"),
            apiKey: q.get("apiKey"),
            control: q.get("control"),
            runtime: "workerd",
            loadUsingCase: async () => usingCase,
          },
          { transports: [q.get("transport")], names: [q.get("case")], print: (l) => lines.push(l) },
        );
        return json({ lines, failed: result.failed });
      }
      // For holder.mjs: take a lease and hold it as long as this request's response streams.
      case "/hold": {
        const lease = await createRateQueue({
          apiKey: q.get("apiKey"),
          baseUrl: q.get("baseUrl"),
          session: q.get("transport"),
        }).acquire(q.get("name"));
        // Never closed: the request (and so the lease) lives until the runtime is disposed.
        const body = new ReadableStream({
          start(controller) {
            controller.enqueue(new TextEncoder().encode(`held ${lease.fencingToken}\n`));
          },
        });
        return new Response(body, { headers: { "content-type": "text/plain" } });
      }
      // The default instance (configured from the environment) vs explicit options from `env`.
      case "/default-instance": {
        try {
          const lease = await ratequeue.acquire(q.get("name"), { timeout: 2_000 });
          await lease.release();
          return json({ ok: true });
        } catch (error) {
          return json({ ok: false, error: describe(error) });
        }
      }
      case "/explicit": {
        try {
          const rq = createRateQueue({ apiKey: env.RATEQUEUE_API_KEY, baseUrl: env.RATEQUEUE_URL });
          const lease = await rq.acquire(q.get("name"), { timeout: 2_000 });
          await lease.release();
          return json({ ok: true });
        } catch (error) {
          return json({ ok: false, error: describe(error) });
        }
      }
      // A lease taken by one request and kept past its response...
      case "/keep": {
        const rq = createRateQueue({
          apiKey: env.RATEQUEUE_API_KEY,
          baseUrl: env.RATEQUEUE_URL,
          session: q.get("transport"),
        });
        const expiresIn = Number(q.get("expiresIn") ?? 900_000);
        kept = { rq, lease: await rq.acquire(q.get("name"), { expiresIn }) };
        return json({ fencingToken: kept.lease.fencingToken });
      }
      // ...and used by the next request.
      case "/use-kept": {
        const out = { signalAborted: kept.lease.signal.aborted, signalReason: undefined };
        if (kept.lease.signal.aborted) out.signalReason = describe(kept.lease.signal.reason);
        const releaseStart = Date.now();
        try {
          await Promise.race([
            kept.lease.release(),
            new Promise((_, reject) =>
              setTimeout(
                () => reject(new Error(`release: no answer in ${RELEASE_WAIT} ms`)),
                RELEASE_WAIT,
              ),
            ),
          ]);
          out.release = "ok";
        } catch (error) {
          out.release = describe(error);
        }
        out.releaseMs = Date.now() - releaseStart;
        try {
          const again = await kept.rq.acquire(`${q.get("name")}-again`, { timeout: 2_000 });
          await again.release();
          out.sameClientAgain = "ok";
        } catch (error) {
          out.sameClientAgain = describe(error);
        }
        return json(out);
      }
      default:
        return json({ error: "not found" }, 404);
    }
  },
};
