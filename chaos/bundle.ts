/**
 * Compiles the chaos client and the server into plain JavaScript at the start of a run, so that each
 * process the harness spawns starts in a fraction of what `--import tsx` costs (seconds per
 * process on a loaded machine — and the harness spawns dozens). Only the workspace's TypeScript
 * is bundled, from source (tsconfig paths, as tsx resolves it); every package from node_modules
 * stays an import of its own file, by absolute path, so it runs exactly as under tsx.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "tsup";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const ENTRIES = {
  client: fileURLToPath(new URL("./client.ts", import.meta.url)),
  server: fileURLToPath(new URL("../packages/server/src/cli.ts", import.meta.url)),
};

/** The compiled client and server entry files, in a directory of their own; `dispose` removes it. */
export interface Bundle {
  client: string;
  server: string;
  dispose(): void;
}

export async function bundle(): Promise<Bundle> {
  const outDir = mkdtempSync(join(tmpdir(), "ratequeue-chaos-build-"));
  const dispose = () => rmSync(outDir, { recursive: true, force: true });
  process.once("exit", dispose);
  await build({
    config: false,
    silent: true,
    entry: ENTRIES,
    outDir,
    format: ["esm"],
    platform: "node",
    target: "node20",
    tsconfig: join(ROOT, "tsconfig.json"),
    splitting: false,
    sourcemap: false,
    dts: false,
    clean: false,
    noExternal: [/.*/], // decided below, file by file
    esbuildPlugins: [
      {
        name: "node-modules-by-path",
        setup(b) {
          b.onResolve({ filter: /^[^./]/ }, async (args) => {
            if (args.pluginData === "inner") return undefined;
            const r = await b.resolve(args.path, {
              kind: args.kind,
              importer: args.importer,
              resolveDir: args.resolveDir,
              pluginData: "inner",
            });
            if (r.errors.length > 0 || r.external) return r.external ? r : undefined;
            // A package: leave it to Node, at the file esbuild found (with its conditions).
            if (r.path.includes("/node_modules/")) return { path: r.path, external: true };
            return { path: r.path };
          });
        },
      },
    ],
  });
  return {
    client: join(outDir, "client.js"),
    server: join(outDir, "server.js"),
    dispose() {
      process.off("exit", dispose);
      dispose();
    },
  };
}
