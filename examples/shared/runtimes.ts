/**
 * What the Deno and Bun examples (and the Worker's, for `ensureSdkBuilt`) need around their
 * scripts, and is not about RateQueue: a stand-in for the service the nightly job reads and
 * writes, a way to run a script in a real runtime with a deadline, and a check that the SDK is
 * built (those runtimes load its `dist/`, through its export conditions, never its source).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ConcurrencyTracker, sleep } from "./concurrency.js";

export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
export const examplesDir = fileURLToPath(new URL("../", import.meta.url));

/** The real binaries, not node_modules/.bin's shell shims (a killed shim leaves its runtime running). */
export const DENO = join(examplesDir, "node_modules", "deno", "deno");
export const BUN = join(examplesDir, "node_modules", "bun", "bin", "bun.exe");

/** The SDK file Deno, Bun and workerd must load: the fetch build, through their conditions. */
export const SDK_FETCH_BUILD = /(^|\/)packages\/sdk\/dist\/index\.js$/;

const BUILT = ["packages/core/dist/index.js", "packages/sdk/dist/index.js"];

/**
 * Builds `@ratequeue/core` and `@ratequeue/sdk` (their `build` scripts, through pnpm) if their
 * `dist/` is missing — once, even when several tests ask at the same time. A dist that exists is
 * used as it is (it is not rebuilt if the sources changed since: run `pnpm build` for that).
 */
export async function ensureSdkBuilt(deadline = 120_000): Promise<"present" | "built"> {
  const present = () => BUILT.every((file) => existsSync(join(repoRoot, file)));
  if (present()) return "present";
  const lock = join(tmpdir(), "ratequeue-examples-sdk-build.lock");
  const until = Date.now() + deadline;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // Someone else is building: wait for them (a lock older than the deadline is stale).
      if (present()) return "present";
      const age = Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > deadline) rmSync(lock, { recursive: true, force: true });
      if (Date.now() > until) throw new Error(`the SDK was not built within ${deadline} ms`);
      await sleep(200);
    }
  }
  try {
    if (present()) return "present";
    const args = ["-y", "pnpm@12.4.2", "--filter", "@ratequeue/core", "--filter", "@ratequeue/sdk"];
    const result = await runProcess("npx", [...args, "run", "build"], {
      cwd: repoRoot,
      deadline: until - Date.now(),
    });
    if (result.code !== 0 || !present()) {
      throw new Error(
        `building the SDK failed (${result.code}):\n${result.stdout}${result.stderr}`,
      );
    }
    return "built";
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

export interface ProcessResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Killed at its deadline. */
  timedOut: boolean;
}

/** Every process started here and not yet exited: `killAll()` ends them (a test's `finally`). */
const running = new Set<ChildProcess>();

/** Runs a command to its end, or kills it (SIGKILL) at `deadline` ms. */
export function runProcess(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; deadline?: number },
): Promise<ProcessResult> {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => {
    stdout += d;
  });
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, options.deadline ?? 15_000);
  return new Promise((resolve, reject) => {
    child.on("error", (error) => {
      clearTimeout(timer);
      running.delete(child);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

export function killAll(): void {
  for (const child of running) child.kill("SIGKILL");
}

export interface Report {
  day: string;
  orders: number;
  total: number;
  fencingToken: number;
}

/**
 * The reports service the nightly job talks to (a database behind HTTP, in the test's process):
 * `GET /orders?day=` lists a day's orders, `POST /reports` saves a report. A job is "inside"
 * from its read to its write; `tracker.maxPerKey` is how many jobs ever were at once. A write
 * whose `x-fencing-token` is older than the last accepted is refused (409), as a store that
 * checks fencing tokens does.
 *
 * With `holdReads`, `GET /orders` is not answered until `openReads()`: a test (or main.ts) keeps
 * the job that got the lock inside its critical section until the other copy has given up.
 */
export async function startReportsService(options: { holdReads?: boolean } = {}) {
  const tracker = new ConcurrencyTracker();
  const reports: Report[] = [];
  let lastToken = 0;
  let openReads!: () => void;
  const readsOpen = options.holdReads
    ? new Promise<void>((resolve) => {
        openReads = resolve;
      })
    : Promise.resolve();
  openReads ??= () => {};

  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method === "GET" && url.pathname === "/orders") {
      tracker.enter("nightly-report");
      await readsOpen;
      const day = url.searchParams.get("day") ?? "";
      return json(200, [
        { id: `${day}-1`, amount: 1200 },
        { id: `${day}-2`, amount: 450 },
        { id: `${day}-3`, amount: 3075 },
      ]);
    }
    if (req.method === "POST" && url.pathname === "/reports") {
      let body = "";
      for await (const chunk of req) body += chunk;
      const token = Number(req.headers["x-fencing-token"]);
      if (!(token > lastToken)) return json(409, { error: "stale_fencing_token", lastToken });
      lastToken = token;
      reports.push({ ...(JSON.parse(body) as Omit<Report, "fencingToken">), fencingToken: token });
      tracker.leave("nightly-report");
      return json(201, { saved: reports.length });
    }
    json(404, { error: "not_found" });
  });
  server.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    reports,
    tracker,
    openReads: () => openReads(),
    close: () => {
      openReads();
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Starts two copies of a job at once while the reports service holds the reads back: whichever
 * gets the lock waits inside its critical section until the other has exited, so the two really
 * overlap however slowly each runtime starts. Then the reads are let through.
 */
export async function runTwoAtOnce(
  run: () => Promise<ProcessResult>,
  service: { openReads(): void },
): Promise<[ProcessResult, ProcessResult]> {
  const a = run();
  const b = run();
  await Promise.race([a, b]).finally(() => service.openReads());
  return Promise.all([a, b]);
}
