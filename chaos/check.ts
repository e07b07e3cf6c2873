/**
 * The chaos run's checker: pure, so that it is tested on its own (check.test.ts).
 *
 * A holder "believes it holds" from its grant until it releases, learns it lost the lease
 * (`lease.signal` aborted), or is killed (or exits) — whichever comes first. Times are the
 * client's own, taken inside the hold, so each interval lies within the server's grant: an
 * overlap here is a real one. A holder whose `lease.signal` aborted before the next grant
 * started does not overlap it: that is what the signal is for.
 */
export interface Hold {
  client: string;
  name: string;
  token: number;
  start: number;
  /** Released, told lost, or killed; undefined if none of these was seen (counted as open). */
  end: number | undefined;
}

export interface Write {
  name: string;
  token: number;
  /** When the holder sent it (it checked `lease.signal` just before). */
  at: number;
  accepted: boolean;
}

export interface Verdict {
  /** Moments where more holders believed they held than the capacity allows. */
  overlaps: Array<{ name: string; at: number; holders: string[] }>;
  /** Writes the fenced register accepted although a newer grant on the name had already started when they were sent. */
  staleWritesAccepted: Write[];
}

/**
 * An operator changed a resource's capacity (admin API): grants with a fencing token above
 * `token` were made under `capacity` (tokens only grow, so they order grants exactly).
 */
export interface CapacityChange {
  name: string;
  token: number;
  capacity: number;
}

/**
 * The holds of `name` as a sweep: +1 at each start, -1 at each end (an open hold ends with the
 * run); ends sort before starts at the same instant. A holder told at once that it lost the
 * lease (end = start) held nothing.
 */
function sweep<H extends Hold>(holds: readonly H[], name: string, endOfRun: number) {
  return holds
    .filter((h) => h.name === name && (h.end === undefined || h.end > h.start))
    .flatMap((h) => [
      { at: h.start, delta: 1, h },
      { at: h.end ?? endOfRun, delta: -1, h },
    ])
    .sort((a, b) => a.at - b.at || a.delta - b.delta);
}

export function check(
  holds: Hold[],
  writes: Write[],
  capacities: Record<string, number>,
  endOfRun: number,
  changes: CapacityChange[] = [],
): Verdict {
  const overlaps: Verdict["overlaps"] = [];
  for (const [name, initial] of Object.entries(capacities)) {
    // The capacity a grant was made under, by its token. (A cut takes nothing from holders; it
    // only stops grants, so counting at each grant is the whole check.)
    const mine = changes.filter((c) => c.name === name).sort((a, b) => a.token - b.token);
    const capacityFor = (token: number) => {
      let inForce = initial;
      for (const c of mine) {
        if (c.token >= token) break;
        inForce = c.capacity;
      }
      return inForce;
    };
    const events = sweep(holds, name, endOfRun);
    const open = new Set<Hold>();
    for (const e of events) {
      if (e.delta < 0) open.delete(e.h);
      else {
        open.add(e.h);
        if (open.size > capacityFor(e.h.token))
          overlaps.push({
            name,
            at: e.at,
            holders: [...open].map((h) => `${h.client}#${h.token}`),
          });
      }
    }
  }
  // The earliest start of a grant with a token above each written one, per name.
  const starts = new Map<string, Array<{ token: number; start: number }>>();
  for (const h of holds) {
    const list = starts.get(h.name) ?? [];
    starts.set(h.name, list);
    list.push({ token: h.token, start: h.start });
  }
  const staleWritesAccepted = writes.filter(
    (w) =>
      w.accepted && (starts.get(w.name) ?? []).some((h) => h.token > w.token && h.start < w.at),
  );
  return { overlaps, staleWritesAccepted };
}

/** A lease a holder was told it lost (`lease.signal` aborted), with the SDK's reason in a word. */
export interface Loss {
  client: string;
  at: number;
  why: string;
  /** The longest event-loop stall of the holder's process in the second before, ms. */
  stall: number;
}

