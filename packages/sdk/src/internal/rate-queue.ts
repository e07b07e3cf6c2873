import {
  describe,
  ProtocolClient,
  type Transport,
  ValidationError,
  type WebSocketFactory,
} from "@ratequeue/core";
import { Lease, lostWhileHeld } from "../lease.js";
import {
  ACQUIRE_OPTION_KEYS,
  type AcquireOptions,
  DEFAULT_BASE_URL,
  type RateQueueOptions,
} from "../options.js";

/** What `ratequeue` and `createRateQueue()` return. */
export interface RateQueue {
  /**
   * Waits for a slot of `name` and resolves with a `Lease`; release it when done (`await using`).
   *
   * @example
   * ```ts
   * await using lease = await ratequeue.acquire(`user-update-${userId}`, { timeout: 10_000 });
   * ```
   */
  acquire(name: string, options?: AcquireOptions): Promise<Lease>;
  /**
   * Waits for a slot of `name`, runs `fn` while holding it, releases it when `fn` returns or
   * throws, and resolves with `fn`'s result. If the lease is lost while `fn` runs, `fn` learns
   * through `lease.signal` and the call rejects with `LeaseLostError` once `fn` settles.
   *
   * @example
   * ```ts
   * const saved = await ratequeue.acquire("billing-42", { apiKey }, async (lease) => {
   *   return save(record, { fence: lease.fencingToken });
   * });
   * ```
   */
  acquire<T>(
    name: string,
    options: AcquireOptions | undefined,
    fn: (lease: Lease) => T | Promise<T>,
  ): Promise<Awaited<T>>;
  /**
   * Ends this instance's sessions — for a graceful shutdown, or a test: acquires still waiting
   * reject with a `RateQueueError` of code `client_closed` and leave the line, held leases are
   * released (their `signal` aborts with `LeaseLostError`, so running work can stop), and the
   * connections close once the server has answered (at most 2 s). The instance stays usable: a
   * later `acquire` opens a new session. `await using rq = createRateQueue(...)` calls it.
   */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Where an instance's unset options come from: the entry point decides (environment, transport). */
export interface Defaults {
  transport: () => Transport;
  webSocket: () => WebSocketFactory | undefined;
  env: () => { apiKey?: string; baseUrl?: string };
}

export function makeRateQueue(options: RateQueueOptions, defaults: Defaults): RateQueue {
  if (options === null || typeof options !== "object") {
    throw new ValidationError(
      `createRateQueue options must be an object, got ${describe(options)}`,
      { field: "options" },
    );
  }
  let transport: Transport | undefined = options.transport;
  // One protocol client — one session, one connection — per server and key, for every call.
  const clients = new Map<string, ProtocolClient>();

  async function acquire<T>(
    name: string,
    opts?: AcquireOptions,
    fn?: (lease: Lease) => T | Promise<T>,
  ) {
    if (opts !== undefined && (opts === null || typeof opts !== "object")) {
      throw new ValidationError(`acquire options must be an object, got ${describe(opts)}`, {
        field: "options",
      });
    }
    for (const key of Object.keys(opts ?? {})) {
      if (!ACQUIRE_OPTION_KEYS.has(key)) {
        throw new ValidationError(
          `${key} is not an acquire option; expected some of: ${[...ACQUIRE_OPTION_KEYS].join(", ")}`,
          {
            field: key,
          },
        );
      }
    }
    if (fn !== undefined && typeof fn !== "function") {
      throw new ValidationError(`fn must be a function, got ${describe(fn)}`, { field: "fn" });
    }
    transport ??= defaults.transport();
    let apiKey = opts?.apiKey ?? options.apiKey;
    let baseUrl = opts?.baseUrl ?? options.baseUrl;
    if (apiKey === undefined || baseUrl === undefined) {
      // Read at each call that needs it (process.env is slow to read: not when options say it all).
      const env = defaults.env();
      baseUrl ??= env.baseUrl ?? DEFAULT_BASE_URL;
      // A server on loopback without keys (open development mode) takes any token: no key needed.
      apiKey ??=
        env.apiKey ?? ([baseUrl].flat().every((url) => LOOPBACK.test(url)) ? DEV_API_KEY : "");
    }
    const key = `${baseUrl}\n${apiKey}`;
    let client = clients.get(key);
    if (client === undefined) {
      client = new ProtocolClient({
        ...options,
        apiKey,
        baseUrl,
        transport,
        webSocket: options.webSocket ?? defaults.webSocket(),
      });
      clients.set(key, client);
    }
    // The options checked above: the protocol client takes those it knows (apiKey and baseUrl
    // chose the client).
    const grant = await client.acquire({ ...opts, name });
    const lease = new Lease(client, grant);
    return fn === undefined ? lease : run(lease, fn);
  }

  async function close(): Promise<void> {
    const closing = [...clients.values()];
    clients.clear();
    await Promise.all(closing.map((client) => client.close()));
  }

  return { acquire, close, [Symbol.asyncDispose]: close } as RateQueue;
}

/** The key used against a server on this machine when none is given (see `acquire`). */
const DEV_API_KEY = "dev";
const LOOPBACK = /^https?:\/\/(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?(\/|$)/;

/** Runs `fn` while holding `lease`, and releases it in `finally`. */
async function run<T>(lease: Lease, fn: (lease: Lease) => T | Promise<T>): Promise<Awaited<T>> {
  let result: Awaited<T>;
  try {
    result = await fn(lease);
  } catch (error) {
    try {
      await lease.release();
    } catch (releaseError) {
      // fn's own error wins; the release failure is kept as its cause if it has none.
      if (error instanceof Error && error.cause === undefined) {
        Object.defineProperty(error, "cause", {
          value: releaseError,
          configurable: true,
          writable: true,
        });
      }
    }
    throw error;
  }
  await lease.release();
  const lost = lostWhileHeld(lease);
  if (lost !== undefined) throw lost;
  return result;
}
