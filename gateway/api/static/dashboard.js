// Usage dashboard: plain JavaScript and SVG, no build step, no third-party code.
// Signs in with an API key (its own organisation, /v1/usage) or the admin key (/admin/usage).
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["var(--c1)", "var(--c2)", "var(--c3)", "var(--c4)"];
const state = { key: sessionStorage.getItem("gw-key") || "", admin: sessionStorage.getItem("gw-admin") === "1" };

function fmt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + "B";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (a >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n * 100) / 100);
}
// Dollars: cents from $1 up, three significant digits below (agent traffic is often fractions of a cent).
function usd(s) {
  const v = Number(s);
  if (!v) return "$0";
  const a = Math.abs(v);
  if (a >= 1) return "$" + v.toFixed(2);
  const digits = Math.min(10, 2 - Math.floor(Math.log10(a)));
  return "$" + v.toFixed(digits).replace(/0+$/, "").replace(/\.$/, "");
}
// A round axis step (1, 2 or 5 times a power of ten) giving about four gridlines up to `max`.
function niceStep(max, integer) {
  const raw = max / 4;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const m = raw / p;
  const step = (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  return integer ? Math.max(1, Math.round(step)) : step;
}
const pct = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(1) + "%";

async function api(path) {
  const resp = await fetch(path, { headers: { Authorization: "Bearer " + state.key } });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((body.error && body.error.message) || ("HTTP " + resp.status));
  return body;
}

function range() {
  const choice = $("range").value;
  let end = new Date(), start;
  if (choice === "custom" && $("start").value && $("end").value) {
    start = new Date($("start").value); end = new Date($("end").value);
  } else {
    const hours = { "24h": 24, "7d": 168, "30d": 720 }[choice] || 168;
    start = new Date(end.getTime() - hours * 3600e3);
  }
  return { start: start.toISOString(), end: end.toISOString() };
}

function usagePath(groupBy) {
  const r = range();
  const q = new URLSearchParams({ start: r.start, end: r.end, bucket: $("bucket").value, group_by: groupBy });
  if (state.admin && $("org").value) q.set("org_id", $("org").value);
  return (state.admin ? "/admin/usage?" : "/v1/usage?") + q.toString();
}

// --- SVG charts --------------------------------------------------------------------------
const NS = "http://www.w3.org/2000/svg";
function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function chart(containerId, labels, series, opts) {
  // series: [{name, values, dashed}], opts: {stacked, line, format, integer}
  const box = $(containerId);
  box.innerHTML = "";
  if (!labels.length) { box.innerHTML = '<div class="empty">No usage in this range</div>'; return; }
  const W = 600, H = 220, B = 24, T = 8, R = 8;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-points": labels.length });
  const totals = labels.map((_, i) => opts.stacked
    ? series.reduce((s, se) => s + (se.values[i] || 0), 0)
    : Math.max(...series.map((se) => se.values[i] || 0)));
  const peak = Math.max(...totals);
  const tick = peak > 0 ? niceStep(peak, opts.integer) : (opts.integer ? 1 : 0.25);
  const max = Math.max(tick, Math.ceil(peak / tick - 1e-9) * tick);
  const ticks = [];
  for (let g = 0; g * tick <= max + tick / 2; g++) ticks.push(g * tick);
  const tickLabels = ticks.map((v) => (opts.format || fmt)(v));
  const L = Math.max(40, 12 + 6.5 * Math.max(...tickLabels.map((t) => t.length)));  // room for the widest label
  // Bands: one slot per bucket, bars and points at the slot's centre.
  const band = (W - L - R) / labels.length;
  const x = (i) => L + (i + 0.5) * band;
  const y = (v) => H - B - (v / max) * (H - B - T);
  ticks.forEach((v, g) => {
    svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6ee" }));
    svg.appendChild(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#6b7385" },
      tickLabels[g]));
  });
  const step = Math.max(1, Math.ceil(labels.length / 6));
  labels.forEach((lab, i) => {
    if (i % step) return;
    svg.appendChild(el("text", { x: x(i), y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "#6b7385" }, lab));
  });
  const bw = Math.max(1, band * 0.7);
  const base = labels.map(() => 0);
  series.forEach((se, k) => {
    if (opts.line) {
      // Buckets without a value (null: e.g. no prompt tokens that day) break the line instead of reading 0.
      let run = [];
      const flush = () => {
        if (run.length) svg.appendChild(el("polyline", { points: run.join(" "), fill: "none", stroke: COLORS[k % 4],
          "stroke-width": 2, "stroke-dasharray": se.dashed ? "5 3" : "", "data-series": se.name }));
        run = [];
      };
      se.values.forEach((v, i) => {
        if (v === null || v === undefined) { flush(); return; }
        run.push(`${x(i)},${y(v)}`);
        const dot = el("circle", { cx: x(i), cy: y(v), r: 2.5, fill: COLORS[k % 4], "data-series": se.name,
                                   "data-value": v });
        dot.appendChild(el("title", {}, `${se.name} ${labels[i]}: ${(opts.format || fmt)(v)}`));
        svg.appendChild(dot);
      });
      flush();
    } else {
      se.values.forEach((v, i) => {
        const b0 = opts.stacked ? base[i] : 0;
        const h = y(b0) - y(b0 + (v || 0));
        const off = opts.stacked ? 0 : k * bw / series.length;
        const rect = el("rect", { x: x(i) - bw / 2 + off, y: y(b0 + (v || 0)), width: opts.stacked ? bw : bw / series.length,
                                  height: Math.max(0, h), fill: COLORS[k % 4], "data-series": se.name, "data-value": v || 0 });
        rect.appendChild(el("title", {}, `${se.name} ${labels[i]}: ${(opts.format || fmt)(v || 0)}`));
        svg.appendChild(rect);
        if (opts.stacked) base[i] += v || 0;
      });
    }
  });
  box.appendChild(svg);
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((se, k) => {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${COLORS[k % 4]}"></i>`;
    item.appendChild(document.createTextNode(se.name));
    legend.appendChild(item);
  });
  box.appendChild(legend);
}

