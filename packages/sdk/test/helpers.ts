import type { ResourceSnapshot } from "@ratequeue/core";
import type { RunningServer, ServerOptions } from "@ratequeue/server";
import { startWithTestStore } from "../../server/test/helpers.js";
import * as fetchEntry from "../src/index.js";
import * as nodeEntry from "../src/node.js";

/**
 * The SDK's two builds and its two session transports: every integration test runs against
 * each. The Node build opens a WebSocket session (`ws`); the fetch build, on Node 20 (no global
 * WebSocket), falls back to the HTTP session over `fetch`, as on any runtime without one; and
 * the Node build forced onto the HTTP session covers undici's path.
 */
export const ENTRIES = [
  { transport: "websocket (node build)", sdk: nodeEntry, session: "auto" },
  { transport: "http session over fetch (fetch build)", sdk: fetchEntry, session: "auto" },
  { transport: "http session over undici (node build)", sdk: nodeEntry, session: "http" },
] as const;

/**
 * A server on a free port. Its `grace` is 1 s, not 200 ms: a client gives a lease up when the
 * server has not answered it for about `grace`, and a test process that shares 2 loaded cores
 * with the server and other test files can stall that long. Tests of the grace itself pass theirs.
 * Its state is in the store `RATEQUEUE_TEST_STORE` names (memory, SQLite or PostgreSQL: see
 * packages/server/test/helpers.ts), unless the options name one.
 */
export function startTestServer(options: ServerOptions = {}): Promise<RunningServer> {
  return startWithTestStore({ port: 0, grace: 1_000, ...options });
}

export { stateDir, TEST_STORE } from "../../server/test/helpers.js";

/** Reads a resource's state over plain HTTP (what the server says, not what the SDK believes). */
export async function resourceState(server: { url: string }, name: string, apiKey = "test-key") {
  const res = await fetch(`${server.url}/v1/resources/${encodeURIComponent(name)}`, {
    headers: { authorization: `Bearer ${apiKey}` },
  });
  return (await res.json()) as ResourceSnapshot;
}

export { eventually } from "../../../test-support/eventually.js";

/** A promise with its resolver, for events a test waits on. */
export function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
