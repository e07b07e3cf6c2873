import { once } from "node:events";
import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { OPENAPI } from "../src/openapi.js";
import { startTestServer } from "./helpers.js";

type Doc = {
  paths: Record<
    string,
    Record<string, { responses?: Record<string, { content?: Record<string, unknown> }> }>
  >;
};
const doc = OPENAPI as unknown as Doc;
const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addSchema(OPENAPI, "openapi");

/** The documented path template a concrete path matches (`{x}` is one segment, `{name}` any). */
function template(path: string): string | undefined {
  const clean = path.split("?")[0]!;
  return Object.keys(doc.paths).find((t) => {
    const pattern = t
      .replace(/[.]/g, "\\.")
      .replace(/\{name\}/g, "(.+)")
      .replace(/\{[a-z]+\}/g, "([^/]+)");
    return new RegExp(`^${pattern}$`).test(clean);
  });
}

const exercised = new Set<string>();

/** Sends a request and checks its real answer against the document: status, type and body. */
async function call(
  url: string,
  method: string,
  path: string,
  options: { token?: string; body?: unknown } = {},
) {
  const res = await fetch(url + path, {
    method,
    headers: {
      ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }),
      ...(options.body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const t = template(path);
  expect(t, `${method} ${path} is not in the document`).toBeDefined();
  const op = doc.paths[t!]![method.toLowerCase()];
  expect(op, `${method} ${t} is not in the document`).toBeDefined();
  exercised.add(`${method} ${t}`);
  const answer = op!.responses?.[String(res.status)];
  expect(answer, `${method} ${path} answered ${res.status}, undocumented`).toBeDefined();
  const type = (res.headers.get("content-type") ?? "").split(";")[0]!;
  const text = await res.text();
  if (answer!.content === undefined) {
    expect(text).toBe("");
    return { status: res.status, body: undefined };
  }
  expect(Object.keys(answer!.content), `${method} ${path}: ${type}`).toContain(type);
  if (!type.endsWith("json")) return { status: res.status, body: text };
  const body = JSON.parse(text);
  const pointer = `openapi#/paths/${t!.replace(/~/g, "~0").replace(/\//g, "~1")}/${method.toLowerCase()}/responses/${res.status}/content/${type.replace(/\//g, "~1")}/schema`;
  const validate = ajv.compile({ $ref: pointer });
  expect(
    validate(body),
    `${method} ${path} → ${res.status}: ${ajv.errorsText(validate.errors)}`,
  ).toBe(true);
  return { status: res.status, body };
}

describe("the OpenAPI document (GET /v1/openapi.json)", () => {
  it("describes every operation's real answers, and every operation is exercised", async () => {
    await using server = await startTestServer({ apiKeys: ["app"], adminKeys: ["ops"] });
    const u = server.url;
    const app = { token: "app" };
    const ops = { token: "ops" };

    expect((await call(u, "GET", "/v1/openapi.json")).body).toEqual(
      JSON.parse(JSON.stringify(OPENAPI)),
    );
    await call(u, "GET", "/v1/health");
    await call(u, "GET", "/v1/replica");
    await call(u, "PUT", "/v1/requests/h", { ...app, body: { resource: "r" } });
    await call(u, "PUT", "/v1/requests/w?wait=0", { ...app, body: { resource: "r" } });
    await call(u, "PUT", "/v1/requests/bad", { ...app, body: { resource: "r", load: 0 } });
    await call(u, "PUT", "/v1/requests/x", { body: { resource: "r" } });
    await call(u, "PUT", "/v1/requests/m", { ...app, body: { resource: "r", capacity: 2 } });
    await call(u, "GET", "/v1/requests/w?state=queued&wait=0", app);
    await call(u, "GET", "/v1/requests/nope", app);
    await call(u, "GET", "/v1/resources/r", app);
    await call(u, "GET", "/v1/resources/idle", app);
    await call(u, "POST", "/v1/sessions/s1?wait=0", {
      ...app,
      body: [{ t: "acquire", id: "s-a", resource: "s" }],
    });
    await call(u, "POST", "/v1/sessions/s1?wait=soon", { ...app, body: [] });
    await call(u, "GET", "/metrics", ops);
    await call(u, "GET", "/metrics", app);
    const { body } = await call(u, "GET", "/v1/admin/namespaces", ops);
    const ns = body.namespaces[0].id as string;
    await call(u, "GET", `/v1/admin/namespaces/${ns}/resources`, ops);
    await call(u, "GET", `/v1/admin/namespaces/${ns}/resources?limit=0`, ops);
    await call(u, "GET", `/v1/admin/namespaces/nope/resources`, ops);
    await call(u, "GET", `/v1/admin/namespaces/${ns}/resources/r`, ops);
    await call(u, "GET", `/v1/admin/namespaces/${ns}/resources/gone`, ops);
    await call(u, "PUT", `/v1/admin/namespaces/${ns}/limits/r`, { ...ops, body: { capacity: 2 } });
    await call(u, "PUT", `/v1/admin/namespaces/${ns}/limits/r`, { ...ops, body: { capacity: 0 } });
    // Lanes: the config and the per-lane counts, in the admin view and the public one.
    await call(u, "PUT", `/v1/admin/namespaces/${ns}/limits/r`, {
      ...ops,
      body: { capacity: 2, lanes: { strategy: "fair", weights: { a: 2 }, reserved: { a: 1 } } },
    });
    await call(u, "PUT", "/v1/requests/l?wait=0", { ...app, body: { resource: "r", lane: "a" } });
    await call(u, "GET", "/v1/resources/r", app);
    await call(u, "GET", `/v1/admin/namespaces/${ns}/resources/r`, ops);
    await call(u, "PUT", `/v1/admin/namespaces/${ns}/limits/r`, { ...ops, body: { lanes: null } });
    await call(u, "DELETE", `/v1/admin/namespaces/${ns}/limits/r`, ops);
    await call(u, "DELETE", `/v1/admin/namespaces/${ns}/limits/r`, ops);
    await call(u, "POST", `/v1/admin/namespaces/${ns}/requests/w/revoke`, {
      ...ops,
      body: { reason: "test" },
    });
    await call(u, "POST", `/v1/admin/namespaces/${ns}/requests/w/revoke`, {
      ...ops,
      body: { reason: "again" },
    });
    await call(u, "POST", `/v1/admin/namespaces/${ns}/requests/h/revoke`, { ...ops, body: {} });
    await call(u, "DELETE", "/v1/requests/h", app);
    await call(u, "GET", "/dashboard");

    // The event stream: its headers only (it runs until the client goes).
    const controller = new AbortController();
    const stream = await fetch(`${u}/v1/admin/namespaces/${ns}/stream`, {
      headers: { authorization: "Bearer ops" },
      signal: controller.signal,
    });
    expect(
      Object.keys(doc.paths["/v1/admin/namespaces/{ns}/stream"]!.get!.responses!["200"]!.content!),
    ).toContain(stream.headers.get("content-type")!.split(";")[0]);
    exercised.add("GET /v1/admin/namespaces/{ns}/stream");
    controller.abort();
    // The WebSocket session: an upgrade.
    const ws = new WebSocket(`${u.replace(/^http/, "ws")}/v1/session`);
    await once(ws, "open");
    ws.close();
    exercised.add("GET /v1/session");

    const documented = Object.entries(doc.paths).flatMap(([t, item]) =>
      Object.keys(item)
        .filter((m) => m !== "parameters")
        .map((m) => `${m.toUpperCase()} ${t}`),
    );
    expect([...exercised].sort()).toEqual(documented.sort());
  });
});
