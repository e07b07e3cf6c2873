import type { Server } from "node:http";
import type { Duplex } from "node:stream";

/**
 * Keeps the number of open connections under `max`, so that the server never runs out of file
 * descriptors (its data directory needs some too) — without letting a flood of connections that
 * never authenticate lock real clients out: when a connection arrives at the limit, the oldest
 * connection that has not yet made an authenticated request is closed to make room, and only if
 * there is none is the newcomer refused. A connection is proven by its first authenticated
 * request (or WebSocket hello).
 */
export class ConnectionGuard {
  private open = 0;
  /** Connections not yet proven, oldest first. */
  private readonly unproven = new Set<Duplex>();

  constructor(server: Server, max: number) {
    server.on("connection", (socket: Duplex) => {
      this.open++;
      socket.once("close", () => {
        this.open--;
        this.unproven.delete(socket);
      });
      if (this.open > max) {
        const oldest = this.unproven.values().next();
        if (oldest.done) {
          socket.destroy();
          return;
        }
        this.unproven.delete(oldest.value);
        oldest.value.destroy();
      }
      this.unproven.add(socket);
    });
  }

  /** The connection's client authenticated: it is never closed to make room. */
  proven(socket: Duplex | null | undefined): void {
    if (socket) this.unproven.delete(socket);
  }
}
