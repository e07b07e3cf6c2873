import http from "node:http";
import net from "node:net";
import { describe, expect, it } from "vitest";
import { client, startTestServer } from "./helpers.js";

/** Opens a TCP connection that sends `bytes` (or nothing) and resolves when it is open. */
async function connect(url: string, bytes?: string): Promise<net.Socket> {
  const socket = net.connect(Number(new URL(url).port), "127.0.0.1");
  socket.on("error", () => {});
  await new Promise((resolve) => socket.once("connect", resolve));
  if (bytes !== undefined) socket.write(bytes);
  return socket;
}

/** Resolves with what the server wrote before it closed the socket, and when (ms from now). */
function closed(socket: net.Socket): Promise<{ text: string; after: number }> {
  const start = performance.now();
  let text = "";
  socket.setEncoding("utf8").on("data", (d: string) => {
    text += d;
  });
  return new Promise((resolve) =>
    socket.once("close", () => resolve({ text, after: performance.now() - start })),
  );
}

describe("connection limits (repro 13, 13b)", () => {
  it("makes room for a client by closing the oldest connection that never authenticated", async () => {
    await using server = await startTestServer({ apiKeys: ["secret"], maxConnections: 20 });
    const api = client(server, "secret");
    // A client that proved itself keeps its connection whatever floods in after it.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let proven: net.Socket | undefined;
    await new Promise<void>((resolve, reject) => {
      const req = http.get(
        `${server.url}/v1/resources/r`,
        { agent, headers: { authorization: "Bearer secret" } },
        (res) => res.resume().on("end", resolve),
      );
      req.on("socket", (s) => {
        proven = s as net.Socket;
      });
      req.on("error", reject);
    });
    const idle = await Promise.all(Array.from({ length: 60 }, () => connect(server.url)));
    try {
      expect((await api.acquire("a", { resource: "r" }, 0)).body.state).toBe("active");
      expect(proven?.destroyed).toBe(false);
      expect(idle.filter((s) => !s.destroyed).length).toBeLessThanOrEqual(20);
    } finally {
      for (const s of idle) s.destroy();
      agent.destroy();
    }
  });

  it("closes a connection that sends no request within headersTimeout", async () => {
    await using server = await startTestServer({ headersTimeout: 1_000, requestTimeout: 1_000 });
    const silent = closed(await connect(server.url));
    const partial = closed(await connect(server.url, "GET /v1/health HTTP/1.1\r\nX-a: "));
    for (const c of [await silent, await partial]) expect(c.after).toBeLessThan(5_000);
  });

  it("answers 408 problem+json to a body dribbled slower than requestTimeout, and closes", async () => {
    await using server = await startTestServer({ headersTimeout: 1_000, requestTimeout: 1_500 });
    const socket = await connect(
      server.url,
      "PUT /v1/requests/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    );
    const drip = setInterval(() => socket.writable && socket.write(" "), 200);
    try {
      const { text, after } = await closed(socket);
      expect(after).toBeLessThan(6_000);
      expect(text).toMatch(/^HTTP\/1.1 408 /);
      expect(text).toMatch(/application\/problem\+json/);
      expect(text).toMatch(/"code":"request_timeout"/);
    } finally {
      clearInterval(drip);
    }
  });

  it("keeps a long-poll open past requestTimeout: the limit is on receiving, not on answering", async () => {
    await using server = await startTestServer({
      headersTimeout: 1_000,
      requestTimeout: 1_000,
      pollWindow: 2_500,
    });
    const api = client(server);
    await api.acquire("a", { resource: "r" }, 0);
    const poll = await api.poll("a", "active", 2_500);
    expect(poll.status).toBe(200);
    expect(poll.body.state).toBe("active");
  });
});
