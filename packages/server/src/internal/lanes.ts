import { DEFAULT_LANE } from "@ratequeue/core";
import { Line, type Waiter } from "./line.js";
import { type Linked, List } from "./list.js";

/** An operator's lanes of one resource (the `lanes` of its limits; see `parseLanes`). */
export interface LaneConfig {
  /** `fair` (the default): lanes take turns by weight. `strict`: each lane owns a fixed share. */
  strategy: "fair" | "strict";
  /** Fair: turns per round, by lane (default 1). */
  weights?: Record<string, number>;
  /** Strict: the units each lane owns; a lane not listed has none. */
  shares?: Record<string, number>;
  /** Fair: units held for these lanes only; other lanes never take them. */
  reserved?: Record<string, number>;
}

/** What the line needs of a waiting request that has a lane. */
export interface LaneWaiter<T> extends Waiter<T> {
  readonly lane: string;
  readonly load: number;
}

/** One lane of a resource: its own line (priority, then arrival), and what its requests hold. */
export class Lane<T extends LaneWaiter<T>> implements Linked<Lane<T>> {
  readonly line = new Line<T>();
  /** Fair: grants per turn. */
  weight = 1;
  /** Strict: units it owns (0: none — its requests are refused). Fair: unbounded. */
  share = Number.POSITIVE_INFINITY;
  /** Fair: units held for it only. */
  reserved = 0;
  /** Named by the operator's config: kept while idle. */
  configured = false;
  /** Units its requests hold, held back ones included. */
  used = 0;
  /** Its requests holding. */
  active = 0;
  /** Links in the turn ring (owned by `Lanes.ring`). */
  prev: Lane<T> | undefined = undefined;
  next: Lane<T> | undefined = undefined;
  constructor(readonly name: string) {}
}

/**
 * The waiting line of a resource with lanes: one `Line` per lane, and the order lanes take
 * turns in. It has the `Line`'s shape (size, push, unlink, iteration), so the engine keeps one
 * code path for joining and leaving; only choosing whom to serve differs (`Engine.pumpLanes`).
 *
 * Turns (fair): weighted round robin over the lanes that have waiters. The ring holds them in
 * turn order; the head lane is served until it has had `weight` grants (`credit`), then goes to
 * the back. A lane that gets its first waiter joins at the back. So once a lane has a waiter,
 * every other lane gets at most one turn (its weight in grants) before that lane's head is
 * served — however many the others have waiting — and over rounds each lane with waiters gets
 * grants in proportion to its weight. Turns count grants, not units (a lane of large loads gets
 * more units per turn): simple, and the bound holds whatever the loads. Deficit counters or
 * virtual times would give unit fairness, at the price of a lane waiting several turns.
 */
export class Lanes<T extends LaneWaiter<T>> {
  strategy: "fair" | "strict" = "fair";
  readonly lanes = new Map<string, Lane<T>>();
  /** Lanes with waiters, in turn order: the head's turn now. */
  readonly ring = new List<Lane<T>>();
  /** Grants the head lane has left in its turn. */
  credit = 0;
  /** Requests waiting, in all lanes. */
  size = 0;
  /** Fair: units reserved in all, and the lanes that reserve some. */
  reservedTotal = 0;
  reserving: Lane<T>[] = [];

  constructor(config: LaneConfig | undefined) {
    this.configure(config);
  }

  /** Applies an operator's config (undefined: fair, every lane weight 1, nothing reserved). */
  configure(config: LaneConfig | undefined): void {
    this.strategy = config?.strategy ?? "fair";
    for (const lane of this.lanes.values()) {
      lane.weight = 1;
      lane.share = this.strategy === "strict" ? 0 : Number.POSITIVE_INFINITY;
      lane.reserved = 0;
      lane.configured = false;
    }
    const set = (
      values: Record<string, number> | undefined,
      apply: (lane: Lane<T>, value: number) => void,
    ) => {
      for (const [name, value] of Object.entries(values ?? {})) {
        const lane = this.lane(name);
        lane.configured = true;
        apply(lane, value);
      }
    };
    set(config?.weights, (lane, v) => {
      lane.weight = v;
    });
    set(config?.shares, (lane, v) => {
      lane.share = v;
    });
    set(config?.reserved, (lane, v) => {
      lane.reserved = v;
    });
    this.reserving = [...this.lanes.values()].filter((l) => l.reserved > 0);
    this.reservedTotal = this.reserving.reduce((sum, l) => sum + l.reserved, 0);
    for (const lane of [...this.lanes.values()]) this.forgetIfIdle(lane);
    if (this.ring.head !== undefined) this.credit = Math.min(this.credit, this.ring.head.weight);
  }

