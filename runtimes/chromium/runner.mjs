// Chromium: the conformance cases in a real web page (Debian's /usr/bin/chromium, headless,
// driven by playwright-core), over both transports, across origins: the page is served by this
// runner's own static server, on another port (so another origin) than the RateQueue server.
//
// Handshake with run.mjs: this runner starts its page server first and prints
// `page-origin <origin>`; run.mjs then starts the RateQueue server with `corsOrigins: [origin]`
// (and a second one without corsOrigins) and writes `{ "baseUrl", "noCorsUrl" }` as one JSON line
// to this runner's stdin.
//
// Then: the cases (9 x 2 transports), and the Chromium-only checks, printed as
// `ok|FAIL chromium <transport> <check>`: `no-cors-refused` (the page's acquire against the server
// without corsOrigins must fail) and `inflight-20` (20 acquires in flight from one page).
//
// Usage: node runner.mjs <apiKey> [cases]   (CHROMIUM=/path/to/chromium to use another binary)
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { CASE_DEADLINE } from "../conformance/cases.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const EXECUTABLE = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** The whole run, ms: past it the browser is closed and the runner exits (run.mjs kills at 60 s). */
const RUN_DEADLINE = 50_000;
/** How a holder page is killed: `crash` (its renderer process, CDP Page.crash) or `close` (the tab). */
const HOLDER_KILL = process.env.CHROMIUM_HOLDER_KILL ?? "crash";
const TRANSPORTS = ["websocket", "http"];
const VERBOSE = process.env.CHROMIUM_VERBOSE === "1";
/** The page the cases run in (its timer stalls are reported with a holder's). */
let mainPage;

const [apiKey, only] = process.argv.slice(2);
const names = only ? only.split(",") : undefined;

function deadline(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`deadline: ${what} took over ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

let browser;
let exiting = false;
/** Closes the browser (or kills its process) and exits; every path out goes through here. */
async function exit(code) {
  if (exiting) return;
  exiting = true;
  if (browser) {
    await deadline(browser.close(), 5_000, "browser.close()").catch((error) => {
      console.log(`# browser.close() failed (${error.message}): killing its process`);
      browserProcess()?.kill("SIGKILL");
    });
  }
  process.exit(code);
}
/** Playwright's ChildProcess of the browser (not public API on Browser; used only to kill it). */
function browserProcess() {
  try {
    return browser?._connection?.toImpl?.(browser)?.options?.browserProcess?.process;
  } catch {
    return undefined;
  }
}
const watchdog = setTimeout(() => {
  console.log(`FAIL chromium - run: not finished within ${RUN_DEADLINE} ms; closing the browser`);
  exit(1);
}, RUN_DEADLINE);
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => exit(1));

// --- the page: bundled as a browser app's bundler would ------------------------------------------
const bundle = await build({
  entryPoints: [join(here, "page.mjs")],
  bundle: true,
  write: false,
  format: "esm",
  platform: "browser",
  conditions: ["browser"],
  target: "es2022",
  // One tsconfig for every file: without this, esbuild applies the repo root's tsconfig.json to
  // packages/sdk/dist/*.js (the nearest one above them), whose `paths` map @ratequeue/core to
  // packages/core/src/index.ts. An app's node_modules has no such file; runtimes/tsconfig.json
  // has no `paths`.
  tsconfig: join(here, "../tsconfig.json"),
  metafile: true,
  logLevel: "silent",
});
const inputs = Object.keys(bundle.metafile.inputs).map((f) =>
  relative(join(here, "../.."), join(process.cwd(), f)),
);
const sdkFiles = inputs.filter((f) => f.startsWith("packages/"));
const pageJs = bundle.outputFiles[0].text;
const usingCaseJs = await readFile(join(here, "../conformance/using-case.mjs"), "utf8");
const html =
  '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>RateQueue conformance</title>\n<script type="module" src="/page.js"></script>\n';

// --- the page's origin: a static server, plus the holder control the cases call ---------------------
const holders = new Map();
let nextHolder = 0;
let baseUrl;
let origin;

