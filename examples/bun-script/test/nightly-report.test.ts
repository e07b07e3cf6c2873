import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ensureSdkBuilt,
  examplesDir,
  killAll,
  type ProcessResult,
  runTwoAtOnce,
  SDK_FETCH_BUILD,
  startReportsService,
} from "../../shared/runtimes.js";
import { isIdle, startTestServer } from "../../shared/testing.js";
import { runNightlyReport } from "../run.js";

const API_KEY = "bun-example";
const BUN_VERSION = JSON.parse(
  readFileSync(join(examplesDir, "node_modules", "bun", "package.json"), "utf8"),
).version as string;

const WROTE = /^nightly-report: report for \d{4}-\d\d-\d\d written: 3 orders, total 4725/m;
const HELD = /^nightly-report: held elsewhere/m;

/** A run that ended by itself, cleanly, in the real Bun, with the SDK's `bun` build. */
function expectCleanRun(run: ProcessResult) {
  expect(run, run.stderr).toMatchObject({ code: 0, timedOut: false, stderr: "" });
  const banner = /^nightly-report: bun (\S+), @ratequeue\/sdk from (\S+)$/m.exec(run.stdout);
  expect(banner?.[1]).toBe(BUN_VERSION);
  // dist/index.js (the `bun` condition), never src/ nor the Node build (dist/node.js).
  expect(banner?.[2]).toMatch(SDK_FETCH_BUILD);
  // And every file of the packages it loaded (test/loaded-modules.ts, preloaded): core's too.
  const loaded = /^# loaded (.*)$/m.exec(run.stdout);
  expect(JSON.parse(loaded?.[1] ?? "null")).toEqual([
    expect.stringMatching(/\/packages\/core\/dist\/index\.js$/),
    expect.stringMatching(/\/packages\/sdk\/dist\/chunk-\w+\.js$/),
    expect.stringMatching(SDK_FETCH_BUILD),
  ]);
}

beforeAll(() => ensureSdkBuilt(), 120_000);
afterEach(() => killAll());

describe("bun-script", () => {
  it("runs once at a time: of two copies started together one writes the report, the other exits; a later run writes again", async () => {
    await using server = await startTestServer();
    const reports = await startReportsService({ holdReads: true });
    try {
      const config = {
        rateQueueUrl: server.url,
        apiKey: API_KEY,
        reportsUrl: reports.url,
        preload: "./test/loaded-modules.ts",
      };
      const runs = await runTwoAtOnce(() => runNightlyReport(config), reports);

      for (const run of runs) expectCleanRun(run);
      expect(runs.filter((r) => WROTE.test(r.stdout))).toHaveLength(1);
      expect(runs.filter((r) => HELD.test(r.stdout))).toHaveLength(1);
      expect(reports.reports).toHaveLength(1);
      expect(reports.tracker.maxPerKey).toBe(1);
      // Released when the run ended, not left to expire: free at once.
      expect(await isIdle(server, "nightly-report", API_KEY)).toBe(true);

      const again = await runNightlyReport(config);
      expectCleanRun(again);
      expect(again.stdout).toMatch(WROTE);
      expect(reports.reports).toHaveLength(2);
      expect(reports.reports[1]!.fencingToken).toBeGreaterThan(reports.reports[0]!.fencingToken);
      expect(reports.tracker.inside).toBe(0);
      expect(await isIdle(server, "nightly-report", API_KEY)).toBe(true);
    } finally {
      killAll();
      await reports.close();
    }
  }, 20_000);
});
