import { describe, expect, it } from "vitest";
import { LivenessBudget, safetyMargin } from "./liveness.js";

describe("LivenessBudget", () => {
  const terms = { grace: 200, ping: 50, recovery: 14_000 };
  const margin = safetyMargin(terms.grace);

  it("is safe until grace (less a margin) after the latest confirmed send", () => {
    const b = new LivenessBudget(terms);
    expect(b.spent(0)).toBe(true);
    b.confirm(1_000);
    expect(b.safeUntil).toBe(1_000 + 200 - margin);
    b.confirm(900); // an older answer arriving late changes nothing
    expect(b.safeUntil).toBe(1_000 + 200 - margin);
    expect(b.spent(1_000 + 200 - margin - 1)).toBe(false);
    expect(b.spent(1_000 + 200 - margin)).toBe(true);
  });

  it("a refused port within the earned budget extends it by the recovery window, once", () => {
    const b = new LivenessBudget(terms);
    b.confirm(1_000);
    b.serverDown(1_100);
    expect(b.safeUntil).toBe(1_100 + 14_000 - margin);
    // Refusals during the extension do not extend it again: a server that never returns ends it.
    b.serverDown(10_000);
    expect(b.safeUntil).toBe(1_100 + 14_000 - margin);
  });

  it("a refusal after the earned budget proves nothing; no recovery announced, no extension", () => {
    const late = new LivenessBudget(terms);
    late.confirm(1_000);
    late.serverDown(1_000 + 200 - margin);
    expect(late.safeUntil).toBe(1_000 + 200 - margin);
    const memory = new LivenessBudget({ ...terms, recovery: 0 });
    memory.confirm(1_000);
    memory.serverDown(1_050);
    expect(memory.safeUntil).toBe(1_000 + 200 - margin);
  });

  it("the extension ends when a server answers a message sent after the outage began", () => {
    const b = new LivenessBudget(terms);
    b.confirm(1_000);
    b.serverDown(1_100);
    b.confirm(1_050); // an answer to a message sent before the outage: still extended
    expect(b.safeUntil).toBe(1_100 + 14_000 - margin);
    b.confirm(2_000); // the restarted server welcomed us: back to the grace rule
    expect(b.safeUntil).toBe(2_000 + 200 - margin);
    // ...and a later outage extends it again.
    b.serverDown(2_100);
    expect(b.safeUntil).toBe(2_100 + 14_000 - margin);
  });

  it("a message that may have reached a restarted server cuts the extension to grace after it", () => {
    const b = new LivenessBudget(terms);
    b.confirm(1_000);
    b.serverDown(1_100);
    b.contacted(1_050); // sent before the outage began: says nothing of a restarted server
    expect(b.safeUntil).toBe(1_100 + 14_000 - margin);
    // A hello sent on a connection that opened (its welcome may never come): the restarted
    // server holds the session by the grace rule from when it heard it.
    b.contacted(3_000);
    expect(b.safeUntil).toBe(3_000 + 200 - margin);
    b.contacted(3_100); // a cap, never an extension
    expect(b.safeUntil).toBe(3_000 + 200 - margin);
    // Outside an extension, a contact changes nothing.
    const plain = new LivenessBudget(terms);
    plain.confirm(1_000);
    plain.contacted(1_100);
    expect(plain.safeUntil).toBe(1_000 + 200 - margin);
  });
});
