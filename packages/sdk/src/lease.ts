import type { Grant, LeaseLostError, ProtocolClient } from "@ratequeue/core";

/**
 * A held slot of a resource. Release it when done — `await using` and the callback form of
 * `acquire` do it for you, on return and on throw.
 *
 * Holding needs no timer of yours: the client's session (one connection for all its calls)
 * keeps the lease alive, and `signal` aborts with `LeaseLostError` the moment the lease may no
 * longer be yours — it expired, the server ended it, or the server could not be heard from for
 * its `grace` (docs/protocol.md, "Liveness").
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
  #released: Promise<void> | undefined;

  /** Made by `acquire()`. */
  constructor(client: ProtocolClient, grant: Grant) {
    this.name = grant.name;
    this.id = grant.id;
    this.fencingToken = grant.fencingToken;
    this.#grant = grant;
    this.#client = client;
    this.signal = this.#lost.signal;
    // The session's signal also aborts when a release is refused for a lost lease; this one
    // stops following it once released, so a release never reads as a loss.
    const onLost = () => {
      if (this.#released === undefined) this.#lose(grant.lost.reason as LeaseLostError);
    };
    if (grant.lost.aborted) onLost();
    else grant.lost.addEventListener("abort", onLost, { once: true });
  }

  /**
   * Releases the slot; the next in line is served at once. Idempotent: every call returns the
   * same promise. Rejects with `ServiceUnavailableError` only if the server could not be told
   * (it is told as soon as it can be reached).
   */
  release(): Promise<void> {
    if (this.#released === undefined && this.signal.aborted) {
      // Already lost: nothing to wait for. The session still tells the server when it can.
      this.#released = Promise.resolve();
      this.#client.releaseLease(this.#grant).catch(() => {});
    }
    this.#released ??= this.#client.releaseLease(this.#grant).then((end) => {
      // Lost before this release, unnoticed so far: say so.
      if (end.state === "lost") this.#lose(end.error);
    });
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
