// Makes an EdgeRuntime (Vercel's edge-runtime package) with the SDK's edge-light build and the
// conformance cases in it, bundled by esbuild as Vercel's bundler would: `edge-light` first.
import { readFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { EdgeRuntime } from "edge-runtime";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));

export async function loadEdgeRuntime() {
  const bundle = await build({
    entryPoints: [join(here, "entry.mjs")],
    bundle: true,
    write: false,
    format: "iife",
    platform: "neutral",
    conditions: ["edge-light"],
    mainFields: ["module", "main"],
    target: "es2022",
    metafile: true,
    logLevel: "silent",
  });
  const sdkFiles = Object.keys(bundle.metafile.inputs).filter((f) =>
    /packages\/(sdk|core)\//.test(f),
  );
  const runtime = new EdgeRuntime();
  runtime.evaluate(bundle.outputFiles[0].text);
  // `await using`, from the same source file as the other runtimes', as a script of its own:
  // if the runtime cannot parse it, only this fails, and the case falls back to try/finally.
  const usingSource = (await readFile(join(here, "../conformance/using-case.mjs"), "utf8")).replace(
    "export default async function",
    "globalThis.__usingCase = async function",
  );
  let usingError;
  try {
    runtime.evaluate(usingSource);
  } catch (error) {
    if (error?.name !== "SyntaxError") throw error;
    usingError = `${error.name}: ${error.message}`;
  }
  return {
    runtime,
    sdkFiles: sdkFiles.map((f) => relative(join(here, ".."), join(process.cwd(), f))),
    usingError,
  };
}
