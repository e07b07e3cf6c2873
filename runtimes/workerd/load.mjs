// Bundles worker.mjs as wrangler would for workerd (esbuild, `workerd` condition first) and
// starts it in Miniflare (a workerd process of its own).
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { Miniflare } from "miniflare";

const here = dirname(fileURLToPath(import.meta.url));
export const COMPATIBILITY_DATE = "2025-09-01";

let bundled;
export async function bundleWorker() {
  bundled ??= build({
    entryPoints: [join(here, "worker.mjs")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "neutral",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["module", "main"],
    target: "esnext",
    metafile: true,
    logLevel: "silent",
  }).then((result) => ({
    script: result.outputFiles[0].text,
    sdkFiles: Object.keys(result.metafile.inputs)
      .filter((f) => /packages\/(sdk|core)\//.test(f))
      .map((f) => relative(join(here, ".."), join(process.cwd(), f))),
  }));
  return bundled;
}

/** A Miniflare running the worker; `nodejsCompat` adds the `nodejs_compat` flag. */
export async function startWorker({ nodejsCompat = false, bindings = {}, log } = {}) {
  const { script } = await bundleWorker();
  const mf = new Miniflare({
    // The module given as is: with `modules: true, script`, Miniflare first parses the script
    // with acorn to find its imports, and acorn refuses `await using` (workerd itself runs it).
    modules: [{ type: "ESModule", path: join(here, "worker.bundle.mjs"), contents: script }],
    compatibilityDate: COMPATIBILITY_DATE,
    compatibilityFlags: nodejsCompat ? ["nodejs_compat"] : [],
    bindings,
    // No Request.cf: Miniflare would otherwise fetch it from Cloudflare (no network here).
    cf: false,
    ...(log ? { log } : {}),
  });
  await mf.ready;
  return mf;
}
