import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createRateQueue } from "../packages/sdk/src/node.js";

/**
 * Hand-over after SIGKILL: a process takes a lock through the SDK and is killed with SIGKILL;
 * how long until the next waiter (here) holds it? And a waiter killed in line: how long until
 * the server passes it over? Both with the server's defaults.
 */
const HOLDER = fileURLToPath(new URL("../packages/sdk/test/fixtures/holder.ts", import.meta.url));

async function spawnHolder(url: string, name: string) {
  const child = spawn(process.execPath, ["--import", "tsx", HOLDER, url, name], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (d: string) => d.includes("holding") && resolve());
    child.once("exit", () => reject(new Error("holder exited early")));
  });
  return child;
}

async function state(url: string, name: string) {
  const res = await fetch(`${url}/v1/resources/${encodeURIComponent(name)}`, {
    headers: { authorization: "Bearer test-key" },
  });
  return (await res.json()) as { queued: number; active: number; away: number };
}

async function until(check: () => Promise<boolean>, ms = 10_000) {
  const deadline = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** ms from SIGKILL of a holder to the next waiter holding the lock, `kills` times. */
export async function holderKillHandovers(url: string, kills: number): Promise<number[]> {
  const rq = createRateQueue({ apiKey: "test-key", baseUrl: url });
  const out: number[] = [];
  for (let i = 0; i < kills; i++) {
    const name = `kill-holder-${i}`;
    const child = await spawnHolder(url, name);
    let grantedAt = 0;
    const next = rq.acquire(name, { timeout: 30_000 }, () => {
      grantedAt = performance.now();
    });
    await until(async () => (await state(url, name)).queued === 1);
    const killedAt = performance.now();
    child.kill("SIGKILL");
    await next;
    out.push(grantedAt - killedAt);
  }
  return out;
}

/**
 * ms from SIGKILL of a queued waiter to the server passing it over (`away`): from then on it
 * delays nobody. (It leaves the line `waitGrace` later, in case it was a network blip.)
 */
export async function waiterKillDepartures(url: string, kills: number): Promise<number[]> {
  const rq = createRateQueue({ apiKey: "test-key", baseUrl: url });
  const out: number[] = [];
  for (let i = 0; i < kills; i++) {
    const name = `kill-waiter-${i}`;
    const lease = await rq.acquire(name);
    const child = spawn(process.execPath, ["--import", "tsx", HOLDER, url, name], {
      stdio: "ignore",
    });
    await until(async () => (await state(url, name)).queued === 1);
    const killedAt = performance.now();
    child.kill("SIGKILL");
    await until(async () => (await state(url, name)).away === 1);
    out.push(performance.now() - killedAt);
    await lease.release();
  }
  return out;
}
