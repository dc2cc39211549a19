// isthmus viz dashboard: polls the dashboard server's /api/clusters and each cluster's viz API
// (proxied under /api/clusters/<name>/api/...) every few seconds and redraws the page in place;
// reads tap as a stream. No library, nothing loaded from anywhere but this origin.
"use strict";

const POLL_MS = 3000;
const TAP_ROWS = 25;
const SVG = "http://www.w3.org/2000/svg";

const state = {
  cluster: null,        // the cluster shown
  clusters: [],         // entries of /api/clusters
  namespace: null,      // the namespace whose deployments, edges and routes are shown
  deployment: null,     // the deployment whose charts are shown and which is tapped
  service: null,        // the service whose routes are shown
  window: "1m",
  refreshes: 0,
  tap: { key: null, controller: null, paused: false, seen: 0, calls: new Map(), order: [] },
};

// ---- small helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel) => document.querySelector(sel);
const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

function pct(v) { return v === null || v === undefined ? "-" : `${(v * 100).toFixed(2)}%`; }
function num(v, digits = 1) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }
function ms(v) {
  if (v === null || v === undefined) return "-";
  return v >= 100 ? `${Math.round(v)} ms` : `${Number(v).toFixed(v >= 10 ? 1 : 2)} ms`;
}
function lat(row, q) { return row.latency_ms ? ms(row.latency_ms[q]) : "-"; }
function successClass(v) {
  if (v === null || v === undefined) return "";
  return v >= 0.99 ? "good" : v >= 0.9 ? "warn" : "bad";
}
function shortId(id) { return id ? id.replace(/\.serviceaccount\.identity\.isthmus\..*$/, "") : "-"; }
function slug(s) { return String(s).replace(/[^A-Za-z0-9_.-]/g, "_"); }

class ApiError extends Error {}

async function getJSON(path) {
  let r;
  try {
    r = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch (e) {
    throw new ApiError(`the dashboard server does not answer (${e.message}): is \`isthmus viz dashboard\` still running?`);
  }
  const text = await r.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { /* not JSON: said below */ }
  if (!r.ok) {
    const why = body && body.error ? body.error : text.trim().slice(0, 300) || r.statusText;
    throw new ApiError(`${r.status}: ${why}`);
  }
  if (body === null) throw new ApiError(`GET ${path} answered something that is not JSON`);
  return body;
}

function viz(path, params) {
  const q = new URLSearchParams(params || {});
  return `/api/clusters/${encodeURIComponent(state.cluster)}/api/${path}${q.toString() ? "?" + q : ""}`;
}

// Errors are shown where they happen (one box per section) and gathered in the banner.
const errors = new Map();
function showError(section, message) {
  const box = byTestId(`${section}-error`);
  if (box) { box.textContent = message || ""; box.hidden = !message; }
  if (message) errors.set(section, message); else errors.delete(section);
}
function renderBanner() {
  const banner = byTestId("error-banner");
  const distinct = [...new Set(errors.values())];
  banner.replaceChildren(...distinct.map((m) => h("div", { text: m })));
  banner.hidden = distinct.length === 0;
}

function fillBody(table, rows, emptyText, columns) {
  const tbody = table.tBodies[0];
  if (rows.length === 0) {
    tbody.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: columns, text: emptyText })));
  } else {
    tbody.replaceChildren(...rows);
  }
}

// ---- charts (SVG drawn here) -----------------------------------------------------------------

