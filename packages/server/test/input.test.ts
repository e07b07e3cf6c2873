import net from "node:net";
import { describe, expect, it } from "vitest";
import { startTestServer } from "./helpers.js";

/** Every kind of bad input gets a 4xx application/problem+json that names what to fix. */
describe("HTTP: bad input", () => {
  const json = { "content-type": "application/json", authorization: "Bearer t" };
  const cases: Array<{
    what: string;
    method: string;
    path: string;
    headers?: Record<string, string>;
    body?: string;
    status: number;
    code: string;
    field?: string;
    says: RegExp;
  }> = [
    {
      what: "malformed JSON",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: "{bad",
      status: 400,
      code: "invalid_request",
      field: "body",
      says: /JSON/,
    },
    {
      what: "an empty JSON body",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: "",
      status: 400,
      code: "invalid_request",
      says: /JSON/,
    },
    {
      what: "a JSON array",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: "[]",
      status: 400,
      code: "invalid_request",
      field: "body",
      says: /object/,
    },
    {
      what: "a __proto__ key",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"r","__proto__":{"x":1}}',
      status: 400,
      code: "invalid_request",
      says: /./,
    },
    {
      what: "no resource",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: "{}",
      status: 400,
      code: "invalid_request",
      field: "resource",
      says: /resource must be a string/,
    },
    {
      what: "a numeric resource",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":42}',
      status: 400,
      code: "invalid_request",
      field: "resource",
      says: /got 42/,
    },
    {
      what: "an empty name",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":""}',
      status: 400,
      code: "invalid_request",
      field: "resource",
      says: /empty/,
    },
    {
      what: "a control character in the name",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"a\\u0000b"}',
      status: 400,
      code: "invalid_request",
      field: "resource",
      says: /printable/,
    },
    {
      what: "a line break in the name",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"a\\nb"}',
      status: 400,
      code: "invalid_request",
      field: "resource",
      says: /printable/,
    },
    {
      what: "an unpaired surrogate in the name",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"a\\ud800b"}',
      status: 400,
      code: "invalid_request",
      field: "resource",
      says: /surrogate/,
    },
    {
      what: "a 257-byte name",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: JSON.stringify({ resource: `${"é".repeat(128)}x` }),
      status: 400,
      code: "invalid_request",
      field: "resource",
      says: /at most 256 UTF-8 bytes, got 257/,
    },
    {
      what: "a string load",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"r","load":"2"}',
      status: 400,
      code: "invalid_request",
      field: "load",
      says: /integer/,
    },
    {
      what: "a fractional priority",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"r","priority":1.5}',
      status: 400,
      code: "invalid_request",
      field: "priority",
      says: /integer/,
    },
    {
      what: "a zero capacity",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"r","capacity":0}',
      status: 400,
      code: "invalid_request",
      field: "capacity",
      says: /from 1/,
    },
    {
      what: "a load above the capacity",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"r","capacity":2,"load":3}',
      status: 400,
      code: "invalid_request",
      field: "load",
      says: /never be granted/,
    },
    {
      what: "a negative timeout",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"r","timeout":-1}',
      status: 400,
      code: "invalid_request",
      field: "timeout",
      says: /ms/,
    },
    {
      what: "an expiresIn above the maximum",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"r","expiresIn":999999999999}',
      status: 400,
      code: "invalid_request",
      field: "expiresIn",
      says: /maximum/,
    },
    {
      what: "a null field",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"r","load":null}',
      status: 400,
      code: "invalid_request",
      field: "load",
      says: /got null/,
    },
    {
      what: "a misspelt field",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: '{"resource":"r","priorty":5}',
      status: 400,
      code: "invalid_request",
      field: "priorty",
      says: /not a known field/,
    },
    {
      what: "a bad request id",
      method: "PUT",
      path: "/v1/requests/a%20b",
      headers: json,
      body: '{"resource":"r"}',
      status: 400,
      code: "invalid_request",
      field: "id",
      says: /letters, digits/,
    },
    {
      what: "a too long request id",
      method: "GET",
      path: `/v1/requests/${"x".repeat(129)}`,
      headers: json,
      status: 400,
      code: "invalid_request",
      field: "id",
      says: /at most 128/,
    },
    {
      what: "a bad wait",
      method: "GET",
      path: "/v1/requests/a?wait=soon",
      headers: json,
      status: 400,
      code: "invalid_request",
      field: "wait",
      says: /milliseconds/,
    },
    {
      what: "a bad known state",
      method: "GET",
      path: "/v1/requests/a?state=done",
      headers: json,
      status: 400,
      code: "invalid_request",
      field: "state",
      says: /queued/,
    },
    {
      what: "an unknown request",
      method: "GET",
      path: "/v1/requests/nope",
      headers: json,
      status: 404,
      code: "not_found",
      says: /no request nope/,
    },
    {
      what: "a huge body",
      method: "PUT",
      path: "/v1/requests/a",
      headers: json,
      body: JSON.stringify({ resource: "r", pad: "x".repeat(100_000) }),
      status: 413,
      code: "payload_too_large",
      says: /larger than/,
    },
    {
      what: "a text body",
      method: "PUT",
      path: "/v1/requests/a",
      headers: { "content-type": "text/plain", authorization: "Bearer t" },
      body: "resource=r",
      status: 415,
      code: "unsupported_media_type",
      says: /application\/json/,
    },
    {
      what: "an unknown route",
      method: "GET",
      path: "/v1/locks",
      headers: json,
      status: 404,
      code: "not_found",
      says: /no route GET \/v1\/locks/,
    },
    {
      what: "an unknown method",
      method: "PATCH",
      path: "/v1/requests/a",
      headers: json,
      body: "{}",
      status: 404,
      code: "not_found",
      says: /no route PATCH/,
    },
    {
      what: "no Authorization header",
      method: "GET",
      path: "/v1/requests/a",
      status: 401,
      code: "unauthorized",
      says: /Bearer/,
    },
    {
      what: "a Basic Authorization header",
      method: "GET",
      path: "/v1/requests/a",
      headers: { authorization: "Basic dTpw" },
      status: 401,
      code: "unauthorized",
      says: /Bearer/,
    },
    {
      what: "a bad resource path",
      method: "GET",
      path: "/v1/resources/a%0Ab",
      headers: json,
      status: 400,
      code: "invalid_request",
      field: "name",
      says: /printable/,
    },
  ];

  it.each(cases)("answers $what with $status $code", async (c) => {
    await using server = await startTestServer();
    const res = await fetch(server.url + c.path, {
      method: c.method,
      headers: c.headers,
      body: c.body,
    });
    expect(res.status).toBe(c.status);
    expect(res.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    const body = await res.json();
    expect(body).toMatchObject({
      status: c.status,
      code: c.code,
      type: `urn:ratequeue:problem:${c.code}`,
    });
    if (c.field) expect(body.field).toBe(c.field);
    expect(body.detail).toMatch(c.says);
    // The server is still up and serving.
    const health = await fetch(`${server.url}/v1/health`);
    expect(health.status).toBe(200);
  });

  // repro 07: errors met before any route ran answered Fastify's own JSON, echoing the path.
  const A = "Authorization: Bearer t\r\n";
  const raw: Array<{ what: string; request: string; status: number; code: string }> = [
    {
      what: "bad percent-encoding in a request id",
      request: `GET /v1/requests/%E0%A4%A HTTP/1.1\r\nHost: x\r\n${A}\r\n`,
      status: 400,
      code: "invalid_request",
    },
    {
      what: "bad percent-encoding in a resource name",
      request: `GET /v1/resources/%ZZ HTTP/1.1\r\nHost: x\r\n${A}\r\n`,
      status: 400,
      code: "invalid_request",
    },
    {
      what: "an over-long path segment",
      request: `GET /v1/requests/${"a".repeat(1100)} HTTP/1.1\r\nHost: x\r\n${A}\r\n`,
      status: 414,
      code: "uri_too_long",
    },
    {
      what: "a request line that is not HTTP",
      request: "GARBAGE\r\n\r\n",
      status: 400,
      code: "invalid_request",
    },
    {
      what: "headers over 16 KiB",
      request: `GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`,
      status: 431,
      code: "headers_too_large",
    },
    {
      what: "Content-Length with Transfer-Encoding",
      request: `PUT /v1/requests/a HTTP/1.1\r\nHost: x\r\n${A}Content-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      status: 400,
      code: "invalid_request",
    },
  ];

  it.each(raw)("answers $what with $status $code, as problem+json", async (c) => {
    await using server = await startTestServer();
    const reply = await rawRequest(server.url, c.request);
    const [head = "", body = ""] = reply.split("\r\n\r\n");
    expect(head.split("\r\n")[0]).toMatch(new RegExp(`^HTTP/1.1 ${c.status} `));
    expect(head).toMatch(/content-type: application\/problem\+json/i);
    const problem = JSON.parse(body);
    expect(problem).toMatchObject({ status: c.status, code: c.code });
    expect(problem.detail.length).toBeLessThan(300); // says what to fix, echoes no path
    expect((await fetch(`${server.url}/v1/health`)).status).toBe(200);
  });

  it("accepts any printable name up to 256 bytes, slashes, spaces and emoji included", async () => {
    await using server = await startTestServer();
    const names = ["a", "tenant/42/invoice 7", "🔒 ünïcödé", "é".repeat(128), " padded "];
    for (const [i, name] of names.entries()) {
      const res = await fetch(`${server.url}/v1/requests/n${i}?wait=0`, {
        method: "PUT",
        headers: { "content-type": "application/json", authorization: "Bearer t" },
        body: JSON.stringify({ resource: name }),
      });
      expect(res.status, name).toBe(200);
      expect((await res.json()).resource).toBe(name);
      const state = await fetch(`${server.url}/v1/resources/${encodeURIComponent(name)}`, {
        headers: { authorization: "Bearer t" },
      });
      expect((await state.json()).name).toBe(name);
    }
  });
});

describe("HTTP: lenient where it costs nothing", () => {
  it("accepts `Content-Type: application/json` with no body on DELETE and GET", async () => {
    await using server = await startTestServer();
    const headers = { "content-type": "application/json", authorization: "Bearer t" };
    await fetch(`${server.url}/v1/requests/a?wait=0`, {
      method: "PUT",
      headers,
      body: '{"resource":"r"}',
    });
    const del = await fetch(`${server.url}/v1/requests/a`, { method: "DELETE", headers });
    expect(del.status).toBe(200);
    expect((await del.json()).state).toBe("released");
    const get = await fetch(`${server.url}/v1/requests/a`, { headers });
    expect(get.status).toBe(200);
  });
});

/** Sends bytes as they are on a new connection and returns all the server wrote back. */
function rawRequest(url: string, request: string): Promise<string> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), "127.0.0.1");
    let out = "";
    socket.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (/\r\n\r\n[\s\S]*\}$/.test(out)) socket.destroy(); // a whole JSON reply
    });
    socket.on("close", () => resolve(out));
    socket.on("error", () => resolve(out));
    socket.write(request);
  });
}
