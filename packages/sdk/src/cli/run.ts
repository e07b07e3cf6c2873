#!/usr/bin/env node
/**
 * `ratequeue run NAME [options] -- command args…`: flock(1) across machines. The command runs
 * while the lease on NAME is held, and the lease is released when the command exits — or when
 * this process dies, whatever kills it (the server hands it on `grace` later, and the watchdog
 * stops the command at once). Exit codes follow flock(1): the command's own, 1 when `--no-wait`
 * finds the lock held or `--wait` times out, 2 for a usage error; 3 when the lease was lost
 * while the command ran (the command is then sent SIGTERM).
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { AcquireTimeoutError, createRateQueue, type Lease, ValidationError } from "../node.js";
import { STATUS_USAGE, status, UsageError } from "./status.js";

const USAGE = `Usage: ratequeue run NAME [options] -- COMMAND [ARGS...]
       ratequeue status [NAME] [options]     (what holds and waits: ratequeue status --help)

Runs COMMAND while holding the lock NAME of a RateQueue server, as flock(1) does on one machine.

  --no-wait, -n        fail at once (exit 1) if the lock is held elsewhere
  --wait MS, -w MS     wait at most MS for the lock (exit 1 after); default: wait as long as it takes
  --capacity N         the resource's capacity, if this creates it (default 1: a lock)
  --url URL            the server (default: RATEQUEUE_URL, else http://127.0.0.1:7420)
  --api-key KEY        the API key (default: RATEQUEUE_API_KEY)
  -h, --help           show this help

COMMAND gets RATEQUEUE_FENCING_TOKEN (pass it to the store you protect) and RATEQUEUE_LEASE_ID.
SIGINT, SIGTERM and SIGHUP are forwarded to it. Exit status: COMMAND's; 1 if the lock was not
had (--no-wait, --wait); 2 on a usage error; 3 if the lease was lost while COMMAND ran (COMMAND
is sent SIGTERM). COMMAND runs in a process group of its own, and signals go to the whole group,
so what it starts stops with it. If ratequeue itself is killed, that group is killed with it.
`;

const LEASE_LOST = 3;
const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
/** Next to this file: built (`.js`), or run from source (`.ts`, with tsx, which `fork` passes on). */
const WATCHDOG = fileURLToPath(
  new URL(import.meta.url.endsWith(".ts") ? "./watchdog.ts" : "./watchdog.js", import.meta.url),
);

function statusUsage(message: string): never {
  process.stderr.write(`ratequeue: ${message}\n\n${STATUS_USAGE}`);
  process.exit(2);
}

function usage(message: string): never {
  process.stderr.write(`ratequeue: ${message}\n\n${USAGE}`);
  process.exit(2);
}

