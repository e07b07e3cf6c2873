import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createRateQueue, LeaseLostError, type RetryOptions } from "@ratequeue/sdk";
import pg from "pg";
import { describe, expect, it, onTestFailed } from "vitest";
import { eventually } from "../../../test-support/eventually.js";
import { resourceState } from "../../shared/testing.js";
import { type Cluster, DEFAULT_STORE, findHaproxy, type Replica, startCluster } from "../start.mjs";

/**
 * Three replicas of the built server (packages/server/dist) on PostgreSQL, behind a real HAProxy
 * (start.mjs), and SDK clients that know only HAProxy's URL. What must hold when the leader is
 * killed (SIGKILL) or stopped (SIGTERM) under a holder and a waiter — whatever the timings:
 * - the holder keeps its lease (the new leader restored it, and still names its fencing token),
 *   or is told it lost it strictly before anyone else is granted the resource;
 * - the waiter is granted once the holder lets go: nobody is left stuck;
 * - fencing tokens keep increasing across the failover.
 * The failover time (the signal → a leader answering through HAProxy) and whether the lease was
 * kept are printed, never asserted.
 */

const GRACE = 1_500;
const SERVER_CLI = "../../../packages/server/src/cli.ts";
const STORE = process.env.RATEQUEUE_STORE || DEFAULT_STORE;
const HAPROXY = findHaproxy();

/** What the test needs and cannot start itself; missing, the tests are skipped (unless required). */
async function missing(): Promise<string | undefined> {
  if (HAPROXY === undefined || !existsSync(HAPROXY))
    return "no haproxy binary (apt-get install -y --no-install-recommends haproxy, or set HAPROXY)";
  const client = new pg.Client({ connectionString: STORE, connectionTimeoutMillis: 2_000 });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.end();
  } catch (error) {
    return `no PostgreSQL at ${STORE} (${(error as Error).message})`;
  }
  return undefined;
}

const why = await missing();
if (why !== undefined) {
  if (process.env.RATEQUEUE_REQUIRE_HA) throw new Error(`RATEQUEUE_REQUIRE_HA is set, but ${why}`);
  console.warn(`[ha example] skipped: ${why}`);
}

/**
 * A cluster whose replicas log every grant (`--log-level debug`): the grants of `resource`, with
 * the wall-clock time the server made each, are what "nobody else was granted before" is
 * checked against — not the time a client heard of it.
 */
async function cluster() {
  const grants: Array<{ resource: string; fencingToken: number; at: number; by: string }> = [];
  const output: string[] = [];
  /** When each replica last said it leads (performance.now() as its line arrived). */
  const leadingAt = new Map<string, number>();
  const c = await startCluster({
    // The server's sources (no build step before `pnpm test`), run as the built command would be.
    command: ["--import", "tsx", fileURLToPath(new URL(SERVER_CLI, import.meta.url))],
    grace: GRACE,
    store: STORE,
    logLevel: "debug",
    log: (source, line) => {
      if (line.includes('"event":"grant"')) {
        const entry = JSON.parse(line) as { resource: string; fencingToken: number; time: number };
        grants.push({
          resource: entry.resource,
          fencingToken: entry.fencingToken,
          at: entry.time,
          by: source,
        });
      } else if (!line.includes('"msg":"request"')) {
        if (line.includes("] leading on ")) leadingAt.set(source, performance.now());
        output.push(`[${source}] ${line}`);
        if (output.length > 200) output.shift();
      }
    },
  });
  // A failure shows what the replicas and HAProxy said (the grants and requests left out).
  onTestFailed(() => console.log(output.join("\n")));
  return Object.assign(c, { grants, output, leadingAt });
}

/** Whatever the resource's state says, through HAProxy. */
function stateOf(c: Cluster, resource: string) {
  return resourceState(c, resource, c.apiKey);
}

