import { describe, expect, it } from "vitest";
import { client, pastTakeover, startTestServer, stateDir } from "./helpers.js";

async function get(url: string, path: string, token?: string) {
  const res = await fetch(url + path, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  return { status: res.status, type: res.headers.get("content-type"), body: await res.json() };
}

describe("the admin API (read-only)", () => {
  it("lists namespaces and their resources busiest first, and shows a resource's holders and line", async () => {
    await using server = await startTestServer();
    const alpha = client(server, "alpha");
    await alpha.acquire("h", { resource: "busy/one" });
    await alpha.acquire("w1", { resource: "busy/one" }, 0);
    await alpha.acquire("w2", { resource: "busy/one", priority: 20 }, 0);
    await alpha.acquire("c", { resource: "calm" });
    await client(server, "beta").acquire("x", { resource: "x" });

    const { body: list } = await get(server.url, "/v1/admin/namespaces");
    expect(
      list.namespaces.map((n: { resources: number; queued: number; active: number }) => [
        n.resources,
        n.active,
        n.queued,
      ]),
    ).toEqual([
      [2, 2, 2],
      [1, 1, 0],
    ]);
    const id = list.namespaces[0].id as string;
    expect(id).not.toContain("alpha"); // an id, never the key

    const resources = await get(server.url, `/v1/admin/namespaces/${id}/resources`);
    expect(resources.body).toMatchObject({ namespace: id, total: 2, offset: 0 });
    expect(resources.body.resources).toEqual([
      { name: "busy/one", capacity: 1, used: 1, active: 1, queued: 2 },
      { name: "calm", capacity: 1, used: 1, active: 1, queued: 0 },
    ]);
    const page = await get(server.url, `/v1/admin/namespaces/${id}/resources?offset=1&limit=1`);
    expect(page.body.resources.map((r: { name: string }) => r.name)).toEqual(["calm"]);

    // By the 12-character prefix the metrics label it with, too.
    const busy = await get(
      server.url,
      `/v1/admin/namespaces/${id.slice(0, 12)}/resources/busy%2Fone`,
    );
    expect(busy.status).toBe(200);
    expect(busy.body).toMatchObject({
      name: "busy/one",
      capacity: 1,
      used: 1,
      active: 1,
      queued: 2,
    });
    expect(busy.body.holders).toEqual([
      expect.objectContaining({
        id: "h",
        load: 1,
        priority: 10,
        session: null,
        address: "127.0.0.1",
      }),
    ]);
    expect(busy.body.holders[0].heldMs).toBeGreaterThanOrEqual(0);
    expect(busy.body.holders[0].fencingToken).toBeGreaterThan(0);
    expect(busy.body.line.map((w: { id: string; priority: number }) => [w.id, w.priority])).toEqual(
      [
        ["w2", 20],
        ["w1", 10],
      ],
    );
    for (const w of busy.body.line) expect(w.waitedMs).toBeGreaterThanOrEqual(0);
  });

  it("shows each holder's and waiter's client address, over a session too", async () => {
    await using server = await startTestServer();
    const post = (sid: string, messages: unknown[]) =>
      client(server, "alpha").call("POST", `/v1/sessions/${sid}?wait=0`, messages);
    await post("s1", [{ t: "acquire", id: "h", resource: "r" }]);
    await post("s2", [{ t: "acquire", id: "w", resource: "r" }]);
    const ns = (await get(server.url, "/v1/admin/namespaces")).body.namespaces[0].id;
    const { body } = await get(server.url, `/v1/admin/namespaces/${ns}/resources/r`);
    expect(body.holders).toEqual([
      expect.objectContaining({ id: "h", session: "s1", address: "127.0.0.1" }),
    ]);
    expect(body.line).toEqual([
      expect.objectContaining({ id: "w", session: "s2", address: "127.0.0.1" }),
    ]);
  });

  it.each([
    ["/v1/admin/namespaces/nope/resources", 404, "not_found", /GET \/v1\/admin\/namespaces/],
    ["/v1/admin/namespaces/NS/resources?limit=0", 400, "invalid_request", /limit/],
    ["/v1/admin/namespaces/NS/resources?offset=-1", 400, "invalid_request", /offset/],
    ["/v1/admin/namespaces/NS/resources/missing", 404, "not_found", /nothing holds or waits/],
  ])("%s → %i %s, as problem+json", async (path, status, code, detail) => {
    await using server = await startTestServer();
    await client(server, "alpha").acquire("h", { resource: "r" });
    const { body } = await get(server.url, "/v1/admin/namespaces");
    const res = await get(server.url, path.replace("NS", body.namespaces[0].id));
    expect(res.status).toBe(status);
    expect(res.type).toMatch(/application\/problem\+json/);
    expect(res.body.code).toBe(code);
    expect(res.body.detail).toMatch(detail);
  });

  it("takes admin keys, not API keys", async () => {
    await using server = await startTestServer({ apiKeys: ["app"], adminKeys: ["ops"] });
    expect((await get(server.url, "/v1/admin/namespaces")).status).toBe(401);
    expect((await get(server.url, "/v1/admin/namespaces", "app")).status).toBe(401);
    expect((await get(server.url, "/v1/admin/namespaces", "ops")).status).toBe(200);
    await using keysOnly = await startTestServer({ apiKeys: ["app"] });
    const refused = await get(keysOnly.url, "/v1/admin/namespaces", "app");
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe("admin_key_required");
  });
});

describe("revoking a request (force-release)", () => {
  const revoke = (url: string, ns: string, id: string, body: unknown, token?: string) =>
    fetch(`${url}/v1/admin/namespaces/${ns}/requests/${id}/revoke`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      },
      body: JSON.stringify(body),
    }).then(async (res) => ({ status: res.status, body: await res.json() }));

  it("ends a holder as revoked with the reason, and holds its units back for grace before the next", async () => {
    await using server = await startTestServer({
      grace: 2_000,
      waitGrace: 5_000,
      repollGrace: 10_000,
    });
    const api = client(server, "alpha");
    await api.acquire("h", { resource: "r" });
    await api.acquire("w", { resource: "r" }, 0);
    const ns = (await get(server.url, "/v1/admin/namespaces")).body.namespaces[0].id;

    const revoked = await revoke(server.url, ns, "h", { reason: "stuck job, see INC-42" });
    expect(revoked.status).toBe(200);
    expect(revoked.body).toMatchObject({
      id: "h",
      state: "revoked",
      reason: "stuck job, see INC-42",
    });
    expect((await api.poll("h")).body).toMatchObject({
      state: "revoked",
      reason: "stuck job, see INC-42",
    });
    // Its client may not have heard yet: nobody else holds the units until grace has passed.
    expect((await api.resource("r")).body).toMatchObject({ heldBack: 1, active: 0, queued: 1 });
    expect((await api.poll("w", "queued", 5_000)).body.state).toBe("active");
  });

  it.each([
    [{}, 400, /reason/],
    [{ reason: "   " }, 400, /reason/],
    [{ reason: "x".repeat(501) }, 400, /1 to 500 characters/],
  ])("refuses %j with %i", async (body, status, detail) => {
    await using server = await startTestServer();
    await client(server, "alpha").acquire("h", { resource: "r" });
    const ns = (await get(server.url, "/v1/admin/namespaces")).body.namespaces[0].id;
    const res = await revoke(server.url, ns, "h", body);
    expect(res.status).toBe(status);
    expect(res.body.detail).toMatch(detail);
  });

  it("404s a request that is not live, and takes admin keys only", async () => {
    await using server = await startTestServer({ apiKeys: ["app"], adminKeys: ["ops"] });
    await client(server, "app").acquire("h", { resource: "r" });
    const ns = (await get(server.url, "/v1/admin/namespaces", "ops")).body.namespaces[0].id;
    expect((await revoke(server.url, ns, "h", { reason: "x" }, "app")).status).toBe(401);
    expect((await revoke(server.url, ns, "nope", { reason: "x" }, "ops")).status).toBe(404);
    expect((await revoke(server.url, ns, "h", { reason: "x" }, "ops")).status).toBe(200);
    const again = await revoke(server.url, ns, "h", { reason: "x" }, "ops");
    expect(again.status).toBe(404);
    expect(again.body.detail).toMatch(/already ended/);
  });
});

