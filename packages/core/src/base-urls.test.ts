/**
 * Several server URLs (`baseUrl: [...]`), for replicas of which one serves while the others answer
 * 503 `not_leader`, or for load balancers in front of a server. Against real sockets: a real
 * server on port 0, a "follower" (node:http answering 503 not_leader to every request and
 * WebSocket upgrade, and counting them), a port nothing listens on, and a TCP proxy in front of
 * the server that can blackhole its path. Each session transport: the WebSocket session (`ws`),
 * the HTTP session over undici, and the HTTP session over fetch.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type RunningServer, startServer } from "@ratequeue/server";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { closedPort, startFollower } from "../../../test-support/follower.js";
import { startProxy } from "../../../test-support/proxy.js";
import { type ClientConfig, ProtocolClient } from "./client.js";
import { LeaseLostError, ValidationError } from "./errors.js";
import { nodeWebSocket, undiciTransport } from "./node.js";
import { fetchTransport } from "./transport.js";

const KEY = "test-key";
/** The servers' grace: long enough that no stall of a loaded machine costs a lease. */
const GRACE = 1_000;

const SESSIONS = [
  {
    name: "WebSocket session",
    transport: "websocket",
    config: (): Partial<ClientConfig> => ({
      transport: undiciTransport(),
      webSocket: nodeWebSocket(),
      session: "auto",
    }),
  },
  {
    name: "HTTP session over undici",
    transport: "http",
    config: (): Partial<ClientConfig> => ({ transport: undiciTransport(), session: "http" }),
  },
  {
    name: "HTTP session over fetch",
    transport: "http",
    config: (): Partial<ClientConfig> => ({ transport: fetchTransport(), session: "http" }),
  },
] as const;

async function holders(server: { url: string }, name: string): Promise<number[]> {
  const res = await fetch(`${server.url}/v1/resources/${encodeURIComponent(name)}`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  const state = (await res.json()) as { holders: Array<{ fencingToken: number }> };
  return state.holders.map((h) => h.fencingToken);
}

describe("baseUrl: a list of URLs is checked before any network call", () => {
  const calls: string[] = [];
  const config = (baseUrl: unknown) =>
    ({
      apiKey: KEY,
      baseUrl,
      transport: async (request: { url: string }) => {
        calls.push(request.url);
        throw new Error("no network call expected");
      },
    }) as unknown as ClientConfig;
  afterEach(() => expect(calls).toEqual([]));

  it("an empty list: no URL to try", () => {
    expect(() => new ProtocolClient(config([]))).toThrow(ValidationError);
    expect(() => new ProtocolClient(config([]))).toThrow(
      'baseUrl must be an http(s) URL such as "http://127.0.0.1:7420", got an empty array',
    );
  });

  it.each([
    [["ftp://x"], "baseUrl[0]", '"ftp://x"'],
    [[1], "baseUrl[0]", "1"],
    [["http://127.0.0.1:7420", "not a url"], "baseUrl[1]", '"not a url"'],
    [["https://a.example", "http://b.example/", null], "baseUrl[2]", "null"],
    [["http://127.0.0.1:7420", ["http://127.0.0.1:7421"]], "baseUrl[1]", "an array"],
  ])("%j: the entry at fault is named by its index", (baseUrl, field, got) => {
    let error: unknown;
    try {
      new ProtocolClient(config(baseUrl));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ field, code: "invalid_request" });
    expect((error as Error).message).toBe(
      `${field} must be an http(s) URL such as "http://127.0.0.1:7420", got ${got}`,
    );
  });

  it("a single URL is checked as before", () => {
    expect(() => new ProtocolClient(config("ftp://x"))).toThrow(
      expect.objectContaining({
        field: "baseUrl",
        message: 'baseUrl must be an http(s) URL such as "http://127.0.0.1:7420", got "ftp://x"',
      }),
    );
    expect(() => new ProtocolClient(config(["http://127.0.0.1:7420"]))).not.toThrow();
  });
});

