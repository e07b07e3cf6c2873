import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Pool } from "undici";

const CLI = fileURLToPath(new URL("../packages/server/src/cli.ts", import.meta.url));

/**
 * Starts `ratequeue-server --port 0` in its own process (so client and server do not share a
 * thread); in memory unless `args` say otherwise. `SERVER_NODE_ARGS` adds flags to its `node`
 * (e.g. `--cpu-prof --cpu-prof-dir=prof` to profile the server under a benchmark).
 */
export async function spawnServer(
  args: string[] = ["--memory"],
): Promise<{ url: string; pid: number; stop: () => Promise<void> }> {
  const child = spawn(
    process.execPath,
    [
      ...(process.env.SERVER_NODE_ARGS?.split(" ").filter(Boolean) ?? []),
      "--import",
      "tsx",
      CLI,
      "--port",
      "0",
      ...args,
    ],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (c: string) => {
      out += c;
      const m = /http:\/\/[\d.]+:\d+/.exec(out);
      if (m) resolve(m[0]);
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  return {
    url,
    pid: child.pid!,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

const HEADERS = { authorization: "Bearer bench", "content-type": "application/json" };

/** One acquire (granted at once) + release over HTTP. */
async function cycle(pool: Pool, id: string, resource: string): Promise<void> {
  const put = await pool.request({
    method: "PUT",
    path: `/v1/requests/${id}?wait=0`,
    headers: HEADERS,
    body: JSON.stringify({ resource }),
  });
  const snap = (await put.body.json()) as { state: string };
  if (snap.state !== "active") throw new Error(`expected active, got ${JSON.stringify(snap)}`);
  const del = await pool.request({
    method: "DELETE",
    path: `/v1/requests/${id}`,
    headers: HEADERS,
  });
  const ended = (await del.body.json()) as { state: string };
  if (ended.state !== "released")
    throw new Error(`expected released, got ${JSON.stringify(ended)}`);
}

/** Cycles per second with `workers` concurrent clients, each on its own lock name, for `ms`. */
export async function httpCyclesPerSecond(
  url: string,
  workers: number,
  ms: number,
): Promise<number> {
  const pool = new Pool(url, { connections: workers, pipelining: 1 });
  let done = 0;
  const until = performance.now() + ms;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = 0; performance.now() < until; i++) {
        await cycle(pool, `w${w}-${i}-${t0}`, `lock-${w}`);
        done++;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await pool.close();
  return done / seconds;
}

/** Latencies (ms) of `n` sequential acquire+release cycles from one client. */
export async function httpCycleLatencies(url: string, n: number): Promise<number[]> {
  const pool = new Pool(url, { connections: 1 });
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await cycle(pool, `seq-${i}-${Date.now()}`, "seq-lock");
    out.push(performance.now() - t);
  }
  await pool.close();
  return out;
}
