/** An item the heap can hold: it keeps its own deadline and its slot in the heap. */
export interface Timed {
  deadline: number;
  /** Position in the heap, or -1 when not in it. Owned by the heap. */
  heapIndex: number;
}

/**
 * A binary min-heap on `deadline` whose items know their index, so that a deadline can be moved
 * or removed in O(log n). Hand-written because the small heap packages (tinyqueue, flatqueue)
 * cannot remove an arbitrary item, and the ones that can (heap-js) do it in O(n); the engine
 * moves a deadline on every poll, grant and release.
 */
export class DeadlineHeap<T extends Timed> {
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  /** Inserts `item`, or moves it if it is already in the heap. */
  set(item: T, deadline: number): void {
    if (item.heapIndex < 0) {
      item.deadline = deadline;
      item.heapIndex = this.items.length;
      this.items.push(item);
      this.up(item.heapIndex);
      return;
    }
    const old = item.deadline;
    item.deadline = deadline;
    if (deadline < old) this.up(item.heapIndex);
    else if (deadline > old) this.down(item.heapIndex);
  }

  delete(item: T): void {
    const i = item.heapIndex;
    if (i < 0) return;
    item.heapIndex = -1;
    const last = this.items.pop()!;
    if (i === this.items.length) return;
    this.items[i] = last;
    last.heapIndex = i;
    this.down(i);
    this.up(last.heapIndex);
  }

  private up(i: number): void {
    const items = this.items;
    const item = items[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = items[p]!;
      if (parent.deadline <= item.deadline) break;
      items[i] = parent;
      parent.heapIndex = i;
      i = p;
    }
    items[i] = item;
    item.heapIndex = i;
  }

  private down(i: number): void {
    const items = this.items;
    const n = items.length;
    const item = items[i]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && items[c + 1]!.deadline < items[c]!.deadline) c++;
      const child = items[c]!;
      if (child.deadline >= item.deadline) break;
      items[i] = child;
      child.heapIndex = i;
      i = c;
    }
    items[i] = item;
    item.heapIndex = i;
  }
}
