/**
 * `pnpm demo`: queued locking at work, over the raw HTTP protocol (docs/protocol.md).
 *
 * An embedded server starts; four workers in this process and one in a child process contend
 * for the lock `user-update-42`. Waiters queue instead of spinning, each grant carries a larger
 * fencing token, and when the child is killed with SIGKILL while it holds the lock, the next
 * waiter is served a moment later — no TTL, no heartbeat.
 */
import { fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { startServer } from "@ratequeue/server";

const LOCK = "user-update-42";
const t0 = performance.now();
const log = (who: string, what: string) =>
  console.log(`${(performance.now() - t0).toFixed(0).padStart(6)} ms  ${who.padEnd(9)} ${what}`);

/** The smallest protocol client: acquire (queueing), hold with an open poll, release. */
async function call(url: string, method: string, path: string, body?: unknown) {
  const res = await fetch(url + path, {
    method,
    headers: { authorization: "Bearer demo", "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as { state: string; fencingToken?: number };
}

async function acquire(url: string, id: string) {
  let snap = await call(url, "PUT", `/v1/requests/${id}`, { resource: LOCK });
  while (snap.state === "queued") snap = await call(url, "GET", `/v1/requests/${id}?state=queued`);
  if (snap.state !== "active") throw new Error(`request ended as ${snap.state}`);
  return snap.fencingToken!;
}

// The child: takes the lock, keeps its poll open (that is its liveness), and never lets go.
if (process.argv[2] === "child") {
  const url = process.argv[3]!;
  const id = randomUUID();
  const token = await acquire(url, id);
  process.send?.({ token });
  for (;;) await call(url, "GET", `/v1/requests/${id}?state=active`);
}

const server = await startServer({ port: 0 });
log("server", `listening on ${server.url} (embedded, state in memory)`);

let holding = 0;
let maxHolding = 0;
let lastToken = 0;
let grants = 0;
let killedAt = 0;
let firstAfterKill = 0;

async function worker(name: string, turns: number, delay: number) {
  await new Promise((r) => setTimeout(r, delay));
  for (let turn = 1; turn <= turns; turn++) {
    const id = randomUUID();
    const asked = performance.now();
    log(name, "asks for the lock");
    const token = await acquire(server.url, id);
    if (killedAt > 0 && firstAfterKill === 0) firstAfterKill = performance.now() - killedAt;
    holding++;
    maxHolding = Math.max(maxHolding, holding);
    grants++;
    if (token <= lastToken) throw new Error("fencing token went backwards");
    lastToken = token;
    const { queued } = (await call(
      server.url,
      "GET",
      `/v1/resources/${encodeURIComponent(LOCK)}`,
    )) as unknown as { queued: number };
    log(
      name,
      `HOLDS  (waited ${(performance.now() - asked).toFixed(0)} ms, token …${String(token).slice(-4)}, ${queued} waiting)`,
    );
    await new Promise((r) => setTimeout(r, 150)); // the critical section
    holding--;
    await call(server.url, "DELETE", `/v1/requests/${id}`);
    log(name, "released");
  }
}

// A holder that will die: a separate process, killed with SIGKILL while it holds the lock.
const child = fork(new URL(import.meta.url), ["child", server.url], {
  execArgv: process.execArgv,
  stdio: "inherit",
});
const childToken = await new Promise<number>((resolve) =>
  child.once("message", (m: { token: number }) => resolve(m.token)),
);
log(
  "child",
  `HOLDS  in pid ${child.pid} (token …${String(childToken).slice(-4)}); it will be killed in 400 ms`,
);
lastToken = childToken;
grants++;

const workers = Promise.all([
  worker("worker-1", 2, 50),
  worker("worker-2", 2, 100),
  worker("worker-3", 2, 150),
  worker("worker-4", 2, 200),
]);
await new Promise((r) => setTimeout(r, 400));
killedAt = performance.now();
child.kill("SIGKILL");
log("child", "killed with SIGKILL while holding the lock");
await workers;
await server.close();

console.log(
  `\nSummary: ${grants} grants on "${LOCK}", at most ${maxHolding} holder at a time, fencing tokens always increasing;` +
    `\nthe killed holder's lock went to the next waiter ${firstAfterKill.toFixed(0)} ms after SIGKILL (grace 150 ms), with no TTL and no heartbeat.`,
);
