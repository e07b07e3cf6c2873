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
    // Sweep: +1 at each start, -1 at each end; ends sort before starts at the same instant.
    const events = holds
      // A holder told at once that it lost the lease (end = start) held nothing.
      .filter((h) => h.name === name && (h.end === undefined || h.end > h.start))
      .flatMap((h) => [
        { at: h.start, delta: 1, h },
        { at: h.end ?? endOfRun, delta: -1, h },
      ])
      .sort((a, b) => a.at - b.at || a.delta - b.delta);
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
