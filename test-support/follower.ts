/**
 * Stand-ins for replicas in the `baseUrl: [a, b, c]` tests, on real sockets: a replica standing
 * by, and a port nothing listens on.
 */
import { createServer, type Server } from "node:http";
import net, { type AddressInfo } from "node:net";

/**
 * A replica standing by: `503 not_leader` to every request and every WebSocket upgrade, with
 * `Retry-After: retryAfter` seconds (the server sends 1; a test that shows a client ignores it
 * asks for more). `state.requests` counts what reached it.
 */
export async function startFollower(retryAfter = 1) {
  const body = JSON.stringify({
    type: "urn:ratequeue:problem:not_leader",
    title: "Not the leader",
    status: 503,
    code: "not_leader",
    detail: "this replica stands by; another serves",
  });
  const state = { requests: 0 };
  const server: Server = createServer((_req, res) => {
    state.requests++;
    res.writeHead(503, {
      "content-type": "application/problem+json",
      "retry-after": String(retryAfter),
    });
    res.end(body);
  });
  server.on("upgrade", (_req, socket) => {
    state.requests++;
    socket.end(
      `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: ${retryAfter}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    state,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A URL whose port nothing listens on: connections are refused. */
export async function closedPort(): Promise<string> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return `http://127.0.0.1:${port}`;
}
