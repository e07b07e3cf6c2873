/**
 * `@ratequeue/server`: the RateQueue service. Run it with `npx ratequeue-server`, or embed it:
 *
 * @example
 * ```ts
 * import { startServer } from "@ratequeue/server";
 * const server = await startServer({ port: 0, apiKeys: ["dev-key-123"] });
 * // ... point clients at server.url ...
 * await server.close();
 * ```
 */

export type { ConfiguredLimits, ServerConfig } from "./config.js";
export type { ServerOptions } from "./options.js";
export { type RunningServer, startServer } from "./server.js";
