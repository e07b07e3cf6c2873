/**
 * `@ratequeue/sdk`: what apps import. For now it carries the protocol's public types; the
 * `ratequeue.acquire(name, opts, fn)` API is the next piece of work (see the repository's issues).
 *
 * @example
 * ```ts
 * import type { RequestState } from "@ratequeue/sdk";
 * const done: RequestState = "released";
 * ```
 */
export type { RequestSnapshot, RequestState, ResourceSnapshot } from "@ratequeue/core";
export { DEFAULT_CAPACITY, DEFAULT_LOAD, DEFAULT_PRIORITY } from "@ratequeue/core";
