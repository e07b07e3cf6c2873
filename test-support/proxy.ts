/**
 * A TCP proxy on 127.0.0.1:0 in front of a server, for tests of what a network does to a client:
 * - `blip(ms)`: a network blip — every open connection is reset (an RST to the client and to the
 *   server: both see ECONNRESET), and connections opened in the next `ms` are reset at once;
 * - `blackhole()`: a failover that loses the path — every open connection is reset, and from then
 *   on new connections are accepted but never forwarded nor answered (as good as dropped SYNs
 *   for a client: it hears nothing, and only its own timers can tell it so);
 * - `mute()`: what the server sends on the open connections is no longer passed on (the
 *   client's messages still are): for a message the server writes that its client must not read.
 *
 * Otherwise it is transparent: bytes both ways at once (no Nagle delay: the liveness budget is
 * 200 ms), and a close on one side is passed on to the other.
 *
 * @example
 * ```ts
 * await using proxy = await startProxy(server.url);
 * const rq = createRateQueue({ baseUrl: proxy.url, apiKey: "k" });
 * proxy.blip(300);
 * ```
 */
import net from "node:net";

export interface TestProxy extends AsyncDisposable {
  /** `http://127.0.0.1:port`, stable for the proxy's life. */
  readonly url: string;
  /** Resets every connection (both sides), and resets new ones for `ms`. */
  blip(ms: number): void;
  /** Resets every connection, then accepts new ones but never forwards or answers a byte. */
  blackhole(): void;
  /**
   * Resets every connection and closes the port (connects are refused) for `ms`, or until
   * `until` settles; then listens again.
   */
  refuse(ms: number | Promise<unknown>): Promise<void>;
  /** Drops what the server sends on the connections open now (new ones are transparent). */
  mute(): void;
  /** Resolves the next time the server sends a client a byte through the proxy. */
  nextReply(): Promise<void>;
}

export async function startProxy(target: string): Promise<TestProxy> {
  const { hostname, port } = new URL(target);
  /** Every socket the proxy holds: both sides of forwarded connections, and blackholed ones. */
  const sockets = new Set<net.Socket>();
  let refuseUntil = 0;
  let blackholed = false;
  /** The server side of each forwarded connection, with its client. */
  const pairs = new Map<net.Socket, net.Socket>();
  let replied: Array<() => void> = [];

  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  };

  const server = net.createServer((client) => {
    track(client);
    if (blackholed) return; // accepted, never read from, never answered
    if (performance.now() < refuseUntil) {
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    const upstream = net.connect({ port: Number(port), host: hostname, noDelay: true });
    track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.set(upstream, client);
    upstream.on("close", () => pairs.delete(upstream));
    upstream.on("data", () => {
      const waiting = replied;
      replied = [];
      for (const resolve of waiting) resolve();
    });
    // A reset (or any error) on one side is passed on as a reset; a clean close as a close.
    client.on("error", () => upstream.resetAndDestroy());
    upstream.on("error", () => client.resetAndDestroy());
    client.on("close", () => upstream.destroySoon());
    upstream.on("close", () => client.destroySoon());
  });

  const resetAll = () => {
    for (const socket of sockets) socket.resetAndDestroy();
    sockets.clear();
  };

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    blip(ms) {
      refuseUntil = performance.now() + ms;
      resetAll();
    },
    blackhole() {
      blackholed = true;
      resetAll();
    },
    async refuse(ms) {
      resetAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await (typeof ms === "number" ? new Promise((resolve) => setTimeout(resolve, ms)) : ms);
      await new Promise<void>((resolve) => server.listen(address.port, "127.0.0.1", resolve));
    },
    mute() {
      for (const [upstream, client] of pairs) upstream.unpipe(client);
    },
    nextReply: () => new Promise<void>((resolve) => replied.push(resolve)),
    async [Symbol.asyncDispose]() {
      for (const socket of sockets) socket.destroy();
      sockets.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
