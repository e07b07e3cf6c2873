// edge-runtime: the conformance cases inside Vercel's EdgeRuntime (the SDK's edge-light build),
// over both transports. Usage: node runner.mjs <baseUrl> <apiKey> <controlUrl> [cases]
import { createRequire } from "node:module";
import { loadEdgeRuntime } from "./load.mjs";

const [baseUrl, apiKey, control, only] = process.argv.slice(2);
const version = createRequire(import.meta.url)("edge-runtime/package.json").version;
const { runtime, sdkFiles, usingError } = await loadEdgeRuntime();
console.log(
  `# edge-runtime ${version} on Node ${process.versions.node}; bundled ${sdkFiles.join(", ")}`,
);
if (usingError) console.log(`# await using does not parse here: ${usingError}`);
if (
  !sdkFiles.some((f) => /packages\/sdk\/dist\/index\.js$/.test(f)) ||
  !sdkFiles.some((f) => /packages\/core\/dist\/index\.js$/.test(f)) ||
  sdkFiles.some((f) => /node\.js$/.test(f) || /\/src\//.test(f))
) {
  console.log(
    `FAIL edge-runtime resolve: the edge-light bundle took ${sdkFiles.join(", ")}, not the built sdk and core dist/index.js`,
  );
  process.exit(1);
}
const { failed } = await runtime.context.__conformance.run(
  { baseUrl, apiKey, control, runtime: "edge-runtime" },
  { names: only ? only.split(",") : undefined },
);
process.exit(failed === 0 ? 0 : 1);