function chart(series, opts) {
  const w = opts.width || 260, hgt = opts.height || 70, pad = 4;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("width", w);
  svg.setAttribute("height", hgt);
  svg.setAttribute("class", "chart");
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  let lo = opts.min !== undefined ? opts.min : Math.min(0, ...all);
  let hi = opts.max !== undefined ? opts.max : Math.max(...all, lo + 1e-9);
  if (opts.max === undefined && all.length) hi = hi * 1.1 || 1;
  if (hi <= lo) hi = lo + 1;
  const n = Math.max(...series.map((s) => s.values.length), 2);
  const x = (i) => pad + (i * (w - 2 * pad)) / (n - 1);
  const y = (v) => hgt - pad - ((v - lo) * (hgt - 2 * pad)) / (hi - lo);
  const base = document.createElementNS(SVG, "line");
  for (const [k, v] of Object.entries({ x1: pad, x2: w - pad, y1: hgt - pad, y2: hgt - pad, class: "axis" })) base.setAttribute(k, v);
  svg.append(base);
  for (const s of series) {
    let d = "", pen = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d || "M0,0");
    path.setAttribute("class", `line ${s.cls || ""}`);
    svg.append(path);
  }
  if (all.length === 0 && opts.label !== false) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", w / 2);
    t.setAttribute("y", hgt / 2 + 4);
    t.setAttribute("class", "nodata");
    t.textContent = opts.empty || "no requests served in the window";
    svg.append(t);
  }
  if (opts.label !== false) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", w - pad);
    t.setAttribute("y", 11);
    t.setAttribute("class", "scale");
    t.textContent = opts.format ? opts.format(hi) : num(hi);
    svg.append(t);
  }
  return svg;
}

// ---- sections --------------------------------------------------------------------------------

async function refreshClusters() {
  const body = await getJSON("/api/clusters");
  state.clusters = body.clusters || [];
  if (!state.cluster || !state.clusters.some((c) => c.name === state.cluster)) {
    state.cluster = body.current;
    resetSelection();
  }
  const nav = $("#clusters");
  nav.replaceChildren(...state.clusters.map((c) => h("button", {
    type: "button", "data-testid": `cluster-${slug(c.name)}`, "data-cluster": c.name,
    "aria-pressed": c.name === state.cluster ? "true" : "false",
    class: c.error ? "unavailable" : "", title: c.error || (c.local ? "this cluster" : `linked cluster (context ${c.context})`),
    onclick: () => switchCluster(c.name),
  }, c.name, c.local ? h("span", { class: "dim", text: " (local)" }) : null)));
  const current = state.clusters.find((c) => c.name === state.cluster);
  showError("clusters", body.error || (current && current.error) || null);
}

function resetSelection() {
  state.namespace = null;
  state.deployment = null;
  state.service = null;
  stopTap();
}

function switchCluster(name) {
  if (name === state.cluster) return;
  state.cluster = name;
  resetSelection();
  for (const id of ["namespaces", "deployments", "outbound", "services", "edges", "routes", "live-calls"]) {
    fillBody(byTestId(id), [], "loading…", 10);
  }
  $("#links").replaceChildren();
  kick();
}

async function refreshNamespaces() {
  const [listing, stats] = await Promise.all([
    getJSON(viz("namespaces")),
    getJSON(viz("stat", { resource: "ns", window: state.window })),
  ]);
  const rowsByName = new Map((stats.rows || []).map((r) => [r.name, r]));
  const namespaces = listing.namespaces || [];
  if (!state.namespace || !namespaces.some((n) => n.name === state.namespace)) {
    const app = namespaces.find((n) => n.meshed_pods > 0 && !n.name.startsWith("isthmus") && n.name !== "kube-system");
    state.namespace = (app || namespaces.find((n) => n.meshed_pods > 0) || namespaces[0] || {}).name || null;
  }
  fillBody($("#namespaces"), namespaces.map((n) => {
    const s = rowsByName.get(n.name) || {};
    return h("tr", {
      "data-testid": `ns-row-${slug(n.name)}`, "data-name": n.name,
      class: n.name === state.namespace ? "selected clickable" : "clickable",
      onclick: () => { state.namespace = n.name; state.deployment = null; state.service = null; kick(); },
    },
    h("td", { text: n.name }), h("td", { text: `${n.meshed_pods}/${n.pods}` }),
    h("td", { "data-testid": "success", class: successClass(s.success), text: pct(s.success) }),
    h("td", { "data-testid": "rps", text: num(s.rps) }),
    h("td", { text: lat(s, "p50") }), h("td", { text: lat(s, "p95") }), h("td", { text: lat(s, "p99") }));
  }), "no namespaces", 7);
}

