import type { Socket } from "node:net";
import cors from "@fastify/cors";
import {
  API_PREFIX,
  checkAcquireBody,
  checkName,
  checkRequestId,
  describe,
  type RequestState,
} from "@ratequeue/core";
import Fastify, { type FastifyInstance, type FastifyReply, LogController } from "fastify";
import { ADMIN_PREFIX, adminRoutes, bearer, refuseNonAdmin } from "./admin.js";
import type { Backend, PollOptions, SessionBackend } from "./backend.js";
import { ConnectionGuard } from "./connections.js";
import { DASHBOARD_PATH, dashboardRoutes } from "./dashboard.js";
import { NamespaceIds } from "./keys.js";
import { logs } from "./lifecycle-log.js";
import type { LocalBackend } from "./local-backend.js";
import type { Metrics } from "./metrics.js";
import { OPENAPI } from "./openapi.js";
import { loopbackHost, OPEN_MODE_HOSTS, type ResolvedServerOptions } from "./options.js";
import { problem, sendProblem, sendProblemOnSocket } from "./problem.js";
import { type Authenticate, attachWebSockets, sessionRoute } from "./session.js";

declare module "fastify" {
  interface FastifyRequest {
    /** The caller's namespace, set by the auth hook. */
    namespace: string;
  }
}

/** The statuses the backend's refusals map to. */
const REFUSAL_STATUS = { request_conflict: 409, capacity_mismatch: 409, queue_full: 409 } as const;
const POLLABLE = new Set<string>(["queued", "active"]);
/** Prometheus scrapes here by default. */
const METRICS_PATH = "/metrics";

/**
 * The HTTP API (v1): thin — parse, authenticate, validate, call the backend, shape the reply.
 * Every route is documented in docs/protocol.md.
 */
