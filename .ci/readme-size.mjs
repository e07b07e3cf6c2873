// The README states the SDK's edge bundle size: this keeps the figure measured, not typed.
// `node .ci/readme-size.mjs` fails if the README's figure differs from size-limit's
// measurement (after `pnpm build`); `--write` puts the measured figure in the README.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";

const FIGURE = /(The edge build with its dependencies is )([\d.]+)( kB min\+gzip)/;
const [result] = JSON.parse(execFileSync("npx", ["size-limit", "--json"], { encoding: "utf8" }));
const measured = (result.size / 1000).toFixed(1);
const readme = readFileSync("README.md", "utf8");
const stated = FIGURE.exec(readme)?.[2];
if (stated === undefined) throw new Error("README.md: the edge bundle size sentence is missing");
if (process.argv.includes("--write")) {
  writeFileSync("README.md", readme.replace(FIGURE, `$1${measured}$3`));
  console.log(`README.md: edge build ${measured} kB`);
} else if (stated !== measured) {
  console.error(
    `README.md says the edge build is ${stated} kB; size-limit measures ${measured} kB: run \`npx -y pnpm@12.4.2 size:readme\``,
  );
  process.exit(1);
} else {
  console.log(`README.md's edge build size (${measured} kB) is the measured one`);
}
