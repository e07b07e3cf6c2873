import { FINAL_STATES } from "@ratequeue/core";

/**
 * The OpenAPI 3.1 document of the HTTP API, served at `GET /v1/openapi.json`. Written by hand,
 * next to docs/protocol.md, and kept honest by test/openapi.test.ts, which checks the real
 * answers of every operation against it (Fastify response schemas would do the same by
 * generating it, but they also take over the serialization of every answer on the hot path).
 */
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: object, description: string) => ({
  description,
  content: { "application/json": { schema } },
});
const problems = (...statuses: number[]) =>
  Object.fromEntries(
    statuses.map((s) => [
      String(s),
      {
        description: "A problem (RFC 9457): `code` says which, `detail` what to fix",
        content: { "application/problem+json": { schema: ref("Problem") } },
      },
    ]),
  );
const bearer = [{ apiKey: [] }];
const admin = [{ adminKey: [] }];
const path = (name: string, description: string) => ({
  name,
  in: "path",
  required: true,
  schema: { type: "string" },
  description,
});
const query = (
  name: string,
  description: string,
  schema: object = { type: "integer", minimum: 0 },
) => ({
  name,
  in: "query",
  required: false,
  schema,
  description,
});
const ns = path("ns", "A namespace id, or a prefix of 8+ characters only it has");

