import type { Problem, ProblemCode } from "@ratequeue/core";
import type { FastifyReply } from "fastify";

const TITLES: Record<ProblemCode, string> = {
  invalid_request: "Invalid request",
  unauthorized: "Unauthorized",
  not_found: "Not found",
  request_conflict: "Request id already used",
  capacity_mismatch: "Capacity mismatch",
  queue_full: "Queue full",
  payload_too_large: "Payload too large",
  unsupported_media_type: "Unsupported media type",
  shutting_down: "Shutting down",
  internal: "Internal error",
};

/** Builds an RFC 9457 problem; `type` is a stable URN per code (see docs/protocol.md). */
export function problem(
  status: number,
  code: ProblemCode,
  detail: string,
  field?: string,
): Problem {
  const p: Problem = {
    type: `urn:ratequeue:problem:${code}`,
    title: TITLES[code],
    status,
    detail,
    code,
  };
  if (field !== undefined) p.field = field;
  return p;
}

export function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  return reply.code(p.status).type("application/problem+json").send(p);
}
