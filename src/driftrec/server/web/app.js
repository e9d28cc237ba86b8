// driftrec's page: plain JavaScript over the same HTTP API everyone uses (no build step, no CDN).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { user: null, key: sessionStorage.getItem("driftrec-key") || "", titles: new Map(), recs: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) if (child != null) node.append(child);
  return node;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// The API's own messages: 422 lists each field's problem, other errors carry "detail".
function describe(status, body) {
  if (status === 401) return "The API key is missing or wrong: enter the server's key above.";
  if (status === 403) return "This API key belongs to another user: open that user, or enter an admin key.";
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`).join("; ");
  }
  if (body && body.detail) return String(body.detail);
  if (status === 429) return "Too many requests; wait a moment.";
  return `The server answered ${status}.`;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  let reply;
  try {
    reply = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (exc) {
    throw new ApiError(0, "The server cannot be reached.");
  }
  const text = await reply.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!reply.ok) throw new ApiError(reply.status, describe(reply.status, data));
  return data;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function guarded(button, work) {
  if (button) button.disabled = true;
  try {
    showError("");
    return await work();
  } catch (exc) {
    showError(exc.message || String(exc));
  } finally {
    if (button) button.disabled = false;
  }
}

const userPath = () => `/v1/users/${encodeURIComponent(state.user)}`;

async function title(itemId) {
  if (!state.titles.has(itemId)) {
    try { state.titles.set(itemId, (await api("GET", `/v1/items/${encodeURIComponent(itemId)}`)).title); }
    catch { state.titles.set(itemId, itemId); }
  }
  return state.titles.get(itemId);
}

// -- recommendations ---------------------------------------------------------------------------

async function recommend() {
  $("recs-status").textContent = "Thinking…";
  $("recs").setAttribute("aria-busy", "true");
  try {
    const answer = await api("POST", `${userPath()}/recommendations`, { k: 10, explain: $("explain").checked });
    state.recs = answer;
    for (const rec of answer.items) state.titles.set(rec.item.id, rec.item.title);
    renderRecs(answer);
  } catch (exc) {
    $("recs-status").textContent = "";
    throw exc;
  } finally {
    $("recs").removeAttribute("aria-busy");
  }
}

function renderRecs(answer) {
  const stage = answer.order === "learned" ? "the learned ranker" : "retrieval's fusion";
  const by = answer.ranking === "off" ? stage : `${stage} and the LLM (${answer.ranking})`;
  const how = answer.degraded
    ? `Ranked by ${stage}, degraded (${answer.error || "the LLM did not answer"}).`
    : `Ranked by ${by} from ${answer.candidates} candidates in ${answer.seconds.toFixed(1)} s.`;
  $("recs-status").textContent = answer.items.length ? how : "Nothing left to recommend.";
  $("recs").replaceChildren(...answer.items.map((rec) => card(rec)));
}

function card(rec) {
  const item = rec.item;
  const sources = [...new Set(rec.provenance.map((p) => p.source))];
  const feedback = (signal, label) =>
    el("button", { type: "button", class: signal === "like" ? "" : "plain", "data-signal": signal,
      "aria-label": `${label}: ${item.title}`,
      onclick: (ev) => guarded(ev.currentTarget, async () => {
        await api("POST", `${userPath()}/feedback`, { item: item.id, signal });
        await recommend();
      }) }, label);
  return el("li", { class: "card", "data-item": item.id },
    el("h3", {}, `${rec.rank}. ${item.title}`),
    el("div", { class: "meta" }, (item.genres || []).join(", ") || "no genre", sources.length ? ` · from ${sources.join(", ")}` : ""),
    rec.reason ? el("p", { class: "reason" }, rec.reason) : null,
    rec.matched_interests.length ? el("div", {}, ...rec.matched_interests.map((m) => el("span", { class: "tag" }, m))) : null,
    el("div", { class: "actions" },
      feedback("like", "Like"), feedback("dislike", "Dislike"), feedback("skip", "Skip"),
      el("button", { type: "button", class: "plain", "aria-label": `Why ${item.title}?`, onclick: () => why(rec) }, "Why?")));
}

async function why(rec) {
  const body = $("why-body");
  body.replaceChildren(el("p", {}, "Loading…"));
  $("why").showModal();
  const profile = await api("GET", `${userPath()}/profile`).catch(() => null);
  const genres = new Set(rec.item.genres);
  const backing = [];
  for (const interest of profile ? profile.interests : []) {
    if (!genres.has(interest.name)) continue;
    const titles = await Promise.all(interest.evidence.slice(0, 5).map(title));
    backing.push(el("li", {}, `${interest.name} (weight ${interest.weight.toFixed(2)}): you liked ${titles.join(", ") || "it"}`));
  }
  body.replaceChildren(
    el("h3", {}, rec.item.title),
    el("p", {}, rec.reason || "No reason was written for this item."),
    el("p", { class: "muted" }, `Score ${rec.score.toFixed(3)}, rank ${rec.rank}.`),
    el("h3", {}, "Where it came from"),
    el("ul", {}, ...rec.provenance.map((p) => el("li", {}, `${p.source}: rank ${p.rank}, score ${p.score.toFixed(3)}`))),
    el("h3", {}, "Your interests behind it"),
    backing.length ? el("ul", {}, ...backing) : el("p", { class: "muted" }, "None of your profile's interests; it came from retrieval."));
}

// -- chat ----------------------------------------------------------------------------------------

function turn(role, text) {
  const bubble = el("span", {}, text);
  const row = el("div", { class: `turn ${role}` }, bubble);
  $("log").append(row);
  $("log").scrollTop = $("log").scrollHeight;
  return { row, bubble };
}

async function chat(message) {
  turn("user", message);
  const { row, bubble } = turn("assistant", "");
  row.classList.add("thinking");
  const headers = { "Content-Type": "application/json" };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  let reply;
  try {
    reply = await fetch(`${userPath()}/chat`, { method: "POST", headers, body: JSON.stringify({ message }) });
  } catch {
    row.classList.remove("thinking");
    bubble.textContent = "(the server cannot be reached)";
    throw new ApiError(0, "The server cannot be reached.");
  }
  if (!reply.ok) {
    row.classList.remove("thinking");
    let data = null;
    try { data = await reply.json(); } catch { data = null; }
    bubble.textContent = "(no answer)";
    throw new ApiError(reply.status, describe(reply.status, data));
  }
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let done = null;
  for (;;) {
    const { value, done: finished } = await reader.read();
    if (finished) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).replace(/^data: /, "");
      buffer = buffer.slice(cut + 2);
      const event = JSON.parse(line);
      if (event.delta) { row.classList.remove("thinking"); bubble.textContent += event.delta; }
      if (event.done) done = event;
    }
  }
  row.classList.remove("thinking");
  if (!bubble.textContent) bubble.textContent = "(no answer)";
  if (done && done.degraded) row.append(el("span", { class: "note" }, `answered in plan mode: ${done.degraded}`));
  $("log").scrollTop = $("log").scrollHeight;
}

// -- profile -------------------------------------------------------------------------------------

async function loadProfile() {
  const [profile, history] = await Promise.all([api("GET", `${userPath()}/profile`), api("GET", `${userPath()}/profile/history`)]);
  $("version").textContent = profile.version ? `version ${profile.version}` : "(none yet: rate, like or chat, then update)";
  $("profile-summary").textContent = profile.summary || "";
  $("interests").replaceChildren(...(await claims(profile.interests, "interest")));
  $("dislikes").replaceChildren(...(await claims(profile.dislikes, "dislike")));
  $("edits").textContent = profile.edits && profile.edits.length ? `Your edits standing: ${profile.edits.join("; ")}.` : "";
  $("rejected").textContent = profile.rejected && profile.rejected.length
    ? `The LLM also claimed, but your ratings contradicted: ${profile.rejected.join("; ")}.` : "";
  drawTimeline(history);
}

async function claims(list, kind) {
  if (!list.length) return [el("li", { class: "muted" }, kind === "interest" ? "No interests yet." : "No dislikes.")];
  const rows = [];
  for (const claim of list) {
    const titles = await Promise.all(claim.evidence.slice(0, 4).map(title));
    const basis = claim.source === "edit" ? "set by you" : claim.source === "stated" ? "said in chat"
      : `${kind === "interest" ? "liked" : "disliked"} ${kind === "interest" ? claim.positive : claim.negative}: ${titles.join(", ")}`;
    rows.push(el("li", { "data-name": claim.name },
      el("span", { class: "name" }, claim.name),
      el("span", {}, claim.weight.toFixed(2)),
      el("span", { class: "evidence" }, basis),
      el("button", { type: "button", "aria-label": `Remove ${kind} ${claim.name}`,
        onclick: (ev) => guarded(ev.currentTarget, () => edit(claim.name, kind, "remove")) }, "×")));
  }
  return rows;
}

async function edit(name, kind, action) {
  await api("POST", `${userPath()}/profile/edits`, { edits: [{ name, kind, action }] });
  await loadProfile();
  await recommend();
}

const PALETTE = ["#2f5bd3", "#d3542f", "#1b7a3d", "#8a3fc0", "#c09a1b", "#1b8a9a", "#c01b6e", "#5b6475"];

function drawTimeline(history) {
  const box = $("timeline");
  if (!history.length) { box.replaceChildren(el("p", { class: "muted" }, "No versions yet.")); return; }
  const NS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs = {}, ...kids) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const kid of kids) node.append(kid);
    return node;
  };
  const names = [...new Set(history.flatMap((p) => p.interests.map((i) => i.name)))].slice(0, PALETTE.length);
  const W = 720, H = 260, L = 40, R = 130, T = 10, B = 30;
  const x = (i) => L + (history.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (history.length - 1));
  const y = (w) => T + (1 - w) * (H - T - B);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, "aria-hidden": "true" });
  for (const w of [0, 0.5, 1]) {
    chart.append(svg("line", { x1: L, x2: W - R, y1: y(w), y2: y(w), stroke: "#e3e6ec" }));
    chart.append(svg("text", { x: 4, y: y(w) + 4, "font-size": 11, fill: "#5b6475" }, String(w)));
  }
  history.forEach((p, i) => {
    chart.append(svg("text", { x: x(i) - 8, y: H - 10, "font-size": 11, fill: "#5b6475" }, `v${p.version}`));
    for (const d of p.dislikes) {
      chart.append(svg("text", { x: x(i) - 4, y: H - B + 2, "font-size": 12, fill: "#b3261e" }, "✕",
        svg("title", {}, `v${p.version}: dislikes ${d.name}`)));
    }
  });
  names.forEach((name, n) => {
    const color = PALETTE[n];
    const points = history.map((p, i) => {
      const found = p.interests.find((it) => it.name === name);
      return found ? [x(i), y(found.weight), found.weight, p.version] : null;
    });
    let path = "";
    points.forEach((pt, i) => { if (pt) path += `${path && points[i - 1] ? "L" : "M"}${pt[0]},${pt[1]} `; });
    chart.append(svg("path", { d: path, fill: "none", stroke: color, "stroke-width": 2, "data-name": name }));
    for (const pt of points.filter(Boolean)) {
      chart.append(svg("circle", { cx: pt[0], cy: pt[1], r: 4, fill: color },
        svg("title", {}, `v${pt[3]}: ${name} ${pt[2].toFixed(2)}`)));
    }
    chart.append(svg("text", { x: W - R + 8, y: T + 14 + n * 16, "font-size": 12, fill: color }, name));
  });
  const summary = history.map((p) => `v${p.version}: ${p.interests.map((i) => `${i.name} ${i.weight.toFixed(2)}`).join(", ") || "none"}`);
  box.setAttribute("aria-label", `Interest weights per version. ${summary.join(". ")}`);
  box.replaceChildren(chart);
}

// -- wiring --------------------------------------------------------------------------------------

async function openUser(user) {
  state.user = user;
  $("who-name").textContent = user;
  $("app").hidden = false;
  $("log").replaceChildren();
  history.replaceState(null, "", `?user=${encodeURIComponent(user)}`);
  const genres = await api("GET", "/v1/genres");
  $("genre").replaceChildren(...genres.map((g) => el("option", { value: g }, g)));
  await loadProfile();
  await recommend();
}

$("key").value = state.key;
$("who").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = $("key").value.trim();
  sessionStorage.setItem("driftrec-key", state.key);
  const user = $("user").value.trim();
  if (!user || user.includes("/")) { showError("user: give an id without '/'."); return; }
  guarded($("open"), () => openUser(user));
});
$("reload").addEventListener("click", (ev) => guarded(ev.currentTarget, recommend));
$("refresh").addEventListener("click", (ev) => guarded(ev.currentTarget, async () => {
  const result = await api("POST", `${userPath()}/profile/refresh`);
  if (result.error) showError(`Profile update: ${result.status} (${result.error})`);
  await loadProfile();
}));
$("chat-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const message = $("message").value.trim();
  if (!message) return;
  $("message").value = "";
  guarded($("send"), async () => { await chat(message); await recommend(); });
});
$("edit-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const kind = (ev.submitter && ev.submitter.dataset.kind) || "interest";
  guarded(ev.submitter, () => edit($("genre").value, kind, "add"));
});
fetch("/health").then((r) => r.json()).then((h) => {
  $("health").textContent = h.status === "ok" ? "LLM ready" : "LLM unavailable: answers come from retrieval";
}).catch(() => { $("health").textContent = "server unreachable"; });
const preset = new URLSearchParams(location.search).get("user");
if (preset) { $("user").value = preset; guarded($("open"), () => openUser(preset)); }