/** Resolves when `signal` aborts (at once if it has), with the wall-clock time it did. */
function lost(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/**
 * A holder and a waiter on `resource`, each a client of its own through HAProxy; the waiter is
 * in line (the server says so) when this resolves.
 */
async function holderAndWaiter(c: Cluster, resource: string, retry?: RetryOptions) {
  const a = createRateQueue({ apiKey: c.apiKey, baseUrl: c.url, retry });
  const b = createRateQueue({ apiKey: c.apiKey, baseUrl: c.url, retry });
  const lease = await a.acquire(resource);
  const times = { lostAt: Number.NaN, grantedAt: Number.NaN };
  lease.signal.addEventListener("abort", () => {
    times.lostAt = Date.now();
  });
  const waiter = b.acquire(resource).then((next) => {
    times.grantedAt = Date.now();
    return next;
  });
  waiter.catch(() => {}); // awaited below; a rejection fails the test there
  await eventually(async () => (await stateOf(c, resource)).queued === 1, 10_000);
  const state = await stateOf(c, resource);
  expect(state.holders.map((h) => h.fencingToken)).toEqual([lease.fencingToken]);
  return {
    lease,
    waiter,
    times,
    async [Symbol.asyncDispose]() {
      await Promise.all([a.close(), b.close()]);
    },
  };
}

describe.skipIf(why !== undefined)("RateQueue replicas on PostgreSQL behind HAProxy", () => {
  it.each(["SIGKILL", "SIGTERM"] as const)(
    "the leader gets %s under a holder and a waiter: the lease is kept, or lost before anyone else gets it; nobody is stuck; tokens increase",
    async (signal) => {
      await using c = await cluster();
      const resource = "ha-invoice-7";
      const first = await c.leader();
      expect(first).toBeDefined();
      await using t = await holderAndWaiter(c, resource);
      const { lease, waiter, times } = t;

      const killedAt = performance.now();
      const gone = first!.kill(signal); // SIGTERM: it answers, commits and closes first
      // A SIGTERMed leader may still answer for a moment: wait until it has stopped leading.
      if (signal === "SIGTERM")
        await eventually(async () => (await first!.role()) !== "leader", 10_000);
      await c.serving({ every: 2 });
      const failoverMs = performance.now() - killedAt;
      await gone;
      let second: Replica | undefined;
      await eventually(async () => {
        second = await c.leader();
        return second !== undefined;
      }, 10_000);
      expect(second).not.toBe(first);

      // The holder's fate is settled `grace` after the kill at the latest: by then it has either
      // heard from the new leader (through HAProxy) or given its lease up. Wait twice that.
      await Promise.race([lost(lease.signal), sleep(killedAt + 2 * GRACE - performance.now())]);
      let outcome: string;
      let letGoAt: number;
      if (!lease.signal.aborted) {
        outcome = "kept";
        // The new leader restored it: the resource's holder is still this lease's token, and
        // the waiter still waits.
        const state = await stateOf(c, resource);
        expect(state.holders.map((h) => h.fencingToken)).toEqual([lease.fencingToken]);
        expect(state.queued).toBe(1);
        expect(times.grantedAt).toBeNaN();
        letGoAt = Date.now();
        await lease.release();
      } else {
        outcome = `lost (${(lease.signal.reason as Error).message})`;
        expect(lease.signal.reason).toBeInstanceOf(LeaseLostError);
        letGoAt = times.lostAt;
      }

      // The waiter is granted once the holder let go (released, or was told it lost the lease).
      const next = await waiter;
      expect(next.fencingToken).toBeGreaterThan(lease.fencingToken);
      expect(times.grantedAt).toBeGreaterThanOrEqual(letGoAt);
      const others = c.grants.filter(
        (g) => g.resource === resource && g.fencingToken !== lease.fencingToken,
      );
      expect(others.map((g) => g.fencingToken)).toEqual([next.fencingToken]);
      // The server granted it no sooner: strictly after the loss was reported, or not before the
      // release was sent.
      if (outcome !== "kept") expect(others[0]!.at).toBeGreaterThan(times.lostAt);
      else expect(others[0]!.at).toBeGreaterThanOrEqual(letGoAt);
      expect(others[0]!.by).toBe(second!.name);
      expect((await stateOf(c, resource)).holders.map((h) => h.fencingToken)).toEqual([
        next.fencingToken,
      ]);
      await next.release();

      // Tokens keep increasing on the new leader, and nothing is left held or queued.
      const rq = createRateQueue({ apiKey: c.apiKey, baseUrl: c.url });
      await rq.acquire(resource, {}, (third) => {
        expect(third.fencingToken).toBeGreaterThan(next.fencingToken);
      });
      await rq.close();
      await eventually(async () => {
        const s = await stateOf(c, resource);
        return s.used === 0 && s.queued === 0;
      });

      // The killed replica comes back as a standby, and HAProxy keeps it out.
      await first!.restart();
      expect(await first!.role()).toBe("follower");
      expect(await c.leader()).toBe(second);
      await eventually(async () => (await c.haproxyStatus())[first!.name] === "DOWN");

      const takeoverMs = (c.leadingAt.get(second!.name) ?? Number.NaN) - killedAt;
      console.log(
        `[ha] ${signal}: failover ${failoverMs.toFixed(0)} ms (${signal} to ${first!.name} → ${second!.name} answering GET /v1/replica 200 through HAProxy; it said it leads after ${takeoverMs.toFixed(0)} ms); the holder's lease was ${outcome}`,
      );
    },
    30_000,
  );

  it("a failover slower than grace: the holder is told it lost its lease before the waiter is granted", async () => {
    await using c = await cluster();
    const resource = "ha-report";
    const first = await c.leader();
    const standbys = c.replicas.filter((r) => r !== first);
    // The outage lasts `grace` and then a takeover on a loaded machine: more reconnect attempts
    // than the default 6 (about 3 s), so that the waiter's client does not give up meanwhile.
    await using t = await holderAndWaiter(c, resource, { retries: 12 });
    const { lease, waiter, times } = t;

    // Freeze the standbys, so that nobody can take over, then kill the leader: the holder hears
    // nothing for `grace` and must give its lease up.
    for (const r of standbys) process.kill(r.pid!, "SIGSTOP");
    try {
      await first!.kill("SIGKILL");
      await lost(lease.signal);
    } finally {
      for (const r of standbys) process.kill(r.pid!, "SIGCONT");
    }
    const resumedAt = performance.now();
    expect(lease.signal.reason).toBeInstanceOf(LeaseLostError);
    await c.serving({ every: 2 });
    const takeoverMs = performance.now() - resumedAt;

    const next = await waiter;
    expect(next.fencingToken).toBeGreaterThan(lease.fencingToken);
    expect(times.grantedAt).toBeGreaterThan(times.lostAt);
    const others = c.grants.filter(
      (g) => g.resource === resource && g.fencingToken !== lease.fencingToken,
    );
    expect(others.map((g) => g.fencingToken)).toEqual([next.fencingToken]);
    expect(others[0]!.at).toBeGreaterThan(times.lostAt);
    await next.release();
    await eventually(async () => {
      const s = await stateOf(c, resource);
      return s.used === 0 && s.queued === 0;
    });
    console.log(
      `[ha] standbys frozen past grace: lease lost (LeaseLostError); after SIGCONT a leader answered through HAProxy in ${takeoverMs.toFixed(0)} ms; the waiter was granted ${others[0]!.at - times.lostAt} ms after the loss`,
    );
  }, 30_000);
});
