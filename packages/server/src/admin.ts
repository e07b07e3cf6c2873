import { checkName } from "@ratequeue/core";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { type Engine, laneView, Namespace, type Request, type Resource } from "./engine.js";
import { Lanes } from "./internal/lanes.js";
import { parseLimitChange } from "./limits.js";
import type { LocalBackend } from "./local-backend.js";
import type { ResolvedServerOptions } from "./options.js";
import { problem, sendProblem } from "./problem.js";

/** Where the admin API lives (docs/protocol.md, "Admin API"). */
export const ADMIN_PREFIX = "/v1/admin";

/** At most this many of a resource's holders and waiters are listed one by one. */
const MAX_LISTED = 1_000;

/** The token of a request's `Authorization: Bearer …` header, or "" without one. */
export function bearer(req: FastifyRequest): string {
  const header = req.headers.authorization;
  return header?.startsWith("Bearer ") ? header.slice(7).trim() : "";
}

/**
 * The checks of routes for operators (`/metrics`, `/v1/admin/...`): they see every namespace, so
 * they take admin keys (`--admin-key`), never API keys. Without admin keys they answer only in
 * open development mode (loopback, like every route). Undefined when the caller may go on.
 */
export function refuseNonAdmin(
  options: ResolvedServerOptions,
  req: FastifyRequest,
  reply: FastifyReply,
  what: string,
): FastifyReply | undefined {
  const token = bearer(req);
  if (options.adminKeys.length === 0) {
    if (options.apiKeys.length === 0) return undefined; // open development mode
    return sendProblem(
      reply,
      problem(
        403,
        "admin_key_required",
        `${what} shows every namespace, so it needs an admin key: start the server with --admin-key KEY (or RATEQUEUE_ADMIN_KEYS) and send \`Authorization: Bearer KEY\``,
      ),
    );
  }
  if (options.adminKeys.includes(token)) return undefined;
  reply.header("www-authenticate", 'Bearer realm="ratequeue-admin"');
  return sendProblem(
    reply,
    problem(
      401,
      "unauthorized",
      token === ""
        ? "send `Authorization: Bearer <admin key>` with a key of --admin-key"
        : `this is not one of the server's admin keys (--admin-key): API keys do not open ${what}`,
    ),
  );
}

/**
 * The read-only admin API: namespaces, a namespace's resources (busiest first, paginated), and
 * one resource with its holders and its line.
 */
