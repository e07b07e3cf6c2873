/** Runs `nightly-report.ts` in Bun (the real binary from the `bun` npm package), as a cron would. */
import { fileURLToPath } from "node:url";
import type { JobConfig } from "../deno-script/run.js";
import { BUN, type ProcessResult, runProcess } from "../shared/runtimes.js";

const here = fileURLToPath(new URL(".", import.meta.url));

export function bunArgs({ reportsUrl, preload }: { reportsUrl: string; preload?: string }) {
  return [
    // Inside this repository only: Bun applies the `paths` of the tsconfig.json nearest to each
    // importing file, and for the SDK's dist/ that is the root's, which points @ratequeue/core at
    // its source. This file's tsconfig.json (no `paths`) is used for every file instead.
    "--tsconfig-override=tsconfig.json",
    ...(preload ? ["--preload", preload] : []),
    "nightly-report.ts",
    reportsUrl,
  ];
}

export function runNightlyReport(config: JobConfig & { preload?: string }): Promise<ProcessResult> {
  return runProcess(BUN, bunArgs(config), {
    cwd: here,
    env: { ...process.env, RATEQUEUE_URL: config.rateQueueUrl, RATEQUEUE_API_KEY: config.apiKey },
    deadline: config.deadline,
  });
}
