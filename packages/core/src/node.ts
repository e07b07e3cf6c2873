/**
 * `@ratequeue/core/node`: the undici transport, for Node.js. Only this entry imports undici,
 * so the shared code stays on Web APIs.
 *
 * @example
 * ```ts
 * import { undiciTransport } from "@ratequeue/core/node";
 * const transport = undiciTransport({ connections: 32 });
 * ```
 */
import { Agent, type Dispatcher } from "undici";
import { WebSocket } from "ws";
import type { WebSocketFactory, WebSocketLike } from "./session.js";
import type { Transport } from "./transport.js";

/**
 * WebSockets for Node.js, through `ws` (Node 20 has no global WebSocket). An idle session's
 * socket is unref'd, so a process that holds nothing exits as if it had no connection.
 *
 * @example
 * ```ts
 * const client = new ProtocolClient({ baseUrl, apiKey, transport: undiciTransport(), webSocket: nodeWebSocket() });
 * ```
 */
export function nodeWebSocket(): WebSocketFactory {
  return {
    open: (url) => {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      // Small frames, sent at once: no Nagle delay.
      ws.once("upgrade", (res) => res.socket?.setNoDelay(true)); // no socket under Bun
      return ws as unknown as WebSocketLike;
    },
    idle: (ws, idle) => {
      const socket = (ws as unknown as { _socket?: { ref(): void; unref(): void } })._socket;
      if (idle) socket?.unref();
      else socket?.ref();
    },
  };
}

export interface UndiciTransportOptions {
  /**
   * The dispatcher to send through (an `Agent`, a `Pool`, or undici's `MockAgent` in tests).
   * Default: one keep-alive `Agent` shared by the process, built from the options below.
   */
  dispatcher?: Dispatcher;
  /** Most connections per origin. Default `64`. */
  connections?: number;
  /**
   * Longest wait for a reply's headers, and between two body chunks, in ms. Default `60_000`:
   * above the server's longest poll window (25 s), far below undici's 300 s default.
   */
  timeout?: number;
}

let shared: Agent | undefined;

function agent(connections: number, timeout: number): Agent {
  return new Agent({ connections, headersTimeout: timeout, bodyTimeout: timeout });
}

export function undiciTransport(options: UndiciTransportOptions = {}): Transport {
  const timeout = options.timeout ?? 60_000;
  let dispatcher = options.dispatcher;
  if (
    dispatcher === undefined &&
    options.connections === undefined &&
    options.timeout === undefined
  ) {
    shared ??= agent(64, timeout); // one pool for the process, like undici's global dispatcher
    dispatcher = shared;
  }
  dispatcher ??= agent(options.connections ?? 64, timeout);
  const target = dispatcher;
  return async ({ method, url, headers, body, signal }) => {
    // The dispatcher's own request(), with origin and path split here: undici's request(url)
    // parses a URL object per call, a tenth of an uncontended HTTP cycle's client time.
    const { origin, path } = split(url);
    const res = await target.request({
      origin,
      path,
      method: method as Dispatcher.HttpMethod,
      headers,
      body,
      signal,
      headersTimeout: timeout,
      bodyTimeout: timeout,
    });
    return {
      status: res.statusCode,
      header: (name) => {
        const v = res.headers[name.toLowerCase()];
        return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
      },
      text: () => res.body.text(),
    };
  };
}

/**
 * `url`'s origin and path. The client's URLs are plain ASCII (a base URL, then a path it builds):
 * cut at the first `/` after the host. Anything else (a base path with spaces or non-ASCII
 * characters, dot segments) goes through URL parsing, which encodes and normalizes it.
 */
function split(url: string): { origin: string; path: string } {
  const at = url.indexOf("/", url.indexOf("//") + 2);
  const path = at < 0 ? "/" : url.slice(at);
  if (at > 0 && !/[^\x21-\x7e]|\/\.\.?(?:\/|$|\?)/.test(path))
    return { origin: url.slice(0, at), path };
  const parsed = new URL(url);
  return { origin: parsed.origin, path: parsed.pathname + parsed.search };
}
