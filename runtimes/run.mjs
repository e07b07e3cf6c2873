// The test driver (Node): for each runtime, starts a RateQueue server (the built
// @ratequeue/server, state in memory), runs that runtime's runner as a child process with the
// server's URL, and reports its lines. A control server lets the cases spawn a holder in a
// separate process (or runtime instance) of the same runtime and kill it.
// Chromium is run the other way round: its runner serves the page first and prints the page's
// origin, then this driver starts the server with `corsOrigins: [origin]` (and one without, for
// the check that a page is refused there) and passes both URLs on the runner's stdin; the runner
// spawns and kills its holder pages itself.
//
// Usage: node run.mjs <deno|bun|edge-runtime|workerd|chromium|all> [case,case,...]
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { startServer } from "@ratequeue/server";
import { cases } from "./conformance/cases.mjs";

const here = dirname(fileURLToPath(import.meta.url));
// The binaries themselves, not node_modules/.bin's shell shims: a killed shim leaves its runtime running.
const DENO = join(here, "node_modules", "deno", "deno");
const BUN = join(here, "node_modules", "bun", "bin", "bun.exe");
/** A runner's whole run, ms: past it the runner is killed and its missing cases fail. */
const RUNNER_DEADLINE = 60_000;
const TRANSPORTS = ["websocket", "http"];

/** Narrowest Deno permissions that work: network to the loopback server only. */
const DENO_FLAGS = ["run", "--no-lock", "--no-prompt", "--allow-net=127.0.0.1"];

const RUNTIMES = {
  deno: {
    runner: [DENO, ...DENO_FLAGS, "deno/runner.mjs"],
    holder: [DENO, ...DENO_FLAGS, "deno/holder.mjs"],
    kill: "SIGKILL",
  },
  bun: {
    runner: [BUN, "bun/runner.mjs"],
    holder: [BUN, "bun/holder.mjs"],
    kill: "SIGKILL",
  },
  "edge-runtime": {
    runner: [process.execPath, "edge-runtime/runner.mjs"],
    // A separate Node process hosting its own EdgeRuntime instance: killed with it.
    holder: [process.execPath, "edge-runtime/holder.mjs"],
    kill: "SIGKILL",
  },
  workerd: {
    runner: [process.execPath, "workerd/runner.mjs"],
    // A separate Miniflare (its own workerd process), disposed on "dispose" from stdin.
    holder: [process.execPath, "workerd/holder.mjs"],
    kill: "dispose",
  },
  chromium: {
    // Prints `page-origin <origin>`, then reads `{ baseUrl, noCorsUrl }` from stdin.
    runner: [process.execPath, "chromium/runner.mjs"],
    pageOrigin: true,
  },
};
/** How long a runner may take to print its page origin, ms. */
const ORIGIN_DEADLINE = 20_000;

function log(line) {
  process.stdout.write(`${line}\n`);
}

/** Spawns holders on request of the cases, and kills them. */
function startControl(runtime, baseUrl) {
  const holders = new Map();
  let next = 0;
  const spec = RUNTIMES[runtime];
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    const reply = (status, body) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    try {
      if (url.pathname === "/spawn") {
        const q = url.searchParams;
        const id = String(++next);
        const [cmd, ...args] = spec.holder;
        const child = spawn(
          cmd,
          [...args, baseUrl, q.get("apiKey"), q.get("name"), q.get("transport")],
          {
            cwd: here,
            stdio: ["pipe", "pipe", "pipe"],
          },
        );
        holders.set(id, child);
        let stderr = "";
        child.stderr.on("data", (d) => {
          stderr += d;
        });
        const exited = new Promise((resolve) => child.on("exit", resolve));
        child.exited = exited;
        const token = await new Promise((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`holder not holding within 10 s; stderr: ${stderr}`)),
            10_000,
          );
          createInterface({ input: child.stdout }).on("line", (line) => {
            const m = /^held (\d+)/.exec(line);
            if (m) {
              clearTimeout(timer);
              resolve(Number(m[1]));
            }
          });
          exited.then((code) => {
            clearTimeout(timer);
            reject(new Error(`holder exited (${code}) before holding; stderr: ${stderr}`));
          });
        });
        const how =
          spec.kill === "dispose"
            ? "holder's Miniflare instance disposed"
            : `holder process ${child.pid} killed with SIGKILL`;
        return reply(200, { id, fencingToken: token, how });
      }
      if (url.pathname === "/kill") {
        const child = holders.get(url.searchParams.get("id"));
        if (!child) return reply(404, { error: "no such holder" });
        holders.delete(url.searchParams.get("id"));
        if (spec.kill === "dispose") child.stdin.write("dispose\n");
        else child.kill("SIGKILL");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await child.exited;
        clearTimeout(timer);
        return reply(200, {});
      }
      reply(404, { error: "unknown" });
    } catch (error) {
      reply(500, { error: String(error?.message ?? error) });
    }
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        async close() {
          for (const child of holders.values()) child.kill("SIGKILL");
          server.closeAllConnections();
          await new Promise((r) => server.close(r));
        },
      });
    });
  });
}

