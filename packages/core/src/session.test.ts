/**
 * The HTTP session against a server that msw plays: refusals the real server of this version
 * never makes (an older server's smaller body limit, a proxy in front of it).
 */
import { delay, HttpResponse, http } from "msw";
import { setupServer } from "msw/node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ProtocolClient } from "./client.js";
import { LeaseLostError, RateQueueError } from "./errors.js";
import type { ClientMessage, ServerMessage } from "./protocol.js";
import { fetchTransport } from "./transport.js";

const BASE = "http://ratequeue.test";
/** Long enough that no stall of a loaded machine costs the test's lease. */
const TERMS = { grace: 10_000, ping: 2_500, recovery: 0 };
/** How many refusals prove the client retries what will never pass. */
const LOOPING = 20;

/**
 * A server on `POST /v1/sessions/{id}` that refuses every exchange carrying an acquire of
 * `refuse` — 413 by default, as the server does past its body limit —, queues the acquires of
 * `queued`, and grants every other acquire at once. After a refusal, it grants what it queued.
 */
function fakeServer(
  msw: ReturnType<typeof setupServer>,
  { refuse, queued = "", status = 413 }: { refuse: string; queued?: string; status?: number },
) {
  const sent: ClientMessage[][] = [];
  const state = { refused: 0, fencingToken: 0 };
  const waiting: Array<{ id: string; resource: string }> = [];
  const events: ServerMessage[] = [];
  let onExchange = () => {};
  /** Resolves once `check` holds after an exchange. */
  const until = (check: () => boolean) =>
    new Promise<void>((resolve) => {
      const previous = onExchange;
      onExchange = () => {
        previous();
        if (check()) resolve();
      };
    });
  msw.use(
    http.post(`${BASE}/v1/sessions/:id`, async ({ request, params }) => {
      const messages = (await request.json()) as ClientMessage[];
      const query = new URL(request.url).searchParams;
      const wait = Number(query.get("wait"));
      const after = Number(query.get("after"));
      sent.push(messages);
      queueMicrotask(onExchange);
      if (messages.some((m) => m.t === "acquire" && m.resource === refuse)) {
        state.refused++;
        for (const { id, resource } of waiting.splice(0)) {
          const grant = { ...snapshot(id, resource), state: "active" as const };
          events.push({ ...grant, seq: events.length + 1, fencingToken: ++state.fencingToken });
        }
        return HttpResponse.json(
          status === 413
            ? {
                type: "about:blank",
                title: "Payload too large",
                status,
                code: "payload_too_large",
                detail: "the body is larger than the server accepts",
              }
            : { type: "about:blank", title: "Refused", status, code: "refused", detail: "no" },
          { status, headers: { "content-type": "application/problem+json" } },
        );
      }
      if (messages.length === 0 && wait > 0) await delay(wait); // a long-poll with no news
      const out: ServerMessage[] = messages.map((m) => {
        if (m.t === "release") return { ...snapshot(m.id, "?"), state: "released" };
        if (m.t !== "acquire") return { t: "pong", n: m.t === "ping" ? m.n : 0 };
        if (m.resource !== queued)
          return {
            ...snapshot(m.id, m.resource),
            state: "active",
            fencingToken: ++state.fencingToken,
          };
        waiting.push(m);
        return { ...snapshot(m.id, m.resource), state: "queued" };
      });
      return HttpResponse.json({
        session: String(params.id),
        known: true,
        run: "run-1",
        held: messages.length === 0 ? wait : 0,
        ...TERMS,
        messages: [...out, ...events.slice(after)],
      });
    }),
  );
  const carrying = (pick: (m: ClientMessage) => boolean) =>
    sent.filter((messages) => messages.some(pick)).length;
  return { sent, state, until, carrying };
}

function snapshot(id: string, resource: string) {
  return { t: "state" as const, id, resource, load: 1, priority: 0, capacity: 1 };
}

/** Settles with what `promise` settles with, or with "retrying" once the server refused `LOOPING` times. */
function settledOrLooping(
  promise: Promise<unknown>,
  server: ReturnType<typeof fakeServer>,
): Promise<unknown> {
  return Promise.race([
    promise.then(
      (value) => ({ value }),
      (error: unknown) => error,
    ),
    server.until(() => server.state.refused >= LOOPING).then(() => "retrying"),
  ]);
}

