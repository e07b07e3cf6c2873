import { describe, expect, it } from "vitest";
import {
  AcquireTimeoutError,
  AuthenticationError,
  LeaseLostError,
  QueueFullError,
  RateQueueError,
  ServiceUnavailableError,
  ValidationError,
} from "./errors.js";

describe("errors", () => {
  const classes = [
    [ValidationError, "ValidationError", "invalid_request"],
    [AuthenticationError, "AuthenticationError", "unauthorized"],
    [AcquireTimeoutError, "AcquireTimeoutError", "acquire_timeout"],
    [QueueFullError, "QueueFullError", "queue_full"],
    [LeaseLostError, "LeaseLostError", "lease_lost"],
    [ServiceUnavailableError, "ServiceUnavailableError", "service_unavailable"],
  ] as const;

  it.each(classes)(
    "%o has a stable name and code, keeps its cause, and is a RateQueueError",
    (Class, name, code) => {
      const cause = new Error("root");
      const error = new Class("message", { cause, resource: "r" });
      expect(error.name).toBe(name);
      expect(error.code).toBe(code);
      expect(error.cause).toBe(cause);
      expect(error.resource).toBe("r");
      expect(error).toBeInstanceOf(Class);
      expect(error).toBeInstanceOf(RateQueueError);
      expect(error).toBeInstanceOf(Error);
      expect(String(error.stack)).toContain(name);
    },
  );

  it("does not confuse sibling classes", () => {
    expect(new LeaseLostError("x")).not.toBeInstanceOf(AcquireTimeoutError);
    expect(new RateQueueError("x")).not.toBeInstanceOf(ValidationError);
    expect(new Error("x")).not.toBeInstanceOf(RateQueueError);
    expect(null).not.toBeInstanceOf(RateQueueError);
  });

  it("keeps instanceof working across two copies of the package", async () => {
    // A second, separate instance of the module, as when ESM and CJS copies are both loaded.
    const path = "./errors.js?second-copy"; // a variable, so TypeScript does not resolve the query
    const copy = (await import(/* @vite-ignore */ path)) as typeof import("./errors.js");
    expect(copy.LeaseLostError).not.toBe(LeaseLostError);
    const fromCopy = new copy.LeaseLostError("lost");
    expect(fromCopy).toBeInstanceOf(LeaseLostError);
    expect(fromCopy).toBeInstanceOf(RateQueueError);
    expect(fromCopy).not.toBeInstanceOf(ValidationError);
    expect(new LeaseLostError("lost")).toBeInstanceOf(copy.RateQueueError);
  });
});
