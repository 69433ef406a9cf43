// Tidegate dashboard: draws the views the server pushes (server-sent events); never polls.
// Charts are hand-drawn inline SVG: no library, no build step, nothing fetched from outside.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const page = document.getElementById("page");
let current = null; // the last view received
let route = parseRoute(location.pathname);

function parseRoute(path) {
  const m = path.match(/^\/rollouts\/([^/]+)\/([^/]+)\/?$/);
  return m ? { namespace: decodeURIComponent(m[1]), name: decodeURIComponent(m[2]) } : null;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function dash(v) { return v === null || v === undefined || v === "" ? "-" : v; }

// ---------------------------------------------------------------------------
// Live connection

let source = null;
function connect() {
  if (source) source.close();
  const q = route ? `?namespace=${encodeURIComponent(route.namespace)}&name=${encodeURIComponent(route.name)}` : "";
  source = new EventSource(`/api/stream${q}`);
  const live = document.getElementById("live");
  source.onopen = () => { live.className = "live"; live.textContent = "live"; };
  source.onerror = () => { live.className = "connecting"; live.textContent = "reconnecting…"; };
  source.onmessage = (event) => { current = JSON.parse(event.data); draw(); };
}

function navigate(path) {
  history.pushState(null, "", path);
  route = parseRoute(path);
  current = null;
  page.replaceChildren(el("p", { class: "muted" }, "loading…"));
  connect();
}
window.addEventListener("popstate", () => { route = parseRoute(location.pathname); current = null; connect(); });

function link(path, text) {
  return el("a", { href: path, onclick: (e) => { e.preventDefault(); navigate(path); } }, text);
}

function drawErrors(errors) {
  const box = document.getElementById("errors");
  const entries = Object.entries(errors || {});
  box.hidden = entries.length === 0;
  box.replaceChildren(
    el("strong", {}, "The API server refuses or fails some reads (shown with your kubeconfig's credentials):"),
    el("ul", {}, entries.map(([kind, message]) => el("li", { "data-kind": kind }, `${kind}: ${message}`))),
  );
}

function draw() {
  if (!current) return;
  const ctx = current.context || {};
  document.getElementById("where").textContent = ctx.allNamespaces ? "all namespaces" : `namespace ${ctx.namespace}`;
  drawErrors(current.errors);
  if (ctx.page === "rollout") drawRollout(current);
  else drawOverview(current);
}

// ---------------------------------------------------------------------------
// Overview

function drawOverview(view) {
  const all = view.namespace === null;
  document.title = "Tidegate: Rollouts";
  const head = el("tr", {}, all ? el("th", {}, "Namespace") : null, ["Name", "Phase", "Strategy", "Step"].map((h) => el("th", {}, h)),
    el("th", { class: "num" }, "Weight"), el("th", { class: "num" }, "Revision"), el("th", { class: "num" }, "Age"), el("th", {}, "Message"));
  const rows = view.rollouts.map((r) => el("tr", { "data-rollout": `${r.namespace}/${r.name}` },
    all ? el("td", { class: "namespace" }, r.namespace) : null,
    el("td", { class: "name" }, link(`/rollouts/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}`, r.name)),
    el("td", { class: `phase phase-${r.phase}` }, r.phase),
    el("td", { class: "strategy" }, r.strategy),
    el("td", { class: "step" }, r.step),
    el("td", { class: "weight num" }, r.weight === null ? "-" : `${r.weight}%`),
    el("td", { class: "revision num" }, dash(r.revision)),
    el("td", { class: "age num" }, r.age),
    el("td", { class: "message muted" }, r.message)));
  page.replaceChildren(
    el("h1", {}, "Rollouts"),
    rows.length ? el("table", { id: "rollouts" }, el("thead", {}, head), el("tbody", {}, rows))
      : el("p", { id: "rollouts-empty", class: "muted" }, "No Rollouts here (yet): the list fills in as they are created."),
  );
}

// ---------------------------------------------------------------------------
// One Rollout

function drawRollout(view) {
  document.title = `Tidegate: ${view.name}`;
  if (!view.found) {
    page.replaceChildren(el("p", {}, link("/", "← Rollouts")), el("h1", {}, view.name),
      el("p", { id: "not-found" }, `Rollout ${view.namespace}/${view.name} is not (or no longer) there.`));
    return;
  }
  const keepResult = document.getElementById("result");
  const facts = el("dl", { class: "facts" },
    el("dt", {}, "Phase"), el("dd", { id: "phase", class: `phase phase-${view.phase}` }, view.phase),
    el("dt", {}, "Message"), el("dd", { id: "message" }, dash(view.message)),
    el("dt", {}, "Strategy"), el("dd", { id: "strategy" }, view.strategy),
    el("dt", {}, "Step"), el("dd", { id: "step" }, view.step),
    el("dt", {}, "Weight"), el("dd", { id: "weight" }, view.weight === null ? "-" : `${view.weight}% canary` + (view.verified ? " (verified)" : "")),
    el("dt", {}, "Revision"), el("dd", { id: "revision" }, dash(view.revision)),
    el("dt", {}, "Age"), el("dd", {}, view.age),
  );
  const buttons = el("div", { class: "buttons" }, view.actions.map((a) =>
    el("button", { "data-action": a.action, title: a.asks, onclick: () => act(view, a) }, a.label)));
  const result = keepResult || el("div", { id: "result", role: "status" });
  const steps = view.steps.length
    ? el("ol", { id: "steps" }, view.steps.map((s) => el("li", { class: s.state, "data-step": s.number }, `${s.number}. ${s.text}`)))
    : el("p", { class: "muted" }, "No canary steps.");
  page.replaceChildren(
    el("p", {}, link("/", "← Rollouts")),
    el("h1", {}, `${view.namespace}/${view.name}`),
    el("div", { class: "card" }, facts, buttons, result),
    el("h2", {}, "Steps"), steps,
    el("h2", {}, "Canary weight over time"), weightChart(view.history),
    el("p", { class: "muted" }, "Since this dashboard started: a point each time the weight, step or phase changed."),
    el("h2", {}, "AnalysisRuns"), analysisRuns(view.analysisRuns),
    el("h2", {}, "Revisions"), revisions(view.revisions, Boolean((view.errors || {}).pods)),
    el("h2", {}, "Events"), events(view.events),
  );
}

async function act(view, a) {
  const what = `${a.label} rollout ${view.namespace}/${view.name}?\n\nThis will ${a.asks}.`;
  if (!window.confirm(what)) return;
  const result = document.getElementById("result");
  const all = document.querySelectorAll(".buttons button");
  all.forEach((b) => { b.disabled = true; });
  result.className = ""; result.textContent = `${a.label}…`;
  try {
    const path = `/api/rollouts/${encodeURIComponent(view.namespace)}/${encodeURIComponent(view.name)}/${a.action}`;
    const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json", "X-Tidegate-Dashboard": "1" }, body: "{}" });
    const body = await response.json();
    const refusal = response.status === 403 ? "Forbidden by RBAC: " : "Refused: ";
    result.className = body.ok ? "ok" : "refused";
    result.textContent = body.ok ? body.message : refusal + body.message;
  } catch (err) {
    result.className = "refused"; result.textContent = `No answer from the dashboard server: ${err}`;
  } finally {
    document.querySelectorAll(".buttons button").forEach((b) => { b.disabled = false; });
  }
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

function weightChart(points) {
  const W = 720, H = 180, L = 40, R = 12, T = 10, B = 26;
  const chart = svg("svg", { id: "weight-chart", class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "canary weight over time" });
  for (const w of [0, 25, 50, 75, 100]) {
    const y = T + (H - T - B) * (1 - w / 100);
    chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }), svg("text", { class: "axis", x: L - 6, y: y + 4, "text-anchor": "end" }, `${w}%`));
  }
  if (!points.length) return chart;
  const t0 = points[0].at, t1 = Math.max(Date.now() / 1000, points[points.length - 1].at + 1);
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (w) => T + (H - T - B) * (1 - w / 100);
  let d = `M${x(points[0].at)},${y(points[0].weight)}`;
  for (let i = 1; i < points.length; i++) d += ` H${x(points[i].at)} V${y(points[i].weight)}`;
  d += ` H${x(t1)}`;
  chart.append(svg("path", { class: "line", d }));
  points.forEach((p) => chart.append(svg("circle", { class: "weight", cx: x(p.at), cy: y(p.weight), r: 3.5, "data-weight": p.weight },
    svg("title", {}, `${clock(p.at)}: ${p.weight}% (step ${p.step}, ${p.phase})`))));
  chart.append(svg("text", { class: "axis", x: L, y: H - 8 }, clock(t0)), svg("text", { class: "axis", x: W - R, y: H - 8, "text-anchor": "end" }, clock(t1)));
  return chart;
}