async function refreshDeployments() {
  const ns = state.namespace;
  $("#deployments-ns").textContent = ns ? `in ${ns}` : "";
  if (!ns) { fillBody($("#deployments"), [], "no namespace", 10); return; }
  const stat = await getJSON(viz("stat", { resource: "deploy", namespace: ns, window: state.window }));
  const rows = stat.rows || [];
  if (!state.deployment || !rows.some((r) => r.name === state.deployment)) {
    const busy = rows.filter((r) => r.rps > 0).sort((a, b) => (a.success ?? 1) - (b.success ?? 1));
    state.deployment = (busy[0] || rows[0] || {}).name || null;
  }
  // one time series per deployment (10 minutes), for the sparklines and the selected one's charts
  const series = await Promise.all(rows.map((r) => getJSON(viz("timeseries", {
    resource: `deploy/${r.name}`, namespace: ns, window: state.window === "60m" ? "60m" : "10m", points: 30,
  })).catch((e) => ({ error: e.message }))));
  fillBody($("#deployments"), rows.map((r, i) => {
    const pts = series[i].points || [];
    return h("tr", {
      "data-testid": `deploy-row-${slug(ns)}-${slug(r.name)}`, "data-name": r.name,
      "data-success": r.success ?? "", "data-rps": r.rps ?? "",
      class: r.name === state.deployment ? "selected clickable" : "clickable",
      onclick: () => { state.deployment = r.name; kick(); },
    },
    h("td", { "data-testid": "name", text: r.name }), h("td", { "data-testid": "meshed", text: r.meshed }),
    h("td", { "data-testid": "success", class: successClass(r.success), text: pct(r.success) }),
    h("td", { "data-testid": "rps", text: num(r.rps) }),
    h("td", { "data-testid": "p50", text: lat(r, "p50") }), h("td", { "data-testid": "p95", text: lat(r, "p95") }),
    h("td", { "data-testid": "p99", text: lat(r, "p99") }), h("td", { text: r.tcp_conn ?? "-" }),
    h("td", { class: "spark" }, series[i].error ? h("span", { class: "error-inline", title: series[i].error, text: "!" })
      : chart([{ values: pts.map((p) => p.success), cls: "success" }], { width: 110, height: 24, min: 0, max: 1, label: false })),
    h("td", { class: "spark" }, series[i].error ? "" :
      chart([{ values: pts.map((p) => p.rps), cls: "rps" }], { width: 110, height: 24, label: false })));
  }), "no deployments in this namespace", 10);
  const selected = rows.findIndex((r) => r.name === state.deployment);
  renderDetail(selected >= 0 ? rows[selected] : null, selected >= 0 ? series[selected] : null);
}

function renderDetail(row, series) {
  $("#detail-name").textContent = row ? `${state.namespace}/${row.name}` : "-";
  const targets = ["#chart-success", "#chart-rps", "#chart-latency"].map((s) => $(s));
  if (!row || !series || series.error) {
    showError("detail", series && series.error ? series.error : null);
    targets.forEach((t) => t.replaceChildren());
    return;
  }
  showError("detail", null);
  const pts = series.points || [];
  targets[0].replaceChildren(chart([{ values: pts.map((p) => p.success), cls: "success" }], { min: 0, max: 1, format: () => "100%" }),
    h("div", { class: "now", "data-testid": "detail-success", text: pct(row.success) }));
  targets[1].replaceChildren(chart([{ values: pts.map((p) => p.rps), cls: "rps" }], {}),
    h("div", { class: "now", "data-testid": "detail-rps", text: `${num(row.rps)} rps` }));
  targets[2].replaceChildren(chart(["p50", "p95", "p99"].map((q) => ({ values: pts.map((p) => p[q]), cls: q })), { format: (v) => ms(v) }),
    h("div", { class: "now", "data-testid": "detail-latency", text: `${lat(row, "p50")} / ${lat(row, "p95")} / ${lat(row, "p99")}` }));
}

// Ready, RemoteReachable, GatewayAlive: a problem when not True; Missing...: a problem when True.
function conditionIsProblem(c) {
  return /^Missing/.test(c.type) ? c.status === "True" : c.status !== "True";
}

