import { FINAL_STATES } from "@ratequeue/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Engine, type EngineConfig, type Request } from "./engine.js";

/**
 * Random operation sequences against the engine, checking its invariants after every step:
 * exclusion (units held ≤ capacity), order (a grant never passes a request ahead of it in
 * the line), fencing (tokens strictly increase), and that every request ends and nothing leaks.
 */

const CONFIG: EngineConfig = {
  defaultExpiresIn: 5_000,
  grace: 150,
  waitGrace: 5_000,
  repollGrace: 1_000,
  maxQueue: 50,
  retention: 2_000,
  maxRetained: 10_000,
};
const NAMES = [
  { name: "lock", capacity: 1 },
  { name: "pool", capacity: 3 },
];

type Op =
  | {
      kind: "acquire";
      res: number;
      load: number;
      priority: number;
      timeout?: number;
      expiresIn?: number;
      lockDelay?: number;
      poll: boolean;
    }
  | { kind: "release"; pick: number }
  | { kind: "attach"; pick: number }
  | { kind: "detach"; pick: number; answered: boolean }
  | { kind: "retry"; pick: number }
  | { kind: "tick"; ms: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  // Weighted towards acquires, so that lines with several priorities are common.
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("acquire" as const),
      res: fc.integer({ min: 0, max: NAMES.length - 1 }),
      load: fc.integer({ min: 1, max: 3 }),
      priority: fc.constantFrom(0, 10, 20),
      timeout: fc.option(fc.constantFrom(0, 100, 1_000), { nil: undefined }),
      expiresIn: fc.option(fc.integer({ min: 1, max: 3_000 }), { nil: undefined }),
      lockDelay: fc.option(fc.constantFrom(0, 200, 1_000), { nil: undefined }),
      poll: fc.boolean(),
    }),
  },
  fc.record({ kind: fc.constant("release" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("attach" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("detach" as const), pick: fc.nat(), answered: fc.boolean() }),
  fc.record({ kind: fc.constant("retry" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("tick" as const), ms: fc.integer({ min: 0, max: 1_500 }) }),
);

function run(ops: Op[]): void {
  const clock = { t: 0, now: () => clock.t };
  const created: Request[] = [];
  const arrival = new Map<Request, number>();
  const polls = new Map<Request, number>();
  let lastToken = 0;
  let grants = 0;

  const engine = new Engine(CONFIG, clock, (req) => {
    if (req.state === "active") onGrant(req);
  });

  function onGrant(req: Request): void {
    grants++;
    // Fencing: strictly increasing, globally and so per resource.
    expect(req.fencingToken).toBeGreaterThan(lastToken);
    lastToken = req.fencingToken;
    // Order: nothing still waiting on this resource, and not away (a waiter whose connection
    // closed is passed over until it comes back), was ahead of the request granted.
    for (const other of created) {
      if (other === req || other.state !== "queued" || other.name !== req.name) continue;
      if (other.session.away) continue;
      const ahead =
        other.priority > req.priority ||
        (other.priority === req.priority && arrival.get(other)! < arrival.get(req)!);
      expect(ahead, `${other.id} was ahead of ${req.id}`).toBe(false);
    }
  }

  function checkExclusion(): void {
    for (const { name, capacity } of NAMES) {
      // Units of live holders, and of dead ones whose lock delay still holds them back.
      const held = created
        .filter((r) => r.name === name && (r.state === "active" || r.heldBackOn !== undefined))
        .reduce((n, r) => n + r.load, 0);
      expect(held).toBeLessThanOrEqual(capacity);
      const snap = engine.resource("ns", name);
      expect(snap?.used ?? 0).toBe(held);
    }
  }

  const pick = (i: number) => (created.length === 0 ? undefined : created[i % created.length]);

  for (const o of ops) {
    switch (o.kind) {
      case "acquire": {
        const spec = NAMES[o.res]!;
        const id = `r${created.length}`;
        const r = engine.acquire("ns", id, {
          resource: spec.name,
          capacity: spec.capacity,
          load: o.load,
          priority: o.priority,
          timeout: o.timeout,
          expiresIn: o.expiresIn,
          lockDelay: o.lockDelay,
        });
        if (!r.ok) {
          expect(["capacity_mismatch", "queue_full"]).toContain(r.code);
          break;
        }
        arrival.set(r.request, created.length);
        created.push(r.request);
        if (r.request.state === "active") onGrant(r.request);
        if (o.poll) {
          engine.attach(r.request);
          polls.set(r.request, (polls.get(r.request) ?? 0) + 1);
        }
        break;
      }
      case "release": {
        const req = pick(o.pick);
        if (req) engine.release("ns", req.id);
        break;
      }
      case "attach": {
        const req = pick(o.pick);
        if (req && !FINAL_STATES.has(req.state)) {
          engine.attach(req);
          polls.set(req, (polls.get(req) ?? 0) + 1);
        }
        break;
      }
      case "detach": {
        const req = pick(o.pick);
        if (req && (polls.get(req) ?? 0) > 0) {
          polls.set(req, polls.get(req)! - 1);
          engine.detach(req, o.answered);
        }
        break;
      }
      case "retry": {
        // A retried create resumes the same request; the line does not grow.
        const req = pick(o.pick);
        if (!req) break;
        const remembered = engine.get("ns", req.id) === req;
        const before = engine.resource("ns", req.name)?.queued ?? 0;
        const again = engine.acquire("ns", req.id, {
          resource: req.name,
          capacity: req.askedCapacity,
          load: req.load,
          priority: req.priority,
        });
        if (remembered) {
          expect(again.ok && again.request).toBe(req);
          expect(engine.resource("ns", req.name)?.queued ?? 0).toBe(before);
        } else if (again.ok) {
          // Forgotten after `retention`: the id names a new request.
          arrival.set(again.request, created.length);
          created.push(again.request);
          if (again.request.state === "active") onGrant(again.request);
        }
        break;
      }
      case "tick":
        clock.t += o.ms;
        engine.advance();
        break;
    }
    checkExclusion();
  }

  // Every client goes away: everything must end, and then be forgotten.
  for (const [req, n] of polls) for (let i = 0; i < n; i++) engine.detach(req, false);
  for (let guard = 0; engine.nextDeadline() !== undefined; guard++) {
    expect(guard).toBeLessThan(10_000);
    clock.t = Math.max(clock.t, engine.nextDeadline()!);
    engine.advance();
    checkExclusion();
  }
  for (const req of created)
    expect(FINAL_STATES.has(req.state), `${req.id} is ${req.state}`).toBe(true);
  expect(engine.stats()).toEqual({
    namespaces: 0,
    resources: 0,
    live: 0,
    retained: 0,
    timers: 0,
    sessions: 0,
  });
  expect(grants).toBeLessThanOrEqual(created.length);
}

describe("Engine properties", () => {
  it("holds its invariants over random operation sequences", () => {
    fc.assert(fc.property(fc.array(op, { maxLength: 200 }), run), { numRuns: 500 });
  });
});