async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === "-h" || verb === "--help" || verb === undefined) {
    process.stdout.write(USAGE);
    return verb === undefined ? 2 : 0;
  }
  if (verb === "status") {
    try {
      return await status(rest, (text) => process.stdout.write(text));
    } catch (error) {
      if (
        error instanceof UsageError ||
        (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
      )
        statusUsage((error as Error).message);
      throw error;
    }
  }
  if (verb !== "run")
    usage(`unknown command ${JSON.stringify(verb)}: the commands are "run" and "status"`);
  const split = rest.indexOf("--");
  if (split < 0) usage("put the command after `--`, e.g. ratequeue run nightly -- ./job.sh");
  const [command, ...args] = rest.slice(split + 1);
  if (command === undefined) usage("no command after `--`");
  let values: ReturnType<typeof parse>["values"];
  let positionals: string[];
  try {
    ({ values, positionals } = parse(rest.slice(0, split)));
  } catch (error) {
    usage((error as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [name, ...extra] = positionals;
  if (name === undefined) usage("name the lock: ratequeue run NAME -- COMMAND");
  if (extra.length > 0) usage(`one lock name only, got also ${JSON.stringify(extra.join(" "))}`);
  if (values["no-wait"] && values.wait !== undefined)
    usage("--no-wait and --wait exclude each other");
  const timeout = values["no-wait"]
    ? 0
    : values.wait === undefined
      ? undefined
      : whole("--wait", values.wait);
  const capacity = values.capacity === undefined ? undefined : whole("--capacity", values.capacity);

  const rq = createRateQueue({ baseUrl: values.url, apiKey: values["api-key"] });
  // A signal while waiting for the lock gives up waiting, as it would stop flock(1).
  const waiting = new AbortController();
  const stopWaiting = (signal: NodeJS.Signals) => () =>
    waiting.abort(Object.assign(new Error(signal), { exitCode: 128 + signalNumber(signal) }));
  const early = SIGNALS.map((s) => [s, stopWaiting(s)] as const);
  for (const [signal, handler] of early) process.on(signal, handler);
  let lease: Lease;
  try {
    lease = await rq.acquire(name, { timeout, capacity, signal: waiting.signal });
  } catch (error) {
    if (waiting.signal.aborted) return (waiting.signal.reason as { exitCode: number }).exitCode;
    if (error instanceof AcquireTimeoutError) {
      process.stderr.write(
        `ratequeue: ${name} is held elsewhere${timeout ? ` (waited ${timeout} ms)` : ""}\n`,
      );
      return 1;
    }
    if (error instanceof ValidationError) usage(error.message);
    throw error;
  }
  try {
    return await runHolding(lease, command, args, () => {
      for (const [signal, handler] of early) process.off(signal, handler);
    });
  } finally {
    await lease.release().catch(() => {}); // a lost lease is already released
  }
}

/** Runs the command under the watchdog while `lease` is held; resolves with the exit status. */
function runHolding(
  lease: Lease,
  command: string,
  args: string[],
  /** Called once the command's own signal forwarding is in place. */
  started: () => void,
): Promise<number> {
  const watchdog = fork(WATCHDOG, [command, ...args], {
    stdio: "inherit",
    env: {
      ...process.env,
      RATEQUEUE_FENCING_TOKEN: String(lease.fencingToken),
      RATEQUEUE_LEASE_ID: lease.id,
    },
  });
  const forward = (signal: NodeJS.Signals) => () => watchdog.send({ t: "signal", signal });
  const handlers = SIGNALS.map((s) => [s, forward(s)] as const);
  for (const [signal, handler] of handlers) process.on(signal, handler);
  started();
  let lost = false;
  const onLost = () => {
    lost = true;
    process.stderr.write(
      `ratequeue: lease on ${lease.name} lost (${String(lease.signal.reason?.message ?? lease.signal.reason)}): stopping the command\n`,
    );
    if (watchdog.connected) watchdog.send({ t: "signal", signal: "SIGTERM" });
  };
  lease.signal.addEventListener("abort", onLost, { once: true });
  return new Promise((resolve) => {
    watchdog.on(
      "message",
      (m: { t: string; code?: number | null; signal?: string | null; message?: string }) => {
        if (m.t === "error") {
          process.stderr.write(`ratequeue: cannot run ${command}: ${m.message}\n`);
          resolve(127);
        } else if (m.t === "exit") {
          const status = m.code ?? 128 + signalNumber(m.signal);
          resolve(lost ? LEASE_LOST : status);
        }
      },
    );
    watchdog.once("exit", () => resolve(lost ? LEASE_LOST : 1));
  }).finally(() => {
    lease.signal.removeEventListener("abort", onLost);
    for (const [signal, handler] of handlers) process.off(signal, handler);
    if (watchdog.connected) watchdog.disconnect();
  }) as Promise<number>;
}

function signalNumber(signal: string | null | undefined): number {
  const numbers: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return signal ? (numbers[signal] ?? 0) : 0;
}

function whole(flag: string, raw: string): number {
  if (!/^\d+$/.test(raw)) usage(`${flag} must be a whole number, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

function parse(args: string[]) {
  return parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      "no-wait": { type: "boolean", short: "n" },
      wait: { type: "string", short: "w" },
      capacity: { type: "string" },
      url: { type: "string" },
      "api-key": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: Error) => {
    process.stderr.write(`ratequeue: ${error.message}\n`);
    process.exit(1);
  },
);
