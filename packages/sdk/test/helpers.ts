import type { ResourceSnapshot } from "@ratequeue/core";
import { type RunningServer, type ServerOptions, startServer } from "@ratequeue/server";
import * as fetchEntry from "../src/index.js";
import * as nodeEntry from "../src/node.js";

/** The SDK's two builds: every integration test runs against both. */
export const ENTRIES = [
  { transport: "undici", sdk: nodeEntry },
  { transport: "fetch", sdk: fetchEntry },
] as const;

export function startTestServer(options: ServerOptions = {}): Promise<RunningServer> {
  return startServer({ port: 0, ...options });
}

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
