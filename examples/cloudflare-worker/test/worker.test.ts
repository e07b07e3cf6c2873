import type { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureSdkBuilt, SDK_FETCH_BUILD } from "../../shared/runtimes.js";
import { isIdle, startTestServer } from "../../shared/testing.js";
import { startCountersStore } from "../counters.js";
import { bundleWorker, startWorker } from "../local.js";

const API_KEY = "worker-example";

let server: Awaited<ReturnType<typeof startTestServer>>;
let store: Awaited<ReturnType<typeof startCountersStore>>;
let worker: Miniflare;
let bundle: Awaited<ReturnType<typeof bundleWorker>>;

beforeAll(async () => {
  await ensureSdkBuilt();
  bundle = await bundleWorker();
  server = await startTestServer();
  store = await startCountersStore();
  worker = await startWorker(
    { RATEQUEUE_URL: server.url, RATEQUEUE_API_KEY: API_KEY, COUNTERS_URL: store.url },
    bundle.script,
  );
}, 120_000);

afterAll(async () => {
  await worker?.dispose();
  await store?.close();
  await server?.close();
}, 15_000);

async function increment(key: string) {
  const res = await worker.dispatchFetch(`http://worker/counters/${key}/increment`, {
    method: "POST",
    signal: AbortSignal.timeout(15_000),
  });
  return { status: res.status, body: (await res.json()) as { value?: number; error?: string } };
}

describe("cloudflare-worker", () => {
  it("bundles the SDK's workerd build: dist/index.js and core's dist, no source, no Node build", () => {
    expect(bundle.packageFiles.sort()).toEqual([
      expect.stringMatching(/packages\/core\/dist\/index\.js$/),
      expect.stringMatching(/packages\/sdk\/dist\/chunk-\w+\.js$/),
      expect.stringMatching(SDK_FETCH_BUILD),
    ]);
    expect(bundle.script).not.toMatch(/from ["']node:|require\(["'](ws|undici)["']\)/);
  });

  it("runs concurrent increments of one counter one at a time: no lost update, no overlap", async () => {
    const hot = Array.from({ length: 40 }, () => increment("hot"));
    const others = Array.from({ length: 20 }, (_, i) => increment(`cold-${i % 2}`));
    const [hotResults, otherResults] = await Promise.all([Promise.all(hot), Promise.all(others)]);

    expect([...hotResults, ...otherResults].filter((r) => r.status !== 200)).toEqual([]);
    // Each request saw the value its predecessor wrote: 1, 2, …, 40, each once.
    const values = hotResults.map((r) => r.body.value!).sort((a, b) => a - b);
    expect(values).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(store.value("hot")).toBe(40);
    expect(store.value("cold-0")).toBe(10);
    expect(store.value("cold-1")).toBe(10);
    expect(store.tracker.maxPerKey).toBe(1);
    expect(store.tracker.maxOverall).toBeGreaterThan(1); // different counters did not wait
    expect(store.refused).toBe(0);
    // Released before each response went out: nobody holds or waits once all are answered.
    for (const key of ["hot", "cold-0", "cold-1"]) {
      expect(await isIdle(server, `counter-${key}`, API_KEY)).toBe(true);
    }
  }, 20_000);

  it("releases the lock when the store fails mid-request (502), and the next increment goes through", async () => {
    await increment("flaky");
    store.failReads("flaky");
    const failed = await increment("flaky");
    expect(failed).toEqual({ status: 502, body: { error: "reading flaky: HTTP 500" } });
    expect(await isIdle(server, "counter-flaky", API_KEY)).toBe(true);
    expect(await increment("flaky")).toEqual({ status: 200, body: { key: "flaky", value: 2 } });
    expect(store.tracker.inside).toBe(0);
  }, 20_000);
});