export function buildApp(
  options: ResolvedServerOptions,
  backend: Backend & SessionBackend,
  state: { closing: boolean },
  /** The secret API keys are hashed with into namespace ids (see `keys.ts`). */
  secret: Buffer,
  metrics: Metrics,
  /** The backend again, as itself: the admin API reads its engine and revokes through it. */
  local: LocalBackend,
): FastifyInstance {
  const app = Fastify({
    bodyLimit: options.bodyLimit,
    // Request ids are up to 128 characters; find-my-way's default limit is 100.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // Slow or stalled clients (docs/protocol.md, "Limits"): headers must arrive within
    // headersTimeout and a whole request within requestTimeout; a socket silent for longer than
    // the longest poll is closed (WebSockets watch their own silence).
    http: { headersTimeout: options.headersTimeout, connectionsCheckingInterval: 1_000 },
    requestTimeout: options.requestTimeout,
    connectionTimeout: options.pollWindow + IDLE_MARGIN,
    keepAliveTimeout: options.pollWindow + IDLE_MARGIN,
    frameworkErrors: (error, _req, reply) => {
      if (error.code === "FST_ERR_MAX_PARAM_LENGTH") {
        return sendProblem(
          reply,
          problem(
            414,
            "uri_too_long",
            `a path segment is longer than ${MAX_PARAM_LENGTH} characters: request ids are at most 128 characters and resource names at most 256 UTF-8 bytes`,
            "path",
          ),
        );
      }
      return sendProblem(
        reply,
        problem(
          400,
          "invalid_request",
          "the path is not valid percent-encoding: encode each name or id with encodeURIComponent",
          "path",
        ),
      );
    },
    clientErrorHandler: (error: NodeJS.ErrnoException, socket) => {
      if (error.code === "ECONNRESET") return socket.destroy();
      sendProblemOnSocket(socket, parserProblem(error.code, options));
    },
    // Polls are answered before close(); then drop keep-alive sockets at once.
    forceCloseConnections: true,
    return503OnClosing: false,
    // Structured logs (--log-level): no line per request above debug, and never a header.
    logger:
      options.logLevel === "silent"
        ? false
        : {
            level: options.logLevel,
            ...(options.logStream ? { stream: options.logStream } : {}),
            redact: ["req.headers.authorization", "req.headers.cookie"],
          },
    logController: new LogController({ disableRequestLogging: true }),
  });
  if (logs(app.log, "debug")) {
    app.addHook("onResponse", async (req, reply) => {
      req.log.debug(
        { method: req.method, url: req.url, status: reply.statusCode, ms: reply.elapsedTime },
        "request",
      );
    });
  }
  const keys = new Set(options.apiKeys);
  const open = keys.size === 0;
  const ids = new NamespaceIds(secret, options.apiKeys);
  const authenticate: Authenticate = (token) => {
    if (token !== "" && (open || keys.has(token))) return { ns: ids.of(token) };
    const detail =
      token === ""
        ? open
          ? "send `Authorization: Bearer <token>`: in open development mode any token works, and each token is its own namespace"
          : "send `Authorization: Bearer <API key>` with a key this server was started with"
        : "this API key is not known to the server: check RATEQUEUE_API_KEY against the server's --api-key";
    return { status: 401, detail };
  };

  app.decorateRequest("namespace", "");
  if (options.corsOrigins.length > 0) {
    // Answers preflights and adds the CORS headers for the allowed origins (docs: "Browsers").
    app.register(cors, {
      origin: options.corsOrigins.includes("*") ? "*" : [...options.corsOrigins],
      methods: ["GET", "PUT", "POST", "DELETE"],
      allowedHeaders: ["authorization", "content-type"],
      exposedHeaders: ["retry-after", "www-authenticate"],
      maxAge: 600,
    });
  }
  const guard = new ConnectionGuard(app.server, options.maxConnections);
  // Only JSON bodies: anything else is a 415 that says so, not a confusing 400.
  app.removeContentTypeParser("text/plain");
  // Many clients send `Content-Type: application/json` on every request, DELETE and GET
  // included: an empty body is no body, not a parse error. PUT still requires a JSON object.
  const parseJson = app.getDefaultJsonParser("error", "error");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (req, body, done) => {
    if (body === "") done(null, undefined);
    else parseJson(req, body as string, done);
  });

  if (options.store !== undefined) {
    // A store on PostgreSQL commits asynchronously: no answer leaves before what it reflects is
    // durable, and once the store has failed none does (the socket is cut; the client retries
    // on the replica that takes over).
    app.addHook("onSend", (_req, reply, payload, done) => {
      const durable = backend.durable?.();
      if (durable === undefined) return done(null, payload);
      durable.then(
        () => done(null, payload),
        (error: Error) => {
          reply.raw.socket?.destroy();
          done(error);
        },
      );
    });
  }
  app.addHook("onRequest", async (req, reply) => {
    if (state.closing) {
      reply.header("retry-after", "1").header("connection", "close");
      return sendProblem(
        reply,
        problem(503, "shutting_down", "the server is shutting down: retry shortly"),
      );
    }
    if (open && !loopbackHost(req.headers.host)) {
      // Open mode trusts anything that reaches it on loopback; a page of another site that
      // rebinds its own DNS name to 127.0.0.1 reaches it too, under that name.
      return sendProblem(reply, problem(403, "forbidden_host", OPEN_MODE_HOSTS));
    }
    // Health needs no key, and a CORS preflight carries none (the CORS plugin answers it).
    // /metrics takes admin keys, not API keys: its route checks them.
    const path = req.url.split("?")[0]!;
    if (
      path === `${API_PREFIX}/health` ||
      path === `${API_PREFIX}/openapi.json` ||
      path === `${API_PREFIX}/replica`
    )
      return;
    if (path === METRICS_PATH) return;
    if (path.startsWith(`${ADMIN_PREFIX}/`)) return; // admin keys: see admin.ts
    // The dashboard's page and script hold no data; what they show comes from the admin API.
    if (path === DASHBOARD_PATH || path.startsWith(`${DASHBOARD_PATH}/`)) return;
    if (req.method === "OPTIONS" && options.corsOrigins.length > 0) return;
    const who = authenticate(bearer(req));
    if ("status" in who) {
      reply.header("www-authenticate", 'Bearer realm="ratequeue"');
      return sendProblem(reply, problem(401, "unauthorized", who.detail));
    }
    req.namespace = who.ns;
    guard.proven(req.raw.socket);
  });

  app.setNotFoundHandler((req, reply) =>
    sendProblem(
      reply,
      problem(
        404,
        "not_found",
        `no route ${req.method} ${req.url.split("?")[0]}: see docs/protocol.md for the v1 routes`,
      ),
    ),
  );

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, _req, reply) => {
    const status = error.statusCode ?? 500;
    if (status === 413) {
      return sendProblem(
        reply,
        problem(
          413,
          "payload_too_large",
          `the body is larger than the server accepts: a request is a small JSON object (${options.bodyLimit} bytes at most), a session's batch of messages at most 4 MiB`,
        ),
      );
    }
    if (status === 415) {
      return sendProblem(
        reply,
        problem(
          415,
          "unsupported_media_type",
          "send the body as JSON with `Content-Type: application/json`",
        ),
      );
    }
    if (status >= 400 && status < 500) {
      // Fastify's own parse errors (bad JSON, empty JSON body, forbidden __proto__ key).
      return sendProblem(
        reply,
        problem(400, "invalid_request", `the body is not valid JSON: ${error.message}`, "body"),
      );
    }
    options.log(`[ratequeue] internal error: ${error.stack ?? error.message}`);
    _req.log.error({ err: error }, "internal error");
    return sendProblem(
      reply,
      problem(500, "internal", "the server failed to handle this request; it has been logged"),
    );
  });

  app.get(`${API_PREFIX}/health`, async () => ({ status: "ok", mode: open ? "open" : "keys" }));
  // Replicas on PostgreSQL: a load balancer's health check sends traffic to the one that
  // serves (the others answer 503 `not_leader`, replica.ts).
  app.get(`${API_PREFIX}/replica`, async () => ({ role: "leader" }));
  app.get(`${API_PREFIX}/openapi.json`, async () => OPENAPI);

  // Prometheus metrics: every namespace's resources, so for operators only (admin keys).
  app.get(METRICS_PATH, async (req, reply) => {
    const refused = refuseNonAdmin(options, req, reply, "/metrics");
    if (refused) return refused;
    return reply.type(metrics.contentType).send(await metrics.text());
  });
  adminRoutes(app, options, local);
  dashboardRoutes(app, options, local);

  attachWebSockets(app, options, backend, authenticate, state, (socket) => guard.proven(socket));
  sessionRoute(app, options, backend);

  app.put<{ Params: { id: string }; Querystring: Record<string, string> }>(
    `${API_PREFIX}/requests/:id`,
    async (req, reply) => {
      const target = pollTarget(req.params.id, req.query.wait, options.pollWindow);
      if ("field" in target) return invalid(reply, target.field, target.detail);
      const { id, wait } = target;
      const body = checkAcquireBody(req.body, { maxExpiresIn: options.maxExpiresIn });
      if (!body.ok)
        return invalid(reply, body.problem.field, `${body.problem.field} ${body.problem.detail}`);
      const result = await backend.acquire(req.namespace, id, body.value, pollOptions(reply, wait));
      if ("ok" in result) {
        return sendProblem(
          reply,
          problem(REFUSAL_STATUS[result.code], result.code, result.detail, result.field),
        );
      }
      return result;
    },
  );

  app.get<{ Params: { id: string }; Querystring: Record<string, string> }>(
    `${API_PREFIX}/requests/:id`,
    async (req, reply) => {
      const target = pollTarget(req.params.id, req.query.wait, options.pollWindow);
      if ("field" in target) return invalid(reply, target.field, target.detail);
      const { id, wait } = target;
      const known = req.query.state;
      if (known !== undefined && !POLLABLE.has(known)) {
        return invalid(
          reply,
          "state",
          `state must be "queued" or "active" (the state you last saw), got ${describe(known)}`,
        );
      }
      const snap = await backend.poll(
        req.namespace,
        id,
        known as RequestState | undefined,
        pollOptions(reply, wait),
      );
      return snap ?? unknownRequest(reply, id);
    },
  );

  app.delete<{ Params: { id: string } }>(`${API_PREFIX}/requests/:id`, async (req, reply) => {
    const id = req.params.id;
    const bad = checkRequestId(id);
    if (bad) return invalid(reply, "id", `request id ${bad}`);
    return (await backend.release(req.namespace, id)) ?? unknownRequest(reply, id);
  });

  app.get<{ Params: { "*": string } }>(`${API_PREFIX}/resources/*`, async (req, reply) => {
    const name = req.params["*"];
    const bad = checkName(name);
    if (bad) return invalid(reply, "name", `resource name ${bad} (percent-encode it in the path)`);
    const snap = await backend.resource(req.namespace, name);
    // Idle resources are forgotten: they read as a fresh lock would.
    return (
      snap ?? { name, capacity: null, used: 0, heldBack: 0, active: 0, queued: 0, holders: [] }
    );
  });

  return app;
}

