import { fileURLToPath } from "node:url";
import { configDefaults, defineConfig } from "vitest/config";

// Tests import workspace packages from their sources, not from dist: no build step before a test run.
const src = (path: string) => fileURLToPath(new URL(`./packages/${path}`, import.meta.url));
const alias = [
  { find: /^@ratequeue\/core$/, replacement: src("core/src/index.ts") },
  { find: /^@ratequeue\/core\/node$/, replacement: src("core/src/node.ts") },
  { find: /^@ratequeue\/sdk$/, replacement: src("sdk/src/node.ts") },
  { find: /^@ratequeue\/server$/, replacement: src("server/src/index.ts") },
];

// CI sets TEST_REPORT to a file path to get a JSON report it can count from.
const report = process.env.TEST_REPORT;

// RATEQUEUE_TEST_STORE=postgres://… (or `sqlite`) adds the projects sdk-pg and server-pg (or
// sdk-sqlite and server-sqlite): the same SDK and server test files, each test's servers keeping
// their state in PostgreSQL, a schema of their own (or in a data directory of their own; see
// packages/server/test/helpers.ts). Unset, there are no such projects, and sdk and server run on
// memory as ever; set, sdk and server still run on memory.
const testStore = process.env.RATEQUEUE_TEST_STORE || undefined;
const flavour =
  testStore === undefined || testStore === "memory"
    ? undefined
    : testStore === "sqlite"
      ? "sqlite"
      : /^postgres(ql)?:\/\//.test(testStore)
        ? "pg"
        : (() => {
            throw new Error(
              `RATEQUEUE_TEST_STORE must be memory, sqlite or a postgres:// URL, got ${JSON.stringify(testStore)}`,
            );
          })();
// On a store, only the integration tests (test/), less those that start no server of the test
// store: the unit tests in src/, and replica(s).test.ts (replicas on a PostgreSQL of their own,
// run by the sdk and server projects). packages/server/test/pg-*.test.ts run on PostgreSQL only.
// On PostgreSQL every answer waits for a commit: a test of 1,000 acquires in a row takes 8–15 s
// on a loaded 2-core machine, 2–5 s in memory, hence the longer timeout.
const onStore = (name: string, store: string) => ({
  resolve: { alias },
  test: {
    name: store === "memory" ? name : `${name}-${flavour}`,
    root: `./packages/${name}`,
    include: store === "memory" ? ["src/**/*.test.ts", "test/**/*.test.ts"] : ["test/**/*.test.ts"],
    exclude: [
      ...configDefaults.exclude,
      ...(store === "memory" ? [] : ["test/replica.test.ts", "test/replicas.test.ts"]),
      ...(store !== "memory" && flavour === "pg" ? [] : ["test/pg-*.test.ts"]),
    ],
    testTimeout: store !== "memory" && flavour === "pg" ? 60_000 : 20_000,
    env: { RATEQUEUE_TEST_STORE: store },
  },
});

export default defineConfig({
  test: {
    reporters: report ? ["default", ["json", { outputFile: report }]] : ["default"],
    projects: [
      ...["core", "sdk", "server"].map((name) => onStore(name, "memory")),
      ...(testStore === undefined || flavour === undefined
        ? []
        : ["sdk", "server"].map((name) => onStore(name, testStore))),
      { resolve: { alias }, test: { name: "chaos", root: "./chaos", include: ["*.test.ts"] } },
      {
        resolve: { alias },
        test: {
          name: "examples",
          root: "./examples",
          include: ["*/test/**/*.test.ts"],
          testTimeout: 10_000,
        },
      },
    ],
  },
});
