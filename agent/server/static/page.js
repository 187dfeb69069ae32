// lokal's page: status and search over lokal serve's JSON. Every text from the index goes into
// the DOM as text (textContent, text nodes); nothing is parsed as HTML.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const REFRESH_MS = 10000;
const PAGE = 20;
let problemOffset = 0;
let refreshTimer = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

class NeedKey extends Error {}

async function api(path, body) {
  const init = { credentials: "same-origin", headers: { "X-CSRF-Token": csrf } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) throw new NeedKey();
  const data = r.status === 204 ? {} : await r.json();
  if (!r.ok) {
    const e = data.error;
    throw new Error((e && (e.message || e)) || data.message || `HTTP ${r.status}`);
  }
  return data;
}

function showLogin(show) {
  $("login").hidden = !show;
  $("search").hidden = show;
  $("status").hidden = show;
  if (show) $("key").focus();
}

async function login(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    await api("/v1/page/session", { key: $("key").value });
    $("key").value = "";
    $("logout").hidden = false;
    showLogin(false);
    refresh();
  } catch (e) {
    $("login-error").textContent = e instanceof NeedKey ? "That is not the key." : e.message;
    $("key").value = "";
    $("key").focus();
  }
}

async function logout() {
  await fetch("/v1/page/session", { method: "DELETE", headers: { "X-CSRF-Token": csrf } });
  $("logout").hidden = true;
  showLogin(true);
}

// ---- status -------------------------------------------------------------------------------

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function fact(dl, name, value) {
  if (value === undefined || value === null || value === "") return;
  dl.append(el("dt", name), el("dd", value));
}

function renderStatus(s) {
  const dl = $("facts");
  dl.replaceChildren();
  const a = s.agent;
  const emb = s.server.models.find((m) => m.kind === "embedding");
  if (a) {
    const state = a.running ? `${a.state} (pid ${a.pid})` : "no agent running";
    fact(dl, "Agent", state);
    if (a.problem) fact(dl, "Problem", a.problem);
    const id = a.identity;
    fact(dl, "Model", `${id.name} · ${id.quantization} · ${id.dimension} dimensions`);
    fact(dl, "Model key", id.key);
    fact(dl, "Index", `${a.index} (${bytes(a.index_bytes)})`);
    const order = (k) => (k === "indexed" ? "" : k);
    const docs = Object.entries(a.documents)
      .sort(([x], [y]) => order(x).localeCompare(order(y)))
      .map(([k, v]) => `${v} ${k}`).join(", ");
    fact(dl, "Files", docs || "none");
    fact(dl, "Chunks", a.chunks);
    fact(dl, "Last scan", a.last_scan || "none yet");
    fact(dl, "Pending", a.pending);
    if (a.sync) {
      const sy = a.sync;
      const lag = sy.behind === null || sy.behind === undefined ? "unknown" : `${sy.behind} changes behind`;
      fact(dl, "Sync", `${sy.site || ""} → ${sy.url || ""}: ${lag}`);
      if (sy.last_error) fact(dl, "Sync error", sy.last_error);
    }
  } else {
    fact(dl, "Index", s.server.index || "none served");
  }
  if (emb) fact(dl, "Serving", `${emb.name} (${emb.backend}, ${emb.quantization})`);
  fact(dl, "Server", `lokal ${s.server.version}, queue ${s.server.queue}`);
  const tbody = $("roots").tBodies[0];
  tbody.replaceChildren();
  for (const r of (a && a.roots) || []) {
    const tr = el("tr");
    const watch = r.watch ? `${r.watch}${r.filesystem ? ` (${r.filesystem})` : ""}` : "—";
    const state = r.available === false ? `unavailable: ${r.why || ""}` : r.available ? "available" : "—";
    tr.append(el("td", r.path, "path"), el("td", watch), el("td", state));
    tbody.append(tr);
  }
  $("roots").hidden = !tbody.rows.length;
  const kinds = $("f-kind");
  const chosen = kinds.value;
  kinds.replaceChildren(el("option", "any"));
  kinds.options[0].value = "";
  for (const k of s.facets.kinds) kinds.append(el("option", k));
  kinds.value = chosen;
  $("f-kind").disabled = !s.facets.kinds.length;
  $("f-path").disabled = !s.facets.keys.includes("source");
  const keys = $("keys");
  keys.replaceChildren(...s.facets.keys.map((k) => { const o = el("option"); o.value = k; return o; }));
  $("rerank-label").hidden = !s.reranker;
  $("logout").hidden = !s.key_required;
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function loadProblems() {
  if (!$("status").dataset.file) return;
  const q = encodeURIComponent($("pq").value);
  const p = await api(`/v1/page/problems?q=${q}&offset=${problemOffset}&limit=${PAGE}`);
  const tbody = $("problems").tBodies[0];
  tbody.replaceChildren();
  for (const it of p.items) {
    const tr = el("tr");
    tr.append(el("td", it.path, "path"), el("td", it.status), el("td", it.reason));
    tbody.append(tr);
  }
  $("problem-total").textContent = `(${p.total})`;
  const last = Math.min(p.offset + p.items.length, p.total);
  $("page-info").textContent = p.total ? `${p.offset + 1}–${last} of ${p.total}` : "none";
  $("prev").disabled = p.offset === 0;
  $("next").disabled = last >= p.total;
}

async function refresh() {
  clearTimeout(refreshTimer);
  try {
    const s = await api("/v1/page/status");
    $("status").dataset.file = s.agent ? "1" : "";
    $("status-error").textContent = "";
    renderStatus(s);
    await loadProblems();
  } catch (e) {
    if (e instanceof NeedKey) { showLogin(true); return; }
    $("status-error").textContent = `Cannot read the status: ${e.message}`;
  }
  refreshTimer = setTimeout(() => { if (!document.hidden) refresh(); else refreshLater(); }, REFRESH_MS);
}

function refreshLater() {
  document.addEventListener("visibilitychange", refresh, { once: true });
}

// ---- search -------------------------------------------------------------------------------

function words(query) {
  return [...new Set(query.toLowerCase().match(/[\p{L}\p{N}]{2,}/gu) || [])];
}

// text with each query word in <mark>: text nodes and <mark> elements, never HTML
function highlighted(text, ws) {
  const frag = document.createDocumentFragment();
  if (!ws.length) { frag.append(text); return frag; }
  const escaped = ws.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const re = new RegExp(`(${escaped.join("|")})`, "giu");
  let at = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > at) frag.append(text.slice(at, m.index));
    frag.append(el("mark", m[0]));
    at = m.index + m[0].length;
  }
  frag.append(text.slice(at));
  return frag;
}

