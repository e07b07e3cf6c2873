/**
 * `baseUrl` as a list, through the SDK's API, for each build and session transport: replicas of
 * which one serves while the others answer 503 `not_leader`, a port nothing listens on, and
 * mistakes in the list, named by their index before any network call. Real sockets: a real
 * server on port 0 and a node:http "follower" that answers 503 not_leader to everything.
 * (core/src/base-urls.test.ts has the rest: which URL each attempt goes to, stickiness, a lease
 * kept by moving on, and the liveness rule.)
 */
import type { TransportRequest } from "@ratequeue/core";
import { type RunningServer, startServer } from "@ratequeue/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closedPort, startFollower } from "../../../test-support/follower.js";
import { ENTRIES, resourceState } from "./helpers.js";

const KEY = "test-key";

describe.each(ENTRIES)("baseUrl: a list of URLs, SDK over $transport", ({ sdk, session }) => {
  const { ValidationError, createRateQueue } = sdk;
  let server: RunningServer;
  let follower: Awaited<ReturnType<typeof startFollower>>;
  let closed: string;

  beforeAll(async () => {
    server = await startServer({ port: 0, grace: 1_000 });
    follower = await startFollower();
    closed = await closedPort();
  });
  afterAll(async () => {
    await server.close();
    await follower.close();
  });

  it("[closed port, 503 not_leader, server]: acquire runs fn on the server's lease and releases it", async () => {
    await using rq = createRateQueue({
      apiKey: KEY,
      baseUrl: [closed, follower.url, server.url],
      session,
    });
    const before = follower.state.requests;
    const token = await rq.acquire("report", {}, async (lease) => {
      expect((await resourceState(server, "report")).holders).toEqual([
        expect.objectContaining({ fencingToken: lease.fencingToken }),
      ]);
      return lease.fencingToken;
    });
    expect(token).toBeGreaterThan(0);
    expect(follower.state.requests).toBeGreaterThan(before);
    expect(await resourceState(server, "report")).toMatchObject({ used: 0, queued: 0 });
  });

  it("[503 not_leader, server] as a call's option, with `await using`", async () => {
    await using rq = createRateQueue({ apiKey: KEY, session });
    {
      await using lease = await rq.acquire("invoice-7", {
        baseUrl: [follower.url, server.url],
        timeout: 5_000,
      });
      expect((await resourceState(server, "invoice-7")).used).toBe(1);
      expect(lease.signal.aborted).toBe(false);
    }
    expect((await resourceState(server, "invoice-7")).used).toBe(0);
  });

  it("no apiKey, a list of loopback URLs: the development token, as for one loopback URL", async () => {
    const saved = process.env.RATEQUEUE_API_KEY;
    delete process.env.RATEQUEUE_API_KEY;
    try {
      // An open-mode server (no keys): any token is a namespace, here "dev".
      await using open = await startServer({ port: 0, grace: 1_000 });
      await using rq = createRateQueue({ baseUrl: [closed, open.url], session });
      expect(await rq.acquire("dev-lock", {}, (lease) => lease.fencingToken)).toBeGreaterThan(0);
    } finally {
      if (saved !== undefined) process.env.RATEQUEUE_API_KEY = saved;
    }
  });

  it.each([
    [[], "baseUrl", "an empty array"],
    [["ftp://x"], "baseUrl[0]", '"ftp://x"'],
    [[1], "baseUrl[0]", "1"],
    [["http://127.0.0.1:7420", "127.0.0.1:7420"], "baseUrl[1]", '"127.0.0.1:7420"'],
  ])(
    "%j is refused with ValidationError naming the entry, before any network call",
    async (baseUrl, field, got) => {
      const sent: TransportRequest[] = [];
      const transport = async (request: TransportRequest) => {
        sent.push(request);
        throw new Error("no network call expected");
      };
      const message = `${field} must be an http(s) URL such as "http://127.0.0.1:7420", got ${got}`;
      // As the instance's option, and as a call's.
      await using rq = createRateQueue({
        apiKey: KEY,
        baseUrl: baseUrl as string[],
        session,
        transport,
      });
      await expect(rq.acquire("lock")).rejects.toThrow(ValidationError);
      await expect(rq.acquire("lock")).rejects.toMatchObject({ field, message });
      await using other = createRateQueue({ apiKey: KEY, session, transport });
      await expect(
        other.acquire("lock", { baseUrl: baseUrl as string[] }, () => "ran"),
      ).rejects.toMatchObject({ name: "ValidationError", field, message });
      expect(sent).toEqual([]);
    },
  );
});
