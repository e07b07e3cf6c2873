import { describe, expect, it } from "vitest";
import { ServiceUnavailableError } from "./errors.js";
import { DEFAULT_RETRY, parseRetryAfter, TransientError, withRetries } from "./retry.js";

const FAST = { ...DEFAULT_RETRY, retries: 3, minDelay: 1, maxDelay: 2 };

describe("withRetries", () => {
  it("retries transient failures and returns the first success", async () => {
    let attempts = 0;
    const value = await withRetries(
      "x",
      async () => {
        if (++attempts < 3) throw new TransientError("flaky");
        return "ok";
      },
      FAST,
    );
    expect(value).toBe("ok");
    expect(attempts).toBe(3);
  });

  it("gives up with ServiceUnavailableError, keeping the last cause", async () => {
    let attempts = 0;
    const cause = new Error("ECONNREFUSED");
    const error = await withRetries(
      "acquiring",
      async () => {
        attempts++;
        throw new TransientError("down", undefined, { cause });
      },
      FAST,
    ).catch((e) => e);
    expect(error).toBeInstanceOf(ServiceUnavailableError);
    expect(error.cause).toBe(cause);
    expect(error.message).toMatch(/^acquiring failed after retries/);
    expect(attempts).toBe(4);
  });

  it("does not retry other errors", async () => {
    let attempts = 0;
    const error = new Error("bad request");
    await expect(
      withRetries(
        "x",
        async () => {
          attempts++;
          throw error;
        },
        FAST,
      ),
    ).rejects.toBe(error);
    expect(attempts).toBe(1);
  });

  it("stops at once with the signal's reason when aborted during a backoff", async () => {
    const controller = new AbortController();
    const run = withRetries(
      "x",
      async () => {
        throw new TransientError("down", 60_000);
      },
      FAST,
      controller.signal,
    );
    setTimeout(() => controller.abort(new Error("stop")), 10);
    await expect(run).rejects.toThrow("stop");
  });
});

describe("parseRetryAfter", () => {
  it("reads seconds and HTTP dates", () => {
    expect(parseRetryAfter("3")).toBe(3_000);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6_000);
    expect(parseRetryAfter("soon")).toBeUndefined();
    expect(parseRetryAfter(null)).toBeUndefined();
  });
});