/** Runs one runtime's runner against a fresh server; returns { runtime, passed, failed, ms, lines }. */
async function runRuntime(runtime, only) {
  const spec = RUNTIMES[runtime];
  const started = Date.now();
  const names = only ?? Object.keys(cases);
  const seen = new Set();
  let passed = 0;
  let failed = 0;
  const [cmd, ...args] = spec.runner;
  const onlyArg = only ? [only.join(",")] : [];
  let server;
  let noCorsServer;
  let control;
  let child;
  if (spec.pageOrigin) {
    child = spawn(cmd, [...args, `key-${runtime}`, ...onlyArg], {
      cwd: here,
      stdio: ["pipe", "pipe", "pipe"],
    });
  } else {
    server = await startServer({ port: 0 }); // no dataDir: state in memory
    control = await startControl(runtime, server.url);
    child = spawn(cmd, [...args, server.url, `key-${runtime}`, control.url, ...onlyArg], {
      cwd: here,
      stdio: ["ignore", "pipe", "pipe"],
    });
  }
  let gotOrigin;
  const originLine = new Promise((resolve) => {
    gotOrigin = resolve;
  });
  let killedForTime = false;
  const timer = setTimeout(() => {
    killedForTime = true;
    child.kill("SIGKILL");
  }, RUNNER_DEADLINE);
  createInterface({ input: child.stdout }).on("line", (line) => {
    const o = /^page-origin (\S+)$/.exec(line);
    if (o) return gotOrigin(o[1]);
    const m = /^(ok|FAIL) \S+ (\S+) (\S+)/.exec(line);
    if (m) {
      seen.add(`${m[2]} ${m[3]}`);
      if (m[1] === "ok") passed++;
      else failed++;
    }
    log(line);
  });
  createInterface({ input: child.stderr }).on("line", (line) =>
    log(`  [${runtime} stderr] ${line}`),
  );
  const closed = new Promise((resolve) => child.on("close", (c, signal) => resolve(c ?? signal)));
  if (spec.pageOrigin) {
    let originTimer;
    const origin = await Promise.race([
      originLine,
      closed.then(() => undefined),
      new Promise((resolve) => {
        originTimer = setTimeout(resolve, ORIGIN_DEADLINE);
      }),
    ]);
    clearTimeout(originTimer);
    if (origin === undefined) {
      log(`FAIL ${runtime}: the runner printed no page origin within ${ORIGIN_DEADLINE} ms`);
      child.kill("SIGKILL");
    } else {
      // The page's origin only: the real cross-origin path (preflights, WebSocket Origin check).
      // grace 1000, as the SDK's own tests: the browser, its renderer processes and the server
      // share a loaded 2-core machine, and a lease survives only round trips shorter than grace.
      server = await startServer({ port: 0, corsOrigins: [origin], grace: 1_000 });
      noCorsServer = await startServer({ port: 0 });
      child.stdin.end(`${JSON.stringify({ baseUrl: server.url, noCorsUrl: noCorsServer.url })}\n`);
    }
  }
  const code = await closed;
  clearTimeout(timer);
  // A case that printed nothing (the runner crashed or hung) is a failure too.
  for (const transport of TRANSPORTS) {
    for (const name of names) {
      if (!seen.has(`${transport} ${name}`)) {
        failed++;
        log(
          `FAIL ${runtime} ${transport} ${name}: no result (runner ${killedForTime ? `killed after ${RUNNER_DEADLINE} ms` : `exited with ${code}`})`,
        );
      }
    }
  }
  if (code !== 0 && failed === 0) {
    failed++;
    log(`FAIL ${runtime}: runner exited with ${code} although every case passed`);
  }
  await control?.close();
  await server?.close();
  await noCorsServer?.close();
  return { runtime, passed, failed, ms: Date.now() - started };
}

const [which = "all", only] = process.argv.slice(2);
const runtimes = which === "all" ? Object.keys(RUNTIMES) : [which];
for (const r of runtimes) {
  if (!RUNTIMES[r]) {
    console.error(`unknown runtime ${r}; one of: ${Object.keys(RUNTIMES).join(", ")}, all`);
    process.exit(2);
  }
}
const summaries = [];
for (const runtime of runtimes) {
  log(`# ${runtime}`);
  summaries.push(await runRuntime(runtime, only?.split(",")));
}
log("# summary");
for (const s of summaries)
  log(`# ${s.runtime}: ${s.passed} passed, ${s.failed} failed (${(s.ms / 1000).toFixed(1)} s)`);
const passed = summaries.reduce((n, s) => n + s.passed, 0);
const failed = summaries.reduce((n, s) => n + s.failed, 0);
log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
