import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { onAbort, sleep } from "./signals.js";

describe("onAbort", () => {
  it("puts one listener on a signal however many watch it, and removes it with the last", () => {
    const a = new AbortController();
    const stops = Array.from({ length: 1_000 }, () => onAbort(a.signal, () => {}));
    expect(getEventListeners(a.signal, "abort")).toHaveLength(1);
    for (const stop of stops.slice(1)) stop();
    expect(getEventListeners(a.signal, "abort")).toHaveLength(1);
    stops[0]!();
    expect(getEventListeners(a.signal, "abort")).toHaveLength(0);
    stops[0]!(); // stopping twice is harmless
  });

  it("calls every watcher still watching when the signal aborts, then holds no listener", () => {
    const a = new AbortController();
    const calls: string[] = [];
    onAbort(a.signal, () => calls.push("one"));
    const stopTwo = onAbort(a.signal, () => calls.push("two"));
    onAbort(a.signal, () => calls.push("three"));
    stopTwo();
    a.abort();
    expect(calls).toEqual(["one", "three"]);
    expect(getEventListeners(a.signal, "abort")).toHaveLength(0);
    // A signal watched again after use gets a fresh listener.
    const b = new AbortController();
    const stop = onAbort(b.signal, () => {});
    stop();
    onAbort(b.signal, () => calls.push("again"));
    b.abort();
    expect(calls).toEqual(["one", "three", "again"]);
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