function edgeRow(e, prefix) {
  return h("tr", {
    "data-testid": `${prefix}-${slug(e.src)}-${slug(e.dst)}`, "data-src": e.src, "data-dst": e.dst,
    "data-secured": e.secured ? "true" : "false",
  },
  h("td", { text: e.src }), h("td", { text: e.dst }), h("td", { text: e.src_namespace || "-" }),
  h("td", { text: e.dst_namespace || "-" }), h("td", { text: e.dst_cluster || "(local)" }),
  h("td", { "data-testid": "secured", class: e.secured ? "good dot" : "bad dot", text: e.secured ? "secured" : `not secured${e.no_tls_reason ? ` (${e.no_tls_reason})` : ""}` }),
  h("td", { "data-testid": "client-id", title: e.client_id || "", text: e.client_id || "-" }),
  h("td", { "data-testid": "server-id", title: e.server_id || "", text: e.server_id || "-" }));
}

async function refreshEdges() {
  if (!state.namespace) { fillBody($("#edges"), [], "no namespace", 8); return; }
  const body = await getJSON(viz("edges", { resource: "deploy", namespace: state.namespace }));
  fillBody($("#edges"), (body.rows || []).map((e) => edgeRow(e, "edge")), "no edges seen yet", 8);
}

function statRow(r, testid) {
  return h("tr", { "data-testid": testid, "data-name": r.name, "data-success": r.success ?? "" },
    h("td", { "data-testid": "name", text: r.name }),
    h("td", { "data-testid": "success", class: successClass(r.success), text: pct(r.success) }),
    h("td", { "data-testid": "rps", text: num(r.rps) }), h("td", { "data-testid": "p50", text: lat(r, "p50") }),
    h("td", { "data-testid": "p95", text: lat(r, "p95") }), h("td", { "data-testid": "p99", text: lat(r, "p99") }));
}

async function refreshOutbound() {
  const name = state.deployment;
  $("#outbound-name").textContent = name || "-";
  if (!state.namespace || !name) { fillBody($("#outbound"), [], "no deployment", 6); return; }
  const body = await getJSON(viz("stat", { resource: "svc", namespace: state.namespace, from: `deploy/${name}`, window: state.window }));
  const rows = (body.rows || []).filter((r) => r.rps > 0 || r.success !== null);
  fillBody($("#outbound"), rows.map((r) => statRow(r, `out-row-${slug(r.name)}`)), `${name} called no service in the window`, 6);
}

async function refreshRoutes() {
  if (!state.namespace) {
    fillBody($("#routes"), [], "no namespace", 6);
    fillBody($("#services"), [], "no namespace", 6);
    return;
  }
  const svcs = await getJSON(viz("stat", { resource: "svc", namespace: state.namespace, window: state.window }));
  fillBody($("#services"), (svcs.rows || []).map((r) => statRow(r, `svc-row-${slug(state.namespace)}-${slug(r.name)}`)),
    "no services in this namespace", 6);
  const names = (svcs.rows || []).map((r) => r.name);
  if (!state.service || !names.includes(state.service)) {
    const busy = (svcs.rows || []).filter((r) => r.rps > 0).sort((a, b) => b.rps - a.rps);
    state.service = (busy[0] || svcs.rows[0] || {}).name || null;
  }
  const select = $("#routes-service");
  if (select.dataset.options !== names.join(",")) {
    select.replaceChildren(...names.map((n) => h("option", { value: n, text: n })));
    select.dataset.options = names.join(",");
  }
  if (state.service) select.value = state.service;
  if (!state.service) { fillBody($("#routes"), [], "no services", 6); return; }
  const body = await getJSON(viz("routes", { resource: `svc/${state.service}`, namespace: state.namespace, window: state.window }));
  fillBody($("#routes"), (body.rows || []).map((r) => h("tr", { "data-testid": `route-${slug(r.route)}`, "data-route": r.route, title: r.authority || "" },
    h("td", { text: r.route }), h("td", { "data-testid": "success", class: successClass(r.success), text: pct(r.success) }),
    h("td", { "data-testid": "rps", text: num(r.rps) }), h("td", { text: lat(r, "p50") }),
    h("td", { text: lat(r, "p95") }), h("td", { text: lat(r, "p99") }))), "no requests on this service yet", 6);
}

