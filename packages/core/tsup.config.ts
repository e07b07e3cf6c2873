import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts", "src/node.ts"],
  format: ["esm", "cjs"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
  // p-retry and is-network-error are ESM-only: a CJS build that requires them fails when called
  // (`import_p_retry.default is not a function`), so they are bundled. undici stays external.
  noExternal: ["p-retry", "is-network-error"],
});
