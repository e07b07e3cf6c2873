/**
 * One chaos client: a process that acquires, holds, releases and abandons at random, writes
 * through the harness's fenced register while it holds a lock, and reports every step to the
 * harness over IPC. It may be SIGKILLed at any moment; the harness records that itself.
 */
import { createRateQueue, LeaseLostError } from "../packages/sdk/src/node.js";
import { RESOURCES } from "./resources.js";

const [serverUrl, registerUrl, seedArg] = process.argv.slice(2) as [string, string, string];

let seed = Number(seedArg);
const random = () => {
  // mulberry32: reproducible from the seed the harness logs
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const report = (m: Record<string, unknown>) => process.send?.(m);

const rq = createRateQueue({
  apiKey: "chaos",
  baseUrl: serverUrl,
  retry: { retries: 10, maxDelay: 500 },
});
let stopping = false;
process.on("message", (m) => {
  if (m === "stop") stopping = true;
});

async function write(name: string, token: number): Promise<void> {
  const res = await fetch(registerUrl, { method: "POST", body: JSON.stringify({ name, token }) });
  report({ type: "write", name, token, at: Date.now(), accepted: res.status === 200 });
}

while (!stopping) {
  const { name, capacity } = pick(RESOURCES);
  const controller = new AbortController();
  const timeout = pick([undefined, 0, 100, 1_000]);
  if (random() < 0.2) setTimeout(() => controller.abort(), random() * 300); // give up while waiting
  try {
    await rq.acquire(name, { capacity, timeout, signal: controller.signal }, async (lease) => {
      const token = lease.fencingToken;
      report({ type: "grant", name, token, at: Date.now() });
      lease.signal.addEventListener("abort", () =>
        report({ type: "lost", name, token, at: Date.now() }),
      );
      if (capacity === 1) await write(name, token);
      await sleep(5 + random() * 40);
      if (capacity === 1 && !lease.signal.aborted) await write(name, token);
      if (!lease.signal.aborted) report({ type: "release", name, token, at: Date.now() });
    });
  } catch (error) {
    report({
      type: "error",
      kind: error instanceof LeaseLostError ? "lease_lost" : (error as Error).name,
    });
  }
  await sleep(random() * 20);
}
process.disconnect?.();
