import type { RequestSnapshot } from "@ratequeue/core";
import { type RunningServer, type ServerOptions, startServer } from "../src/index.js";

/** A server on a free port, disposed with `await using`. */
export function startTestServer(options: ServerOptions = {}): Promise<RunningServer> {
  return startServer({ port: 0, ...options });
}

export interface Reply<T = RequestSnapshot> {
  status: number;
  type: string | null;
  body: T;
}

/** A tiny protocol client for tests: real HTTP over a real socket, via fetch. */
export function client(server: { url: string }, token = "test-token") {
  const call = async <T = RequestSnapshot>(
    method: string,
    path: string,
    body?: unknown,
    signal?: AbortSignal,
  ): Promise<Reply<T>> => {
    const res = await fetch(server.url + path, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    const text = await res.text();
    return {
      status: res.status,
      type: res.headers.get("content-type"),
      body: text ? JSON.parse(text) : undefined,
    };
  };
  return {
    call,
    acquire: (id: string, body: Record<string, unknown>, wait?: number, signal?: AbortSignal) =>
      call("PUT", `/v1/requests/${id}${wait === undefined ? "" : `?wait=${wait}`}`, body, signal),
    poll: (id: string, state?: string, wait?: number) => {
      const q = new URLSearchParams();
      if (state) q.set("state", state);
      if (wait !== undefined) q.set("wait", String(wait));
      return call("GET", `/v1/requests/${id}?${q}`);
    },
    release: (id: string) => call("DELETE", `/v1/requests/${id}`),
    resource: (name: string) =>
      call<Record<string, unknown>>("GET", `/v1/resources/${encodeURIComponent(name)}`),
  };
}

/** Resolves with the promise's value, or with "pending" if it has not settled within `ms`. */
export async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<T | "pending"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = new Promise<"pending">((resolve) => {
    timer = setTimeout(() => resolve("pending"), ms);
  });
  try {
    return await Promise.race([promise, pending]);
  } finally {
    clearTimeout(timer);
  }
}

export { eventually } from "../../../test-support/eventually.js";
