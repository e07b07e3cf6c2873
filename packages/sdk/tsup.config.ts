import { defineConfig } from "tsup";

// No `clean`: the two builds run at once; the build script empties dist/ before them.

export default defineConfig([
  {
    entry: ["src/index.ts", "src/node.ts"],
    format: ["esm", "cjs"],
    dts: true,
    sourcemap: true,
    target: "node20",
  },
  {
    // The `ratequeue` command (Node.js only): `ratequeue run NAME -- command`.
    entry: { "cli/run": "src/cli/run.ts", "cli/watchdog": "src/cli/watchdog.ts" },
    format: ["esm"],
    sourcemap: true,
    target: "node20",
  },
]);
