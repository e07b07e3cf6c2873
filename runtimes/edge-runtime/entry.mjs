// What runs inside the EdgeRuntime context: the SDK as bundled with the `edge-light` condition,
// and the conformance cases. Bundled to a script by runner.mjs (EdgeRuntime evaluates scripts).
import { createRateQueue } from "@ratequeue/sdk";
import { runAll } from "../conformance/cases.mjs";

globalThis.__conformance = {
  run(base, options) {
    return runAll(
      { ...base, createRateQueue, loadUsingCase: async () => globalThis.__usingCase },
      { ...options, print: (line) => console.log(line) },
    );
  },
  /** For holder.mjs: takes a lease and holds it until this runtime's process is killed. */
  async hold(baseUrl, apiKey, name, transport) {
    const lease = await createRateQueue({ apiKey, baseUrl, session: transport }).acquire(name);
    console.log(`held ${lease.fencingToken}`);
  },
};
