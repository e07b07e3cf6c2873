/**
 * Runs `nightly-report.ts` in Deno (the real binary from the `deno` npm package) as a cron
 * would, with the narrowest permissions it works with: the network to the RateQueue server and
 * the reports service only, and the two variables it reads.
 */
import { fileURLToPath } from "node:url";
import { DENO, type ProcessResult, runProcess } from "../shared/runtimes.js";

const here = fileURLToPath(new URL(".", import.meta.url));

export interface JobConfig {
  /** RATEQUEUE_URL and RATEQUEUE_API_KEY, as set on the machine. */
  rateQueueUrl: string;
  apiKey: string;
  reportsUrl: string;
  /** Killed (SIGKILL) past it, ms. Default 15 000. */
  deadline?: number;
}

export function denoArgs({
  rateQueueUrl,
  reportsUrl,
}: Pick<JobConfig, "rateQueueUrl" | "reportsUrl">) {
  const hosts = [rateQueueUrl, reportsUrl].map((url) => new URL(url).host).join(",");
  return [
    "run",
    "--no-prompt",
    `--allow-net=${hosts}`,
    "--allow-env=RATEQUEUE_URL,RATEQUEUE_API_KEY",
    "nightly-report.ts",
    reportsUrl,
  ];
}

export function runNightlyReport(config: JobConfig): Promise<ProcessResult> {
  return runProcess(DENO, denoArgs(config), {
    cwd: here,
    env: { ...process.env, RATEQUEUE_URL: config.rateQueueUrl, RATEQUEUE_API_KEY: config.apiKey },
    deadline: config.deadline,
  });
}
