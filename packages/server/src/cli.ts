#!/usr/bin/env node
import { parseArgs } from "node:util";
import { type LogLevel, resolveServerOptions, type ServerOptions } from "./options.js";
import { startServer } from "./server.js";

const USAGE = `Usage: ratequeue-server [options]

  --host HOST                 interface to listen on (default 127.0.0.1)
  --port PORT                 TCP port, 0 for any free one (default 7420)
  --api-key KEY               an API key (repeat for several); also RATEQUEUE_API_KEYS=k1,k2.
                              With none, open development mode: loopback only, any token works.
  --admin-key KEY             a key for operators (GET /metrics; repeat for several); also
                              RATEQUEUE_ADMIN_KEYS=k1,k2
  --log-level LEVEL           structured logs on stdout: error, warn, info (default: drops and
                              expiries), debug (every grant, release and request), or silent
  --metrics-top N             resources /metrics reports one by one, busiest first (default 10)
  --data-dir DIR              keep live requests in DIR, so they survive a restart (default .ratequeue)
  --memory                    keep nothing on disk: a restart forgets every request
  --store URL                 keep the state in PostgreSQL (postgres://user@host:5432/db), shared
                              by several replicas: one serves, the others stand by and take
                              over when it goes (docs/operations.md); also RATEQUEUE_STORE
  --pg-schema NAME            with --store: the schema of RateQueue's tables (default ratequeue)
  --config FILE               set resources' limits at start from a JSON file (see README, "Rate
                              limits"); also RATEQUEUE_CONFIG
  --behind-proxy              clients connect through a proxy or load balancer that may refuse
                              connections while this server is up (see docs/protocol.md)
  --recovery-window MS        after a restart, how long restored clients have to come back
                              (default poll window + repoll grace)
  --poll-window MS            longest a poll is held open (default 10000, at most 25000)
  --grace MS                  hand a lease on this long after its client's connection closes (default 200)
  --wait-grace MS             ...and keep that client's waiters in line this long (default 5000)
  --repoll-grace MS           drop a client that is silent this long with nothing open (default 4000)
  --default-expires-in MS     hold bound when a request sets none (default 900000 = 15 min)
  --max-expires-in MS         largest expiresIn accepted (default 86400000 = 24 h)
  --max-queue N               most waiters on one resource (default 100000)
  --cors-origin ORIGIN        let web pages of ORIGIN call the server (repeat for several; "*"
                              for any); also RATEQUEUE_CORS_ORIGINS=o1,o2. Read docs/protocol.md,
                              "Browsers", before putting an API key in a web page.
  --max-connections N         most open connections; at the limit the oldest that has not
                              authenticated is closed (default: the fd limit less 128)
  --headers-timeout MS        time to send a request's headers (default 10000)
  --request-timeout MS        time to send a whole request (default 30000)
  -h, --help                  show this help
`;

const NUMERIC = {
  port: "port",
  "poll-window": "pollWindow",
  grace: "grace",
  "wait-grace": "waitGrace",
  "repoll-grace": "repollGrace",
  "default-expires-in": "defaultExpiresIn",
  "max-expires-in": "maxExpiresIn",
  "max-queue": "maxQueue",
  "recovery-window": "recoveryWindow",
  "max-connections": "maxConnections",
  "headers-timeout": "headersTimeout",
  "request-timeout": "requestTimeout",
  "metrics-top": "metricsTop",
} as const;

/** A mistake in the command line: the message, the usage, exit code 2. */
function fail(message: string): never {
  process.stderr.write(`ratequeue-server: ${message}\n\n${USAGE}`);
  process.exit(2);
}

/**
 * The options' names in a message, as the flags that set them: camelCase names wherever they
 * appear, one-word names (`port`, `grace`) only as the message's subject, so that prose is left
 * alone ("give scheme, host and port only").
 */
function asFlags(message: string): string {
  const flags: Record<string, string> = {
    ...Object.fromEntries(Object.entries(NUMERIC).map(([flag, key]) => [key, `--${flag}`])),
    apiKeys: "--api-key",
    adminKeys: "--admin-key",
    dataDir: "--data-dir",
    pgSchema: "--pg-schema",
    corsOrigins: "--cors-origin",
    logLevel: "--log-level",
  };
  let out = message.replace(/^(\w+)\b/, (word) => flags[word] ?? word);
  for (const [key, flag] of Object.entries(flags))
    if (/[A-Z]/.test(key)) out = out.replace(new RegExp(`\\b${key}\\b`, "g"), flag);
  return out;
}