describe.each(SESSIONS)("baseUrl: a list of URLs, over the $name", ({ config, transport }) => {
  let server: RunningServer;
  let follower: Awaited<ReturnType<typeof startFollower>>;
  let closed: string;
  const clients: ProtocolClient[] = [];
  const client = (baseUrl: string | string[], extra: Partial<ClientConfig> = {}) => {
    const c = new ProtocolClient({ apiKey: KEY, baseUrl, ...config(), ...extra } as ClientConfig);
    clients.push(c);
    return c;
  };
  /** Acquires `name` and releases it: the session works. */
  const cycle = async (rq: ProtocolClient, name = "lock") => {
    const grant = await rq.acquire({ name, timeout: 5_000 });
    expect(grant.fencingToken).toBeGreaterThan(0);
    expect(await rq.releaseLease(grant)).toEqual({ state: "released" });
  };

  beforeAll(async () => {
    server = await startServer({ port: 0, grace: GRACE });
    // Retry-After 10 s (the server sends 1): a client that waited for it would show.
    follower = await startFollower(10);
    closed = await closedPort();
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  afterAll(async () => {
    await server.close();
    await follower.close();
  });

  it("[closed port, server]: acquires and releases on the server", async () => {
    const rq = client([closed, server.url]);
    await cycle(rq);
    expect(rq.session.transport).toBe(transport);
  });

  it("[503 not_leader, server]: acquires and releases on the server, without waiting the follower's Retry-After", async () => {
    const rq = client([follower.url, server.url]);
    const before = follower.state.requests;
    const started = performance.now();
    await cycle(rq);
    // The follower's Retry-After (10 s) is its own: the next URL is tried without it.
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(follower.state.requests).toBeGreaterThan(before);
    // A 503 to the upgrade is a replica's answer, not a proxy that refuses WebSockets.
    expect(rq.session.transport).toBe(transport);
  });

  it("[closed port, 503 not_leader, server]: each next attempt goes to the next URL, in turn", async () => {
    const rq = client([closed, follower.url, server.url]);
    const before = follower.state.requests;
    await cycle(rq);
    expect(follower.state.requests).toBeGreaterThan(before);
  });

  it("one attempt goes round the whole list: with no retries at all, [closed port, 503 not_leader, server] reaches the server", async () => {
    // A failover must reach the new leader within its leases' grace: no backoff between URLs.
    const rq = client([closed, follower.url, server.url], { retry: { retries: 0 } });
    await cycle(rq);
  });

  it("a URL that works is kept: a new connection goes to it, not back to the first", async () => {
    const rq = client([follower.url, server.url]);
    await cycle(rq);
    const asked = follower.state.requests;
    for (const name of ["a", "b", "c"]) {
      rq.session.close(); // the connection closes (as an idle one does): not a failure
      await cycle(rq, name);
    }
    expect(follower.state.requests).toBe(asked);
  });

  it("[server, 503 not_leader]: the follower is never asked while the server answers", async () => {
    const rq = client([server.url, follower.url]);
    const before = follower.state.requests;
    await cycle(rq);
    rq.session.close();
    await cycle(rq, "again");
    expect(follower.state.requests).toBe(before);
  });

  // Two ways to one server (two load balancers, say): the first path goes dark, and the session
  // carries on over the second before the server's grace ends — the lease is kept.
  it("a held lease is kept when its path goes dark: the session moves to the next URL in time", async () => {
    await using proxy = await startProxy(server.url);
    const rq = client([proxy.url, server.url]);
    const grant = await rq.acquire({ name: "kept" });
    proxy.blackhole(); // resets the open connections; new ones are never answered
    await sleep(GRACE * 2);
    expect(grant.lost.aborted, String(grant.lost.reason)).toBe(false);
    expect(await holders(server, "kept")).toEqual([grant.fencingToken]);
    expect(await rq.releaseLease(grant)).toEqual({ state: "released" });
  });
});

// The liveness rule does not move with the URL: a refused port extends a lease only when it is
// the port of the server that holds the session (a durable server, restarting: liveness.ts).
// Another URL's closed port says nothing of that server, which hands the lease on after grace.
describe.each(SESSIONS)(
  "baseUrl: a list of URLs and the liveness rule, over the $name",
  ({ config }) => {
    it("[path to a durable server, closed port]: the path goes dark, the next URL refuses — the holder still gives the lease up before the next is granted", async () => {
      const dataDir = mkdtempSync(join(tmpdir(), "ratequeue-base-urls-"));
      try {
        // A data directory: the server announces a recovery window, so a refused port of its
        // own would let its clients keep their leases through a restart.
        await using server = await startServer({ port: 0, grace: GRACE, dataDir });
        await using proxy = await startProxy(server.url);
        const holder = new ProtocolClient({
          apiKey: KEY,
          baseUrl: [proxy.url, await closedPort()],
          ...config(),
        } as ClientConfig);
        const next = new ProtocolClient({
          apiKey: KEY,
          baseUrl: server.url,
          transport: undiciTransport(),
          session: "http",
        });
        try {
          const a = await holder.acquire({ name: "lock" });
          let lostAt = Number.POSITIVE_INFINITY;
          a.lost.addEventListener("abort", () => {
            lostAt = performance.now();
          });
          const b = next.acquire({ name: "lock" }).then((grant) => ({
            grant,
            grantedAt: performance.now(),
          }));
          proxy.blackhole();
          const { grant, grantedAt } = await b;
          expect(a.lost.reason).toBeInstanceOf(LeaseLostError);
          expect(lostAt).toBeLessThan(grantedAt);
          expect(grant.fencingToken).toBeGreaterThan(a.fencingToken);
          await next.releaseLease(grant);
        } finally {
          // The holder is still trying the dark path: no need to wait for its answers.
          await Promise.all([holder.session.shutdown(0), next.close()]);
        }
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    });
  },
);
