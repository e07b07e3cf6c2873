/**
 * Preloaded into the Bun runs of the test (`bun --preload`): when the script exits, prints which
 * files of this repository's packages Bun loaded, so the test can check that it was the SDK's and
 * core's `dist/` (their `bun` builds), not their sources.
 */
declare const require: { cache: Record<string, unknown> };

process.on("exit", () => {
  const files = Object.keys(require.cache).filter((file) => file.includes("/packages/"));
  console.log(`# loaded ${JSON.stringify(files.sort())}`);
});
