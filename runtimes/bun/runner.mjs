// Bun: the SDK as Bun resolves it (node_modules, `bun` export condition), every case over
// both transports. Usage: bun runner.mjs <baseUrl> <apiKey> <controlUrl>
import { createRateQueue } from "@ratequeue/sdk";
import { runAll } from "../conformance/cases.mjs";

const [baseUrl, apiKey, control, only] = process.argv.slice(2);
console.log(
  `# bun ${Bun.version}; @ratequeue/sdk resolved to ${import.meta.resolve("@ratequeue/sdk")}`,
);
const resolved = import.meta.resolve("@ratequeue/sdk");
if (!/\/packages\/sdk\/dist\/index\.js$/.test(resolved)) {
  console.log(
    `FAIL bun resolve: @ratequeue/sdk resolved to ${resolved}, not the built dist/index.js`,
  );
  process.exit(1);
}
const loadUsingCase = async () => {
  try {
    return (await import("../conformance/using-case.mjs")).default;
  } catch (error) {
    if (error instanceof SyntaxError) return undefined;
    throw error;
  }
};
const { failed } = await runAll(
  { createRateQueue, baseUrl, apiKey, control, runtime: "bun", loadUsingCase },
  { print: (line) => console.log(line), names: only ? only.split(",") : undefined },
);
// Sessions stay open for 30 s after their last lease: exit now.
process.exit(failed === 0 ? 0 : 1);
