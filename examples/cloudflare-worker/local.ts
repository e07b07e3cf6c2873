/**
 * Runs worker.ts locally as Cloudflare would: bundled by esbuild with the `workerd` export
 * condition first (as wrangler bundles it: wrangler 4 needs Node ≥ 22, this repository runs on
 * Node 20), then loaded into Miniflare — a real workerd process — without `nodejs_compat`.
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import type { Env } from "./worker.js";

const here = fileURLToPath(new URL(".", import.meta.url));
export const COMPATIBILITY_DATE = "2025-09-01";

/** The Worker's bundle, and which files of this repository's packages went into it. */
export async function bundleWorker(): Promise<{ script: string; packageFiles: string[] }> {
  const result = await build({
    entryPoints: [join(here, "worker.ts")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "neutral",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["module", "main"],
    target: "esnext",
    // For every file, the SDK's dist/ too: left to find the nearest tsconfig.json, esbuild would
    // give dist/ the root's, whose `paths` point @ratequeue/core at its source.
    tsconfig: join(here, "tsconfig.json"),
    metafile: true,
    logLevel: "silent",
  });
  return {
    script: result.outputFiles[0]!.text,
    packageFiles: Object.keys(result.metafile.inputs).filter((f) => f.includes("packages/")),
  };
}

/** A Miniflare (its own workerd process) running the Worker with these bindings; `dispose()` it. */
export async function startWorker(bindings: Env, script?: string): Promise<Miniflare> {
  const mf = new Miniflare({
    // Given as a module: with `script`, Miniflare first parses it with acorn, which refuses
    // `await using` (workerd itself runs it).
    modules: [
      {
        type: "ESModule",
        path: join(here, "worker.bundle.mjs"),
        contents: script ?? (await bundleWorker()).script,
      },
    ],
    compatibilityDate: COMPATIBILITY_DATE,
    compatibilityFlags: [], // no nodejs_compat
    bindings: { ...bindings },
    // No Request.cf: Miniflare would fetch it from workers.cloudflare.com.
    cf: false,
  });
  await mf.ready;
  return mf;
}
