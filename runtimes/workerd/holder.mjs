// Takes a lease in a Worker of its own (a Miniflare instance, so its own workerd process),
// within a request whose response body never ends, and holds it until "dispose" arrives on
// stdin. (Miniflare does not hand over the body's first chunk while the stream stays open, so
// the hold is seen on the server instead.)
// Usage: node holder.mjs <baseUrl> <apiKey> <name> <transport>
import { createInterface } from "node:readline";
import { startWorker } from "./load.mjs";

const [baseUrl, apiKey, name, transport] = process.argv.slice(2);
const mf = await startWorker();
createInterface({ input: process.stdin }).on("line", async (line) => {
  if (line.trim() !== "dispose") return;
  await mf.dispose(); // ends the workerd process, and with it the request that holds
  process.exit(0);
});
const q = new URLSearchParams({ baseUrl, apiKey, name, transport });
await mf.dispatchFetch(`http://worker/hold?${q}`);
for (const start = Date.now(); Date.now() - start < 10_000; ) {
  const res = await fetch(`${baseUrl}/v1/resources/${encodeURIComponent(name)}`, {
    headers: { authorization: `Bearer ${apiKey}` },
  });
  const snapshot = await res.json();
  if (snapshot.active === 1) {
    console.log(`held ${snapshot.holders[0].fencingToken}`);
    break;
  }
  await new Promise((r) => setTimeout(r, 20));
}
