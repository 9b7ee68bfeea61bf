// Causeway console: polls GET /cluster (falling back to the other nodes of the last
// known view when this one stops answering), draws the shard map, key distribution,
// live rates, and drives key lookups and view changes. No dependencies, no build step.
"use strict";

const POLL_MS = 1500;
const HISTORY = 40;
const state = { doc: null, nodes: [], source: null, samples: [], ctx: {}, plan: null };

const $ = (id) => document.getElementById(id);
const el = (tag, attrs, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
};

async function fetchJson(url, options) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 3000);
  try {
    const r = await fetch(url, { ...options, signal: controller.signal });
    return { status: r.status, body: await r.json() };
  } finally {
    clearTimeout(timer);
  }
}

// This node first, then every other node of the last view seen.
async function fetchCluster() {
  const candidates = [""].concat(state.nodes.map((n) => "http://" + n));
  for (const base of candidates) {
    try {
      const { status, body } = await fetchJson(base + "/cluster");
      if (status === 200) return { base, body };
    } catch (_) {
      // try the next node
    }
  }
  return null;
}

function totals(doc) {
  const t = { requests: 0, errors: 0, replication: 0 };
  for (const n of doc.nodes || []) {
    if (!n.up) continue;
    t.requests += n.requests || 0;
    t.errors += (n["client-errors"] || 0) + (n["server-errors"] || 0);
    t.replication += n["replication-bytes"] || 0;
  }
  return t;
}

function replicaClass(r) {
  if (!r.up) return "down";
  return (r["behind-versions"] || 0) > 0 ? "lag" : "ok";
}

function uptime(s) {
  if (s == null) return "-";
  if (s < 120) return s + "s";
  if (s < 7200) return Math.floor(s / 60) + "m";
  return Math.floor(s / 3600) + "h";
}

function drawMap(doc) {
  const map = $("map");
  map.replaceChildren();
  for (const s of doc.shards || []) {
    const box = el("div", { class: "shard", "data-shard": s["shard-id"] },
      el("h3", {}, "shard " + s["shard-id"] + " · " + (s["key-count"] ?? "-") + " keys"));
    for (const r of s.replicas || []) {
      const cls = replicaClass(r);
      const lag = cls === "lag" ? " (" + r["behind-versions"] + " behind, " + (r["behind-seconds"] || 0) + "s)" : cls === "down" ? " (down)" : "";
      box.append(el("span", { class: "chip " + cls, "data-node": r.address }, r.address + lag));
    }
    const waiting = s["waiting-for"] || [];
    if (waiting.length) box.append(el("p", { class: "muted" }, "waiting for hand-over from " + waiting.join(", ")));
    map.append(box);
  }
}

function drawNodes(doc) {
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren();
  for (const n of doc.nodes || []) {
    const up = !!n.up;
    const row = el("tr", { class: up ? "up" : "down", "data-node": n.address },
      el("td", {}, n.address),
      el("td", { class: "state" }, up ? (n.ready ? "up" : "not ready") : "down"),
      el("td", {}, up ? (n["in-view"] ? String(n["shard-id"] ?? "-") : "outside the view") : "-"),
      el("td", {}, up ? String(n["key-count"]) : "-"),
      el("td", {}, up ? uptime(n["uptime-s"]) : "-"));
    body.append(row);
  }
}

function drawBars(doc) {
  const bars = $("bars");
  bars.replaceChildren();
  const shards = doc.shards || [];
  const max = Math.max(1, ...shards.map((s) => s["key-count"] || 0));
  for (const s of shards) {
    const count = s["key-count"] || 0;
    const bar = el("div", {});
    bar.style.width = (100 * count / max) * 0.7 + "%";
    bars.append(el("div", { class: "bar", "data-shard": s["shard-id"] },
      el("span", {}, "shard " + s["shard-id"]), bar, el("span", {}, String(count))));
  }
}

function drawRates() {
  const samples = state.samples;
  if (samples.length < 2) return;
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    const a = samples[i - 1].v, b = samples[i].v;
    const rate = (k) => Math.max(0, (b[k] - a[k]) / dt);
    rates.push({ requests: rate("requests"), errors: rate("errors"), replication: rate("replication") / 1024 });
  }
  for (const key of ["requests", "errors", "replication"]) {
    const values = rates.map((r) => r[key]);
    const max = Math.max(1, ...values);
    const points = values.map((v, i) => (i * 120 / Math.max(1, HISTORY - 1)).toFixed(1) + "," + (38 - 36 * v / max).toFixed(1));
    const svg = $("chart-" + key);
    svg.replaceChildren();
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
    $("rate-" + key).textContent = values[values.length - 1].toFixed(1);
  }
}

