/**
 * A nightly job, run by Deno on several machines (a cron on each, for redundancy), that must run
 * once at a time: the first to take the lock `nightly-report` writes the day's report; a copy
 * that finds it held exits at once, successfully — it is not its turn, nothing failed.
 *
 *   deno run --allow-net=<ratequeue host>,<reports host> \
 *     --allow-env=RATEQUEUE_URL,RATEQUEUE_API_KEY nightly-report.ts <reports service URL>
 *
 * - `timeout: 0` is a try-lock: granted now, or `AcquireTimeoutError` at once (never queued).
 * - `expiresIn` bounds the hold: a run that hangs does not block tomorrow's.
 * - The callback form releases the lock when the work returns or throws; `await using` on the
 *   client closes its session at the end of the script, so Deno exits at once.
 * - Deno needs no permission besides the network and these two variables (with `apiKey` and
 *   `baseUrl` passed explicitly, the SDK reads no other environment).
 */
import { AcquireTimeoutError, createRateQueue } from "@ratequeue/sdk";

// Deno's globals, as far as this script uses them (`deno run` does not typecheck; the
// repository's `tsc` sees this file too, without Deno's types).
declare const Deno: {
  args: string[];
  env: { get(name: string): string | undefined };
  version: { deno: string };
};

const reportsUrl = Deno.args[0];
if (!reportsUrl) throw new Error("usage: nightly-report.ts <reports service URL>");
const day = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10); // yesterday, UTC

console.log(
  `nightly-report: deno ${Deno.version.deno}, @ratequeue/sdk from ${import.meta.resolve("@ratequeue/sdk")}`,
);

await using rq = createRateQueue({
  apiKey: Deno.env.get("RATEQUEUE_API_KEY"),
  baseUrl: Deno.env.get("RATEQUEUE_URL"),
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
