/**
 * The TCP proxy each chaos client connects through, so that the harness can cut its connections
 * at random: `reset()` sends an RST both ways on every open connection (the client and the server
 * each see ECONNRESET), then refuses new ones for a blip.
 *
 * How a blip refuses (`refuse`):
 * - `"reset"` (default): it accepts and resets at once — the client sees ECONNRESET, as from a
 *   load balancer with no healthy backend. The server is up: no client may take this for a
 *   server that is down.
 * - `"closed"`: it stops listening — the client sees ECONNREFUSED although the server is up.
 *
 * Otherwise the proxy is transparent, including to a dead server: while the harness has the
 * server down (`serverDown()` after its process exited, `serverUp()` once it listens again) the
 * proxy does not listen either, so a client meets ECONNREFUSED exactly when nothing listens on
 * the server's port, as it would without the proxy.
 */
import net from "node:net";

export type Refuse = "reset" | "closed";

export interface ChaosProxy {
  /** `http://127.0.0.1:port`, stable for the proxy's life. */
  readonly url: string;
  /** Resets every open connection, then refuses new ones for `blip` ms. */
  reset(blip: number): void;
  /** The server's process has exited: stop listening until `serverUp()`. */
  serverDown(): void;
  serverUp(): Promise<void>;
  close(): void;
}

export async function startProxy(
  upstreamPort: () => number,
  options: { refuse: Refuse; serverUp: boolean },
): Promise<ChaosProxy> {
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  let refuseUntil = 0;
  /** Why the proxy does not listen now ("server", "blip", "closed"); it listens when empty. */
  const down = new Set<string>();
  let listener: net.Server | undefined;
  let port = 0;

  const onConnection = (client: net.Socket) => {
    if (Date.now() < refuseUntil || down.size > 0) {
      client.on("error", () => {});
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true); // no Nagle delay on small frames: the liveness budget is 200 ms
    const upstream = net.connect({ port: upstreamPort(), host: "127.0.0.1", noDelay: true });
    const pair = { client, upstream };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    // A reset on one side is passed on as a reset; a clean close as a clean close (by pipe).
    client.on("error", () => rst(upstream));
    upstream.on("error", () => rst(client));
    client.on("close", () => {
      pairs.delete(pair);
      upstream.destroySoon();
    });
    upstream.on("close", () => client.destroySoon());
  };

  const listen = async () => {
    if (listener !== undefined || down.size > 0) return;
    const server = net.createServer({ noDelay: true }, onConnection);
    listener = server;
    for (let attempt = 0; ; attempt++) {
      try {
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen(port, "127.0.0.1", () => {
            server.off("error", reject);
            resolve();
          });
        });
        break;
      } catch (error) {
        if (attempt >= 50 || (error as { code?: string }).code !== "EADDRINUSE") throw error;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    port = (server.address() as net.AddressInfo).port;
    if (down.size > 0) unlisten(); // went down while it was opening
  };
  const unlisten = () => {
    listener?.close();
    listener = undefined;
  };
  const goDown = (why: string) => {
    down.add(why);
    unlisten();
  };
  const goUp = (why: string) => {
    down.delete(why);
    return listen();
  };

  // Take a port now, even if the server is down: the client is given the URL at once.
  await listen();
  if (!options.serverUp) goDown("server");

  return {
    url: `http://127.0.0.1:${port}`,
    reset(blip) {
      for (const { client, upstream } of pairs) {
        rst(client);
        rst(upstream);
      }
      pairs.clear();
      if (blip <= 0) return;
      if (options.refuse === "reset") {
        refuseUntil = Math.max(refuseUntil, Date.now() + blip);
      } else if (!down.has("blip")) {
        goDown("blip");
        setTimeout(() => void goUp("blip").catch(() => {}), blip);
      }
    },
    serverDown() {
      goDown("server");
    },
    serverUp() {
      return goUp("server");
    },
    close() {
      goDown("closed");
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
    },
  };
}

function rst(socket: net.Socket): void {
  if (!socket.destroyed) socket.resetAndDestroy();
}
