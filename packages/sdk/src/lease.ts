import type { Grant, LeaseLostError, ProtocolClient } from "@ratequeue/core";

/** How long after the grant the lease opens its hold poll, in ms (see the constructor). */
const HOLD_DELAY = 100;

/**
 * A held slot of a resource. Release it when done — `await using` and the callback form of
 * `acquire` do it for you, on return and on throw.
 *
 * Holding is kept alive by an open long-poll to the server (no timers, no heartbeats); if the
 * lease ends early (it expired, or the server dropped it), `signal` aborts with `LeaseLostError`.
 *
 * @example
 * ```ts
 * await using lease = await ratequeue.acquire("invoice-7");
 * await store.write(data, { fence: lease.fencingToken, signal: lease.signal });
 * ```
 */
export class Lease implements AsyncDisposable {
  /** The resource's name. */
  readonly name: string;
  /** The request's id on the server. */
  readonly id: string;
  /** Strictly greater than every earlier grant's on this resource: pass it to the store you protect. */
  readonly fencingToken: number;
  /** Aborts (with `LeaseLostError`) if the lease is lost while held. Not aborted by `release()`. */
  readonly signal: AbortSignal;

  readonly #client: ProtocolClient;
  readonly #grant: Grant;
  readonly #lost = new AbortController();
  readonly #holding = new AbortController();
  #released: Promise<void> | undefined;
  #startHold: ReturnType<typeof setTimeout> | undefined;

  /** Made by `acquire()`; starts the poll that keeps the lease alive. */
  constructor(client: ProtocolClient, grant: Grant) {
    this.name = grant.name;
    this.id = grant.id;
    this.fencingToken = grant.fencingToken;
    this.#grant = grant;
    this.signal = this.#lost.signal;
    this.#client = client;
    // The grant's answer gives this client the server's repoll grace (4 s by default) to poll
    // again, and the server watches the connection that carried it, so a process that dies now
    // is still dropped within 150 ms. Opening the hold poll a moment later (well inside that
    // grace) lets a short critical section finish with two round trips instead of three.
    this.#startHold = setTimeout(
      () => {
        this.#startHold = undefined;
        client.hold(grant, this.#holding.signal).then(
          (end) => {
            if (end.state === "lost" && this.#released === undefined) this.#lose(end.error);
          },
          () => {}, // stopped by release()
        );
      },
      Math.min(HOLD_DELAY, grant.expiresIn / 2, (grant.pollWithin ?? Number.POSITIVE_INFINITY) / 6),
    );
  }

  /**
   * Releases the slot; the next in line is served at once. Idempotent: every call returns the
   * same promise. Rejects with `ServiceUnavailableError` only if the server could not be told
   * (it then drops the lease on its own once it sees this client's poll closed).
   */
  release(): Promise<void> {
    clearTimeout(this.#startHold);
    this.#released ??= this.#client.releaseLease(this.#grant).then(
      (end) => {
        // Released: the server answers the hold poll with `released`, and its loop ends by
        // itself (aborting it would destroy a keep-alive connection on every release). Lost
        // before this release, unnoticed by the hold poll so far: stop it, and say so.
        if (end.state === "released") return;
        this.#holding.abort();
        this.#lose(end.error);
      },
      (error: unknown) => {
        // Not confirmed: stop holding, so the server sees our poll close and drops the lease.
        this.#holding.abort();
        throw error;
      },
    );
    return this.#released;
  }

  #lose(error: LeaseLostError): void {
    if (!this.#lost.signal.aborted) this.#lost.abort(error);
  }

  /** `await using lease = ...` releases at the end of the block. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }
}
