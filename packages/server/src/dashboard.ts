import type { FastifyInstance } from "fastify";
import { ADMIN_PREFIX, namespaceView, refuseNonAdmin, resourceDetail } from "./admin.js";
import type { LocalBackend } from "./local-backend.js";
import type { ResolvedServerOptions } from "./options.js";

/** Where the dashboard is served (docs/protocol.md, "Dashboard"). */
export const DASHBOARD_PATH = "/dashboard";

/** How often a live view is recomputed and, if it changed, sent (ms). */
const STREAM_EVERY = 250;

/**
 * The web dashboard: a page and its script (no build step, no third-party code), which ask for
 * an admin key once (kept in the tab's sessionStorage), and a live stream of the admin API's views
 * (server-sent events over a fetch, so that the key travels in a header, never in a URL).
 */
export function dashboardRoutes(
  app: FastifyInstance,
  options: ResolvedServerOptions,
  backend: LocalBackend,
) {
  const page =
    (type: string, body: string) => (_req: unknown, reply: import("fastify").FastifyReply) =>
      reply
        .type(type)
        .header("cache-control", "no-store")
        .header(
          "content-security-policy",
          "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        )
        .send(body);
  app.get(DASHBOARD_PATH, page("text/html; charset=utf-8", HTML));
  app.get(`${DASHBOARD_PATH}/app.js`, page("text/javascript; charset=utf-8", SCRIPT));
  app.get(`${DASHBOARD_PATH}/app.css`, page("text/css; charset=utf-8", STYLE));

  // The live view: `data: {json}` whenever it changes, recomputed every STREAM_EVERY ms.
  app.get<{ Params: { ns: string }; Querystring: Record<string, string> }>(
    `${ADMIN_PREFIX}/namespaces/:ns/stream`,
    async (req, reply) => {
      const refused = refuseNonAdmin(options, req, reply, "the admin API");
      if (refused) return refused;
      const view = () => {
        const space = backend.engine.findNamespace(req.params.ns);
        const name = req.query.resource;
        return JSON.stringify({
          namespace: req.params.ns,
          ...(space ? namespaceView(space, 0, 50) : { total: 0, resources: [] }),
          resource:
            space && name !== undefined && space.resources.has(name)
              ? resourceDetail(space, space.resources.get(name)!, options.clock.now())
              : null,
        });
      };
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        connection: "keep-alive",
      });
      let last = "";
      const send = () => {
        const next = view();
        if (next === last) return;
        last = next;
        raw.write(`data: ${next}\n\n`);
      };
      send();
      const timer = setInterval(send, STREAM_EVERY);
      // Ends with its connection: the client's going, or the server's closing (it closes every
      // connection, forceCloseConnections).
      raw.once("close", () => clearInterval(timer));
    },
  );
}

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>RateQueue</title>
<link rel="stylesheet" href="/dashboard/app.css">
<script src="/dashboard/app.js" defer></script>
</head>
<body>
<header><h1>RateQueue</h1><span id="status">connecting…</span></header>
<form id="login" hidden>
  <label>Admin key <input id="key" type="password" autocomplete="off" required></label>
  <button>Open</button>
  <p class="hint">An admin key of this server (<code>--admin-key</code>). It stays in this tab only.</p>
