import type { Grant, LeaseLostError, ProtocolClient } from "@ratequeue/core";

/**
 * The error `lease.signal` aborts (or would abort) with, if the lease was lost while held, read
 * without making the signal: for the callback form of `acquire`, once it has released the lease.
 */
export let lostWhileHeld: (lease: Lease) => LeaseLostError | undefined;

declare global {
  // What `await using` needs, declared as @types/node does (identical declarations merge), so
  // that apps whose `lib` lacks `esnext.disposable` (edge and browser setups) still compile.
  interface SymbolConstructor {
    readonly asyncDispose: unique symbol;
  }
  interface AsyncDisposable {
    [Symbol.asyncDispose](): PromiseLike<void>;
  }
}

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

  readonly #client: ProtocolClient;
  readonly #grant: Grant;
  /** Made when `signal` is first read: most leases are released without anyone watching. */
  #lost: AbortController | undefined;
  #lostError: LeaseLostError | undefined;
  #released: Promise<void> | undefined;

  // A friend of the class: the callback form of `acquire` (rate-queue.ts) reads the loss without
  // making the signal; `#lostError` stays private to everyone else.
  static {
    lostWhileHeld = (lease) => lease.#lostError;
  }

  /** Made by `acquire()`. */
  constructor(client: ProtocolClient, grant: Grant) {
    this.name = grant.name;
    this.id = grant.id;
    this.fencingToken = grant.fencingToken;
    this.#grant = grant;
    this.#client = client;
  }

  /** Aborts (with `LeaseLostError`) if the lease is lost while held. Not aborted by `release()`. */
  get signal(): AbortSignal {
    if (this.#lost === undefined) {
      this.#lost = new AbortController();
      if (this.#lostError !== undefined) this.#lost.abort(this.#lostError);
      else if (this.#released === undefined) this.#followGrant();
    }
    return this.#lost.signal;
  }

  /**
   * Until released, the lease is lost when the session's grant is. The grant's signal also
   * aborts when a release is refused for a lost lease; the lease stops following it once
   * released, so a release never reads as a loss.
   */
  #followGrant(): void {
    const lost = this.#grant.lost;
    const onLost = () => {
      if (this.#released === undefined) this.#lose(lost.reason as LeaseLostError);
    };
    if (lost.aborted) onLost();
    else lost.addEventListener("abort", onLost, { once: true });
  }

  /**
   * Releases the slot; the next in line is served at once. Idempotent: every call returns the
   * same promise. Rejects with `ServiceUnavailableError` only if the server could not be told
   * (it is told as soon as it can be reached).
   */
  release(): Promise<void> {
    if (this.#released !== undefined) return this.#released;
    const lost = this.#lostError ?? this.#grant.lostError;
    if (lost !== undefined) {
      // Already lost: nothing to wait for. The session still tells the server when it can.
      this.#lose(lost);
      this.#released = Promise.resolve();
      this.#client.releaseLease(this.#grant).catch(() => {});
    } else {
      this.#released = this.#client.releaseLease(this.#grant).then((end) => {
        // Lost before this release, unnoticed so far: say so.
        if (end.state === "lost") this.#lose(end.error);
      });
    }
    return this.#released;
  }

  #lose(error: LeaseLostError): void {
    if (this.#lostError !== undefined) return;
    this.#lostError = error;
    this.#lost?.abort(error);
  }

  /** `await using lease = ...` releases at the end of the block. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }
}
