import { sleep } from "../shared/concurrency.js";

export interface User {
  id: string;
  name?: string;
  email?: string;
  /** How many updates this user has had: a lost update shows as a version that fell short. */
  version: number;
  /** The fencing token of the lease that wrote this version. */
  writtenWith: number;
}

/** A write carried a fencing token older than one the store has already accepted. */
export class StaleWriteError extends Error {
  override name = "StaleWriteError";
}

/**
 * A users table with the latency of a real database (each read and write takes a few ms and
 * yields to other requests), so a read-modify-write that is not serialised loses updates. Writes
 * are fenced: one whose token is lower than the last accepted for that user is refused — what a
 * store does with `lease.fencingToken` (e.g. `UPDATE … WHERE written_with < $token`).
 */
export class UserStore {
  readonly #rows = new Map<string, User>();
  constructor(readonly latencyMs = 2) {}

  async get(id: string): Promise<User | undefined> {
    await sleep(this.latencyMs);
    const row = this.#rows.get(id);
    return row && { ...row };
  }

  async put(user: User, fencingToken?: number): Promise<void> {
    await sleep(this.latencyMs);
    const current = this.#rows.get(user.id);
    if (fencingToken !== undefined && current && fencingToken < current.writtenWith) {
      throw new StaleWriteError(
        `user ${user.id}: token ${fencingToken} is older than ${current.writtenWith}`,
      );
    }
    this.#rows.set(user.id, { ...user, writtenWith: fencingToken ?? 0 });
  }
}