async function newPage(context, label, consoleLines) {
  const page = await context.newPage();
  page.on("pageerror", (error) => console.log(`# [chromium ${label} page error] ${error}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") consoleLines?.push(msg.text());
  });
  await page.goto(`${origin}/`, { timeout: 10_000 });
  await page.waitForFunction(() => window.__conformance !== undefined, null, { timeout: 10_000 });
  return page;
}

async function spawnHolder(q) {
  const id = String(++nextHolder);
  // A context of its own: its own renderer process, cookies and connections (another tab's worth).
  const context = await browser.newContext();
  holders.set(id, context);
  const page = await newPage(context, `holder ${id}`);
  const token = await deadline(
    page.evaluate(
      ([b, k, n, t]) => window.__conformance.hold(b, k, n, t),
      [baseUrl, q.get("apiKey"), q.get("name"), q.get("transport")],
    ),
    10_000,
    "holder page holding",
  );
  const how =
    HOLDER_KILL === "crash"
      ? "holder page's renderer process crashed (CDP Page.crash)"
      : "holder page closed (page.close())";
  return { id, fencingToken: token, how, page };
}

async function killHolder(id) {
  const context = holders.get(id);
  if (!context) return false;
  holders.delete(id);
  const page = context.pages()[0];
  // Its state just before the kill, for the record when a case fails (is it still holding?).
  const state = await deadline(
    page.evaluate(() => window.__conformance.holderState()),
    2_000,
    "holder state",
  ).catch((error) => ({ error: error.message }));
  const mainStalls = await deadline(
    mainPage?.evaluate(() => window.__conformance.stalls()) ?? Promise.resolve(undefined),
    2_000,
    "main page stalls",
  ).catch((error) => ({ error: error.message }));
  if (state.lost || state.error || VERBOSE)
    console.log(
      `# holder ${id} before the kill: ${JSON.stringify(state)}; the cases' page: ${JSON.stringify(mainStalls)}`,
    );
  if (page && HOLDER_KILL === "crash") {
    const crashed = new Promise((resolve) => page.once("crash", resolve));
    const cdp = await context.newCDPSession(page);
    cdp.send("Page.crash").catch(() => {}); // never answers: the renderer is gone
    await deadline(crashed, 5_000, "holder page crash");
  } else if (page) {
    await deadline(page.close({ runBeforeUnload: false }), 5_000, "holder page close");
  }
  await deadline(context.close(), 5_000, "holder context close").catch(() => {});
  return true;
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  const send = (status, type, body) => {
    res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
    res.end(body);
  };
  const json = (status, body) => send(status, "application/json", JSON.stringify(body));
  try {
    if (url.pathname === "/") return send(200, "text/html", html);
    if (url.pathname === "/page.js") return send(200, "text/javascript", pageJs);
    if (url.pathname === "/using-case.mjs") return send(200, "text/javascript", usingCaseJs);
    if (url.pathname === "/control/spawn") {
      const { page: _, ...held } = await spawnHolder(url.searchParams);
      return json(200, held);
    }
    if (url.pathname === "/control/kill") {
      const found = await killHolder(url.searchParams.get("id"));
      return found ? json(200, {}) : json(404, { error: "no such holder" });
    }
    send(404, "text/plain", "not found");
  } catch (error) {
    json(500, { error: String(error?.message ?? error) });
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
origin = `http://127.0.0.1:${server.address().port}`;
console.log(`page-origin ${origin}`);

// run.mjs answers with the servers it started for this origin.
const servers = await deadline(
  new Promise((resolve, reject) => {
    const rl = createInterface({ input: process.stdin });
    rl.once("line", (line) => {
      try {
        resolve(JSON.parse(line));
      } catch (error) {
        reject(error);
      }
      rl.close();
    });
    rl.once("close", () => reject(new Error("stdin closed before the servers' URLs came")));
  }),
  20_000,
  "the servers' URLs from run.mjs",
);
baseUrl = servers.baseUrl;

const launchStart = Date.now();
browser = await chromium.launch({
  executablePath: EXECUTABLE,
  args: ["--no-sandbox"],
  timeout: 15_000,
});
console.log(
  `# chromium ${browser.version()} (${EXECUTABLE}, headless, launched in ${Date.now() - launchStart} ms), playwright-core ${require("playwright-core/package.json").version}; page ${origin}, server ${baseUrl} (corsOrigins: [${origin}]); bundled ${sdkFiles.join(", ")}`,
);
if (
  !sdkFiles.includes("packages/sdk/dist/index.js") ||
  !sdkFiles.includes("packages/core/dist/index.js") ||
  sdkFiles.some((f) => /(^|\/)node\.js$/.test(f) || /\/src\//.test(f))
) {
  console.log(
    `FAIL chromium resolve: the browser bundle took ${sdkFiles.join(", ")}, not the built packages/sdk/dist/index.js and packages/core/dist/index.js`,
  );
  await exit(1);
}

let failed = 0;
try {
  // The cases, in one page, over both transports; lines come out as the page prints them.
  const context = await browser.newContext();
  const consoleLines = [];
  const page = await context.newPage();
  mainPage = page;
  await page.exposeFunction("__print", (line) => {
    if (/^FAIL /.test(line)) failed++;
    console.log(line);
  });
  page.on("pageerror", (error) => console.log(`# [chromium page error] ${error}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleLines.push(msg.text());
  });
  await page.goto(`${origin}/`, { timeout: 10_000 });
  await page.waitForFunction(() => window.__conformance !== undefined, null, { timeout: 10_000 });
  const caseCount = (names?.length ?? 9) * TRANSPORTS.length;
  const result = await deadline(
    page.evaluate(
      ([b, o]) => window.__conformance.run(b, o),
      [{ baseUrl, apiKey, control: `${origin}/control` }, { names }],
    ),
    Math.min(CASE_DEADLINE * caseCount + 5_000, RUN_DEADLINE),
    "the cases in the page",
  );
  if (consoleLines.length > 0)
    console.log(
      `# the page's console errors during the cases (${consoleLines.length}): ${[...new Set(consoleLines)].slice(0, 5).join(" | ")}`,
    );
  if (result.failed !== failed) failed = Math.max(failed, result.failed);
  await context.close();

  if (!names) failed += await extraChecks(servers);
} catch (error) {
  failed++;
  console.log(`FAIL chromium - run: ${error?.message ?? error}`);
}
clearTimeout(watchdog);
await exit(failed === 0 ? 0 : 1);

// --- Chromium-only checks -----------------------------------------------------------------------
async function extraChecks({ noCorsUrl }) {
  let failures = 0;
  const line = (ok, transport, check, ms, note) => {
    if (!ok) failures++;
    console.log(
      `${ok ? "ok" : "FAIL"} chromium ${transport} ${check} (${ms} ms)${ok ? " # " : ": "}${note}`,
    );
  };
  for (const transport of TRANSPORTS) {
    // The server without corsOrigins: the page's acquire must fail, not silently work.
    {
      const start = Date.now();
      const context = await browser.newContext();
      const consoleLines = [];
      try {
        const page = await newPage(context, "no-cors", consoleLines);
        const name = `chromium-${transport}-no-cors-${Date.now()}`;
        const key = `${apiKey}-no-cors`;
        const r = await deadline(
          page.evaluate(
            ([b, k, n, t]) => window.__conformance.tryAcquire(b, k, n, t, undefined, 8_000),
            [noCorsUrl, key, name, transport],
          ),
          CASE_DEADLINE,
          "acquire against the server without corsOrigins",
        );
        // The server must not hold or queue anything for it either.
        const res = await fetch(`${noCorsUrl}/v1/resources/${name}`, {
          headers: { authorization: `Bearer ${key}` },
        });
        const snap = res.status === 200 ? await res.json() : { status: res.status };
        const ghost = (snap.active ?? 0) > 0 || (snap.queued ?? 0) > 0;
        const seen = [...new Set(consoleLines)].slice(0, 2).join(" | ");
        line(
          !r.ok && !ghost,
          transport,
          "no-cors-refused",
          Date.now() - start,
          r.ok
            ? `the acquire WORKED against a server without corsOrigins (${r.ms} ms)`
            : `${ghost ? `the server shows it: ${JSON.stringify(snap)}; ` : ""}acquire() (no timeout) rejected after ${r.ms} ms with ${r.error}${r.code ? ` (code ${r.code})` : ""}${r.causes.length ? `; cause: ${r.causes.join(" <- ")}` : ""}; ${r.close}; browser console: ${seen || "(nothing)"}`,
        );
      } catch (error) {
        line(false, transport, "no-cors-refused", Date.now() - start, error?.message ?? error);
      } finally {
        await deadline(context.close(), 5_000, "context close").catch(() => {});
      }
    }
    // 20 acquires in flight from one page, and a 21st try-lock on another resource.
    {
      const start = Date.now();
      const context = await browser.newContext();
      try {
        const page = await newPage(context, "inflight");
        const note = await deadline(
          page.evaluate(
            ([b, k, t, n]) => window.__conformance.inflight(b, k, t, n),
            [
              baseUrl,
              `${apiKey}-${transport}`,
              transport,
              `chromium-${transport}-inflight-${Date.now()}`,
            ],
          ),
          CASE_DEADLINE,
          "inflight-20",
        );
        line(true, transport, "inflight-20", Date.now() - start, note);
      } catch (error) {
        line(false, transport, "inflight-20", Date.now() - start, error?.message ?? error);
      } finally {
        await deadline(context.close(), 5_000, "context close").catch(() => {});
      }
    }
  }
  return failures;
}