function metricChart(metric) {
  const W = 720, H = 140, L = 56, R = 12, T = 10, B = 22;
  const chart = svg("svg", { class: "chart metric-chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `measurements of ${metric.name}` });
  const ms = metric.measurements;
  if (!ms.length) { chart.append(svg("text", { class: "axis", x: L, y: H / 2 }, "no measurement yet")); return chart; }
  const slot = (W - L - R) / Math.max(ms.length, 1);
  const cx = (i) => L + slot * (i + 0.5);
  const values = ms.map((m) => m.plotted).filter((v) => v !== null);
  if (values.length) {
    const limits = values.concat(metric.thresholds.map((t) => t.value));
    let lo = Math.min(...limits), hi = Math.max(...limits);
    if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
    const pad = (hi - lo) * 0.1; lo -= pad; hi += pad;
    const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    for (const v of [lo, (lo + hi) / 2, hi]) {
      chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }), svg("text", { class: "axis", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, Number(v.toPrecision(3))));
    }
    const signs = { ">=": "≥", "<=": "≤", ">": ">", "<": "<" };
    for (const t of metric.thresholds) {
      chart.append(svg("line", { class: `threshold ${t.kind}`, x1: L, x2: W - R, y1: y(t.value), y2: y(t.value), "data-threshold": t.value }),
        svg("text", { class: "axis", x: W - R - 4, y: y(t.value) - 4, "text-anchor": "end" }, `${t.kind} ${signs[t.op]} ${t.value}`));
    }
    ms.forEach((m, i) => {
      const title = svg("title", {}, `#${m.number} ${m.phase}: ${dash(m.value)}${m.message ? ` (${m.message})` : ""}`);
      if (m.plotted === null) chart.append(svg("rect", { class: m.phase, x: cx(i) - 4, y: H - B - 8, width: 8, height: 8 }, title));
      else chart.append(svg("circle", { class: `measurement ${m.phase}`, cx: cx(i), cy: y(m.plotted), r: 5 }, title));
    });
  } else {
    // Nothing numeric (a judge's verdicts, errors): one square per measurement, coloured by its phase.
    ms.forEach((m, i) => chart.append(svg("rect", { class: `measurement ${m.phase}`, x: cx(i) - 9, y: H / 2 - 9, width: 18, height: 18, rx: 3 },
      svg("title", {}, `#${m.number} ${m.phase}: ${dash(m.value)} ${m.message}`))));
  }
  ms.forEach((m, i) => chart.append(svg("text", { class: "axis", x: cx(i), y: H - 6, "text-anchor": "middle" }, `#${m.number}`)));
  return chart;
}

