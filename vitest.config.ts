import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// Tests import workspace packages from their sources, not from dist: no build step before a test run.
const alias = {
  "@ratequeue/core": fileURLToPath(new URL("./packages/core/src/index.ts", import.meta.url)),
  "@ratequeue/sdk": fileURLToPath(new URL("./packages/sdk/src/index.ts", import.meta.url)),
  "@ratequeue/server": fileURLToPath(new URL("./packages/server/src/index.ts", import.meta.url)),
};

// CI sets TEST_REPORT to a file path to get a JSON report it can count from.
const report = process.env.TEST_REPORT;

export default defineConfig({
  test: {
    reporters: report ? ["default", ["json", { outputFile: report }]] : ["default"],
    projects: ["core", "sdk", "server"].map((name) => ({
      resolve: { alias },
      test: {
        name,
        root: `./packages/${name}`,
        include: ["src/**/*.test.ts", "test/**/*.test.ts"],
        testTimeout: 20_000,
      },
    })),
  },
});
