/** A node of an intrusive list: the object itself carries its links (no wrapper allocation). */
export interface Linked<T> {
  prev: T | undefined;
  next: T | undefined;
}

/** A doubly linked list of objects that carry their own links: O(1) push and unlink. */
export class List<T extends Linked<T>> {
  head: T | undefined = undefined;
  tail: T | undefined = undefined;
  size = 0;

  push(node: T): void {
    node.prev = this.tail;
    node.next = undefined;
    if (this.tail) this.tail.next = node;
    else this.head = node;
    this.tail = node;
    this.size++;
  }

  /** Removes `node`, which must be in this list. */
  unlink(node: T): void {
    if (node.prev) node.prev.next = node.next;
    else this.head = node.next;
    if (node.next) node.next.prev = node.prev;
    else this.tail = node.prev;
    node.prev = node.next = undefined;
    this.size--;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let n = this.head; n; n = n.next) yield n;
  }
}
