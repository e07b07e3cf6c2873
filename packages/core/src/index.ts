/**
 * `@ratequeue/core`: the RateQueue wire protocol — its types, limits and validation.
 * The protocol client (transports, long-poll acquire, retries) lands here next; apps should
 * import `@ratequeue/sdk` instead.
 *
 * @example
 * ```ts
 * import { checkName } from "@ratequeue/core";
 * checkName("user-update-42"); // undefined: fine
 * ```
 */
export * from "./protocol.js";
export * from "./validate.js";
