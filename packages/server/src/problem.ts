import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { Problem, ProblemCode } from "@ratequeue/core";
import type { FastifyReply } from "fastify";

const TITLES: Record<ProblemCode, string> = {
  invalid_request: "Invalid request",
  unauthorized: "Unauthorized",
  forbidden_host: "Forbidden host",
  admin_key_required: "Admin key required",
  not_found: "Not found",
  request_conflict: "Request id already used",
  capacity_mismatch: "Capacity mismatch",
  queue_full: "Queue full",
  payload_too_large: "Payload too large",
  uri_too_long: "URI too long",
  headers_too_large: "Request header fields too large",
  request_timeout: "Request timeout",
  unsupported_media_type: "Unsupported media type",
  shutting_down: "Shutting down",
  not_leader: "Not the leader",
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

/**
 * Answers on a raw socket, for errors Node's HTTP parser meets before any route runs (a bad
 * request line, oversized headers, a request that takes too long to arrive), then closes it.
 */
export function sendProblemOnSocket(socket: Socket, p: Problem): void {
  if (socket.destroyed) return;
  const body = JSON.stringify(p);
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${p.status} ${STATUS_CODES[p.status]}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}