/** Longest path segment routed (longer ones get 414 before any handler runs). */
const MAX_PARAM_LENGTH = 1024;
/** How much longer than the longest poll a silent keep-alive socket is kept, ms. */
const IDLE_MARGIN = 10_000;

/** The problem for an error Node's HTTP parser met before any route ran. */
function parserProblem(code: string | undefined, options: ResolvedServerOptions) {
  if (code === "HPE_HEADER_OVERFLOW")
    return problem(
      431,
      "headers_too_large",
      "the request's headers are larger than 16 KiB: send only Authorization and Content-Type",
    );
  if (code === "ERR_HTTP_REQUEST_TIMEOUT")
    return problem(
      408,
      "request_timeout",
      `the request did not arrive within ${options.requestTimeout} ms (headers within ${options.headersTimeout} ms): send it whole, at once`,
    );
  return problem(
    400,
    "invalid_request",
    `the request is not valid HTTP/1.1 (${code ?? "parse error"}): check the request line, the headers and Content-Length`,
  );
}

function invalid(reply: FastifyReply, field: string, detail: string) {
  return sendProblem(reply, problem(400, "invalid_request", detail, field));
}

function unknownRequest(reply: FastifyReply, id: string) {
  return sendProblem(
    reply,
    problem(
      404,
      "not_found",
      `no request ${id} in this namespace: it never existed, or it ended more than the server's retention ago`,
    ),
  );
}