export function adminRoutes(
  app: FastifyInstance,
  options: ResolvedServerOptions,
  backend: LocalBackend,
) {
  const engine = backend.engine;
  const guard = async (req: FastifyRequest, reply: FastifyReply) => {
    const refused = refuseNonAdmin(options, req, reply, "the admin API");
    if (refused) return refused;
  };
  const clock = options.clock;

  app.get(`${ADMIN_PREFIX}/namespaces`, { onRequest: guard }, async () => {
    const namespaces = [...engine.namespaceList()]
      .map((space) => ({ id: space.key, ...summary(space) }))
      .filter((n) => n.resources > 0)
      .sort((a, b) => b.queued - a.queued || b.active - a.active || cmp(a.id, b.id));
    return { namespaces };
  });

  app.get<{ Params: { ns: string }; Querystring: Record<string, string> }>(
    `${ADMIN_PREFIX}/namespaces/:ns/resources`,
    { onRequest: guard },
    async (req, reply) => {
      const space = namespace(engine, req.params.ns, reply);
      if (!(space instanceof Namespace)) return space;
      const offset = count(req.query.offset, 0);
      const limit = count(req.query.limit, 100);
      if (offset === undefined || limit === undefined || limit < 1 || limit > 1_000) {
        return sendProblem(
          reply,
          problem(
            400,
            "invalid_request",
            "offset must be a whole number, and limit one from 1 to 1000 (default 100)",
            offset === undefined ? "offset" : "limit",
          ),
        );
      }
      return { namespace: space.key, offset, ...namespaceView(space, offset, limit) };
    },
  );

  app.get<{ Params: { ns: string; "*": string } }>(
    `${ADMIN_PREFIX}/namespaces/:ns/resources/*`,
    { onRequest: guard },
    async (req, reply) => {
      const space = namespace(engine, req.params.ns, reply);
      if (!(space instanceof Namespace)) return space;
      const name = req.params["*"];
      const resource = space.resources.get(name);
      if (resource === undefined) {
        return sendProblem(
          reply,
          problem(
            404,
            "not_found",
            `nothing holds or waits on ${JSON.stringify(name)} in this namespace`,
            "name",
          ),
        );
      }
      return resourceDetail(space, resource, clock.now());
    },
  );

  // An operator's limits on a resource — its capacity, its rate limits, or both: they apply at
  // once, and stay (while idle, and across restarts) until lifted. A PUT changes what it names
  // and leaves the rest as it was (so a client that knows only `capacity` never lifts rates);
  // `null` (or `rates: []`) lifts one; DELETE lifts them all.
  app.put<{ Params: { ns: string; "*": string }; Body: unknown }>(
    `${ADMIN_PREFIX}/namespaces/:ns/limits/*`,
    { onRequest: guard },
    async (req, reply) => {
      const space = namespace(engine, req.params.ns, reply);
      if (!(space instanceof Namespace)) return space;
      const bad = (detail: string, field: string) =>
        sendProblem(reply, problem(400, "invalid_request", detail, field));
      const change = parseLimitChange(req.body ?? {});
      if ("error" in change) return bad(change.error, change.field);
      const name = req.params["*"];
      const badName = checkName(name);
      if (badName) return bad(badName, "name");
      // Both at once: a refusal of either changes nothing, and nothing is granted in between.
      const result = backend.setLimits(space.key, name, change);
      if (result !== undefined && "ok" in result)
        return sendProblem(reply, problem(409, result.code, result.detail, result.field));
      // Lifted, and nothing holds or waits on it: forgotten, as a resource nobody uses is.
      if (result === undefined) return reply.code(204).send();
      const current = engine.findNamespace(space.key) ?? space; // forgotten and made anew, maybe
      return resourceDetail(current, result, clock.now());
    },
  );

  app.delete<{ Params: { ns: string; "*": string } }>(
    `${ADMIN_PREFIX}/namespaces/:ns/limits/*`,
    { onRequest: guard },
    async (req, reply) => {
      const space = namespace(engine, req.params.ns, reply);
      if (!(space instanceof Namespace)) return space;
      const name = req.params["*"];
      if (
        !space.limits.has(name) &&
        !space.rates.has(name) &&
        !space.concurrency.has(name) &&
        !space.lanes.has(name)
      ) {
        return sendProblem(
          reply,
          problem(404, "not_found", `no limit is set on ${JSON.stringify(name)}`, "name"),
        );
      }
      backend.setLimits(space.key, name, {
        capacity: null,
        rates: null,
        concurrency: null,
        lanes: null,
      });
      return reply.code(204).send();
    },
  );

  // Force-release: the request ends as `revoked`; its client is told, with the reason.
  app.post<{ Params: { ns: string; id: string }; Body: unknown }>(
    `${ADMIN_PREFIX}/namespaces/:ns/requests/:id/revoke`,
    { onRequest: guard },
    async (req, reply) => {
      const space = namespace(engine, req.params.ns, reply);
      if (!(space instanceof Namespace)) return space;
      const body = req.body as { reason?: unknown } | undefined;
      const reason = body?.reason;
      if (typeof reason !== "string" || reason.trim() === "" || reason.length > 500) {
        return sendProblem(
          reply,
          problem(
            400,
            "invalid_request",
            'send {"reason": "..."}: 1 to 500 characters saying why, which the holder is told',
            "reason",
          ),
        );
      }
      const snap = backend.revoke(space.key, req.params.id, reason);
      if (snap === undefined) {
        return sendProblem(
          reply,
          problem(
            404,
            "not_found",
            `request ${JSON.stringify(req.params.id)} is not live in this namespace (unknown, or already ended)`,
            "id",
          ),
        );
      }
      return snap;
    },
  );
}
/** A namespace's resources, busiest first: `limit` of them from `offset`, and how many in all. */
export function namespaceView(space: Namespace, offset: number, limit: number) {
  const all = [...space.resources.values()].sort(
    (a, b) => b.line.size - a.line.size || b.used - a.used || cmp(a.name, b.name),
  );
  return {
    total: all.length,
    resources: all.slice(offset, offset + limit).map((r) => ({
      name: r.name,
      capacity: r.capacity,
      used: r.used,
      active: r.holders.size,
      queued: r.line.size,
    })),
  };
}

