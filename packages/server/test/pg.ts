import { randomBytes } from "node:crypto";
import pg from "pg";

/**
 * The PostgreSQL the replica tests use: the machine's (CI starts it), or RATEQUEUE_TEST_PG.
 * Where none answers, the tests that need it are skipped with a warning — unless
 * RATEQUEUE_REQUIRE_PG is set (CI sets it), which makes that a failure.
 */
export const PG_URL = process.env.RATEQUEUE_TEST_PG ?? "postgres://postgres@127.0.0.1:5432/test";

export async function pgAvailable(): Promise<boolean> {
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.end();
    return true;
  } catch (error) {
    if (process.env.RATEQUEUE_REQUIRE_PG)
      throw new Error(`RATEQUEUE_REQUIRE_PG is set but PostgreSQL at ${PG_URL} does not answer`, {
        cause: error,
      });
    console.warn(
      `[replica tests] skipped: no PostgreSQL at ${PG_URL} (${(error as Error).message})`,
    );
    return false;
  }
}

/** A fresh schema name; `dropSchema` removes it. */
export function schemaName(purpose: string): string {
  return `rq_${purpose}_${randomBytes(4).toString("hex")}`;
}

/** A plain connection for a test to look at (or get in the way of) what the replicas do. */
export async function connectPg(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: PG_URL });
  client.on("error", () => {});
  await client.connect();
  return client;
}

export async function dropSchema(schema: string): Promise<void> {
  const client = await connectPg();
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await client.end();
  }
}