/**
 * The request id of a path and its `?wait=` in ms (capped at the server's poll window; absent
 * means the full window), or the field at fault.
 */
function pollTarget(
  id: string,
  wait: string | undefined,
  window: number,
): { id: string; wait: number } | { field: string; detail: string } {
  const bad = checkRequestId(id);
  if (bad) return { field: "id", detail: `request id ${bad}` };
  if (wait === undefined) return { id, wait: window };
  if (!/^\d{1,10}$/.test(wait)) {
    return {
      field: "wait",
      detail: `wait must be a whole number of milliseconds, got ${describe(wait)}`,
    };
  }
  return { id, wait: Math.min(Number(wait), window) };
}

/** The poll ends early when the client's connection closes (it died, or gave up). */
function pollOptions(reply: FastifyReply, wait: number): PollOptions {
  const controller = new AbortController();
  reply.raw.once("close", () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return {
    wait,
    signal: controller.signal,
    connection: connectionSignal(reply.raw.socket),
    address: reply.raw.socket?.remoteAddress,
  };
}

const connections = new WeakMap<Socket, AbortSignal>();

/** One signal per keep-alive connection, aborted when it closes. */
function connectionSignal(socket: Socket | null): AbortSignal | undefined {
  if (socket === null) return undefined;
  let signal = connections.get(socket);
  if (signal === undefined) {
    const controller = new AbortController();
    signal = controller.signal;
    connections.set(socket, signal);
    socket.once("close", () => controller.abort());
  }
  return signal;
}
