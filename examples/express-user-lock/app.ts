/**
 * An Express app whose `PUT /users/:id` is a read-modify-write of the user's row, serialised per
 * user by a RateQueue lock: concurrent updates of one user queue (none is lost), while updates
 * of different users run side by side. The lock also covers requests served by other processes
 * or machines that talk to the same RateQueue server.
 */
import {
  AcquireTimeoutError,
  LeaseLostError,
  type RateQueue,
  RateQueueError,
  ratequeue,
  ValidationError,
} from "@ratequeue/sdk";
import express, { type ErrorRequestHandler, type Express } from "express";
import type { ConcurrencyTracker } from "../shared/concurrency.js";
import { StaleWriteError, type User, UserStore } from "./store.js";

export interface AppOptions {
  /** The RateQueue client. Default: `ratequeue`, configured from RATEQUEUE_URL / RATEQUEUE_API_KEY. */
  rq?: RateQueue;
  store?: UserStore;
  /** How long a request waits in line for its user's lock before answering 503, ms. */
  waitTimeout?: number;
  /** Observes the critical sections (the tests count overlaps with it). */
  tracker?: ConcurrencyTracker;
}

/** The fields a client may change. */
export type UserPatch = Pick<User, "name" | "email">;

/**
 * The critical section: read the row, change it, write it back with the lease's fencing token.
 * Without the lock around it, two concurrent calls read the same version and one update is lost.
 */
export async function updateUser(
  store: UserStore,
  id: string,
  patch: UserPatch,
  fencingToken?: number,
): Promise<User> {
  const current = (await store.get(id)) ?? { id, version: 0, writtenWith: 0 };
  const next: User = { ...current, ...patch, version: current.version + 1 };
  await store.put(next, fencingToken);
  return next;
}

export function createApp(options: AppOptions = {}): Express {
  const { rq = ratequeue, store = new UserStore(), waitTimeout = 10_000, tracker } = options;
  const app = express();
  app.use(express.json());

  app.get("/users/:id", async (req, res) => {
    const user = await store.get(req.params.id);
    if (user) res.json(user);
    else res.status(404).json({ error: "not_found" });
  });

  app.put("/users/:id", async (req, res) => {
    const { id } = req.params;
    const { name, email } = (req.body ?? {}) as Partial<UserPatch>;
    const patch: UserPatch = {};
    if (typeof name === "string") patch.name = name;
    if (typeof email === "string") patch.email = email;
    const user = await rq.acquire(`user-update-${id}`, { timeout: waitTimeout }, async (lease) => {
      tracker?.enter(id);
      try {
        return await updateUser(store, id, patch, lease.fencingToken);
      } finally {
        tracker?.leave(id);
      }
    });
    res.json(user);
  });

  // Express 5 passes a rejected handler's error here.
  const errors: ErrorRequestHandler = (error, _req, res, next) => {
    if (res.headersSent) return next(error);
    if (error instanceof AcquireTimeoutError) {
      // Too many updates of this user queued ahead: the client may try again shortly.
      res.status(503).set("retry-after", "1").json({ error: error.code });
    } else if (error instanceof LeaseLostError || error instanceof StaleWriteError) {
      // The lock was lost while updating (the write was refused if someone else got it since).
      res.status(409).json({ error: "conflict", detail: error.message });
    } else if (error instanceof ValidationError) {
      // e.g. an id that makes the lock name longer than 256 bytes.
      res.status(400).json({ error: error.code, field: error.field, detail: error.message });
    } else if (error instanceof RateQueueError) {
      res.status(503).json({ error: error.code }); // the lock service is unreachable, or refused
    } else {
      next(error);
    }
  };
  app.use(errors);
  return app;
}
