/**
 * `@ratequeue/core`: the RateQueue wire protocol as a small client — types, validation, errors,
 * the fetch transport, long-poll acquire, hold and release, retries. Web APIs only; the undici
 * transport is in `@ratequeue/core/node`. Apps import `@ratequeue/sdk` instead.
 *
 * @example
 * ```ts
 * import { ProtocolClient, fetchTransport } from "@ratequeue/core";
 * const client = new ProtocolClient({ baseUrl: "http://127.0.0.1:7420", apiKey: "dev", transport: fetchTransport() });
 * const grant = await client.acquire({ name: "user-update-42" });
 * await client.release(grant.id);
 * ```
 */

export {
  type AcquireParams,
  type ClientConfig,
  type Grant,
  type HoldEnd,
  ProtocolClient,
} from "./client.js";
export * from "./errors.js";
export * from "./liveness.js";
export { checkAcquireParams, checkClientConfig } from "./options.js";
export * from "./protocol.js";
export { DEFAULT_RETRY, type RetryOptions } from "./retry.js";
export {
  ClientSession,
  type LeaseHandle,
  type SessionConfig,
  type SessionMode,
  type WebSocketFactory,
  type WebSocketLike,
} from "./session.js";
export {
  fetchTransport,
  type Transport,
  type TransportRequest,
  type TransportResponse,
} from "./transport.js";
export * from "./validate.js";
export { globalWebSocket } from "./websocket.js";
