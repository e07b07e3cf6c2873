/** One HTTP exchange, as the protocol client needs it. */
export interface TransportRequest {
  method: "GET" | "PUT" | "POST" | "DELETE";
  url: string;
  headers: Record<string, string>;
  body?: string;
  /** Aborts the exchange (the transport must then reject, and close the connection if a reply is pending). */
  signal: AbortSignal;
}

export interface TransportResponse {
  status: number;
  header(name: string): string | null;
  text(): Promise<string>;
}

/**
 * How the client talks HTTP. `fetchTransport()` works everywhere `fetch` exists; on Node the SDK
 * uses the undici transport from `@ratequeue/core/node` (connection pool, explicit timeouts).
 */
export type Transport = (request: TransportRequest) => Promise<TransportResponse>;

/**
 * A transport over `fetch` (edge workers, Bun, Deno, browsers; Node too).
 *
 * @example
 * ```ts
 * const transport = fetchTransport(); // or fetchTransport(myInstrumentedFetch)
 * ```
 */
export function fetchTransport(fetchImpl?: typeof fetch): Transport {
  return async ({ method, url, headers, body, signal }) => {
    // Resolved per call, so that test doubles installed on globalThis (msw) are seen.
    const f = fetchImpl ?? globalThis.fetch;
    const res = await f(url, { method, headers, body, signal });
    return {
      status: res.status,
      header: (name) => res.headers.get(name),
      text: () => res.text(),
    };
  };
}
