// What every entry point exports besides `ratequeue` and `createRateQueue`.
export {
  AcquireTimeoutError,
  AuthenticationError,
  fetchTransport,
  LeaseLostError,
  QueueFullError,
  RateQueueError,
  type RetryOptions,
  ServiceUnavailableError,
  type Transport,
  ValidationError,
} from "@ratequeue/core";
export { Lease } from "../lease.js";
export type { AcquireOptions, RateQueueOptions } from "../options.js";
export type { RateQueue } from "./rate-queue.js";
