import type { SavedRequest } from "./engine.js";

/**
 * Where a server keeps its live requests so that they survive a restart (`--data-dir`).
 * Writes happen inside the operation that causes them and are committed before its reply is
 * sent, so no client is told of a grant the store could forget.
 */
export interface Store {
  /** Everything saved by the previous run, and the highest fencing token it handed out. */
  load(): { requests: SavedRequest[]; tokenFloor: number };
  /** Creates or updates a live request. */
  save(request: SavedRequest): void;
  /** Forgets an ended request. */
  remove(ns: string, id: string): void;
  /** Commits what the current operation wrote. */
  commit(): void;
  close(): void;
}
