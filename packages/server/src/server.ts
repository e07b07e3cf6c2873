import { randomBytes } from "node:crypto";
import type { ServerConfig } from "./config.js";
import { buildApp } from "./http.js";
import { namespaceId } from "./keys.js";
import { withLifecycleLogs } from "./lifecycle-log.js";
import { LocalBackend } from "./local-backend.js";
import { Metrics } from "./metrics.js";
import {
  isLoopback,
  type ResolvedServerOptions,
  resolveServerOptions,
  type ServerOptions,
} from "./options.js";
import { SqliteStore } from "./sqlite-store.js";
import type { Store } from "./store.js";

/** A running server. */
export interface RunningServer extends AsyncDisposable {
  /** Base URL, e.g. `http://127.0.0.1:7420` (with the real port when started on port 0). */
  url: string;
  /** Answers every open poll, then stops listening. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts a RateQueue server and resolves once it listens.
 *
 * @example
 * ```ts
 * import { startServer } from "@ratequeue/server";
 * await using server = await startServer({ port: 0 });
 * console.log(server.url); // http://127.0.0.1:40123
 * ```
 */
export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const resolved = resolveServerOptions(options);
  // Loaded only for replicas: a server without --store never loads the PostgreSQL driver.
  if (resolved.store !== undefined) return (await import("./replica.js")).startReplica(resolved);
  const store = resolved.dataDir === undefined ? undefined : new SqliteStore(resolved.dataDir);
  return serve(resolved, store);
}

/**
 * Serves the state `store` holds (none: memory only). The server owns the store from here: it
 * closes it when it closes, or when it cannot start.
 */
export async function serve(
  resolved: ResolvedServerOptions,
  store: Store | undefined,
  /** Set the config file's limits (a replica does the first time it serves only). */
  applyConfig = true,
): Promise<RunningServer> {
  let backend: LocalBackend;
  try {
    backend = new LocalBackend(
      resolved,
      resolved.clock,
      store,
      resolved.recoveryWindow,
      resolved.behindProxy,
    );
  } catch (error) {
    await store?.close(); // releases the data directory, so that a retry in this process can open it
    throw error;
  }
  const secret = store?.secret ?? randomBytes(32);
  if (resolved.config !== undefined && applyConfig) {
    try {
      configure(backend, resolved.config, secret);
    } catch (error) {
      await backend.close();
      throw error;
    }
  }
  const metrics = new Metrics(backend, resolved.metricsTop);
  const state = { closing: false };
  // Without a store nothing is kept, so a secret of this process's own will do.
  const app = buildApp(resolved, backend, state, secret, metrics, backend);
  backend.engine.observer = withLifecycleLogs(metrics, app.log);
  try {
    // Fastify's own line says "listening" without the URL: the ready line names it, once (scripts
    // read the URL from it).
    await app.listen({
      host: resolved.host,
      port: resolved.port,
      listenTextResolver: () => "server listening",
    });
  } catch (error) {
    await backend.close(); // releases the data directory
    throw error;
  }
  const address = app.server.address();
  const port = typeof address === "object" && address !== null ? address.port : resolved.port;
  const host = resolved.host.includes(":") ? `[${resolved.host}]` : resolved.host;
  const url = `http://${host}:${port}`;

  if (resolved.apiKeys.length === 0) {
    resolved.log(
      "[ratequeue] WARNING: open development mode — no API key configured. Any bearer token is accepted and each token is its own namespace. Listening on loopback only; start with --api-key KEY (or RATEQUEUE_API_KEYS) for real use.",
    );
  } else if (!isLoopback(resolved.host)) {
    resolved.log(
      "[ratequeue] note: plain HTTP on a non-loopback interface: put TLS in front of it.",
    );
  }
  const where =
    resolved.store !== undefined
      ? `state in PostgreSQL, schema ${resolved.pgSchema}`
      : resolved.dataDir === undefined
        ? "state in memory"
        : `state in ${resolved.dataDir}`;
  resolved.log(`[ratequeue] listening on ${url} (${where})`);

  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= (async () => {
      state.closing = true;
      await backend.close();
      await app.close();
    })();
    return closed;
  };
  return { url, close, [Symbol.asyncDispose]: close };
}

/** Sets the limits a config file names, as the admin API would; a refusal stops the start. */
function configure(backend: LocalBackend, config: ServerConfig, secret: Buffer): void {
  for (const [i, entry] of config.limits.entries()) {
    const ns = entry.apiKey === undefined ? entry.namespace! : namespaceId(secret, entry.apiKey);
    const result = backend.setLimits(ns, entry.resource, entry.change);
    if (result !== undefined && "ok" in result)
      throw new Error(
        `config: limits[${i}] (${JSON.stringify(entry.resource)}) cannot be set now: ${result.detail}`,
      );
  }
}
