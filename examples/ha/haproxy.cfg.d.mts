// Types of haproxy.cfg.mjs (plain Node ESM), for the test and for editors.

export interface HaproxyOptions {
  /** The frontend's port: clients' `baseUrl` is `http://<bind>:<port>`. */
  port: number;
  /** The frontend's address. Default 127.0.0.1. */
  bind?: string;
  /** The replicas; `name` defaults to `replica1`, `replica2`, …, `host` to 127.0.0.1. */
  servers: ReadonlyArray<{ name?: string; host?: string; port: number }>;
  /** Also serve HAProxy's stats page on this port (`/`, and `/;csv`). */
  statsPort?: number;
  /** ms between two health checks of a server. Default 100. */
  checkInterval?: number;
}

export function haproxyConfig(options: HaproxyOptions): string;