  /** Lane `name`, made (with the resource's defaults) if it does not exist. */
  lane(name: string): Lane<T> {
    let lane = this.lanes.get(name);
    if (lane === undefined) {
      lane = new Lane<T>(name);
      if (this.strategy === "strict") lane.share = 0;
      this.lanes.set(name, lane);
    }
    return lane;
  }

  /** Units held from reservations (each lane's held units, up to its reservation). */
  reservedUsed(): number {
    let sum = 0;
    for (const lane of this.reserving) sum += Math.min(lane.used, lane.reserved);
    return sum;
  }

  /** The first waiter of the lane whose turn it is (the `Line` shape; `Engine.pumpLanes` chooses). */
  first(): T | undefined {
    return this.ring.head?.line.first();
  }

  push(req: T): void {
    const lane = this.lane(req.lane);
    lane.line.push(req);
    this.size++;
    if (lane.line.size === 1) {
      this.ring.push(lane); // a lane with waiters again: at the back of the turns
      if (this.ring.size === 1) this.credit = lane.weight;
    }
  }

  unlink(req: T): void {
    const lane = this.lanes.get(req.lane)!;
    lane.line.unlink(req);
    this.size--;
    if (lane.line.size === 0) {
      const wasHead = this.ring.head === lane;
      this.ring.unlink(lane);
      if (wasHead && this.ring.head !== undefined) this.credit = this.ring.head.weight;
      this.forgetIfIdle(lane);
    }
  }

  /**
   * Lane `lane` was just granted its head (already unlinked). In its turn, it spends one grant of
   * it; served out of turn (the lanes before it had nobody present, or no room), its turn is spent
   * and it goes to the back.
   */
  served(lane: Lane<T>): void {
    if (lane.line.size === 0) return; // out of the ring already
    const inTurn = this.ring.head === lane;
    if (inTurn && --this.credit > 0) return;
    this.ring.unlink(lane);
    this.ring.push(lane);
    // A new turn only when the turn ended: a lane served out of turn leaves the head's credit as
    // it was (refilling it gave the head more than its weight in one turn).
    if (inTurn) this.credit = this.ring.head!.weight;
  }

  /** Forgets a lane nothing waits in, holds, or configures (lane names are the clients' to make). */
  forgetIfIdle(lane: Lane<T>): void {
    if (lane.line.size === 0 && lane.used === 0 && lane.active === 0 && !lane.configured)
      this.lanes.delete(lane.name);
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (const lane of this.lanes.values()) yield* lane.line;
  }
}

/** The most units one request of `lane` can ever hold on a resource of `capacity` with `config`. */
export function laneMost(config: LaneConfig | undefined, lane: string, capacity: number): number {
  if (config === undefined) return capacity;
  if (config.strategy === "strict") return Math.min(capacity, own(config.shares, lane));
  let total = 0;
  for (const v of Object.values(config.reserved ?? {})) total += v;
  return Math.min(capacity, capacity - total + own(config.reserved, lane));
}

/**
 * `units[lane]`, or 0 — its own entries only: lane names are the clients' to choose, and
 * `toString` or `constructor` must not find an object's inherited methods (which made a lane
 * with no share look unbounded, and wait for ever instead of being refused).
 */
function own(units: Record<string, number> | undefined, lane: string): number {
  return units !== undefined && Object.hasOwn(units, lane) ? units[lane]! : 0;
}

/** Why a config could not hold on a resource of `capacity` (undefined: it can). */
export function laneConfigProblem(
  config: LaneConfig | undefined,
  capacity: number | undefined,
): string | undefined {
  if (config === undefined) return undefined;
  const units = config.strategy === "strict" ? config.shares : config.reserved;
  const what = config.strategy === "strict" ? "shares" : "reserved units";
  if (units === undefined || Object.keys(units).length === 0) return undefined;
  if (capacity === undefined)
    return `${what} are parts of the resource's capacity: set "capacity" with them (an operator's capacity, which requests cannot change)`;
  let total = 0;
  for (const v of Object.values(units)) total += v;
  if (total > capacity)
    return `the ${what} add up to ${total}, more than the capacity (${capacity}): lower them, or raise the capacity`;
  return undefined;
}

export { DEFAULT_LANE };