async function refreshMulticluster() {
  const body = await getJSON(viz("multicluster"));
  $("#mc-cluster").textContent = `links of ${body.cluster || state.cluster}`;
  const links = body.links || [];
  if (links.length === 0) {
    $("#links").replaceChildren(h("p", { class: "dim", "data-testid": "no-links",
      text: `cluster ${state.cluster} has no Links: it mirrors no other cluster's services` }));
    return;
  }
  $("#links").replaceChildren(...links.map((l) => {
    const alive = l.alive === true ? "alive" : l.alive === false ? "down" : "unknown";
    const probes = l.probes || {};
    return h("article", { class: "link", "data-testid": `link-${slug(l.cluster)}`, "data-cluster": l.cluster },
      h("h3", {}, "→ ", l.cluster,
        h("span", { class: `badge ${alive}`, "data-testid": "gateway-status", "data-alive": String(l.alive), text: `gateway ${alive}` })),
      h("dl", {},
        h("dt", { text: "gateway" }), h("dd", { "data-testid": "gateway-address", text: `${l.gateway_address}:${l.gateway_port}` }),
        h("dt", { text: "latency" }), h("dd", { "data-testid": "gateway-latency", text: ms(l.latency_ms) }),
        h("dt", { text: "probes" }), h("dd", { "data-testid": "gateway-probes", text: `${probes.success ?? 0} ok, ${probes.failure ?? 0} failed` }),
        h("dt", { text: "identity" }), h("dd", { class: "id", title: l.gateway_identity || "", text: l.gateway_identity || "-" })),
      ...(l.conditions || []).filter(conditionIsProblem).map((c) =>
        h("p", { class: "bad", "data-testid": "link-condition", text: `${c.type}: ${c.message || c.reason || c.status}` })),
      h("h4", { text: "mirrored services" }),
      h("table", { "data-testid": "mirrored-services" },
        h("thead", {}, h("tr", {}, h("th", { text: "service" }), h("th", { text: "namespace" }), h("th", { text: "endpoints" }), h("th", { text: "ready" }))),
        h("tbody", {}, (l.mirrored_services || []).length === 0 ? h("tr", { class: "empty" }, h("td", { colspan: 4, text: "none" })) :
          l.mirrored_services.map((m) => h("tr", { "data-testid": `mirrored-${slug(m.namespace)}-${slug(m.name)}`,
            title: m.remote ? `mirrors ${m.remote}` : "" },
            h("td", { text: m.name }), h("td", { text: m.namespace }), h("td", { text: m.endpoints }),
            h("td", { class: m.ready ? "good" : "bad", text: m.ready ? "ready" : "not ready" }))))),
      h("h4", { text: "cross-cluster edges" }),
      h("table", { "data-testid": "cross-cluster-edges" },
        h("thead", {}, h("tr", {}, ...["src", "dst", "src ns", "dst ns", "cluster", "secured", "client identity", "server identity"].map((t) => h("th", { text: t })))),
        h("tbody", {}, (l.edges || []).length === 0 ? h("tr", { class: "empty" }, h("td", { colspan: 8, text: "no traffic through this gateway yet" })) :
          l.edges.map((e) => edgeRow(e, "mc-edge")))));
  }));
}

// ---- tap: a stream read as it comes ----------------------------------------------------------

