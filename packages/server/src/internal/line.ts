import { type Linked, List } from "./list.js";

/** What the line needs of a waiting request. */
export interface Waiter<T> extends Linked<T> {
  readonly priority: number;
}

class Level<T extends Waiter<T>> extends List<T> {
  constructor(readonly priority: number) {
    super();
  }
}

/**
 * The waiting line of one resource: highest priority first, and within a priority first come,
 * first served. One FIFO list per priority in use, kept sorted; there are few priorities in
 * practice, so finding a level is a short scan, and joining or leaving the line is O(1) after it.
 */
export class Line<T extends Waiter<T>> {
  private readonly levels: Level<T>[] = [];
  size = 0;

  /** The request served next, if any. */
  first(): T | undefined {
    return this.levels[0]?.head;
  }

  push(req: T): void {
    this.level(req.priority, true)!.push(req);
    this.size++;
  }

  unlink(req: T): void {
    const level = this.level(req.priority, false)!;
    level.unlink(req);
    this.size--;
    if (level.size === 0) this.levels.splice(this.levels.indexOf(level), 1);
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (const level of this.levels) yield* level;
  }

  private level(priority: number, create: boolean): Level<T> | undefined {
    const levels = this.levels;
    let i = 0;
    for (; i < levels.length; i++) {
      const l = levels[i]!;
      if (l.priority === priority) return l;
      if (l.priority < priority) break;
    }
    if (!create) return undefined;
    const level = new Level<T>(priority);
    levels.splice(i, 0, level);
    return level;
  }
}