</form>
<main id="main" hidden>
  <section>
    <h2>Resources <select id="namespace" aria-label="namespace"></select></h2>
    <table id="resources"><thead><tr><th>resource</th><th>capacity</th><th>used</th><th>holding</th><th>waiting</th></tr></thead><tbody></tbody></table>
  </section>
  <section id="detail" hidden>
    <h2 id="detail-name"></h2>
    <form id="capacity"><label>Capacity <input id="capacity-value" type="number" min="1" step="1" required></label><button>Set</button><span id="capacity-result"></span></form>
    <form id="concurrency"><label>At most holding at once <input id="concurrency-value" type="number" min="1" step="1" placeholder="no limit"></label><button>Set</button><span id="concurrency-result"></span></form>
    <h3>Rate limits</h3>
    <table id="rates"><thead><tr><th>limit</th><th>per</th><th>window</th><th>counts</th><th>used</th><th></th></tr></thead><tbody></tbody></table>
    <form id="rate-add"><input id="rate-limit" type="number" min="1" step="1" placeholder="limit" aria-label="limit" required> per <input id="rate-window" type="number" min="1" step="1" placeholder="window, ms" aria-label="window in ms" required> ms <select id="rate-kind" aria-label="window kind"><option>sliding</option><option>fixed</option></select> <select id="rate-counts" aria-label="counts"><option>requests</option><option>load</option></select> <button>Add</button><span id="rates-result"></span></form>
    <h3>Lanes <span id="lanes-strategy" class="hint"></span></h3>
    <table id="lanes"><thead><tr><th>lane</th><th>weight</th><th>share</th><th>reserved</th><th>waiting</th><th>holding</th><th>used</th></tr></thead><tbody></tbody></table>
    <form id="lanes-set"><textarea id="lanes-value" rows="2" cols="64" spellcheck="false" aria-label="lanes (JSON)" placeholder='{"strategy": "fair", "weights": {"interactive": 3}, "reserved": {"interactive": 2}} or {"strategy": "strict", "shares": {"interactive": 2, "batch": 6}}'></textarea> <button id="lanes-submit">Set</button> <button id="lanes-lift" type="button">Lift</button><span id="lanes-result"></span></form>
    <h3>Holders</h3>
    <table id="holders"><thead><tr><th>request</th><th>lane</th><th>token</th><th>held</th><th>address</th><th></th></tr></thead><tbody></tbody></table>
    <h3>Line</h3>
    <table id="line"><thead><tr><th>#</th><th>request</th><th>lane</th><th>priority</th><th>waited</th><th>address</th></tr></thead><tbody></tbody></table>
  </section>
