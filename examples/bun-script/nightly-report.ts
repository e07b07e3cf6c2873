/**
 * A nightly job, run by Bun on several machines (a cron on each, for redundancy), that must run
 * once at a time: the first to take the lock `nightly-report` writes the day's report; a copy
 * that finds it held exits at once, successfully — it is not its turn, nothing failed.
 *
 *   RATEQUEUE_URL=… RATEQUEUE_API_KEY=… bun nightly-report.ts <reports service URL>
 *
 * - `timeout: 0` is a try-lock: granted now, or `AcquireTimeoutError` at once (never queued).
 * - `expiresIn` bounds the hold: a run that hangs does not block tomorrow's.
 * - The callback form releases the lock when the work returns or throws; `await using` on the
 *   client closes its session at the end of the script, so Bun exits at once.
 * - Bun picks the SDK's `bun` build (global `WebSocket` and `fetch`). Inside this repository,
 *   run it with `--tsconfig-override=tsconfig.json` (see run.ts): Bun applies the nearest
 *   tsconfig.json's `paths`, and the root's point the packages at their sources.
 */
import { AcquireTimeoutError, createRateQueue } from "@ratequeue/sdk";

const reportsUrl = process.argv[2];
if (!reportsUrl) throw new Error("usage: bun nightly-report.ts <reports service URL>");
const day = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10); // yesterday, UTC

console.log(
  `nightly-report: bun ${process.versions.bun}, @ratequeue/sdk from ${import.meta.resolve("@ratequeue/sdk")}`,
);

await using rq = createRateQueue({
  apiKey: process.env.RATEQUEUE_API_KEY,
  baseUrl: process.env.RATEQUEUE_URL,
});

try {
  const report = await rq.acquire(
    "nightly-report",
    { timeout: 0, expiresIn: 10 * 60_000 },
    async (lease) => {
      const res = await fetch(`${reportsUrl}/orders?day=${day}`, { signal: lease.signal });
      if (!res.ok) throw new Error(`reading the orders: HTTP ${res.status}`);
      const orders = (await res.json()) as { id: string; amount: number }[];
      const report = {
        day,
        orders: orders.length,
        total: orders.reduce((s, o) => s + o.amount, 0),
      };
      const saved = await fetch(`${reportsUrl}/reports`, {
        method: "POST",
        // The store refuses a write older than the last it accepted: a run whose lease was lost
        // (expired mid-run) cannot overwrite the next run's report.
        headers: { "content-type": "application/json", "x-fencing-token": `${lease.fencingToken}` },
        body: JSON.stringify(report),
        signal: lease.signal,
      });
      if (!saved.ok) throw new Error(`saving the report: HTTP ${saved.status}`);
      return { ...report, fencingToken: lease.fencingToken };
    },
  );
  console.log(
    `nightly-report: report for ${report.day} written: ${report.orders} orders, total ${report.total} (fencing token ${report.fencingToken})`,
  );
} catch (error) {
  if (!(error instanceof AcquireTimeoutError)) throw error;
  console.log("nightly-report: held elsewhere (another run is writing the report); nothing to do");
}