export const OPENAPI = {
  openapi: "3.1.0",
  info: {
    title: "RateQueue",
    version: "1",
    description:
      "Named resources whose waiters queue: capacity 1 is a lock, N a semaphore. The full contract, with the liveness rule and the session protocol, is docs/protocol.md.",
  },
  components: {
    securitySchemes: {
      apiKey: { type: "http", scheme: "bearer", description: "An API key: each is a namespace" },
      adminKey: { type: "http", scheme: "bearer", description: "An admin key (--admin-key)" },
    },
    schemas: {
      Problem: {
        type: "object",
        required: ["type", "title", "status", "detail", "code"],
        additionalProperties: false,
        properties: {
          type: { type: "string" },
          title: { type: "string" },
          status: { type: "integer" },
          detail: { type: "string" },
          code: { type: "string" },
          field: { type: "string" },
        },
      },
      RequestState: { enum: ["queued", "active", ...FINAL_STATES] },
      RequestSnapshot: {
        type: "object",
        required: ["id", "resource", "state", "load", "priority", "capacity"],
        additionalProperties: false,
        properties: {
          id: { type: "string" },
          resource: { type: "string" },
          state: ref("RequestState"),
          load: { type: "integer", minimum: 1 },
          priority: { type: "integer" },
          capacity: { type: "integer", minimum: 1 },
          fencingToken: { type: "integer", minimum: 1 },
          expiresIn: { type: "integer", minimum: 0 },
          pollWithin: { type: "integer", minimum: 1 },
          reason: { type: "string" },
        },
      },
      AcquireBody: {
        type: "object",
        required: ["resource"],
        properties: {
          resource: { type: "string" },
          capacity: { type: "integer", minimum: 1 },
          load: { type: "integer", minimum: 1 },
          priority: { type: "integer" },
          lane: {
            type: "string",
            pattern: "^[A-Za-z0-9._-]{1,64}$",
            description:
              "The lane to wait in (default `default`): each lane is a line of its own, and the resource's lane strategy decides between lanes",
          },
          timeout: { type: "integer", minimum: 0 },
          expiresIn: { type: "integer", minimum: 1 },
          lockDelay: { type: "integer", minimum: 0 },
        },
      },
      ResourceSnapshot: {
        type: "object",
        required: ["name", "capacity", "used", "heldBack", "active", "queued", "holders"],
        additionalProperties: false,
        properties: {
          name: { type: "string" },
          capacity: { type: ["integer", "null"] },
          used: { type: "integer" },
          heldBack: { type: "integer" },
          active: { type: "integer" },
          queued: { type: "integer" },
          away: { type: "integer" },
          holders: {
            type: "array",
            items: {
              type: "object",
              required: ["id", "load", "fencingToken", "expiresIn"],
              additionalProperties: false,
              properties: {
                id: { type: "string" },
                load: { type: "integer" },
                fencingToken: { type: "integer" },
                expiresIn: { type: "integer" },
              },
            },
          },
          lanes: ref("LaneCounts"),
        },
      },
      LaneCounts: {
        type: "object",
        description:
          "Per lane (once the resource has lanes): requests waiting, requests holding, and units held (held back included)",
        additionalProperties: {
          type: "object",
          required: ["queued", "active", "used"],
          additionalProperties: false,
          properties: {
            queued: { type: "integer", minimum: 0 },
            active: { type: "integer", minimum: 0 },
            used: { type: "integer", minimum: 0 },
          },
        },
      },
      LaneConfig: {
        type: "object",
        description:
          "A resource's lanes. fair (the default): lanes with waiters take turns, `weights` grants per turn (default 1); `reserved` units are for those lanes only. strict: each lane owns its `shares` units, and a lane without one is refused. Shares and reserved units need an operator's capacity, and add up to at most it",
        additionalProperties: false,
        properties: {
          strategy: { enum: ["fair", "strict"] },
          weights: ref("LaneUnits"),
          shares: ref("LaneUnits"),
          reserved: ref("LaneUnits"),
        },
      },
      LaneUnits: {
        type: "object",
        propertyNames: { pattern: "^[A-Za-z0-9._-]{1,64}$" },
        additionalProperties: { type: "integer", minimum: 1, maximum: 1_000_000_000 },
      },
      SessionAnswer: {
        type: "object",
        required: ["session", "known", "run", "grace", "ping", "recovery", "messages"],
        additionalProperties: false,
        properties: {
          session: { type: "string" },
          known: { type: "boolean" },
          run: { type: "string" },
          grace: { type: "integer" },
          ping: { type: "integer" },
          recovery: { type: "integer" },
          held: { type: "integer", minimum: 0 },
          messages: { type: "array", items: { type: "object", required: ["t"] } },
        },
      },
      AdminRequest: {
        type: "object",
        required: ["id", "session", "address", "load", "priority"],
        properties: {
          id: { type: "string" },
          session: { type: ["string", "null"] },
          address: { type: ["string", "null"] },
          load: { type: "integer" },
          priority: { type: "integer" },
          lane: { type: "string" },
          fencingToken: { type: "integer" },
          heldMs: { type: "integer" },
          expiresInMs: { type: "integer" },
          waitedMs: { type: "integer" },
          away: { type: "boolean" },
        },
      },
      AdminResourceRow: {
        type: "object",
        required: ["name", "capacity", "used", "active", "queued"],
        additionalProperties: false,
        properties: {
          name: { type: "string" },
          capacity: { type: "integer" },
          used: { type: "integer" },
          active: { type: "integer" },
          queued: { type: "integer" },
        },
      },
      AdminResource: {
        type: "object",
        required: [
          "name",
          "capacity",
          "used",
          "heldBack",
          "active",
          "queued",
          "holders",
          "line",
          "lastToken",
          "limit",
          "concurrency",
          "heldBackHolders",
          "rates",
          "laneConfig",
          "lanes",
        ],
        additionalProperties: false,
        properties: {
          name: { type: "string" },
          capacity: { type: "integer" },
          used: { type: "integer" },
          heldBack: { type: "integer" },
          active: { type: "integer" },
          queued: { type: "integer" },
          holders: { type: "array", items: ref("AdminRequest") },
          line: { type: "array", items: ref("AdminRequest") },
          lastToken: { type: "integer", minimum: 0 },
          limit: {
            type: ["integer", "null"],
            description: "The capacity an operator set (null: the requests' own)",
          },
          concurrency: {
            type: ["integer", "null"],
            description:
              "Most requests holding at once, whatever their load, an operator set (null: none)",
          },
          heldBackHolders: {
            type: "integer",
            minimum: 0,
            description:
              "Ended holders whose units are held back (revoked, or a lock delay): they count against concurrency too",
          },
          rates: {
            type: "array",
            description:
              "Its rate limits, each with what it has counted in its window now (`fullUntil`: counted as full until then, clock ms, after a restart)",
            items: {
              allOf: [ref("RateLimit")],
              type: "object",
              required: ["used"],
              properties: {
                used: { type: "integer", minimum: 0 },
                fullUntil: { type: "integer" },
              },
            },
          },
          laneConfig: {
            oneOf: [ref("LaneConfig"), { type: "null" }],
            description: "The lanes an operator set (null: none)",
          },
          lanes: {
            oneOf: [ref("LaneCounts"), { type: "null" }],
            description: "Per lane, what waits and holds (null: the resource has no lanes)",
          },
        },
      },
      RateLimit: {
        type: "object",
        required: ["limit", "window"],
        properties: {
          limit: { type: "integer", minimum: 1, maximum: 1_000_000_000 },
          window: { type: "integer", minimum: 1, maximum: 86_400_000, description: "ms" },
          kind: {
            enum: ["sliding", "fixed"],
            default: "sliding",
            description:
              "sliding: any `window` ms in a row; fixed: windows aligned on the clock (a minute's starts on the minute)",
          },
          counts: {
            enum: ["requests", "load"],
            default: "requests",
            description: "What a grant uses up: 1, or its load",
          },
        },
      },
    },
  },
  paths: {
    "/v1/health": {
      get: {
        summary: "Is the server up (no key needed)",
        responses: {
          "200": json(
            {
              type: "object",
              required: ["status", "mode"],
              additionalProperties: false,
              properties: { status: { const: "ok" }, mode: { enum: ["open", "keys"] } },
            },
            "Up",
          ),
        },
      },
    },
    "/v1/replica": {
      get: {
        summary:
          "Does this replica serve (no key needed): a load balancer's health check with --store",
        responses: {
          "200": json(
            {
              type: "object",
              required: ["role"],
              additionalProperties: false,
              properties: { role: { const: "leader" } },
            },
            "This replica serves (a server without --store always does)",
          ),
          "503": json(
            {
              type: "object",
              required: ["role"],
              additionalProperties: false,
              properties: { role: { const: "follower" } },
            },
            "This replica stands by; every other route answers 503 not_leader",
          ),
        },
      },
    },
    "/v1/requests/{id}": {
      parameters: [path("id", "The client's name for the request: 1–128 of [A-Za-z0-9._~-]")],
      put: {
        summary: "Create or resume a request; held open up to `wait` ms while queued",
        security: bearer,
        parameters: [query("wait", "How long to hold the answer while queued, ms")],
        requestBody: {
          required: true,
          content: { "application/json": { schema: ref("AcquireBody") } },
        },
        responses: {
          "200": json(ref("RequestSnapshot"), "Its state (queued or active, or how it ended)"),
          ...problems(400, 401, 403, 409, 413, 415, 503),
        },
      },
      get: {
        summary: "Poll a request: answered when it leaves `state`, or after `wait` ms",
        security: bearer,
        parameters: [
          query("state", "The state the client knows", { enum: ["queued", "active"] }),
          query("wait", "How long to hold the answer, ms"),
        ],
        responses: {
          "200": json(ref("RequestSnapshot"), "Its state"),
          ...problems(400, 401, 404),
        },
      },
      delete: {
        summary: "Release (active) or cancel (queued)",
        security: bearer,
        responses: {
          "200": json(ref("RequestSnapshot"), "How it ended"),
          ...problems(400, 401, 404),
        },
      },
    },
    "/v1/resources/{name}": {
      parameters: [path("name", "A resource name, percent-encoded")],
      get: {
        summary: "A resource's state (capacity null when nothing holds or waits on it)",
        security: bearer,
        responses: { "200": json(ref("ResourceSnapshot"), "Its state"), ...problems(400, 401) },
      },
    },
    "/v1/sessions/{id}": {
      parameters: [path("id", "The session id, chosen by the client")],
      post: {
        summary:
          "A session exchange over HTTP: messages in, answers and events out (docs/protocol.md, Sessions)",
        security: bearer,
        parameters: [
          query("after", "The last event seq seen (of run `run`)"),
          query("run", "The server run `after` counts in", { type: "string" }),
          query("wait", "With no messages: hold the poll up to this long, ms"),
        ],
        requestBody: {
          content: { "application/json": { schema: { type: "array", items: { type: "object" } } } },
        },
        responses: {
          "200": json(ref("SessionAnswer"), "Answers, then events"),
          ...problems(400, 401),
        },
      },
    },
    "/v1/session": {
      get: {
        summary: "The WebSocket session (upgrade; the key goes in the first message, `hello`)",
        responses: { "101": { description: "Switching protocols: a WebSocket session" } },
      },
    },
    "/v1/openapi.json": {
      get: {
        summary: "This document",
        responses: {
          "200": json({ type: "object", required: ["openapi", "paths"] }, "OpenAPI 3.1"),
        },
      },
    },
    "/metrics": {
      get: {
        summary: "Prometheus metrics (text format 0.0.4)",
        security: admin,
        responses: {
          "200": {
            description: "Metrics",
            content: { "text/plain": { schema: { type: "string" } } },
          },
          ...problems(401, 403),
        },
      },
    },
    "/v1/admin/namespaces": {
      get: {
        summary: "Namespaces with anything live, most waiters first",
        security: admin,
        responses: {
          "200": json(
            {
              type: "object",
              required: ["namespaces"],
              additionalProperties: false,
              properties: {
                namespaces: {
                  type: "array",
                  items: {
                    type: "object",
                    required: ["id", "resources", "active", "queued"],
                    additionalProperties: false,
                    properties: {
                      id: { type: "string" },
                      resources: { type: "integer" },
                      active: { type: "integer" },
                      queued: { type: "integer" },
                    },
                  },
                },
              },
            },
            "The namespaces",
          ),
          ...problems(401, 403),
        },
      },
    },
    "/v1/admin/namespaces/{ns}/resources": {
      parameters: [ns],
      get: {
        summary: "A namespace's resources, busiest first",
        security: admin,
        parameters: [
          query("offset", "Resources to skip"),
          query("limit", "Resources to list (1–1000, default 100)", {
            type: "integer",
            minimum: 1,
            maximum: 1000,
          }),
        ],
        responses: {
          "200": json(
            {
              type: "object",
              required: ["namespace", "total", "offset", "resources"],
              additionalProperties: false,
              properties: {
                namespace: { type: "string" },
                total: { type: "integer" },
                offset: { type: "integer" },
                resources: { type: "array", items: ref("AdminResourceRow") },
              },
            },
            "A page of resources",
          ),
          ...problems(400, 401, 403, 404),
        },
      },
    },
    "/v1/admin/namespaces/{ns}/resources/{name}": {
      parameters: [ns, path("name", "A resource name, percent-encoded")],
      get: {
        summary: "A resource with its holders and its line",
        security: admin,
        responses: {
          "200": json(ref("AdminResource"), "The resource"),
          ...problems(401, 403, 404),
        },
      },
    },
    "/v1/admin/namespaces/{ns}/stream": {
      parameters: [ns],
      get: {
        summary: "The namespace's live view, as server-sent events (`data: {json}` on each change)",
        security: admin,
        parameters: [query("resource", "A resource to include in detail", { type: "string" })],
        responses: {
          "200": {
            description: "An event stream",
            content: { "text/event-stream": { schema: { type: "string" } } },
          },
          ...problems(401, 403),
        },
      },
    },
    "/v1/admin/namespaces/{ns}/limits/{name}": {
      parameters: [ns, path("name", "A resource name, percent-encoded")],
      put: {
        summary:
          "Set the resource's limits — its capacity, its concurrency, its rate limits, its lanes, any of them (what the body leaves out stays as it was; null, or rates: [], lifts one): they apply to the line at once, all together",
        security: admin,
        requestBody: {
          required: true,
          content: {
            "application/json": {
              schema: {
                type: "object",
                minProperties: 1,
                additionalProperties: false,
                properties: {
                  capacity: { type: ["integer", "null"], minimum: 1, maximum: 1_000_000_000 },
                  concurrency: { type: ["integer", "null"], minimum: 1, maximum: 1_000_000_000 },
                  rates: { type: ["array", "null"], maxItems: 8, items: ref("RateLimit") },
                  lanes: { oneOf: [ref("LaneConfig"), { type: "null" }] },
                },
              },
            },
          },
        },
        responses: {
          "200": json(ref("AdminResource"), "The resource"),
          "204": {
            description: "Every limit lifted, and nothing holds or waits on it: forgotten",
          },
          ...problems(400, 401, 403, 404, 409),
        },
      },
      delete: {
        summary: "Lift the resource's limits (capacity, concurrency, rates and lanes)",
        security: admin,
        responses: { "204": { description: "Lifted" }, ...problems(401, 403, 404) },
      },
    },
    "/v1/admin/namespaces/{ns}/requests/{id}/revoke": {
      parameters: [ns, path("id", "A request id")],
      post: {
        summary: "Revoke (force-release) a request, saying why: its holder is told",
        security: admin,
        requestBody: {
          required: true,
          content: {
            "application/json": {
              schema: {
                type: "object",
                required: ["reason"],
                properties: { reason: { type: "string", minLength: 1, maxLength: 500 } },
              },
            },
          },
        },
        responses: {
          "200": json(ref("RequestSnapshot"), "Revoked"),
          ...problems(400, 401, 403, 404),
        },
      },
    },
    "/dashboard": {
      get: {
        summary: "The web dashboard (its data comes from the admin API)",
        responses: {
          "200": {
            description: "The page",
            content: { "text/html": { schema: { type: "string" } } },
          },
        },
      },
    },
  },
} as const;