</main>
</body>
</html>
`;

const STYLE = `[hidden]{display:none!important}
body{font:14px system-ui,sans-serif;margin:0;color:#222}
header{display:flex;gap:1em;align-items:baseline;padding:.5em 1em;background:#1d3557;color:#fff}
h1{font-size:1.2em;margin:0}#status{opacity:.8}
main,form#login{padding:1em;display:grid;gap:1.5em}
table{border-collapse:collapse;min-width:30em}th,td{text-align:left;padding:.25em .75em;border-bottom:1px solid #ddd}
tbody tr{cursor:pointer}tbody tr.selected{background:#e8f0fe}
button{cursor:pointer}.hint{color:#666;font-weight:normal}
textarea{font:12px ui-monospace,monospace;vertical-align:middle}
`;

// Plain browser JavaScript: no framework, no build step.
const SCRIPT = `"use strict";
const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("ratequeue-admin-key"), ns: "", resource: undefined, stream: undefined };
const ms = (n) => (n < 1000 ? n + " ms" : (n / 1000).toFixed(1) + " s");
const api = (path, init = {}) =>
  fetch("/v1/admin" + path, { ...init, headers: { authorization: "Bearer " + state.key, "content-type": "application/json", ...(init.headers || {}) } });
function cell(tr, text) { const td = document.createElement("td"); td.textContent = String(text); tr.append(td); return td; }
function rows(tbody, items, fill) { tbody.replaceChildren(...items.map((item, i) => { const tr = document.createElement("tr"); fill(tr, item, i); return tr; })); }

async function start() {
  if (!state.key) { $("login").hidden = false; $("status").textContent = "admin key needed"; return; }
  const res = await api("/namespaces");
  if (res.status === 401 || res.status === 403) {
    sessionStorage.removeItem("ratequeue-admin-key"); state.key = null;
    $("login").hidden = false; $("status").textContent = (await res.json()).detail; return;
  }
  const { namespaces } = await res.json();
  $("login").hidden = true; $("main").hidden = false;
  const select = $("namespace");
  select.replaceChildren(...namespaces.map((n) => { const o = document.createElement("option"); o.value = n.id; o.textContent = n.id.slice(0, 12) + " (" + n.resources + ")"; return o; }));
  if (namespaces.length === 0) { $("status").textContent = "nothing holds or waits yet"; setTimeout(start, 1000); return; }
  if (!namespaces.some((n) => n.id === state.ns)) state.ns = namespaces[0].id;
  select.value = state.ns;
  watch();
}

/** The live view: server-sent events read from a fetch (the key goes in a header). */
async function watch() {
  state.stream?.abort();
  const controller = new AbortController();
  state.stream = controller;
  const q = state.resource === undefined ? "" : "?resource=" + encodeURIComponent(state.resource);
  try {
    const res = await api("/namespaces/" + state.ns + "/stream" + q, { signal: controller.signal });
    $("status").textContent = "live";
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const event = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        if (event.startsWith("data: ")) render(JSON.parse(event.slice(6)));
      }
    }
  } catch (error) { if (controller.signal.aborted) return; }
  if (!controller.signal.aborted) { $("status").textContent = "reconnecting…"; setTimeout(watch, 1000); }
}

function render(view) {
  document.body.dataset.updated = String(Date.now());
  rows($("resources").tBodies[0], view.resources, (tr, r) => {
    for (const v of [r.name, r.capacity, r.used, r.active, r.queued]) cell(tr, v);
    tr.dataset.resource = r.name;
    if (r.name === state.resource) tr.classList.add("selected");
    tr.onclick = () => { state.resource = r.name; delete $("lanes-value").dataset.edited; $("lanes-result").textContent = ""; watch(); };
  });
  const d = view.resource;
  $("detail").hidden = !d;
  if (!d) return;
  $("detail-name").textContent = d.name + ": capacity " + d.capacity + ", " + d.used + " used, " + d.active + " holding" + (d.concurrency ? " (at most " + d.concurrency + (d.heldBackHolders ? ", counting " + d.heldBackHolders + " ended, units held back" : "") + ")" : "") + ", " + d.queued + " waiting" +
    (d.rates || []).map((r) => "; " + r.used + " of " + r.limit + (r.counts === "load" ? " load" : " requests") + " per " + r.window + " ms (" + r.kind + (r.fullUntil ? ", full after a restart" : "") + ")").join("");
  if (document.activeElement !== $("capacity-value")) $("capacity-value").value = d.capacity;
  if (document.activeElement !== $("concurrency-value")) $("concurrency-value").value = d.concurrency ?? "";
  state.rates = (d.rates || []).map((r) => ({ limit: r.limit, window: r.window, kind: r.kind, counts: r.counts }));
  rows($("rates").tBodies[0], d.rates || [], (tr, r, i) => {
    for (const v of [r.limit, ms(r.window), r.kind, r.counts, r.used]) cell(tr, v);
    const button = document.createElement("button"); button.textContent = "Remove";
    button.onclick = () => setRates(state.rates.filter((_, j) => j !== i));
    const td = document.createElement("td"); td.append(button); tr.append(td);
  });
  renderLanes(d);
  rows($("holders").tBodies[0], d.holders, (tr, h) => {
    for (const v of [h.id, h.lane, h.fencingToken, ms(h.heldMs), h.address || "-"]) cell(tr, v);
    tr.dataset.request = h.id;
    const button = document.createElement("button"); button.textContent = "Force-release";
    button.onclick = async () => {
      const reason = prompt("Why? The holder is told.", "released from the dashboard");
      if (!reason) return;
      const res = await api("/namespaces/" + state.ns + "/requests/" + encodeURIComponent(h.id) + "/revoke", { method: "POST", body: JSON.stringify({ reason }) });
      $("status").textContent = res.ok ? "revoked " + h.id : (await res.json()).detail;
    };
    const td = document.createElement("td"); td.append(button); tr.append(td);
  });
  // With lanes the line comes lane by lane, each in its own order: # is the place in its lane.
  const place = {};
  $("line").tHead.rows[0].cells[0].textContent = d.lanes ? "# in lane" : "#";
  rows($("line").tBodies[0], d.line, (tr, w, i) => {
    place[w.lane] = (place[w.lane] || 0) + 1;
    for (const v of [d.lanes ? place[w.lane] : i + 1, w.id, w.lane, w.priority, ms(w.waitedMs), w.address || "-"]) cell(tr, v);
    tr.dataset.request = w.id;
  });
}

/** The lanes: the operator's config (weights, shares, reservations) beside each lane's counts. */
function renderLanes(d) {
  const config = d.laneConfig, counts = d.lanes || {}, strict = config?.strategy === "strict";
  $("lanes-strategy").textContent = config
    ? config.strategy + (strict ? ": each lane owns its share" : ": lanes take turns by weight")
    : d.lanes ? "fair, every weight 1 (none set)" : "none";
  const names = [...new Set([config?.weights, config?.shares, config?.reserved, counts].flatMap((m) => Object.keys(m || {})))].sort();
  $("lanes").hidden = names.length === 0;
  rows($("lanes").tBodies[0], names, (tr, name) => {
    const c = counts[name] || { queued: 0, active: 0, used: 0 };
    for (const v of [name, strict ? "-" : config?.weights?.[name] ?? 1, strict ? config.shares?.[name] ?? 0 : "-", strict ? "-" : config?.reserved?.[name] ?? 0, c.queued, c.active, c.used]) cell(tr, v);
    tr.dataset.lane = name;
  });
  // What is set, to edit: kept while the operator is editing it (or a refused edit is on show).
  const field = $("lanes-value");
  if (document.activeElement !== field && !field.dataset.edited) field.value = config ? JSON.stringify(config) : "";
}

$("login").onsubmit = (e) => { e.preventDefault(); state.key = $("key").value; sessionStorage.setItem("ratequeue-admin-key", state.key); start(); };
$("namespace").onchange = (e) => { state.ns = e.target.value; state.resource = undefined; watch(); };
$("capacity").onsubmit = async (e) => {
  e.preventDefault();
  const res = await api("/namespaces/" + state.ns + "/limits/" + encodeURIComponent(state.resource), { method: "PUT", body: JSON.stringify({ capacity: Number($("capacity-value").value) }) });
  $("capacity-result").textContent = res.ok ? " set" : " " + (await res.json()).detail;
};
/** Sets one of the selected resource's limits (the others stay); says how it went after the form. */
async function setLimit(body, result) {
  const res = await api("/namespaces/" + state.ns + "/limits/" + encodeURIComponent(state.resource), { method: "PUT", body: JSON.stringify(body) });
  $(result).textContent = res.ok ? " set" : " " + (await res.json()).detail;
  return res.ok;
}
const setRates = (rates) => setLimit({ rates: rates.length ? rates : null }, "rates-result");
$("concurrency").onsubmit = (e) => {
  e.preventDefault();
  const v = $("concurrency-value").value;
  setLimit({ concurrency: v === "" ? null : Number(v) }, "concurrency-result");
};
$("rate-add").onsubmit = (e) => {
  e.preventDefault();
  setRates([...(state.rates || []), { limit: Number($("rate-limit").value), window: Number($("rate-window").value), kind: $("rate-kind").value, counts: $("rate-counts").value }]);
};
$("lanes-value").oninput = (e) => { e.target.dataset.edited = "1"; };
/** Lanes as JSON, as the admin API takes them (empty lifts them): the server says what is wrong. */
const setLanes = async (lanes) => { if (await setLimit({ lanes }, "lanes-result")) delete $("lanes-value").dataset.edited; };
$("lanes-set").onsubmit = (e) => {
  e.preventDefault();
  const text = $("lanes-value").value.trim();
  let lanes = null;
  try { if (text !== "") lanes = JSON.parse(text); } catch (error) { $("lanes-result").textContent = " not JSON: " + error.message; return; }
  setLanes(lanes);
};
$("lanes-lift").onclick = () => setLanes(null);
start();
`;
