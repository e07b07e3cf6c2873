import type { WebSocketFactory, WebSocketLike } from "./session.js";

/**
 * WebSockets from the runtime's global `WebSocket` (browsers, Deno, Bun, workerd, Node ≥ 22);
 * `undefined` where there is none, and the session then runs over HTTP polls.
 *
 * @example
 * ```ts
 * const client = new ProtocolClient({ baseUrl, apiKey, transport: fetchTransport(), webSocket: globalWebSocket() });
 * ```
 */
export function globalWebSocket(): WebSocketFactory | undefined {
  const WS = (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
  if (typeof WS !== "function") return undefined;
  return { open: (url) => new WS(url) };
}
