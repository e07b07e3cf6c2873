import { type RunningServer, startServer } from "@ratequeue/server";
import { afterEach, describe, expect, it } from "vitest";
import { dropSchema, PG_URL, pgAvailable, schemaName } from "../../server/test/pg.js";
import { ENTRIES, eventually, resourceState } from "./helpers.js";

const available = await pgAvailable();
const GRACE = 1_500;

/** Replicas on PostgreSQL as the SDK sees them: a list of URLs, of which one serves. */
describe.skipIf(!available)("replicas on PostgreSQL, given as a list of URLs", () => {
  const servers: RunningServer[] = [];
  const schemas: string[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0).reverse()) await s.close();
    for (const s of schemas.splice(0)) await dropSchema(s);
  });
  const replicas = async (purpose: string) => {
    const pgSchema = schemaName(purpose);
    schemas.push(pgSchema);
    const start = () => startServer({ port: 0, store: PG_URL, pgSchema, grace: GRACE });
    const a = await start();
    const b = await start();
    servers.push(a, b);
    return [a, b] as const;
  };

  for (const { transport, sdk, session } of ENTRIES) {
    describe(transport, () => {
      it("a lease held through a clean stop of its replica is kept by the next, and released there", async () => {
        const [a, b] = await replicas("sdk_stop");
        const roleOf = async (url: string) =>
          (await fetch(`${url}/v1/replica`).then(
            (r) => r.status,
            () => 0,
          )) === 200;
        expect(await roleOf(a.url)).toBe(true);
        // The standby first: the client finds the one that serves.
        const rq = sdk.createRateQueue({ apiKey: "test-key", baseUrl: [b.url, a.url], session });
        try {
          const lease = await rq.acquire("billing");
          const token = lease.fencingToken;
          await a.close(); // SIGTERM's path: polls answered, last commit, connections closed
          await eventually(() => roleOf(b.url), 10_000);
          // Longer than grace after the stop: the lease would be gone by now if the client had
          // been told the server kept nothing, or had not reached the new leader.
          await new Promise((resolve) => setTimeout(resolve, GRACE + 500));
          expect(lease.signal.aborted).toBe(false);
          expect((await resourceState(b, "billing")).holders?.[0]?.fencingToken).toBe(token);
          await lease.release();
          expect((await resourceState(b, "billing")).active).toBe(0);
          const next = await rq.acquire("billing");
          expect(next.fencingToken).toBeGreaterThan(token);
          await next.release();
        } finally {
          await rq.close?.();
        }
      });
    });
  }
});
