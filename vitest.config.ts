import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

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

export default defineConfig({
  test: {
    reporters: report ? ["default", ["json", { outputFile: report }]] : ["default"],
    projects: [
      ...["core", "sdk", "server"].map((name) => ({
        resolve: { alias },
        test: {
          name,
          root: `./packages/${name}`,
          include: ["src/**/*.test.ts", "test/**/*.test.ts"],
          testTimeout: 20_000,
        },
      })),
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
