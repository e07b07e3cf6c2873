/**
 * The locks RateQueue is compared with, behind one small interface: a worker takes `key` and
 * gets back the function that releases it. Every peer runs with its documented defaults; where
 * one needs a TTL, its README's example value is used (said in `settings`).
 */
import { createRequire } from "node:module";
import { Etcd3 } from "etcd3";
import { Redis } from "ioredis";
import pg from "pg";
import { Mutex } from "redis-semaphore";
import { undiciTransport } from "../../packages/core/src/node.js";
import { createRateQueue } from "../../packages/sdk/src/node.js";

// redlock 4 is CommonJS without types.
const Redlock = createRequire(import.meta.url)("redlock") as new (
  clients: unknown[],
) => {
  lock(key: string, ttl: number): Promise<{ unlock(): Promise<void> }>;
  quit?: () => Promise<void>;
};

export type Release = () => Promise<void>;
export interface Worker {
  lock(key: string): Promise<Release>;
  close(): Promise<void>;
}
export interface Peer {
  name: string;
  /** Version and settings, for the results' header. */
  settings: string;
  /** A worker: its own connection where the peer needs one (advisory locks are per session). */
  worker(): Promise<Worker>;
  close(): Promise<void>;
}

export const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
export const PG_URL = process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** The name of RateQueue's second entrant: replicas on PostgreSQL (run.ts starts them). */
export const REPLICAS = "RateQueue, 3 replicas on PostgreSQL";

/**
 * RateQueue through one SDK client: the in-memory server at `url`, or with `replicas` the
 * replicas at `url`, a list (the SDK tries them in turn: the leader serves, the others say 503).
 */
export function rateQueuePeer(url: string | string[], connections = 256, replicas = false): Peer {
  const rq = createRateQueue({
    apiKey: "bench",
    baseUrl: url,
    transport: undiciTransport({ connections }),
  });
  return {
    name: replicas ? REPLICAS : "RateQueue",
    settings: replicas
      ? '3 server processes on one PostgreSQL schema (`--store`, made fresh, dropped after): the leader serves, the others answer 503 not_leader; every operation is committed to PostgreSQL (synchronous_commit on) before anything it says leaves, but for a grant to a waiter, which leaves at once marked provisional (docs/operations.md, "Grants before their commit"). SDK defaults, given the three URLs (`baseUrl: [a, b, c]`, in start order: the leader is any of them)'
      : "embedded server (in memory), SDK defaults (one WebSocket session per client)",
    worker: async () => ({
      lock: async (key) => {
        const lease = await rq.acquire(key);
        return () => lease.release();
      },
      close: async () => {},
    }),
    close: async () => {},
  };
}

export function redlockPeer(version: string): Peer {
  const client = new Redis(REDIS_URL);
  const redlock = new Redlock([client]);
  return {
    name: "redlock",
    settings: `redlock ${version}, defaults (retryCount 10, retryDelay 200 ms, jitter 200 ms); TTL 1000 ms (README example); a failed lock() is retried by the caller`,
    worker: async () => ({
      lock: async (key) => {
        for (;;) {
          try {
            const lock = await redlock.lock(key, 1000);
            return () => lock.unlock();
          } catch {
            // LockError after its 10 retries: a caller that must get the lock tries again.
          }
        }
      },
      close: async () => {},
    }),
    close: async () => void (await client.quit()),
  };
}

export function redisSemaphorePeer(version: string): Peer {
  const client = new Redis(REDIS_URL);
  return {
    name: "redis-semaphore Mutex",
    settings: `redis-semaphore ${version}, defaults (lockTimeout 10 s, acquireTimeout 10 s, retryInterval 10 ms, refresh every 8 s); a timed-out acquire is retried by the caller`,
    worker: async () => ({
      lock: async (key) => {
        for (;;) {
          const mutex = new Mutex(client, key);
          try {
            await mutex.acquire();
            return () => mutex.release();
          } catch {
            // acquireTimeout elapsed: try again.
          }
        }
      },
      close: async () => {},
    }),
    close: async () => void (await client.quit()),
  };
}

export function advisoryPeer(version: string): Peer {
  const clients: pg.Client[] = [];
  return {
    name: "PostgreSQL advisory locks",
    settings: `pg ${version}, pg_advisory_lock(hashtext(key)), one connection per worker (session locks)`,
    worker: async () => {
      const client = new pg.Client({ connectionString: PG_URL });
      await client.connect();
      clients.push(client);
      return {
        lock: async (key) => {
          await client.query("SELECT pg_advisory_lock(hashtext($1))", [key]);
          return async () =>
            void (await client.query("SELECT pg_advisory_unlock(hashtext($1))", [key]));
        },
        close: async () => void (await client.end()),
      };
    },
    close: async () => {
      await Promise.allSettled(clients.map((c) => c.end()));
    },
  };
}

export const ETCD_URL = process.env.ETCD_URL ?? "http://127.0.0.1:2379";

export function etcdPeer(version: string): Peer {
  const client = new Etcd3({ hosts: ETCD_URL });
  return {
    name: "etcd lock",
    settings: `etcd 3.4 (Debian's etcd-server, local, one member), etcd3 ${version} client.lock(key), defaults (lease TTL 30 s kept alive); its acquire() fails at once when the lock is held, so the caller retries every 10 ms (redis-semaphore's default interval)`,
    worker: async () => ({
      lock: async (key) => {
        for (;;) {
          const lock = client.lock(key);
          try {
            await lock.acquire();
            return async () => void (await lock.release());
          } catch {
            await new Promise((r) => setTimeout(r, 10));
          }
        }
      },
      close: async () => {},
    }),
    close: async () => client.close(),
  };
}
