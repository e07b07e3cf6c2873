import type { AcquireBody, RequestSnapshot, RequestState, ResourceSnapshot } from "@ratequeue/core";
import type { Backend, PollOptions } from "./backend.js";
import {
  type Clock,
  Engine,
  type EngineConfig,
  type Refusal,
  type Request,
  saved,
} from "./engine.js";
import type { Store } from "./store.js";

/** An open long-poll. */
interface Poll {
  req: Request;
  resolve: (snap: RequestSnapshot) => void;
  timer: ReturnType<typeof setTimeout>;
  signal: AbortSignal;
  onAbort: () => void;
  connection: AbortSignal | undefined;
}

/** The connection that carried a live request's last answered poll, watched until the next poll. */
interface LastConnection {
  signal: AbortSignal;
  onClose: () => void;
}

/**
 * The single-process backend: the pure engine, one timer for its next deadline, and the open
 * long-polls, which it answers the moment their request changes.
 */
export class LocalBackend implements Backend {
  readonly engine: Engine;
  private readonly polls = new Map<Request, Set<Poll>>();
  private readonly lastConnection = new Map<Request, LastConnection>();
  /** Requests the engine reported changed during the current operation. */
  private changed: Request[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private closed = false;

  constructor(
    config: EngineConfig,
    private readonly clock: Clock = Date,
    /** Where live requests are kept across restarts; none keeps them in memory only. */
    private readonly store?: Store,
    /** After a restart, how long restored clients have to poll again, in ms. */
    recoveryWindow = 0,
  ) {
    this.engine = new Engine(config, clock, (req) => {
      if (this.polls.has(req)) this.changed.push(req);
      if (req.resource === undefined) {
        this.unwatch(req); // ended: nothing to hasten
        this.store?.remove(req.ns.key, req.id);
      } else {
        this.store?.save(saved(req)); // granted
      }
    });
    if (store) {
      const { requests, tokenFloor } = store.load();
      this.engine.restore(requests, tokenFloor, recoveryWindow);
      this.settle();
    }
  }

  async acquire(
    ns: string,
    id: string,
    body: AcquireBody,
    poll: PollOptions,
  ): Promise<RequestSnapshot | Refusal> {
    const result = this.engine.acquire(ns, id, body);
    if (result.ok && result.created && result.request.resource !== undefined) {
      this.store?.save(saved(result.request));
    }
    this.settle();
    if (!result.ok) return result;
    return this.wait(result.request, "queued", poll);
  }

  async poll(ns: string, id: string, known: RequestState | undefined, poll: PollOptions) {
    const req = this.engine.get(ns, id);
    return req === undefined ? undefined : this.wait(req, known, poll);
  }

  async release(ns: string, id: string): Promise<RequestSnapshot | undefined> {
    const req = this.engine.release(ns, id);
    this.settle();
    return req === undefined ? undefined : this.engine.snapshot(req);
  }

  async resource(ns: string, name: string): Promise<ResourceSnapshot | undefined> {
    return this.engine.resource(ns, name);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const set of this.polls.values()) for (const p of set) this.answer(p, true);
    for (const req of [...this.lastConnection.keys()]) this.unwatch(req);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.store?.close();
  }

  /**
   * Holds a poll on `req` while its state is `known`. Without `known` it is a plain read, which
   * does not count as a sign of life (a dashboard looking must not keep a dead client's lease).
   */
  private wait(
    req: Request,
    known: RequestState | undefined,
    poll: PollOptions,
  ): Promise<RequestSnapshot> | RequestSnapshot {
    if (known === undefined) return this.engine.snapshot(req);
    this.unwatch(req);
    if (req.state !== known || poll.wait <= 0 || this.closed || poll.signal.aborted) {
      // An answered poll still proves the client alive: restart its repoll grace.
      this.engine.answered(req);
      this.watch(req, poll.connection);
      this.settle();
      return this.engine.snapshot(req);
    }
    this.engine.attach(req);
    this.settle();
    return new Promise<RequestSnapshot>((resolve) => {
      const p: Poll = {
        req,
        resolve,
        signal: poll.signal,
        timer: setTimeout(() => this.answer(p, true), poll.wait),
        onAbort: () => this.answer(p, false),
        connection: poll.connection,
      };
      poll.signal.addEventListener("abort", p.onAbort, { once: true });
      const set = this.polls.get(req);
      if (set) set.add(p);
      else this.polls.set(req, new Set([p]));
    });
  }

  /** Ends a poll: `answered` by the server, or closed by the client. */
  private answer(p: Poll, answered: boolean): void {
    const set = this.polls.get(p.req);
    if (set === undefined || !set.delete(p)) return;
    if (set.size === 0) this.polls.delete(p.req);
    clearTimeout(p.timer);
    p.signal.removeEventListener("abort", p.onAbort);
    this.engine.detach(p.req, answered);
    if (answered && p.req.pollers === 0) this.watch(p.req, p.connection);
    p.resolve(this.engine.snapshot(p.req));
    this.settle();
  }

  /** Until its next poll, a live request is hastened if the connection of its last answer closes. */
  private watch(req: Request, connection: AbortSignal | undefined): void {
    if (connection === undefined || req.resource === undefined || this.closed) return;
    if (connection.aborted) {
      this.engine.hasten(req);
      return;
    }
    const onClose = () => {
      this.lastConnection.delete(req);
      this.engine.hasten(req);
      this.settle();
    };
    connection.addEventListener("abort", onClose, { once: true });
    this.lastConnection.set(req, { signal: connection, onClose });
  }

  private unwatch(req: Request): void {
    const last = this.lastConnection.get(req);
    if (last === undefined) return;
    this.lastConnection.delete(req);
    last.signal.removeEventListener("abort", last.onClose);
  }

  /** After every engine operation: answer the polls of changed requests, and re-arm the timer. */
  private settle(): void {
    // Before any reply leaves: no client may hear of a grant the store could forget.
    this.store?.commit();
    while (this.changed.length > 0) {
      const changed = this.changed;
      this.changed = [];
      for (const req of changed) {
        const set = this.polls.get(req);
        if (set) for (const p of [...set]) this.answer(p, true);
      }
    }
    this.arm();
  }

  private arm(): void {
    if (this.closed) return;
    const next = this.engine.nextDeadline();
    if (next === undefined || next >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = next;
    this.timer = setTimeout(this.fire, Math.max(1, next - this.clock.now()));
    this.timer.unref?.();
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    this.engine.advance();
    this.settle();
  };
}