describe("HTTP session: an exchange the server refuses for good", () => {
  const msw = setupServer();
  beforeAll(() => msw.listen({ onUnhandledRequest: "error" }));
  afterEach(() => msw.resetHandlers());
  afterAll(() => msw.close());

  const client = () =>
    new ProtocolClient({
      baseUrl: BASE,
      apiKey: "key",
      transport: fetchTransport(),
      session: "http",
      retry: { retries: 1_000, minDelay: 1, maxDelay: 20 },
    });

  // A new client against an older server whose body limit is smaller: the batch would be refused
  // as often as it is sent (it was retried for ever).
  it("a 413 to a session exchange: the acquire rejects, saying so, and the batch is not sent again", async () => {
    const server = fakeServer(msw, { refuse: "r" });
    const rq = client();
    const outcome = await settledOrLooping(rq.acquire({ name: "r" }), server);
    expect(outcome).toBeInstanceOf(RateQueueError);
    expect(outcome).toMatchObject({ status: 413, code: "payload_too_large" });
    expect((outcome as Error).message).toMatch(/HTTP 413/);
    expect((outcome as Error).message).toMatch(/too large .*: upgrade the server/);
    expect(server.state.refused).toBe(1);
    await rq.close();
    expect(server.carrying((m) => m.t === "acquire")).toBe(1);
  });

  it("a 413 while a lease is held: its holder hears of it by then, and the server is told to release it", async () => {
    const server = fakeServer(msw, { refuse: "too-large" });
    const rq = client();
    const lease = await rq.acquire({ name: "held" });
    const released = server.until(
      () => server.carrying((m) => m.t === "release" && m.id === lease.id) > 0,
    );
    const outcome = await settledOrLooping(rq.acquire({ name: "too-large" }), server);
    expect(outcome).toBeInstanceOf(RateQueueError);
    expect(outcome).toMatchObject({ status: 413 });
    expect(lease.lost.aborted).toBe(true);
    expect(lease.lost.reason).toBeInstanceOf(LeaseLostError);
    await released;
    expect(server.state.refused).toBe(1);
    await rq.close();
  });

  // The requests the failed session left queued on the server are the server's until they end:
  // one granted later must not stay held for a session whose client forgot it.
  it("a 413 while another request waits in line: granted later, it is released at once", async () => {
    const server = fakeServer(msw, { refuse: "too-large", queued: "line" });
    const rq = client();
    const waiting = rq.acquire({ name: "line" });
    waiting.catch(() => {});
    await server.until(() => server.carrying((m) => m.t === "acquire") > 0);
    const outcome = await settledOrLooping(rq.acquire({ name: "too-large" }), server);
    expect(outcome).toMatchObject({ status: 413 });
    await expect(waiting).rejects.toMatchObject({ status: 413 });
    const line = server.sent.flat().find((m) => m.t === "acquire" && m.resource === "line");
    const lineId = line?.t === "acquire" ? line.id : undefined;
    // The session is back: the server grants what it had queued, and this acquire.
    await rq.releaseLease(await rq.acquire({ name: "next" }));
    expect(server.carrying((m) => m.t === "release" && m.id === lineId)).toBe(1);
    await rq.close();
  });

  // As the retry rule has it: only 408, 429 and 5xx may pass next time (they are still retried).
  it("a 404 (a proxy in the middle of a rollout, say) is not final: the exchange is sent again", async () => {
    const server = fakeServer(msw, { refuse: "r", status: 404 });
    const rq = client();
    const acquired = rq.acquire({ name: "r" });
    acquired.catch(() => {});
    const outcome = await Promise.race([
      acquired.then(
        () => "settled",
        () => "settled",
      ),
      server.until(() => server.state.refused >= 3).then(() => "sent again"),
    ]);
    expect(outcome).toBe("sent again");
    await rq.close();
  });

  it.each([400, 415, 422])(
    "a %i to a session exchange: the acquire rejects with it, the batch is not sent again",
    async (status) => {
      const server = fakeServer(msw, { refuse: "r", status });
      const rq = client();
      const outcome = await settledOrLooping(rq.acquire({ name: "r" }), server);
      expect(outcome).toBeInstanceOf(RateQueueError);
      expect(outcome).toMatchObject({ status, code: "refused" });
      expect((outcome as Error).message).toMatch(`(HTTP ${status}): no`);
      expect(server.state.refused).toBe(1);
      await rq.close();
    },
  );
});