/** A resource with its holders and its line (the first 1,000 of each). */
export function resourceDetail(space: Namespace, resource: Resource, now: number) {
  const holders = [];
  for (const h of resource.holders) {
    if (holders.length >= MAX_LISTED) break;
    holders.push({
      ...who(h),
      fencingToken: h.fencingToken,
      heldMs: Math.max(0, now - h.grantedAt),
      expiresInMs: Math.max(0, h.expiresAt - now),
    });
  }
  const line = [];
  for (const w of resource.line) {
    if (line.length >= MAX_LISTED) break;
    line.push({ ...who(w), waitedMs: Math.max(0, now - w.createdAt), away: w.session.away });
  }
  return {
    name: resource.name,
    capacity: resource.capacity,
    used: resource.used,
    heldBack: resource.heldBack,
    active: resource.holders.size,
    queued: resource.line.size,
    holders,
    line,
    // Every grant after this answer has a larger token (tokens count per namespace): what a
    // checker needs to tell grants before a capacity change from grants after it.
    lastToken: space.token,
    // An operator's limits: the capacity it set (null: the requests' own), and its rate limits
    // with what each has counted in its window now (`fullUntil`: counted as full until then,
    // after a restart).
    limit: space.limits.get(resource.name) ?? null,
    concurrency: space.concurrency.get(resource.name) ?? null,
    // Ended holders whose units are held back (they count against `concurrency` too).
    heldBackHolders: resource.heldBackCount,
    rates: rateView(resource, now),
    // The operator's lanes (null: none set), and per lane what waits and holds (null: no lanes).
    laneConfig: space.lanes.get(resource.name) ?? null,
    lanes: resource.line instanceof Lanes ? laneView(resource.line) : null,
  };
}

function rateView(resource: Resource, now: number) {
  const usage = resource.rate?.usage(now) ?? [];
  return (resource.rate?.specs ?? []).map((spec, i) => ({ ...spec, ...usage[i] }));
}

function who(r: Request) {
  return {
    id: r.id,
    session: r.session.id ?? null,
    address: r.session.address ?? null,
    load: r.load,
    priority: r.priority,
    lane: r.lane,
  };
}

function summary(space: Namespace) {
  let queued = 0;
  let active = 0;
  for (const r of space.resources.values()) {
    queued += r.line.size;
    active += r.holders.size;
  }
  return { resources: space.resources.size, active, queued };
}

/**
 * The namespace an admin names by its id, or by a prefix of at least 8 characters that only it
 * has (the metrics' `namespace` label is one); else the problem answered.
 */
function namespace(engine: Engine, id: string, reply: FastifyReply): Namespace | FastifyReply {
  const exact = engine.findNamespace(id);
  if (exact) return exact;
  const matches =
    id.length >= 8 ? [...engine.namespaceList()].filter((n) => n.key.startsWith(id)) : [];
  if (matches.length === 1) return matches[0]!;
  return sendProblem(
    reply,
    problem(
      404,
      "not_found",
      matches.length > 1
        ? `${JSON.stringify(id)} is the start of several namespace ids: give more of it`
        : `no namespace ${JSON.stringify(id)} has anything live: list them with GET ${ADMIN_PREFIX}/namespaces`,
      "namespace",
    ),
  );
}

function count(raw: string | undefined, fallback: number): number | undefined {
  if (raw === undefined) return fallback;
  return /^\d{1,9}$/.test(raw) ? Number(raw) : undefined;
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