// One tap line (NDJSON in the shape of `linkerd viz tap -o json`, or a text line of DESIGN.md's
// tap format) as {key, kind, dir, src, srcName, dst, dstName, tls, method, authority, path, status,
// latency, duration, bytes}; {error} for a proxy the viz API could not tap; null for nothing.
function parseTapLine(line) {
  line = line.trim();
  if (!line) return null;
  if (line.startsWith("#")) return { error: line.replace(/^#\s*/, "") };
  if (line.startsWith("{")) {
    try { return fromJsonEvent(JSON.parse(line)); } catch (_) { return null; }
  }
  // req id=0:1 proxy=out src=IP:PORT dst=IP:PORT tls=true :method=GET :authority=a :path=/p
  const [kind, ...rest] = line.split(/\s+/);
  const f = {};
  for (const tok of rest) {
    const i = tok.indexOf("=");
    if (i > 0) f[tok.slice(0, i)] = tok.slice(i + 1);
  }
  if (!["req", "rsp", "end"].includes(kind)) return null;
  return {
    key: `${f.src}|${f.dst}|${f.id}`, kind, dir: f.proxy || "", src: f.src, dst: f.dst,
    tls: f.tls, method: f[":method"], authority: f[":authority"], path: f[":path"],
    status: f[":status"], latency: f.latency, duration: f.duration, bytes: f["response-length"],
  };
}

function micros(d) {
  if (!d) return undefined;
  const us = (d.seconds || 0) * 1e6 + (d.nanos || 0) / 1e3;
  return us >= 1000 ? `${(us / 1000).toFixed(1)} ms` : `${Math.round(us)}µs`;
}

function fromJsonEvent(ev) {
  if (ev.error) return { error: ev.error };
  const src = ev.source || {}, dst = ev.destination || {};
  const sm = src.metadata || {}, dm = dst.metadata || {};
  const out = ev.proxyDirection === "OUTBOUND";
  const addr = (p) => (p.ip ? (p.ip.includes(":") ? `[${p.ip}]:${p.port}` : `${p.ip}:${p.port}`) : "");
  const req = ev.requestInitEvent, rsp = ev.responseInitEvent, end = ev.responseEndEvent;
  const body = req || rsp || end;
  if (!body) return null;
  const id = body.id ? `${body.id.base}:${body.id.stream}` : "";
  return {
    key: `${addr(src)}|${addr(dst)}|${id}`, kind: req ? "req" : rsp ? "rsp" : "end",
    dir: out ? "out" : "in", src: addr(src), dst: addr(dst),
    srcName: sm.pod || sm.deployment || "", dstName: dm.service || dm.deployment || dm.pod || "",
    dstCluster: dm.target_cluster || "",
    tls: String((out ? dm.tls : sm.tls) ?? ""),
    method: req && req.method, authority: req && req.authority, path: req && req.path,
    status: rsp ? String(rsp.httpStatus) : undefined, latency: rsp && micros(rsp.sinceRequestInit),
    duration: end && micros(end.sinceResponseInit), bytes: end ? `${end.responseBytes}B` : undefined,
  };
}

function tapKey() {
  return state.cluster && state.namespace && state.deployment && !state.tap.paused
    ? `${state.cluster}|${state.namespace}|${state.deployment}` : null;
}

function stopTap() {
  if (state.tap.controller) state.tap.controller.abort();
  state.tap.controller = null;
  state.tap.key = null;
}

function ensureTap() {
  const key = tapKey();
  $("#tap-target").textContent = state.deployment ? `of deploy/${state.deployment}${state.tap.paused ? " (paused)" : ""}` : "";
  if (key === state.tap.key) return;
  stopTap();
  if (!key) return;
  state.tap.key = key;
  state.tap.calls = new Map();
  state.tap.order = [];
  state.tap.seen = 0;
  renderCalls();
  const controller = new AbortController();
  state.tap.controller = controller;
  runTap(key, controller).catch(() => {});
}

async function runTap(key, controller) {
  const url = viz("tap", { resource: `deploy/${state.deployment}`, namespace: state.namespace, format: "json" });
  while (state.tap.key === key && !controller.signal.aborted) {
    try {
      const r = await fetch(url, { signal: controller.signal, cache: "no-store" });
      if (!r.ok) {
        const text = await r.text();
        let why = text.trim().slice(0, 300);
        try { why = JSON.parse(text).error || why; } catch (_) { /* shown as text */ }
        showError("calls", `tap: ${r.status}: ${why}`);
      } else {
        showError("calls", null);
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const ev = parseTapLine(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
            if (ev) takeTapEvent(ev);
          }
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
      showError("calls", `tap: the stream broke (${e.message}); reconnecting`);
    }
    renderBanner();
    await new Promise((res) => setTimeout(res, 2000));  // stream ended or refused: again shortly
  }
}

function takeTapEvent(ev) {
  if (ev.error) { showError("calls", `tap: ${ev.error}`); renderBanner(); return; }
  let call = state.tap.calls.get(ev.key);
  if (!call) {
    call = { at: new Date(), f: {} };  // events carry the proxy's monotonic time: shown as received
    state.tap.calls.set(ev.key, call);
    state.tap.order.unshift(ev.key);
    state.tap.seen += 1;
    while (state.tap.order.length > TAP_ROWS) state.tap.calls.delete(state.tap.order.pop());
  }
  for (const [k, v] of Object.entries(ev)) if (v !== undefined && v !== "" && k !== "at") call.f[k] = v;
  scheduleCallsRender();
}

let callsTimer = null;
function scheduleCallsRender() {
  if (callsTimer === null) callsTimer = setTimeout(() => { callsTimer = null; renderCalls(); }, 250);
}

function renderCalls() {
  byTestId("tap-count").textContent = String(state.tap.seen);
  fillBody($("#calls"), state.tap.order.map((key) => {
    const c = state.tap.calls.get(key), f = c.f;
    const tls = f.tls === "true";
    const bad = f.status && Number(f.status) >= 500;
    return h("tr", { "data-testid": "call-row", "data-tls": String(tls), "data-status": f.status || "", "data-dir": f.dir || "" },
      h("td", { text: c.at.toLocaleTimeString() }), h("td", { text: f.dir || "-" }),
      h("td", { "data-testid": "call-from", title: f.src || "", text: f.srcName || f.src || "-" }),
      h("td", { "data-testid": "call-to", title: `${f.authority || ""} ${f.dst || ""}`.trim(),
        text: f.dstName ? `${f.dstName}${f.dstCluster ? ` @ ${f.dstCluster}` : ""}` : f.authority || f.dst || "-" }),
      h("td", { "data-testid": "call-tls", class: tls ? "good dot" : "bad dot", title: tls ? "mutual TLS" : f.tls || "",
        text: tls ? "mTLS" : `plain${f.tls ? ` (${f.tls})` : ""}` }),
      h("td", { text: f.method || "-" }), h("td", { text: f.path || "-" }),
      h("td", { "data-testid": "call-status", class: f.status ? (bad ? "bad" : "good") : "", text: f.status || "…" }),
      h("td", { text: f.latency || "-" }));
  }), state.tap.paused ? "paused" : "waiting for requests…", 9);
}

// ---- the poll loop ---------------------------------------------------------------------------

let timer = null, running = false, again = false;

function kick() {
  if (timer !== null) { clearTimeout(timer); timer = null; }
  if (running) { again = true; return; }
  refresh();
}

async function section(name, fn) {
  try { await fn(); showError(name, null); } catch (e) { showError(name, e.message); }
}

async function refresh() {
  running = true;
  try {
    let clustersOk = true;
    await section("clusters", refreshClusters).catch(() => {});
    if (errors.has("clusters") && !state.cluster) clustersOk = false;
    if (clustersOk && state.cluster) {
      await section("namespaces", refreshNamespaces);
      await Promise.all([
        section("deployments", refreshDeployments).then(() => section("outbound", refreshOutbound)),
        section("edges", refreshEdges),
        section("routes", refreshRoutes),
        section("multicluster", refreshMulticluster),
      ]);
      ensureTap();
    }
    renderBanner();
    state.refreshes += 1;
    document.body.dataset.refreshes = String(state.refreshes);
    document.body.dataset.cluster = state.cluster || "";
    $("#updated").textContent = `${state.cluster || "?"} · updated ${new Date().toLocaleTimeString()}`;
  } finally {
    running = false;
    if (again) { again = false; refresh(); } else { timer = setTimeout(refresh, POLL_MS); }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#window").addEventListener("change", (e) => { state.window = e.target.value; kick(); });
  $("#routes-service").addEventListener("change", (e) => { state.service = e.target.value; kick(); });
  $("#tap-toggle").addEventListener("click", () => {
    state.tap.paused = !state.tap.paused;
    $("#tap-toggle").textContent = state.tap.paused ? "resume" : "pause";
    ensureTap();
    renderCalls();
  });
  refresh();
});