function table(containerId, groups, label) {
  const box = $(containerId);
  box.innerHTML = "";
  if (!groups.length) { box.innerHTML = '<div class="empty">No usage in this range</div>'; return; }
  const t = document.createElement("table");
  t.innerHTML = `<thead><tr><th>${label}</th><th>requests</th><th>tokens</th><th>cached</th><th>billed</th></tr></thead>`;
  const tb = document.createElement("tbody");
  groups.slice(0, 10).forEach((g) => {
    const tr = document.createElement("tr");
    const cells = [g.name || g.group || "(none)", fmt(g.requests),
      fmt(g.input_tokens + g.cached_input_tokens + g.output_tokens), pct(g.cached_share), usd(g.billed_cost_usd)];
    cells.forEach((c) => { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
    tb.appendChild(tr);
  });
  t.appendChild(tb);
  box.appendChild(t);
}

function label(iso) {
  const d = new Date(iso);
  return $("bucket").value === "hour"
    ? d.toISOString().slice(5, 13).replace("T", " ") + "h"
    : d.toISOString().slice(5, 10);
}

function sloText(u) {
  if (u.cache_slo === null || u.cache_slo === undefined) return "none";
  const verdict = u.cache_slo_met === null || u.cache_slo_met === undefined ? "" : u.cache_slo_met ? " (met)" : " (missed)";
  return pct(u.cache_slo) + verdict;
}

function cards(t, u) {
  const items = [["Requests", fmt(t.requests)], ["Errors", fmt(t.errors)], ["Input tokens", fmt(t.input_tokens)],
    ["Cached input tokens", fmt(t.cached_input_tokens)], ["Output tokens", fmt(t.output_tokens)],
    ["Cached share", pct(t.cached_share)], ["Cache SLO", sloText(u)], ["List cost", usd(t.list_cost_usd)], ["Billed cost", usd(t.billed_cost_usd)],
    ["Rate-limited", fmt(t.rate_limited)], ["Output tokens/s", fmt(t.mean_output_tokens_per_second)]];
  $("totals").innerHTML = "";
  items.forEach(([k, v]) => {
    const c = document.createElement("div");
    c.className = "card";
    c.innerHTML = `<div class="muted"></div><div class="v"></div>`;
    c.children[0].textContent = k; c.children[1].textContent = v;
    c.dataset.metric = k;
    $("totals").appendChild(c);
  });
}

async function load() {
  $("app-error").textContent = "";
  try {
    const [byKey, byUser] = await Promise.all([api(usagePath("key")), api(usagePath("end_user"))]);
    const rows = byKey.data;
    const labels = rows.map((r) => label(r.start));
    cards(byKey.totals, byKey);
    chart("chart-tokens", labels, [
      { name: "input", values: rows.map((r) => r.input_tokens) },
      { name: "cached input", values: rows.map((r) => r.cached_input_tokens) },
      { name: "output", values: rows.map((r) => r.output_tokens) }], { stacked: true });
    chart("chart-cost", labels, [
      { name: "billed", values: rows.map((r) => Number(r.billed_cost_usd)) },
      { name: "list", values: rows.map((r) => Number(r.list_cost_usd)), dashed: true }], { line: true, format: usd });
    const cachedSeries = [{ name: "cached share", values: rows.map((r) => r.cached_share) }];
    if (byKey.cache_slo !== null && byKey.cache_slo !== undefined) {
      cachedSeries.push({ name: "SLO", values: rows.map(() => byKey.cache_slo), dashed: true });
    }
    chart("chart-cached", labels, cachedSeries, { line: true, format: pct });
    chart("chart-requests", labels, [
      { name: "requests", values: rows.map((r) => r.requests) },
      { name: "errors", values: rows.map((r) => r.errors) }], { integer: true });
    chart("chart-rejections", labels, [{ name: "rate-limited", values: rows.map((r) => r.rate_limited || 0) }],
      { integer: true });
    table("top-keys", byKey.groups, "key");
    table("top-users", byUser.groups, "end user");
    document.body.dataset.loaded = "1";
  } catch (err) {
    $("app-error").textContent = err.message;
  }
}

async function signIn(key) {
  state.key = key;
  state.admin = !key.startsWith("sk-gw-");
  if (state.admin) {
    const orgs = await api("/admin/orgs");
    const sel = $("org");
    sel.innerHTML = '<option value="">all</option>';
    orgs.data.forEach((o) => { const op = document.createElement("option"); op.value = o.id; op.textContent = o.name; sel.appendChild(op); });
    $("org-picker").hidden = false;
    $("who").textContent = "admin";
  } else {
    const me = await api("/v1/usage/me");
    $("who").textContent = me.org_name;
  }
  sessionStorage.setItem("gw-key", key);
  sessionStorage.setItem("gw-admin", state.admin ? "1" : "0");
  $("signin").hidden = true; $("app").hidden = false; $("signout").hidden = false;
  await load();
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("signin-error").textContent = "";
  try { await signIn($("key").value.trim()); } catch (err) { $("signin-error").textContent = err.message; }
});
$("signout").addEventListener("click", () => { sessionStorage.clear(); location.reload(); });
$("refresh").addEventListener("click", load);
["bucket", "org"].forEach((id) => $(id).addEventListener("change", load));
$("range").addEventListener("change", () => { $("custom").hidden = $("range").value !== "custom"; load(); });
if (state.key) signIn(state.key).catch(() => sessionStorage.clear());
