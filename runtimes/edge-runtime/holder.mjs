// Takes a lease inside an EdgeRuntime of its own, in its own Node process, and holds it until
// the process is killed. Usage: node holder.mjs <baseUrl> <apiKey> <name> <transport>
import { loadEdgeRuntime } from "./load.mjs";

const [baseUrl, apiKey, name, transport] = process.argv.slice(2);
const { runtime } = await loadEdgeRuntime();
await runtime.context.__conformance.hold(baseUrl, apiKey, name, transport);
setInterval(() => {}, 60_000);