/**
 * Something the harness saw from `from` to `to` (ms) that may cost a client its leases: a reset
 * of one client's connections or the server down (injected faults), or a stall of the harness's
 * own event loop (it carries every client's connection through its proxies). `client` undefined:
 * every client.
 */
export interface Fault {
  kind: "reset" | "server" | "stall" | "revoke";
  client?: string;
  from: number;
  to: number;
}

export interface Attribution {
  /** Within `within` ms after an injected fault touching the client: expected. */
  nearFault: Loss[];
  /** Otherwise, after a stall (≥ `stallMs`) of the holder's process or of the harness: a machine too loaded for the grace. */
  nearStall: Loss[];
  /** Neither: nothing the harness did or saw explains them. */
  unexplained: Loss[];
}

/** Sorts losses by what may explain them (see `Attribution`). */
export function attributeLosses(
  losses: Loss[],
  faults: Fault[],
  within: number,
  stallMs: number,
): Attribution {
  const result: Attribution = { nearFault: [], nearStall: [], unexplained: [] };
  const near = (loss: Loss, kinds: Array<Fault["kind"]>) =>
    faults.some(
      (f) =>
        kinds.includes(f.kind) &&
        (f.client === undefined || f.client === loss.client) &&
        loss.at >= f.from &&
        loss.at <= f.to + within,
    );
  for (const loss of losses) {
    if (near(loss, ["reset", "server", "revoke"])) result.nearFault.push(loss);
    else if (loss.stall >= stallMs || near(loss, ["stall"])) result.nearStall.push(loss);
    else result.unexplained.push(loss);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// The scheduler's limits (a resource with an operator's capacity, concurrency, rate limits and
// lanes: resources.ts's SCHEDULED).

/** A resource's limits as an operator set them (the admin API's body; see resources.ts). */
export interface Limits {
  capacity: number;
  concurrency?: number;
  rates?: ReadonlyArray<{
    limit: number;
    window: number;
    kind: "sliding" | "fixed";
    counts: "requests" | "load";
  }>;
  lanes?: {
    strategy: "fair" | "strict";
    weights?: Readonly<Record<string, number>>;
    shares?: Readonly<Record<string, number>>;
    reserved?: Readonly<Record<string, number>>;
  };
}

/** A hold of a scheduled resource: a `Hold` (the client's own times) with its load and lane. */
export interface LaneHold extends Hold {
  load: number;
  lane: string;
}

export interface LimitViolation {
  name: string;
  /** What was exceeded: the capacity (units), the concurrency (holders), the units outside the
   * reservations (other lanes took reserved ones), or a strict lane's share. */
  kind: "capacity" | "concurrency" | "reserved" | "share";
  at: number;
  /** What was held, and the most allowed. */
  held: number;
  most: number;
  holders: string[];
}

/**
 * Sweeps the holds of a scheduled resource (as `check` does, ends before starts at one instant)
 * and reports each grant after which what the believed holders held broke a limit: units over
 * the capacity, holders over the concurrency, units outside the lanes' reservations over the
 * capacity less every reservation (a lane's units past its reservation are the shared pool's, so
 * a lane without one taking reserved units shows here), a strict lane's units over its share.
 * Every measure only grows with what is held, and the holds lie within the server's, so what
 * the sweep sees the server had at least: a violation here is a real one.
 */
export function checkLimits(
  holds: LaneHold[],
  name: string,
  limits: Limits,
  endOfRun: number,
): LimitViolation[] {
  const out: LimitViolation[] = [];
  const reserved = limits.lanes?.strategy === "fair" ? (limits.lanes.reserved ?? {}) : {};
  const reservedTotal = Object.values(reserved).reduce((a, b) => a + b, 0);
  const shares = limits.lanes?.strategy === "strict" ? (limits.lanes.shares ?? {}) : undefined;
  const events = sweep(holds, name, endOfRun);
  const open = new Set<LaneHold>();
  const byLane = new Map<string, number>();
  let units = 0;
  for (const e of events) {
    const h = e.h;
    byLane.set(h.lane, (byLane.get(h.lane) ?? 0) + e.delta * h.load);
    units += e.delta * h.load;
    if (e.delta < 0) {
      open.delete(h);
      continue;
    }
    open.add(h);
    const who = () => [...open].map((o) => `${o.client}#${o.token}(${o.lane}:${o.load})`);
    const report = (kind: LimitViolation["kind"], held: number, most: number) => {
      if (held > most) out.push({ name, kind, at: e.at, held, most, holders: who() });
    };
    report("capacity", units, limits.capacity);
    if (limits.concurrency !== undefined) report("concurrency", open.size, limits.concurrency);
    if (reservedTotal > 0) {
      let pool = 0;
      for (const [lane, used] of byLane) pool += Math.max(0, used - (reserved[lane] ?? 0));
      report("reserved", pool, limits.capacity - reservedTotal);
    }
    if (shares !== undefined) report("share", byLane.get(h.lane) ?? 0, shares[h.lane] ?? 0);
  }
  return out;
}

/**
 * A grant as the server logged it. The engine's grant time (its `now`) is not in the line: the
 * line's `time` is taken after it — a few ms, or more when the process is descheduled on a loaded
 * machine — so it is an upper bound; `lo`, when known, a lower one: the client's clock when it
 * asked, plus the line's `waitedMs` (the engine's grant time less the request's creation, which
 * came after the client asked).
 */
export interface ServerGrant {
  token: number;
  /** The log line's time: the grant was made at or before it. */
  at: number;
  /** The grant was made at or after it, if known. */
  lo?: number;
  /** Undefined: no client reported this grant (killed first): counted as 1, the least. */
  load: number | undefined;
}

export interface RateViolation {
  /** The limit, as "N requests|units per W ms (kind)". */
  limit: string;
  /** The window: its start and end (ms), and what it counted. */
  from: number;
  to: number;
  counted: number;
  tokens: number[];
}

/**
 * When each grant was made, as an interval: the engine's clock only moves forward and fencing
 * tokens count grants in the order made, so in token order each grant was made no earlier than
 * the one before (its `lo` carried forward) and no later than the one after (its `at` carried
 * back). `exact`: the log times taken as the grant times.
 */
function grantTimes(
  grants: readonly ServerGrant[],
  exact: boolean,
): Array<{ g: ServerGrant; lo: number; hi: number }> {
  const sorted = [...grants].sort((a, b) => a.token - b.token);
  const out = sorted.map((g) => ({
    g,
    lo: exact ? g.at : (g.lo ?? Number.NEGATIVE_INFINITY),
    hi: g.at,
  }));
  for (let i = 1; i < out.length; i++) out[i]!.lo = Math.max(out[i]!.lo, out[i - 1]!.lo);
  for (let i = out.length - 2; i >= 0; i--) out[i]!.hi = Math.min(out[i]!.hi, out[i + 1]!.hi);
  return out;
}

/**
 * Whether a rate limit was exceeded in any window, by when the server made its grants (see
 * `ServerGrant`), reporting only what is certain: sliding, grants in a row (by token) from one
 * certainly made within `window − 1` ms of the other (the last's upper bound less the first's
 * lower bound), counting more than the limit; fixed, a window counting more than the limit of
 * grants certainly made in it. A grant of unknown load counts `unknownLoad` (default 1, the
 * least). `exact`: the log times taken as the grant times (what the logs alone suggest, maybe
 * wrongly: not a verdict).
 */
export function checkRate(
  grants: readonly ServerGrant[],
  limit: NonNullable<Limits["rates"]>[number],
  { unknownLoad = 1, exact = false }: { unknownLoad?: number; exact?: boolean } = {},
): RateViolation[] {
  const amount = (g: ServerGrant) => (limit.counts === "load" ? (g.load ?? unknownLoad) : 1);
  const times = grantTimes(grants, exact);
  const what = `${limit.limit} ${limit.counts === "load" ? "units" : "requests"} per ${limit.window} ms (${limit.kind})`;
  const out: RateViolation[] = [];
  if (limit.kind === "sliding") {
    let from = 0;
    let sum = 0;
    let reportedTo = -1; // one violation per run of overfull windows
    for (let i = 0; i < times.length; i++) {
      sum += amount(times[i]!.g);
      // (A grant with no lower bound, nor one before it, leaves the window at once.)
      while (from <= i && times[i]!.hi - times[from]!.lo > limit.window - 1)
        sum -= amount(times[from++]!.g);
      if (sum > limit.limit && from > reportedTo) {
        reportedTo = i;
        out.push({
          limit: what,
          from: times[from]!.lo,
          to: times[i]!.hi,
          counted: sum,
          tokens: times.slice(from, i + 1).map((t) => t.g.token),
        });
      }
    }
    return out;
  }
  const windows = new Map<number, ServerGrant[]>();
  for (const { g, lo, hi } of times) {
    const start = Math.floor(hi / limit.window) * limit.window;
    if (lo < start) continue; // maybe made in the window before
    const list = windows.get(start) ?? [];
    windows.set(start, list);
    list.push(g);
  }
  for (const [start, list] of windows) {
    const counted = list.reduce((n, g) => n + amount(g), 0);
    if (counted > limit.limit)
      out.push({
        limit: what,
        from: start,
        to: start + limit.window,
        counted,
        tokens: list.map((g) => g.token),
      });
  }
  return out;
}

/** A wait on a scheduled resource, as its client saw it: from the acquire until granted or not. */
export interface LaneWait {
  client: string;
  name: string;
  lane: string;
  from: number;
  to: number;
  granted: boolean;
}

export interface Starved {
  name: string;
  lane: string;
  /** From a grant in the lane (or the first waiter's arrival) to the next grant, or to when no waiter was left. */
  from: number;
  to: number;
  /** The clients waiting in the lane through that span (a few). */
  waiters: string[];
}

/**
 * Lanes starved: spans in which a lane always had a waiter (some wait of its covered every
 * moment: waiters come and give up, the lane waits on) and got no grant for more than `bound` ms
 * of service — the time of every fault (a server down, a failover) overlapping it, extended by
 * `afterFault`, not counted. Turns guarantee a lane with a waiter present a grant within a round
 * of the others; the bound is generous (a round may wait for long holds to end, and for rate
 * limits to let a grant through).
 */
export function checkStarvation(
  waits: readonly LaneWait[],
  grants: ReadonlyArray<{ name: string; lane: string; at: number }>,
  bound: number,
  faults: ReadonlyArray<{ from: number; to: number }>,
  afterFault: number,
): Starved[] {
  // The faults, extended and merged: disjoint, in order.
  const down: Array<[number, number]> = [];
  for (const f of [...faults].sort((x, y) => x.from - y.from)) {
    const last = down.at(-1);
    if (last !== undefined && f.from <= last[1]) last[1] = Math.max(last[1], f.to + afterFault);
    else down.push([f.from, f.to + afterFault]);
  }
  /** `bound` ms of service after `t` (the time down not counted). */
  const deadline = (t: number) => {
    let d = t + bound;
    for (const [a, b] of down) {
      if (b <= t) continue;
      const from = Math.max(a, t);
      if (from >= d) break;
      d += b - from;
    }
    return d;
  };
  const lanes = new Map<string, { waits: LaneWait[]; grants: number[] }>();
  const of = (name: string, lane: string) => {
    const key = `${name}\0${lane}`;
    const found = lanes.get(key) ?? { waits: [], grants: [] };
    lanes.set(key, found);
    return found;
  };
  for (const w of waits) if (w.to > w.from) of(w.name, w.lane).waits.push(w);
  for (const g of grants) of(g.name, g.lane).grants.push(g.at);
  const out: Starved[] = [];
  for (const [key, lane] of lanes) {
    const [name, laneName] = key.split("\0") as [string, string];
    lane.grants.sort((x, y) => x - y);
    lane.waits.sort((x, y) => x.from - y.from);
    // The spans covered by waits, each with the waits in it.
    const spans: Array<{ from: number; to: number; waits: LaneWait[] }> = [];
    for (const w of lane.waits) {
      const last = spans.at(-1);
      if (last !== undefined && w.from <= last.to) {
        last.to = Math.max(last.to, w.to);
        last.waits.push(w);
      } else spans.push({ from: w.from, to: w.to, waits: [w] });
    }
    for (const span of spans) {
      // From the span's start, and from each grant in it, to the next grant (or the span's end).
      const marks = [
        span.from,
        ...lane.grants.filter((t) => t > span.from && t < span.to),
        span.to,
      ];
      for (let i = 0; i + 1 < marks.length; i++) {
        const [from, to] = [marks[i]!, marks[i + 1]!];
        // Waiters throughout, and no grant in the lane, past the deadline: starved (whether
        // the span ends in a grant or in its last waiter giving up).
        if (to > deadline(from))
          out.push({
            name,
            lane: laneName,
            from,
            to,
            waiters: [
              ...new Set(span.waits.filter((w) => w.from < to && w.to > from).map((w) => w.client)),
            ].slice(0, 5),
          });
      }
    }
  }
  return out;
}

/**
 * How a resource's limits as the admin API shows them (`GET …/resources/NAME`, or a PUT's answer)
 * differ from `expected`: undefined if they do not.
 */
export function limitsDiffer(expected: Limits, shown: unknown): string | undefined {
  const s = (shown ?? {}) as Record<string, unknown>;
  const canon = (v: unknown): string =>
    JSON.stringify(v, (_, x: unknown) =>
      x !== null && typeof x === "object" && !Array.isArray(x)
        ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1)))
        : x,
    );
  const rates = Array.isArray(s.rates)
    ? (s.rates as Array<Record<string, unknown>>).map(({ limit, window, kind, counts }) => ({
        limit,
        window,
        kind,
        counts,
      }))
    : s.rates;
  const pairs: Array<[string, unknown, unknown]> = [
    ["capacity", expected.capacity, s.limit],
    ["concurrency", expected.concurrency ?? null, s.concurrency],
    ["rates", expected.rates ?? [], rates],
    ["lanes", expected.lanes ?? null, s.laneConfig],
  ];
  const off = pairs
    .filter(([, want, got]) => canon(want) !== canon(got))
    .map(([what, want, got]) => `${what} ${canon(got)}, not ${canon(want)}`);
  return off.length === 0 ? undefined : off.join("; ");
}

/**
 * The most a rate limit counted in any one window, by the log times as they are (no slack): how
 * near the limit the run came — a limit never reached tests nothing.
 */
export function ratePeak(
  grants: readonly ServerGrant[],
  limit: NonNullable<Limits["rates"]>[number],
): number {
  const amount = (g: ServerGrant) => (limit.counts === "load" ? (g.load ?? 1) : 1);
  const sorted = [...grants].sort((a, b) => a.at - b.at);
  let peak = 0;
  if (limit.kind === "sliding") {
    let from = 0;
    let sum = 0;
    for (const g of sorted) {
      sum += amount(g);
      while (g.at - sorted[from]!.at > limit.window - 1) sum -= amount(sorted[from++]!);
      peak = Math.max(peak, sum);
    }
    return peak;
  }
  const windows = new Map<number, number>();
  for (const g of sorted) {
    const start = Math.floor(g.at / limit.window) * limit.window;
    const n = (windows.get(start) ?? 0) + amount(g);
    windows.set(start, n);
    peak = Math.max(peak, n);
  }
  return peak;
}
