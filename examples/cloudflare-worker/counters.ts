/**
 * The counters store the Worker reads and writes (a database behind HTTP, in the test's
 * process): `GET /counters/:key` → `{ value }`, `PUT /counters/:key` `{ value }`. Each read
 * takes a few ms, so unlocked read-modify-writes would interleave. A request is "inside" from
 * its read to its write (`tracker.maxPerKey` is how many ever were at once for one key). A write
 * whose `x-fencing-token` is older than the last accepted for that key is refused (409).
 * `failReads(key)` makes the next read of `key` answer 500 (a store outage mid-request).
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { ConcurrencyTracker, sleep } from "../shared/concurrency.js";

export async function startCountersStore() {
  const values = new Map<string, number>();
  const tokens = new Map<string, number>();
  const failing = new Set<string>();
  const tracker = new ConcurrencyTracker();
  let refused = 0;

  const server = createServer(async (req, res) => {
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    const key = /^\/counters\/([\w-]+)$/.exec(req.url ?? "")?.[1];
    if (key === undefined) return json(404, { error: "not_found" });
    if (req.method === "GET") {
      if (failing.delete(key)) return json(500, { error: "store_unavailable" });
      tracker.enter(key);
      await sleep(3);
      return json(200, { value: values.get(key) ?? 0 });
    }
    if (req.method === "PUT") {
      let body = "";
      for await (const chunk of req) body += chunk;
      tracker.leave(key);
      const token = Number(req.headers["x-fencing-token"]);
      if (!(token > (tokens.get(key) ?? 0))) {
        refused++;
        return json(409, { error: "stale_fencing_token" });
      }
      tokens.set(key, token);
      values.set(key, (JSON.parse(body) as { value: number }).value);
      return json(200, { value: values.get(key) });
    }
    json(405, { error: "method_not_allowed" });
  });
  server.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    value: (key: string) => values.get(key) ?? 0,
    failReads: (key: string) => void failing.add(key),
    tracker,
    get refused() {
      return refused;
    },
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