function render(doc, base) {
  state.doc = doc;
  const view = doc.view || {};
  state.nodes = view.nodes || state.nodes;
  const nodes = doc.nodes || [];
  const down = nodes.filter((n) => !n.up).length;
  const vc = doc["view-change"] || {};
  $("summary").textContent = nodes.length + " nodes (" + down + " down), " +
    (doc.shards || []).length + " shards × " + view["repl-factor"] +
    ", view " + (vc.complete ? "settled" : "changing");
  $("source").textContent = "from " + (base ? base.replace("http://", "") : doc.asked);
  drawMap(doc);
  drawNodes(doc);
  drawBars(doc);
  state.samples.push({ t: Date.now(), v: totals(doc) });
  if (state.samples.length > HISTORY) state.samples.shift();
  drawRates();
  if (state.plan && state.plan.submitted) showProgress(doc);
}

async function poll() {
  const got = await fetchCluster();
  if (got) {
    render(got.body, got.base);
  } else {
    $("summary").textContent = "no node answers";
  }
  setTimeout(poll, POLL_MS);
}

// Key lookup: a read with the page's own causal session (kept across lookups).
async function lookup(event) {
  event.preventDefault();
  const key = $("lookup-key").value;
  const out = $("lookup-result");
  try {
    const { status, body } = await fetchJson("/ui/lookup", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ key, "causal-context": state.ctx }),
    });
    if (status === 200 || (status === 404 && body.doesExist === false)) state.ctx = body["causal-context"];
    out.className = "";
    out.textContent = status === 200
      ? key + " = " + JSON.stringify(body.value) + (body.address ? " (from " + body.address + ")" : "")
      : key + ": " + (body.error || body.message) + " (" + status + ")";
    out.dataset.status = String(status);
    out.dataset.value = status === 200 ? String(body.value) : "";
  } catch (e) {
    out.textContent = key + ": no answer (" + e.name + ")";
  }
}

function shardsOf(nodes, repl) {
  const out = [];
  for (let i = 0; i + repl <= nodes.length; i += repl) out.push(nodes.slice(i, i + repl));
  return out;
}

// What a view change would do: which shards gain and lose replicas, and the share of
// keys that move to another shard (jump consistent hashing moves only what it must).
function plan(oldNodes, oldRepl, newNodes, newRepl) {
  const before = shardsOf(oldNodes, oldRepl), after = shardsOf(newNodes, newRepl);
  const rows = [];
  for (let i = 0; i < Math.max(before.length, after.length); i++) {
    const b = before[i] || [], a = after[i] || [];
    rows.push({
      shard: i + 1,
      added: before[i] === undefined,
      removed: after[i] === undefined,
      gains: a.filter((n) => !b.includes(n)),
      loses: b.filter((n) => !a.includes(n)),
    });
  }
  const n = before.length, m = after.length;
  const moving = n === m ? 0 : Math.abs(m - n) / Math.max(m, n);
  return { rows, moving };
}

function preview(event) {
  event.preventDefault();
  const doc = state.doc;
  if (!doc) return;
  const newNodes = $("vc-view").value.split(",").map((s) => s.trim()).filter((s) => s);
  const newRepl = parseInt($("vc-repl").value, 10);
  const out = $("vc-plan");
  out.replaceChildren();
  if (!newNodes.length || !(newRepl >= 1) || newNodes.length % newRepl !== 0) {
    out.append(el("p", { class: "lose" }, "The view needs a multiple of " + newRepl + " nodes."));
    return;
  }
  const p = plan(doc.view.nodes, doc.view["repl-factor"], newNodes, newRepl);
  const list = el("ul", {});
  for (const r of p.rows) {
    const parts = [];
    if (r.added) parts.push("new shard");
    if (r.removed) parts.push("removed");
    if (r.gains.length) parts.push("gains " + r.gains.join(", "));
    if (r.loses.length) parts.push("loses " + r.loses.join(", "));
    if (!parts.length) parts.push("unchanged");
    list.append(el("li", { "data-shard": String(r.shard), class: r.removed || r.loses.length ? "lose" : r.gains.length || r.added ? "gain" : "" },
      "shard " + r.shard + ": " + parts.join("; ")));
  }
  const share = Math.round(p.moving * 100);
  const confirm = el("button", { id: "vc-confirm", class: "danger", type: "button" }, "Confirm view change");
  confirm.addEventListener("click", () => submitChange(newNodes, newRepl));
  out.append(list, el("p", { id: "vc-share" }, "Keys that move to another shard: about " + share + "%."), confirm);
  state.plan = { nodes: newNodes, repl: newRepl, submitted: false };
}

async function submitChange(nodes, repl) {
  state.plan.submitted = true;
  $("vc-progress").textContent = "view change sent…";
  try {
    const { status, body } = await fetchJson("/kv-store/view-change", {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ view: nodes.join(","), "repl-factor": repl, "causal-context": state.ctx }),
    });
    $("vc-progress").textContent = status === 200 ? "View change successful." : "View change: " + (body.error || status);
  } catch (e) {
    $("vc-progress").textContent = "view change still running (" + e.name + "); progress below";
  }
}

function showProgress(doc) {
  const vc = doc["view-change"] || {};
  const handing = (vc["handing-over"] || []).length;
  if (!vc.complete) {
    $("vc-progress").textContent = "in progress: " + handing + " node(s) still handing keys over";
  }
}

$("lookup-form").addEventListener("submit", lookup);
$("vc-form").addEventListener("submit", preview);
poll();
