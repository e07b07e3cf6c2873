/**
 * The chaos run's checker: pure, so that it is tested on its own (check.test.ts).
 *
 * A holder "believes it holds" from its grant until it releases, learns it lost the lease
 * (`lease.signal` aborted), or is killed — whichever comes first. Times are the client's
 * own, taken inside the hold, so each interval lies within the server's grant: an overlap
 * here is a real one.
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
  at: number;
  accepted: boolean;
}

export interface Verdict {
  /** Moments where more holders believed they held than the capacity allows. */
  overlaps: Array<{ name: string; at: number; holders: string[] }>;
  /** Writes the fenced register accepted although a newer grant on the name had already started. */
  staleWritesAccepted: Write[];
}

export function check(
  holds: Hold[],
  writes: Write[],
  capacities: Record<string, number>,
  endOfRun: number,
): Verdict {
  const overlaps: Verdict["overlaps"] = [];
  for (const [name, capacity] of Object.entries(capacities)) {
    // Sweep: +1 at each start, -1 at each end; ends sort before starts at the same instant.
    const events = holds
      .filter((h) => h.name === name)
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
        if (open.size > capacity)
          overlaps.push({
            name,
            at: e.at,
            holders: [...open].map((h) => `${h.client}#${h.token}`),
          });
      }
    }
  }
  const staleWritesAccepted = writes.filter(
    (w) =>
      w.accepted && holds.some((h) => h.name === w.name && h.token > w.token && h.start < w.at),
  );
  return { overlaps, staleWritesAccepted };
}