async function main(): Promise<void> {
  let values: ReturnType<typeof parse>["values"];
  try {
    ({ values } = parse());
  } catch (error) {
    fail((error as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (values.memory && values["data-dir"] !== undefined)
    fail("--memory and --data-dir exclude each other");
  const store = values.store ?? (process.env.RATEQUEUE_STORE || undefined);
  if (store !== undefined && (values.memory || values["data-dir"] !== undefined))
    fail("--store keeps the state in PostgreSQL: drop --memory and --data-dir");
  const options: ServerOptions = {
    host: values.host,
    dataDir:
      values.memory || store !== undefined ? undefined : (values["data-dir"] ?? ".ratequeue"),
    store,
    pgSchema: values["pg-schema"],
    config: values.config ?? (process.env.RATEQUEUE_CONFIG || undefined),
    behindProxy: values["behind-proxy"] ?? false,
    apiKeys: [
      ...(values["api-key"] ?? []),
      ...(process.env.RATEQUEUE_API_KEYS ?? "")
        .split(",")
        .map((k) => k.trim())
        .filter(Boolean),
    ],
    adminKeys: [
      ...(values["admin-key"] ?? []),
      ...(process.env.RATEQUEUE_ADMIN_KEYS ?? "")
        .split(",")
        .map((k) => k.trim())
        .filter(Boolean),
    ],
    corsOrigins: [
      ...(values["cors-origin"] ?? []),
      ...(process.env.RATEQUEUE_CORS_ORIGINS ?? "")
        .split(",")
        .map((o) => o.trim())
        .filter(Boolean),
    ],
    log: (line) => process.stderr.write(`${line}\n`),
    logLevel: (values["log-level"] ?? process.env.RATEQUEUE_LOG_LEVEL ?? "info") as LogLevel,
  };
  for (const [flag, key] of Object.entries(NUMERIC)) {
    const raw = values[flag as keyof typeof NUMERIC];
    if (raw === undefined) continue;
    if (!/^\d+$/.test(raw)) fail(`--${flag} must be a whole number, got ${JSON.stringify(raw)}`);
    options[key] = Number(raw);
  }

  try {
    resolveServerOptions(options);
  } catch (error) {
    fail(asFlags((error as Error).message));
  }
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(options);
  } catch (error) {
    // Not a usage mistake (a port in use, a data directory held by another server): no usage.
    process.stderr.write(`ratequeue-server: ${(error as Error).message}\n`);
    process.exit(1);
  }
  process.stdout.write(`RateQueue server ready at ${server.url}\n`);

  const stop = (signal: string) => {
    process.stderr.write(`[ratequeue] ${signal}: answering open polls and shutting down\n`);
    server.close().then(
      () => process.exit(0),
      (error) => {
        process.stderr.write(`[ratequeue] shutdown failed: ${String(error)}\n`);
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

function parse() {
  // `pnpm start -- --help` and the like pass the `--` on: it separates nothing here.
  const args = process.argv.slice(2);
  return parseArgs({
    args: args[0] === "--" ? args.slice(1) : args,
    strict: true,
    allowPositionals: false,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      "api-key": { type: "string", multiple: true },
      "admin-key": { type: "string", multiple: true },
      "metrics-top": { type: "string" },
      "log-level": { type: "string" },
      memory: { type: "boolean" },
      "behind-proxy": { type: "boolean" },
      "data-dir": { type: "string" },
      store: { type: "string" },
      "pg-schema": { type: "string" },
      config: { type: "string" },
      "poll-window": { type: "string" },
      grace: { type: "string" },
      "wait-grace": { type: "string" },
      "repoll-grace": { type: "string" },
      "default-expires-in": { type: "string" },
      "max-expires-in": { type: "string" },
      "max-queue": { type: "string" },
      "recovery-window": { type: "string" },
      "max-connections": { type: "string" },
      "cors-origin": { type: "string", multiple: true },
      "headers-timeout": { type: "string" },
      "request-timeout": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}

void main();
