/**
 * Faults the real server cannot produce on demand, injected in front of it: msw on the fetch
 * path, undici's MockAgent on the undici path (msw cannot see undici's own requests). Requests
 * that no fault claims go through to the real server on port 0.
 */
import { HttpResponse, http, passthrough } from "msw";
import { setupServer } from "msw/node";
import { MockAgent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as fetchEntry from "../src/index.js";
import * as nodeEntry from "../src/node.js";
import { eventually, resourceState, startTestServer } from "./helpers.js";

type Method = "PUT" | "GET" | "DELETE";
type Fault =
  | { kind: "status"; status: number; headers?: Record<string, string> }
  | { kind: "reset" }
  | { kind: "malformed" }
  | { kind: "silent" };

/** Injects one fault on the next matching request, and counts what reached the real server. */
interface Injector {
  inject(method: Method, fault: Fault, path?: RegExp): void;
  /** Request ids the faults saw (so a test can check that a retry reused the id). */
  seenIds: string[];
  rq: ReturnType<typeof nodeEntry.createRateQueue>;
}

const msw = setupServer();
beforeAll(() => msw.listen({ onUnhandledRequest: "bypass" }));
afterAll(() => msw.close());

const CLIENT = {
  apiKey: "test-key",
  pollWindow: 200,
  replyTimeout: 300,
  retry: { minDelay: 5, maxDelay: 20 },
};

function mswInjector(url: string): Injector {
  msw.resetHandlers();
  const seenIds: string[] = [];
  const faults: Array<{ method: Method; fault: Fault; path: RegExp }> = [];
  msw.use(
    http.all(`${url}/v1/requests/:id`, async ({ request, params }) => {
      const i = faults.findIndex((f) => f.method === request.method && f.path.test(request.url));
      if (i < 0) return passthrough();
      const { fault } = faults.splice(i, 1)[0]!;
      seenIds.push(String(params.id));
      switch (fault.kind) {
        case "status":
          return HttpResponse.json(
            { code: "x", detail: "injected" },
            { status: fault.status, headers: fault.headers },
          );
        case "reset":
          return HttpResponse.error();
        case "malformed":
          return new HttpResponse("<html>proxy error</html>", {
            status: 200,
            headers: { "content-type": "text/html" },
          });
        case "silent":
          return new Promise<never>(() => {});
      }
    }),
  );
  return {
    seenIds,
    inject: (method, fault, path = /./) => faults.push({ method, fault, path }),
    rq: fetchEntry.createRateQueue({ ...CLIENT, baseUrl: url }),
  };
}

function mockAgentInjector(url: string): Injector {
  const agent = new MockAgent();
  agent.enableNetConnect(); // what no interceptor claims reaches the real server
  const origin = agent.get(new URL(url).origin);
  const seenIds: string[] = [];
  const idOf = (path: string) => path.slice("/v1/requests/".length).split("?")[0]!;
  // The path matcher may run more than once per request: record in the reply, once.
  const record = (opts: { path: string }) => void seenIds.push(idOf(opts.path));
  return {
    seenIds,
    inject: (method, fault, path = /./) => {
      const matches = (p: string) => p.startsWith("/v1/requests/") && path.test(url + p);
      let matched = false;
      const scope = () => origin.intercept({ path: matches, method });
      switch (fault.kind) {
        case "status":
          scope().reply((opts) => {
            record(opts);
            return {
              statusCode: fault.status,
              data: { code: "x", detail: "injected" },
              responseOptions: { headers: fault.headers ?? {} },
            };
          });
          break;
        case "malformed":
          scope().reply((opts) => {
            record(opts);
            return { statusCode: 200, data: "<html>proxy error</html>" };
          });
          break;
        case "silent":
          scope()
            .reply((opts) => {
              record(opts);
              return { statusCode: 200, data: "{}" };
            })
            .delay(60_000);
          break;
        case "reset":
          // replyWithError has no callback: record from the matcher, once.
          origin
            .intercept({
              method,
              path: (p) => {
                const hit = matches(p);
                if (hit && !matched) {
                  matched = true;
                  seenIds.push(idOf(p));
                }
                return hit;
              },
            })
            .replyWithError(Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }));
          break;
      }
    },
    rq: nodeEntry.createRateQueue({ ...CLIENT, baseUrl: url, dispatcher: agent }),
  };
}

describe.each([
  { path: "fetch + msw", make: mswInjector },
  { path: "undici + MockAgent", make: mockAgentInjector },
])("faults on the $path path", ({ make }) => {
  it("retries a 503 with the same request id: the server sees one request", async () => {
    await using server = await startTestServer();
    const f = make(server.url);
    f.inject("PUT", { kind: "status", status: 503 });
    const lease = await f.rq.acquire("r");
    expect(f.seenIds).toEqual([lease.id]);
    expect(await resourceState(server, "r")).toMatchObject({ active: 1, queued: 0 });
    await lease.release();
  });

  it("retries a create whose reply was lost after the server queued it, without queueing twice", async () => {
    await using server = await startTestServer();
    const f = make(server.url);
    const holder = await f.rq.acquire("r");
    f.inject("GET", { kind: "reset" }, /state=queued/);
    const waiting = f.rq.acquire("r");
    await eventually(async () => (await resourceState(server, "r")).queued === 1);
    await eventually(() => f.seenIds.length === 1); // the reset happened mid-wait
    expect((await resourceState(server, "r")).queued).toBe(1);
    await holder.release();
    const lease = await waiting;
    expect(f.seenIds).toEqual([lease.id]);
    await lease.release();
  });

  it("retries a reply that is not JSON", async () => {
    await using server = await startTestServer();
    const f = make(server.url);
    f.inject("PUT", { kind: "malformed" });
    const lease = await f.rq.acquire("r");
    expect(f.seenIds).toEqual([lease.id]);
    await lease.release();
  });

  it("abandons and retries a reply slower than the poll window", async () => {
    await using server = await startTestServer();
    const f = make(server.url);
    f.inject("PUT", { kind: "silent" });
    const lease = await f.rq.acquire("r");
    expect(f.seenIds).toEqual([lease.id]);
    expect(await resourceState(server, "r")).toMatchObject({ active: 1, queued: 0 });
    await lease.release();
  });

  it("does not retry a 401: AuthenticationError at once", async () => {
    await using server = await startTestServer();
    const f = make(server.url);
    f.inject("PUT", { kind: "status", status: 401 });
    f.inject("PUT", { kind: "status", status: 401 });
    await expect(f.rq.acquire("r")).rejects.toBeInstanceOf(nodeEntry.AuthenticationError);
    expect(f.seenIds).toHaveLength(1);
  });

  it("honours Retry-After on a 429", async () => {
    await using server = await startTestServer();
    const f = make(server.url);
    f.inject("PUT", { kind: "status", status: 429, headers: { "retry-after": "1" } });
    const t0 = performance.now();
    const lease = await f.rq.acquire("r");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(950);
    await lease.release();
  });

  it("re-attaches a held lease after a reset of its poll", async () => {
    await using server = await startTestServer();
    const f = make(server.url);
    const lease = await f.rq.acquire("r");
    f.inject("GET", { kind: "reset" }, /state=active/);
    await eventually(() => f.seenIds.length === 1);
    await new Promise((r) => setTimeout(r, 400)); // past the server's grace
    expect(lease.signal.aborted).toBe(false);
    expect((await resourceState(server, "r")).active).toBe(1);
    await lease.release();
  });
});