function analysisRuns(runs) {
  if (!runs.length) return el("p", { class: "muted", id: "no-runs" }, "No AnalysisRuns.");
  return el("div", { id: "analysis-runs" }, runs.map((run) => el("div", { class: "card analysis-run", "data-run": run.name },
    el("strong", {}, run.name), " ", el("span", { class: `run-phase m-${run.phase}` }, run.phase), " ", el("span", { class: "muted" }, `${run.age} · ${run.message}`),
    run.metrics.map((m) => el("div", { class: "metric", "data-metric": m.name },
      el("div", {}, el("strong", {}, m.name), " ", el("span", { class: `m-${m.phase}` }, m.phase),
        el("span", { class: "muted" }, ` — ${m.counts.successful} successful, ${m.counts.failed} failed, ${m.counts.inconclusive} inconclusive, ${m.counts.error} error`)),
      el("div", { class: "criterion" }, m.criterion),
      metricChart(m),
      m.judged ? el("div", { class: "muted verdicts" }, m.measurements.map((x) => `#${x.number} ${x.phase}` +
        (Object.keys(x.details).length ? ` (${Object.entries(x.details).map(([k, v]) => `${k} ${v}`).join(", ")})` : "")).join(" · ")) : null,
      m.message ? el("div", { class: "muted" }, m.message) : null)))));
}

function revisions(rows, podsRefused) {
  if (!rows.length) return el("p", { class: "muted" }, "No ReplicaSets.");
  return el("table", { id: "revisions" },
    el("thead", {}, el("tr", {}, ["Rev", "ReplicaSet", "Role", "Images", "Desired", "Ready", "Available", "Age", "Pods"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", { "data-revision": r.revision },
      el("td", { class: "num" }, r.revision), el("td", {}, r.name), el("td", {}, r.roles.map((x) => el("span", { class: "role" }, x))),
      el("td", { class: "images" }, r.images.join(", ")), el("td", { class: "num" }, r.desired), el("td", { class: "num" }, r.ready),
      el("td", { class: "num" }, r.available), el("td", { class: "num" }, r.age),
      el("td", {}, r.pods.length ? el("ul", { class: "pods" }, r.pods.map((p) => el("li", { class: "pod", "data-pod": p.name },
        `${p.name} ${p.status} ${p.ready}` + (p.restarts ? ` ↻${p.restarts}` : "") + ` ${p.age}`)))
        : el("span", { class: "muted no-pods" }, podsRefused ? "not readable (see above)" : "none"))))));
}

function events(rows) {
  if (!rows.length) return el("p", { class: "muted" }, "No recent Events.");
  return el("table", { id: "events" },
    el("thead", {}, el("tr", {}, ["Age", "Type", "Reason", "Object", "Message"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((e) => el("tr", { class: `ev-${e.type}` },
      el("td", { class: "num" }, e.age + (e.count > 1 ? ` (×${e.count})` : "")), el("td", {}, e.type), el("td", {}, e.reason),
      el("td", {}, e.object), el("td", {}, e.message)))));
}

connect();
