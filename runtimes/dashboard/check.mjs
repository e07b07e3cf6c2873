// The dashboard in a real browser (Debian's /usr/bin/chromium, headless, driven by playwright-core):
// a server with SDK clients holding and waiting; the page asks for the admin key, shows the
// resource, its holder and its line live, a waiter moving up when the holder releases, a capacity
// change, rate limits set by an operator, a force-release whose reason reaches the holder's
// LeaseLostError, and lanes: each lane's config and counts and each request's lane shown, a lanes
// config set, refused (the server's error shown), made strict and lifted from the page.
//
// Usage: node dashboard/check.mjs [--screenshot FILE]   (CHROMIUM=/path/to/chromium for another binary)
import { createRateQueue } from "@ratequeue/sdk";
import { startServer } from "@ratequeue/server";
import { chromium } from "playwright-core";

const EXECUTABLE = process.env.CHROMIUM ?? "/usr/bin/chromium";
const DEADLINE = 60_000;
const shot = process.argv.indexOf("--screenshot");
const screenshot = shot >= 0 ? process.argv[shot + 1] : undefined;

let failures = 0;
const check = (ok, what) => {
  console.log(`${ok ? "ok" : "FAIL"} dashboard ${what}`);
  if (!ok) failures++;
};
const watchdog = setTimeout(() => {
  console.log(`FAIL dashboard run: not finished within ${DEADLINE} ms`);
  process.exit(1);
}, DEADLINE);

