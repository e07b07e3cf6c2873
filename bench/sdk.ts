import { spawn } from "node:child_process";
import { undiciTransport } from "../packages/core/src/node.js";
import { createRateQueue } from "../packages/sdk/src/node.js";

/** A do-nothing HTTP server in its own process: the floor any HTTP client pays per round trip. */
export async function spawnFloorServer(): Promise<{ url: string; stop: () => void }> {
  const code = `require("node:http").createServer((q, s) => { q.resume(); q.on("end", () => { s.setHeader("content-type", "application/json"); s.end("{}"); }); }).listen(0, "127.0.0.1", function () { console.log("http://127.0.0.1:" + this.address().port); });`;
  const child = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "inherit"] });
  const url = await new Promise<string>((resolve) => {
    child.stdout.setEncoding("utf8").once("data", (d: string) => resolve(d.trim()));
  });
  return { url, stop: () => child.kill() };
}

/** Latencies (ms) of `n` sequential do-nothing round trips through the SDK's own transport. */
export async function floorLatencies(url: string, n: number): Promise<number[]> {
  const transport = undiciTransport();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const res = await transport({
      method: "GET",
      url: `${url}/`,
      headers: {},
      signal: new AbortController().signal,
    });
    await res.text();
    out.push(performance.now() - t);
  }
  return out;
}

/** Latencies (ms) of `n` sequential uncontended `acquire(name, {}, fn)` cycles (acquire + release). */
export async function sdkCycleLatencies(url: string, n: number): Promise<number[]> {
  const rq = createRateQueue({ apiKey: "bench", baseUrl: url });
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await rq.acquire("uncontended", {}, () => {});
    out.push(performance.now() - t);
  }
  return out;
}

function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {}
}

/**
 * One lock, `callers` concurrent callers × `turns` turns × `workMs` of work (CPU, so it takes
 * exactly that long). Returns the wall time and the efficiency against the ideal (all the work
 * back to back, no hand-over cost).
 */
export async function contendedLock(url: string, callers: number, turns: number, workMs: number) {
  const rq = createRateQueue({ apiKey: "bench", baseUrl: url });
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      for (let t = 0; t < turns; t++) await rq.acquire("hot", {}, () => spin(workMs));
    }),
  );
  const wall = performance.now() - t0;
  const ideal = callers * turns * workMs;
  return {
    wall,
    ideal,
    efficiency: ideal / wall,
    handoversPerSecond: (callers * turns) / (wall / 1000),
  };
}
