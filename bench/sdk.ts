import { createRateQueue } from "../packages/sdk/src/node.js";

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