// grace 1 s, not 200 ms: this process also drives Chromium on 2 shared cores, and a stall of 200 ms
// would cost the holder its lease (the SDK's tests do the same).
const server = await startServer({ port: 0, apiKeys: ["app"], adminKeys: ["ops"], grace: 1_000 });
const rq = () => createRateQueue({ apiKey: "app", baseUrl: server.url });
const browser = await chromium.launch({
  executablePath: EXECUTABLE,
  args: ["--no-sandbox"],
  timeout: 15_000,
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  const holder = await rq().acquire("reports/nightly");
  const lost = new Promise((resolve) =>
    holder.signal.addEventListener("abort", () => resolve(holder.signal.reason)),
  );
  const granted = [];
  const waiters = ["first", "second"].map((label) =>
    rq()
      .acquire("reports/nightly")
      .then((lease) => {
        granted.push(label);
        return lease;
      }),
  );

  await page.goto(`${server.url}/dashboard`);
  await page.fill("#key", "ops");
  await page.click("#login button");
  const row = page.locator('#resources tbody tr[data-resource="reports/nightly"]');
  await row.waitFor({ timeout: 10_000 });
  check(
    (await row.locator("td").allTextContents()).join(",") === "reports/nightly,1,1,1,2",
    "lists the resource with 1 holding and 2 waiting",
  );
  await row.click();
  await page.locator(`#holders tbody tr[data-request="${holder.id}"]`).waitFor({ timeout: 10_000 });
  check((await page.locator("#line tbody tr").count()) === 2, "shows the holder and the line of 2");
  check(await page.locator("#login").isHidden(), "asks for the key once, then hides the form");
  if (screenshot) await page.screenshot({ path: screenshot });
  const firstWaiter = await page.locator("#line tbody tr").first().getAttribute("data-request");

  // The holder lets go: the first waiter moves up into the holders, live.
  await holder.release();
  await page
    .locator(`#holders tbody tr[data-request="${firstWaiter}"]`)
    .waitFor({ timeout: 10_000 });
  check(
    granted[0] === "first" && (await page.locator("#line tbody tr").count()) === 1,
    "a waiter moves up when the holder releases",
  );

  // Capacity 1 → 2: the last waiter is served at once.
  await page.fill("#capacity-value", "2");
  await page.click("#capacity button");
  await page.waitForFunction(
    () => document.querySelectorAll("#holders tbody tr").length === 2,
    undefined,
    { timeout: 10_000 },
  );
  check(
    (await page.textContent("#detail-name")).includes("capacity 2"),
    "a capacity change applies at once",
  );

  // Rate limits an operator sets (admin API) show live, with what each has counted.
  const ns = (
    await (
      await fetch(`${server.url}/v1/admin/namespaces`, { headers: { authorization: "Bearer ops" } })
    ).json()
  ).namespaces[0].id;
  await fetch(`${server.url}/v1/admin/namespaces/${ns}/limits/reports%2Fnightly`, {
    method: "PUT",
    headers: { authorization: "Bearer ops", "content-type": "application/json" },
    body: JSON.stringify({ rates: [{ limit: 5, window: 60000 }] }),
  });
  await page.waitForFunction(
    () =>
      document.querySelector("#detail-name")?.textContent.includes("of 5 requests per 60000 ms"),
    undefined,
    { timeout: 10_000 },
  );
  check(
    (await page.textContent("#detail-name")).includes("capacity 2"),
    "shows rate limits beside the capacity, which a capacity-only change kept",
  );

  // An operator edits them here: adds a rate limit, removes the first, sets a concurrency.
  await page.fill("#rate-limit", "7");
  await page.fill("#rate-window", "1000");
  await page.selectOption("#rate-kind", "fixed");
  await page.selectOption("#rate-counts", "load");
  await page.click("#rate-add button");
  await page.waitForFunction(
    () => document.querySelectorAll("#rates tbody tr").length === 2,
    undefined,
    { timeout: 10_000 },
  );
  await page.click("#rates tbody tr:first-child button");
  await page.fill("#concurrency-value", "1");
  await page.click("#concurrency button");
  await page.waitForFunction(
    () => {
      const text = document.querySelector("#detail-name")?.textContent ?? "";
      return text.includes("at most 1") && !text.includes("of 5 requests");
    },
    undefined,
    { timeout: 10_000 },
  );
  const limits = await (
    await fetch(`${server.url}/v1/admin/namespaces/${ns}/resources/reports%2Fnightly`, {
      headers: { authorization: "Bearer ops" },
    })
  ).json();
  check(
    limits.concurrency === 1 &&
      limits.rates.length === 1 &&
      limits.rates[0].limit === 7 &&
      limits.rates[0].window === 1000 &&
      limits.rates[0].kind === "fixed" &&
      limits.rates[0].counts === "load",
    "rate limits and concurrency set from the dashboard reach the server",
  );

  // Force-release the first waiter's lease, with a reason its client is told.
  const [first] = await Promise.all([waiters[0]]);
  const firstLost = new Promise((resolve) =>
    first.signal.addEventListener("abort", () => resolve(first.signal.reason)),
  );
  page.once("dialog", (dialog) => dialog.accept("stuck, INC-7"));
  await page.click(`#holders tbody tr[data-request="${first.id}"] button`);
  const reason = await Promise.race([
    firstLost,
    new Promise((r) => setTimeout(() => r(undefined), 10_000)),
  ]);
  check(
    reason?.name === "LeaseLostError" && reason.reason === "stuck, INC-7",
    "a force-release reaches the holder's LeaseLostError with its reason",
  );
  await page.waitForFunction(
    (id) => !document.querySelector(`#holders tbody tr[data-request="${id}"]`),
    first.id,
    { timeout: 10_000 },
  );
  check(true, "the revoked holder leaves the view");

  // Lanes: a holder in "interactive", waiters in "batch" and "interactive", each shown with its
  // lane, and each lane with its counts.
  const admin = (path, init = {}) =>
    fetch(`${server.url}/v1/admin/namespaces/${ns}${path}`, {
      ...init,
      headers: { authorization: "Bearer ops", "content-type": "application/json" },
    });
  const daily = "exports%2Fdaily";
  const laned = [await rq().acquire("exports/daily", { lane: "interactive" })];
  const laneWaiters = ["batch", "interactive"].map((lane) =>
    rq().acquire("exports/daily", { lane }),
  );
  await page.click('#resources tbody tr[data-resource="exports/daily"]', { timeout: 10_000 });
  await page.waitForFunction(
    () =>
      document.querySelectorAll("#line tbody tr").length === 2 &&
      document.querySelectorAll("#lanes tbody tr").length === 2,
    undefined,
    { timeout: 10_000 },
  );
  const laneRow = async (lane) =>
    (await page.locator(`#lanes tbody tr[data-lane="${lane}"] td`).allTextContents()).join(",");
  check(
    (await laneRow("interactive")) === "interactive,1,-,0,1,1,1" &&
      (await laneRow("batch")) === "batch,1,-,0,1,0,0" &&
      (await page.textContent("#lanes-strategy")).startsWith("fair"),
    "shows each lane: weight, share, reservation, waiting, holding, used",
  );
  const laneCells = async (table) =>
    (
      await page
        .locator(`#${table} tbody tr td:nth-child(${table === "line" ? 3 : 2})`)
        .allTextContents()
    )
      .sort()
      .join(",");
  check(
    (await laneCells("holders")) === "interactive" &&
      (await laneCells("line")) === "batch,interactive",
    "shows the lane of each holder and waiter",
  );

  // Lanes set from the dashboard: a config the server refuses shows its error, word for word.
  const setLanes = async (text, button = "#lanes-submit") => {
    await page.fill("#lanes-value", text);
    await page.evaluate(() => {
      document.querySelector("#lanes-result").textContent = "";
    });
    await page.click(button);
    await page.waitForFunction(
      () => document.querySelector("#lanes-result").textContent !== "",
      undefined,
      {
        timeout: 10_000,
      },
    );
    return (await page.textContent("#lanes-result")).trim();
  };
  const laneConfig = async () => (await (await admin(`/resources/${daily}`)).json()).laneConfig;
  // What the admin API itself answers to `lanes` (the same PUT the page sends).
  const refusal = async (lanes) =>
    (await admin(`/limits/${daily}`, { method: "PUT", body: `{"lanes": ${lanes}}` })).json();
  const badWeights = '{"strategy": "strict", "weights": {"batch": 2}}';
  const badRefusal = await refusal(badWeights);
  const shown = await setLanes(badWeights);
  check(
    badRefusal.status === 400 && shown === badRefusal.detail && shown.includes("lanes.weights"),
    `a lanes config the server refuses (400) shows its error: ${shown}`,
  );
  const noCapacity = '{"reserved": {"interactive": 1}}';
  const noCapacityRefusal = await refusal(noCapacity);
  const overCapacity = await setLanes(noCapacity);
  check(
    noCapacityRefusal.status === 409 &&
      overCapacity === noCapacityRefusal.detail &&
      (await laneConfig()) === null &&
      (await page.inputValue("#lanes-value")) === noCapacity,
    `a refusal (409) changes nothing, shows why and keeps the edit to fix: ${overCapacity}`,
  );

  // With an operator's capacity of 3, fair lanes with a weight and a reservation, then strict ones.
  await page.fill("#capacity-value", "3");
  await page.click("#capacity button");
  await page.waitForFunction(
    () => document.querySelector("#detail-name")?.textContent.includes("capacity 3"),
    undefined,
    {
      timeout: 10_000,
    },
  );
  const fair = { strategy: "fair", weights: { interactive: 3 }, reserved: { interactive: 1 } };
  const fairSet = await setLanes(JSON.stringify(fair));
  await page.waitForFunction(
    () =>
      document.querySelector('#lanes tbody tr[data-lane="interactive"] td:nth-child(2)')
        ?.textContent === "3",
    undefined,
    { timeout: 10_000 },
  );
  check(
    fairSet === "set" &&
      JSON.stringify(await laneConfig()) === JSON.stringify(fair) &&
      (await laneRow("interactive")).startsWith("interactive,3,-,1,") &&
      (await laneRow("batch")).startsWith("batch,1,-,0,"),
    "fair lanes set from the dashboard reach the server, and show their weight and reservation",
  );
  const strict = { strategy: "strict", shares: { interactive: 2, batch: 1 } };
  await setLanes(JSON.stringify(strict));
  await page.waitForFunction(
    () => document.querySelector("#lanes-strategy")?.textContent.startsWith("strict"),
    undefined,
    { timeout: 10_000 },
  );
  check(
    JSON.stringify(await laneConfig()) === JSON.stringify(strict) &&
      (await laneRow("interactive")).startsWith("interactive,-,2,-,") &&
      (await laneRow("batch")).startsWith("batch,-,1,-,") &&
      (await page.inputValue("#lanes-value")) === JSON.stringify(strict),
    "strict lanes set from the dashboard reach the server, and show their shares",
  );
  await setLanes("", "#lanes-lift");
  await page.waitForFunction(
    () => document.querySelector("#lanes-strategy")?.textContent.includes("none set"),
    undefined,
    { timeout: 10_000 },
  );
  check(
    (await laneConfig()) === null && (await page.inputValue("#lanes-value")) === "",
    "lifting the lanes from the dashboard reaches the server",
  );
  laned.push(...(await Promise.all(laneWaiters)));
  for (const lease of laned) await lease.release();
  void lost;
  for (const w of await Promise.all(waiters)) await w.release();
} catch (error) {
  check(false, `run: ${error.message}`);
} finally {
  clearTimeout(watchdog);
  await browser.close();
  await server.close();
}
process.exit(failures === 0 ? 0 : 1);