describe("operators' limits (PUT/DELETE /v1/admin/namespaces/{ns}/limits/{name})", () => {
  const limit = (url: string, ns: string, name: string, body?: unknown) =>
    fetch(`${url}/v1/admin/namespaces/${ns}/limits/${encodeURIComponent(name)}`, {
      method: body === undefined ? "DELETE" : "PUT",
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(async (res) => ({
      status: res.status,
      body: res.status === 204 ? undefined : await res.json(),
    }));

  it("a raise serves the line at once; the limit stays while idle and across a restart, until lifted", async () => {
    const dataDir = stateDir(); // a data directory, or on PostgreSQL a schema
    const first = await startTestServer({ dataDir, repollGrace: 30_000 });
    const api = client(first, "alpha");
    await api.acquire("h", { resource: "api/llm" });
    await api.acquire("w1", { resource: "api/llm" }, 0);
    await api.acquire("w2", { resource: "api/llm" }, 0);
    const ns = (await get(first.url, "/v1/admin/namespaces")).body.namespaces[0].id;

    const raised = await limit(first.url, ns, "api/llm", { capacity: 3 });
    expect(raised.status).toBe(200);
    expect(raised.body).toMatchObject({
      name: "api/llm",
      capacity: 3,
      used: 3,
      active: 3,
      queued: 0,
    });
    for (const id of ["h", "w1", "w2"]) await api.release(id);
    expect((await api.resource("api/llm")).body).toMatchObject({ capacity: 3, used: 0 }); // idle, kept
    await first.close();

    await using second = await startTestServer({ dataDir });
    const again = client(second, "alpha");
    expect((await again.resource("api/llm")).body).toMatchObject({ capacity: 3 });
    // What requests ask for no longer matters: the operator's limit holds.
    expect((await again.acquire("x", { resource: "api/llm", capacity: 1 })).body).toMatchObject({
      state: "active",
      capacity: 3,
    });
    await again.release("x");
    expect((await limit(second.url, ns, "api/llm")).status).toBe(204);
    // Idle and unlimited: forgotten (the public view of a resource nobody uses has no capacity).
    expect((await again.resource("api/llm")).body).toMatchObject({ capacity: null, used: 0 });
    expect((await limit(second.url, ns, "api/llm")).status).toBe(404);
  });

  it("rate limits stack with the capacity, count grants not releases, and stay across a restart (full for the window that holds it)", async () => {
    const dataDir = stateDir(); // a data directory, or on PostgreSQL a schema
    const first = await startTestServer({ dataDir, repollGrace: 30_000 });
    const api = client(first, "alpha");
    await api.acquire("h", { resource: "llm", capacity: 1_000 }); // before the limits: not counted
    const ns = (await get(first.url, "/v1/admin/namespaces")).body.namespaces[0].id;
    const rates = [
      { limit: 2, window: 60_000 }, // 2 requests a minute (sliding)
      { limit: 500, window: 60_000, kind: "fixed", counts: "load" }, // 500 tokens a minute
    ];
    const set = await limit(first.url, ns, "llm", { capacity: 1_000, rates, concurrency: 20 });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({
      limit: 1_000,
      rates: [
        { limit: 2, window: 60_000, kind: "sliding", counts: "requests", used: 0 },
        { limit: 500, window: 60_000, kind: "fixed", counts: "load", used: 0 },
      ],
    });
    expect(
      (await api.acquire("a", { resource: "llm", capacity: 1_000, load: 100 })).body.state,
    ).toBe("active");
    await api.release("a"); // gives back its capacity, not its rate
    expect((await api.acquire("b", { resource: "llm", capacity: 1_000 })).body.state).toBe(
      "active",
    );
    // Room in the capacity (2 of 1,000 held), none in the rate: c waits, in line.
    expect((await api.acquire("c", { resource: "llm", capacity: 1_000 }, 0)).body.state).toBe(
      "queued",
    );
    // A load no window could hold is refused at once, saying which limit.
    const huge = await api.acquire("d", { resource: "llm", capacity: 1_000, load: 501 });
    expect(huge.status).toBe(409);
    expect((huge.body as unknown as { detail: string }).detail).toMatch(
      /500 units of load per 60000 ms \(fixed\).*never be granted/,
    );
    const view = (await get(first.url, `/v1/admin/namespaces/${ns}/resources/llm`)).body;
    expect(view).toMatchObject({ used: 2, queued: 1, rates: [{ used: 2 }, { used: 101 }] });
    await first.close();

    await using second = await startTestServer({ dataDir, recoveryWindow: 60_000 });
    await pastTakeover();
    const after = (await get(second.url, `/v1/admin/namespaces/${ns}/resources/llm`)).body;
    // The grants before the restart are not kept: each limit counts as full for its window.
    expect(after).toMatchObject({ limit: 1_000, concurrency: 20 });
    expect(after.rates).toHaveLength(2);
    for (const r of after.rates) expect(r.fullUntil).toBeGreaterThan(Date.now());
    expect(after).toMatchObject({ queued: 1 }); // c kept its place, and still waits
    expect((await limit(second.url, ns, "llm")).status).toBe(204); // lifted: c is served
    expect((await client(second, "alpha").resource("llm")).body).toMatchObject({ queued: 0 });
  });

  it("a PUT changes what it names and leaves the rest: a client that knows only capacity never lifts rates", async () => {
    await using server = await startTestServer();
    const api = client(server, "alpha");
    await api.acquire("h", { resource: "pool" });
    const ns = (await get(server.url, "/v1/admin/namespaces")).body.namespaces[0].id;
    const rates = [{ limit: 5, window: 1_000 }];
    expect((await limit(server.url, ns, "pool", { rates })).body).toMatchObject({
      limit: null,
      rates: [{ limit: 5 }],
    });
    expect((await limit(server.url, ns, "pool", { capacity: 3 })).body).toMatchObject({
      limit: 3,
      rates: [{ limit: 5 }],
    });
    expect((await limit(server.url, ns, "pool", { rates: null })).body).toMatchObject({
      limit: 3,
      rates: [],
    });
    await api.release("h");
    // The last limit lifted on an idle resource: it is forgotten, as a resource nobody uses is.
    expect((await limit(server.url, ns, "pool", { capacity: null })).status).toBe(204);
    expect((await limit(server.url, ns, "pool")).status).toBe(404);
  });

  it("a PUT whose capacity is refused grants nothing under the rates it named", async () => {
    await using server = await startTestServer();
    const api = client(server, "alpha");
    await api.acquire("h", { resource: "api", capacity: 10, load: 3 });
    const ns = (await get(server.url, "/v1/admin/namespaces")).body.namespaces[0].id;
    await limit(server.url, ns, "api", { rates: [{ limit: 1, window: 60_000 }] });
    await api.release("h");
    await api.acquire("h2", { resource: "api", capacity: 10, load: 3 }); // the one allowed
    expect((await api.acquire("w", { resource: "api", capacity: 10 }, 0)).body.state).toBe(
      "queued",
    );
    // A raise of the rate that would serve w, with a capacity below h2's load: refused whole.
    const res = await limit(server.url, ns, "api", {
      rates: [{ limit: 5, window: 60_000 }],
      capacity: 2,
    });
    expect(res.status).toBe(409);
    expect((await api.poll("w")).body.state).toBe("queued");
    const view = (await get(server.url, `/v1/admin/namespaces/${ns}/resources/api`)).body;
    expect(view).toMatchObject({ limit: null, rates: [{ limit: 1, used: 1 }] });
  });

  it("refuses rate limits a waiter could never fit, and leaves the limits as they were", async () => {
    await using server = await startTestServer();
    const api = client(server, "alpha");
    await api.acquire("big", { resource: "pool", capacity: 4, load: 4 });
    expect((await api.acquire("w", { resource: "pool", capacity: 4, load: 2 }, 0)).body.state).toBe(
      "queued",
    );
    const ns = (await get(server.url, "/v1/admin/namespaces")).body.namespaces[0].id;
    await limit(server.url, ns, "pool", { rates: [{ limit: 10, window: 1_000 }] });
    const res = await limit(server.url, ns, "pool", {
      rates: [{ limit: 1, window: 1_000, counts: "load" }],
    });
    expect(res.status).toBe(409);
    expect(res.body.detail).toMatch(/request w \(load 2\).*could never be granted/);
    // Both at once, or neither: the raise that would serve w is not applied either.
    const both = await limit(server.url, ns, "pool", {
      capacity: 8,
      rates: [{ limit: 1, window: 1_000, counts: "load" }],
    });
    expect(both.status).toBe(409);
    const view = (await get(server.url, `/v1/admin/namespaces/${ns}/resources/pool`)).body;
    expect(view).toMatchObject({ capacity: 4, queued: 1, limit: null });
    expect(view.rates).toMatchObject([{ limit: 10, window: 1_000 }]);
  });

  it.each([
    [{ capacity: 0 }, 400, /whole number from 1/],
    [{ capacity: 1.5 }, 400, /whole number from 1/],
    [{}, 400, /capacity/],
    [{ capacity: 2, rate: [] }, 400, /unknown field "rate"/],
    [{ concurrency: 0 }, 400, /concurrency must be a whole number from 1/],
    [{ rates: [{ limit: 5 }] }, 400, /rates\[0\]\.window must be a whole number of ms/],
    [{ capacity: 1 }, 409, /below the load \(2\) of request big/],
    [{ lanes: { strategy: "round-robin" } }, 400, /must be "fair" or "strict"/],
    [{ lanes: { shares: { a: 1 } } }, 400, /applies to strict lanes only/],
    [{ lanes: { strategy: "strict" } }, 400, /strict lanes need their shares/],
    [
      { lanes: { strategy: "strict", shares: { a: 1 }, reserved: { a: 1 } } },
      400,
      /fair lanes only/,
    ],
    [{ lanes: { weights: { "a b": 1 } } }, 400, /is not a lane name/],
    [{ lanes: { weights: { a: 0 } } }, 400, /whole number from 1 to 1000/],
    [{ lanes: { colour: "red" } }, 400, /"colour" is not a lanes field|is not a lanes field/],
    [{ lanes: { strategy: "strict", shares: { a: 2 } } }, 409, /set "capacity" with them/],
    [
      { capacity: 4, lanes: { reserved: { a: 3, b: 2 } } },
      409,
      /add up to 5, more than the capacity \(4\)/,
    ],
  ])("%j → %i", async (body, status, detail) => {
    await using server = await startTestServer();
    await client(server, "alpha").acquire("big", { resource: "pool", capacity: 4, load: 2 });
    const ns = (await get(server.url, "/v1/admin/namespaces")).body.namespaces[0].id;
    const res = await limit(server.url, ns, "pool", body);
    expect(res.status).toBe(status);
    expect(res.body.detail).toMatch(detail);
  });
});

describe("lanes (the lanes of a resource's limits)", () => {
  const limit = (url: string, ns: string, name: string, body?: unknown) =>
    fetch(`${url}/v1/admin/namespaces/${ns}/limits/${encodeURIComponent(name)}`, {
      method: body === undefined ? "DELETE" : "PUT",
      ...(body === undefined
        ? {}
        : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
    }).then(async (res) => ({
      status: res.status,
      body: res.status === 204 ? null : await res.json(),
    }));

  it("strict shares apply at once, show per lane, and stay across a restart with the requests' lanes", async () => {
    const dataDir = stateDir();
    const first = await startTestServer({ dataDir, repollGrace: 30_000 });
    const api = client(first, "alpha");
    await api.acquire("h", { resource: "gpu", lane: "batch" });
    const ns = (await get(first.url, "/v1/admin/namespaces")).body.namespaces[0].id;
    const lanes = { strategy: "strict", shares: { batch: 2, interactive: 1 } };
    const set = await limit(first.url, ns, "gpu", { capacity: 3, lanes });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({
      limit: 3,
      laneConfig: lanes,
      lanes: { batch: { queued: 0, active: 1, used: 1 } },
    });
    expect((await api.acquire("b2", { resource: "gpu", lane: "batch" })).body.state).toBe("active");
    // batch's share is full: it waits, though interactive's unit is free.
    expect((await api.acquire("b3", { resource: "gpu", lane: "batch" }, 0)).body.state).toBe(
      "queued",
    );
    const none = await api.acquire("d", { resource: "gpu" });
    expect(none.status).toBe(409);
    expect(none.body).toMatchObject({ code: "capacity_mismatch", field: "lane" });
    const view = (await get(first.url, `/v1/admin/namespaces/${ns}/resources/gpu`)).body;
    expect(view.line).toEqual([expect.objectContaining({ id: "b3", lane: "batch" })]);
    expect((await api.resource("gpu")).body).toMatchObject({
      lanes: {
        batch: { queued: 1, active: 2, used: 2 },
        interactive: { queued: 0, active: 0, used: 0 },
      },
    });
    await first.close();

    await using second = await startTestServer({ dataDir, recoveryWindow: 60_000 });
    const after = (await get(second.url, `/v1/admin/namespaces/${ns}/resources/gpu`)).body;
    expect(after).toMatchObject({
      limit: 3,
      laneConfig: lanes,
      lanes: { batch: { queued: 1, active: 2, used: 2 } },
    });
    const again = client(second, "alpha");
    expect((await again.acquire("i1", { resource: "gpu", lane: "interactive" })).body.state).toBe(
      "active",
    );
    expect((await limit(second.url, ns, "gpu", { lanes: null })).body).toMatchObject({
      laneConfig: null,
    });
    expect((await limit(second.url, ns, "gpu")).status).toBe(204);
  });

  it("a lane name is checked: 400 naming the lane field", async () => {
    await using server = await startTestServer();
    const api = client(server, "alpha");
    for (const lane of ["", "a b", "x".repeat(65), 7]) {
      const res = await api.acquire("r1", { resource: "r", lane });
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ code: "invalid_request", field: "lane" });
    }
  });
});

describe("the dashboard", () => {
  it("serves its page and script under a strict content security policy, without a key", async () => {
    await using server = await startTestServer({ apiKeys: ["app"], adminKeys: ["ops"] });
    for (const [path, type] of [
      ["/dashboard", /text\/html/],
      ["/dashboard/app.js", /text\/javascript/],
      ["/dashboard/app.css", /text\/css/],
    ] as const) {
      const res = await fetch(server.url + path);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(type);
      expect(res.headers.get("content-security-policy")).toMatch(/script-src 'self'/);
      expect(await res.text()).not.toContain("ops"); // no data, no key in the page
    }
  });

  it("streams a namespace's live view as server-sent events, for admin keys only", async () => {
    await using server = await startTestServer({ apiKeys: ["app"], adminKeys: ["ops"] });
    const api = client(server, "app");
    await api.acquire("h", { resource: "r" });
    const ns = (await get(server.url, "/v1/admin/namespaces", "ops")).body.namespaces[0].id;
    const path = `/v1/admin/namespaces/${ns}/stream?resource=r`;
    expect(
      (await fetch(server.url + path, { headers: { authorization: "Bearer app" } })).status,
    ).toBe(401);
    const controller = new AbortController();
    const res = await fetch(server.url + path, {
      headers: { authorization: "Bearer ops" },
      signal: controller.signal,
    });
    expect(res.headers.get("content-type")).toMatch(/text\/event-stream/);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const next = async () => {
      while (!text.includes("\n\n")) text += (await reader.read()).value ?? "";
      const event = text.slice(0, text.indexOf("\n\n"));
      text = text.slice(text.indexOf("\n\n") + 2);
      return JSON.parse(event.replace(/^data: /, ""));
    };
    const first = await next();
    expect(first.resources).toEqual([expect.objectContaining({ name: "r", active: 1, queued: 0 })]);
    expect(first.resource.holders.map((h: { id: string }) => h.id)).toEqual(["h"]);
    await api.acquire("w", { resource: "r" }, 0); // a change: a new event
    const second = await next();
    expect(second.resource.line.map((w: { id: string }) => w.id)).toEqual(["w"]);
    controller.abort();
  });
});
