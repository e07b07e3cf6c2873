import type { FastifyBaseLogger } from "fastify";
import type { EngineObserver, Request } from "./engine.js";

/**
 * The engine's grants and ends, counted (`next`: the metrics) and logged: a line per grant,
 * release and end at `debug`; a holder dropped (its client went away) or expired at `warn`; a
 * waiter dropped at `info`. Each line names the request, its session, resource and fencing token,
 * and the namespace by the first characters of its id — never an API key.
 */
export function withLifecycleLogs(next: EngineObserver, log: FastifyBaseLogger): EngineObserver {
  const debug = logs(log, "debug");
  const info = logs(log, "info");
  const warn = logs(log, "warn");
  if (!warn) return next; // nothing here is logged above warn: no cost
  return {
    granted(req, now) {
      next.granted(req, now);
      if (debug)
        log.debug({ event: "grant", ...fields(req), waitedMs: now - req.createdAt }, "granted");
    },
    ended(req, was, now) {
      next.ended(req, was, now);
      const lost =
        was === "active" &&
        (req.state === "dropped" || req.state === "expired" || req.state === "revoked");
      const level = lost ? "warn" : req.state === "dropped" ? "info" : "debug";
      if (level === "debug" ? !debug : level === "info" ? !info : false) return;
      const held = was === "active" ? { heldMs: now - req.grantedAt } : {};
      const why = req.reason === undefined ? {} : { reason: req.reason };
      log[level](
        { event: "end", state: req.state, was, ...fields(req), ...held, ...why },
        lost
          ? `a holder's lease ended as ${req.state}${req.state === "dropped" ? " (its client went away)" : ""}`
          : req.state,
      );
    },
  };
}

const RANK: Record<string, number> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
};

/** Whether `log` writes lines of `level` (Fastify's logger is silent, or pino at its level). */
export function logs(log: FastifyBaseLogger, level: keyof typeof RANK): boolean {
  return RANK[level]! >= (RANK[log.level] ?? Number.POSITIVE_INFINITY);
}

function fields(req: Request) {
  return {
    requestId: req.id,
    session: req.session.id,
    resource: req.name,
    namespace: req.ns.key.slice(0, 12),
    fencingToken: req.fencingToken,
  };
}
