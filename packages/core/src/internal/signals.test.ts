import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { linkSignals, sleep } from "./signals.js";

describe("linkSignals", () => {
  it("aborts with the source's reason and removes its listeners on dispose", () => {
    const a = new AbortController();
    const b = new AbortController();
    const link = linkSignals([a.signal, b.signal, undefined]);
    expect(getEventListeners(a.signal, "abort")).toHaveLength(1);
    b.abort(new Error("b"));
    expect(link.signal.reason).toEqual(new Error("b"));
    expect(getEventListeners(a.signal, "abort")).toHaveLength(0);
  });

  it("removes every listener when disposed without an abort", () => {
    const a = new AbortController();
    for (let i = 0; i < 100; i++) linkSignals([a.signal], 1_000).dispose();
    expect(getEventListeners(a.signal, "abort")).toHaveLength(0);
  });

  it("aborts after its timeout with the given reason", async () => {
    const link = linkSignals([], 10, () => new Error("late"));
    await new Promise((r) => link.signal.addEventListener("abort", r));
    expect(link.signal.reason).toEqual(new Error("late"));
  });

  it("is aborted at once by an already aborted source", () => {
    const link = linkSignals([AbortSignal.abort("why")]);
    expect(link.signal.aborted).toBe(true);
    expect(link.signal.reason).toBe("why");
  });
});

describe("sleep", () => {
  it("rejects with the signal's reason when aborted, and removes its listener when done", async () => {
    const a = new AbortController();
    await sleep(1, a.signal);
    expect(getEventListeners(a.signal, "abort")).toHaveLength(0);
    const slept = sleep(10_000, a.signal);
    a.abort(new Error("stop"));
    await expect(slept).rejects.toThrow("stop");
  });
});