function lines(l) {
  return l ? (l[0] === l[1] ? `line ${l[0]}` : `lines ${l[0]}–${l[1]}`) : "";
}

function filter() {
  const all = [];
  const path = $("f-path").value.trim();
  if (path && !$("f-path").disabled) all.push({ source: { $text_match: path } });
  if ($("f-kind").value) all.push({ kind: $("f-kind").value });
  const key = $("f-key").value.trim();
  if (key) all.push({ [key]: $("f-value").value });
  return all.length === 0 ? undefined : all.length === 1 ? all[0] : { $and: all };
}

async function search(ev) {
  ev.preventDefault();
  const query = $("q").value.trim();
  if (!query) return;
  const body = { query, k: Number($("f-k").value), hybrid: $("f-hybrid").checked };
  if (!$("rerank-label").hidden && $("f-rerank").checked) body.rerank = true;
  const f = filter();
  if (f) body.filter = f;
  $("search-note").textContent = "Searching…";
  const list = $("results");
  try {
    const r = await api("/v1/search", body);
    list.replaceChildren();
    const ws = words(query);
    for (const hit of r.results) list.append(result(hit, ws));
    $("search-note").textContent = `${r.results.length} results${r.hybrid ? " (hybrid)" : ""}${r.reranked ? ", reranked" : ""}`;
  } catch (e) {
    if (e instanceof NeedKey) { showLogin(true); return; }
    $("search-note").textContent = `Search failed: ${e.message}`;
  }
}

function result(hit, ws) {
  const li = el("li", null, "result");
  const head = el("div", null, "head");
  head.append(el("span", hit.path || hit.id, "path"), el("span", lines(hit.lines), "lines"),
    el("span", `score ${hit.score.toFixed(3)}`, "score"));
  const text = el("p", null, "text");
  text.append(highlighted(hit.text, ws));
  const more = el("button", "Show in context", "context");
  more.type = "button";
  more.setAttribute("aria-expanded", "false");
  more.addEventListener("click", () => toggleContext(li, more, hit.id, ws));
  li.append(head, text, more);
  return li;
}

async function toggleContext(li, button, id, ws) {
  const open = li.querySelector(".passage");
  if (open) { open.remove(); button.setAttribute("aria-expanded", "false"); button.textContent = "Show in context"; return; }
  try {
    const p = await api(`/v1/page/passage?id=${encodeURIComponent(id)}&around=2`);
    const box = el("div", null, "passage");
    if (p.before) box.append(el("p", `… ${p.before} earlier chunks`, "note"));
    for (const c of p.chunks) {
      const part = el("div", null, c.hit ? "chunk hit" : "chunk");
      part.append(el("span", lines(c.lines), "lines"));
      const t = el("p", null, "text");
      t.append(c.hit ? highlighted(c.text, ws) : document.createTextNode(c.text));
      part.append(t);
      box.append(part);
    }
    if (p.after) box.append(el("p", `… ${p.after} later chunks`, "note"));
    li.append(box);
    button.setAttribute("aria-expanded", "true");
    button.textContent = "Hide context";
  } catch (e) {
    if (e instanceof NeedKey) { showLogin(true); return; }
    li.append(el("p", `Cannot read the passage: ${e.message}`, "error passage"));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("search-form").addEventListener("submit", search);
  $("problem-form").addEventListener("submit", (ev) => { ev.preventDefault(); problemOffset = 0; loadProblems(); });
  $("prev").addEventListener("click", () => { problemOffset = Math.max(0, problemOffset - PAGE); loadProblems(); });
  $("next").addEventListener("click", () => { problemOffset += PAGE; loadProblems(); });
  refresh();
});
