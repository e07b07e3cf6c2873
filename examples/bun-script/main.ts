/**
 * `pnpm -C examples bun-script`: runs the nightly job in Bun twice at once (two machines'
 * crons firing together) — one writes the report, the other finds the lock held and exits —
 * then once more, which writes it again.
 */

import { ensureSdkBuilt, runTwoAtOnce, startReportsService } from "../shared/runtimes.js";
import { exampleServer } from "../shared/server.js";
import { runNightlyReport } from "./run.js";

await ensureSdkBuilt(); // Bun loads the SDK's dist/ (its `bun` export condition)
const rqServer = await exampleServer();
// Holds the reads until one copy has given up: the two runs overlap however fast each starts.
const reports = await startReportsService({ holdReads: true });
const config = {
  rateQueueUrl: process.env.RATEQUEUE_URL!,
  apiKey: process.env.RATEQUEUE_API_KEY!,
  reportsUrl: reports.url,
};
const show = (label: string, run: { code: number | null; stdout: string; stderr: string }) =>
  console.log(
    `${label} (exit ${run.code}):\n${`${run.stdout}${run.stderr}`.trim().replace(/^/gm, "  ")}`,
  );

const [a, b] = await runTwoAtOnce(() => runNightlyReport(config), reports);
show("copy A", a);
show("copy B", b);
show("a run after both", await runNightlyReport(config));
console.log(
  `reports written: ${reports.reports.length} (expected 2); at once at most: ${reports.tracker.maxPerKey}`,
);
await reports.close();
await rqServer.close();
