// The Switchyard dashboard: a hash-routed page over the host's HTTP API.
// Everything the host sends is untrusted text: it is only ever set with
// textContent (see `h`), never parsed as HTML.
"use strict";

const TOKEN_KEY = "switchyard-token";
const POLL_MS = 2000;
/// Samples kept for rates and charts: five minutes at one every two seconds.
const SAMPLES = 150;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  role: null,
  version: "",
  // Samples of topic offsets and subscription stats, oldest first.
  history: [],
  timer: null,
  // Aborts the streams of the page being left.
  streams: new AbortController(),
};

// ---- DOM helpers ------------------------------------------------------------

/// An element: attributes (`on*` are listeners), then children (strings become text).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function table(columns, rows, caption) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)));
  const body = rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.cell(r)))));
  const t = h("table", {}, caption ? h("caption", { class: "sr-only" }, caption) : null, h("thead", {}, head), h("tbody", {}, body));
  return h("div", { class: "scroll" }, t);
}

function card(label, value, id) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value", id }, value));
}

function notice(message) {
  const el = document.getElementById("notice");
  el.textContent = message || "";
  el.hidden = !message;
}

const main = () => document.getElementById("main");
const enc = encodeURIComponent;
const fmt = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: 1 }));
const size = (n) => {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${fmt(n)} ${units[i]}`;
};
const total = (xs) => (xs && xs.length ? xs.reduce((a, b) => a + b, 0) : undefined);
const time = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "–");
const isAdmin = () => state.role === "admin";

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/// A payload as text, pretty JSON, or a hex dump for binary.
function payloadView(m) {
  if (m.payload_base64 !== undefined && m.payload_base64 !== null) {
    const bytes = Uint8Array.from(atob(m.payload_base64), (c) => c.charCodeAt(0));
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const row = Array.from(bytes.slice(i, i + 16), (b) => b.toString(16).padStart(2, "0")).join(" ");
      lines.push(`${i.toString(16).padStart(6, "0")}  ${row}`);
    }
    return h("pre", { class: "payload", "aria-label": "payload (hex)" }, lines.join("\n"));
  }
  const text = m.payload ?? "";
  try {
    const value = JSON.parse(text);
    if (typeof value === "object" && value !== null) {
      return h("pre", { class: "payload", "aria-label": "payload (JSON)" }, JSON.stringify(value, null, 2));
    }
  } catch (_) { /* not JSON: shown as text */ }
  return h("pre", { class: "payload", "aria-label": "payload (text)" }, text);
}

function headersView(headers) {
  const entries = Object.entries(headers || {});
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return h("pre", {}, entries.map(([k, v]) => `${k}: ${v}`).join("\n"));
}

// ---- API --------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch (_) { value = null; }
  if (!res.ok) {
    const e = (value && value.error) || {};
    if (res.status === 401) showLogin(e.message || "A token is needed.");
    throw new ApiError(res.status, e.code || "http_" + res.status, e.message || res.statusText);
  }
  return value;
}

/// Run an action; its failure shows in the notice instead of being lost.
async function attempt(action) {
  try {
    notice("");
    return await action();
  } catch (e) {
    if (e.status !== 401) notice(`${e.code ? e.code + ": " : ""}${e.message}`);
    return undefined;
  }
}

/// Follow a server-sent event stream with fetch (EventSource cannot send a
/// token). Calls `onEvent(name, data, id)` until the page is left.
async function follow(path, onEvent, onEnd, onOpen) {
  const headers = { Accept: "text/event-stream" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  try {
    const res = await fetch(path, { headers, signal: state.streams.signal });
    if (!res.ok) {
      const e = await res.json().catch(() => ({}));
      throw new ApiError(res.status, e.error?.code, e.error?.message || res.statusText);
    }
    onOpen?.();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message", data = "", id = null;
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
          else if (line.startsWith("id: ")) id = line.slice(4);
        }
        if (data) onEvent(name, JSON.parse(data), id);
      }
    }
    onEnd("the stream ended");
  } catch (e) {
    if (e.name !== "AbortError") onEnd(e.message);
  }
}

// ---- Sampling: rates and charts come from successive readings --------------

async function sample() {
  const [topics, subs] = await Promise.all([api("GET", "/v1/topics"), api("GET", "/v1/subscriptions")]);
  const at = Date.now();
  state.history.push({ at, topics: topics.topics, subs: subs.subscriptions });
  if (state.history.length > SAMPLES) state.history.shift();
  return state.history[state.history.length - 1];
}

const stored = (t) => t.offsets.reduce((a, b) => a + b, 0);

/// Per-second rates between successive samples of `value(sample)`.
function series(value) {
  const out = [];
  for (let i = 1; i < state.history.length; i++) {
    const a = state.history[i - 1], b = state.history[i];
    const va = value(a), vb = value(b);
    if (va === undefined || vb === undefined) continue;
    out.push({ at: b.at, rate: Math.max(0, (vb - va) / ((b.at - a.at) / 1000)) });
  }
  return out;
}

function lastRate(value) {
  const all = series(value);
  return all.length ? all[all.length - 1].rate : undefined;
}

function sparkline(points, label) {
  const svg = s("svg", { class: "spark", viewBox: "0 0 120 24", role: "img", "aria-label": label });
  if (points.length > 1) {
    const max = Math.max(1e-9, ...points.map((p) => p.rate));
    const step = 120 / (points.length - 1);
    const d = points.map((p, i) => `${(i * step).toFixed(1)},${(22 - (p.rate / max) * 20).toFixed(1)}`).join(" ");
    svg.append(s("polyline", { points: d, fill: "none", stroke: "currentColor", "stroke-width": "1.5" }));
  }
  return svg;
}

/// The chart's lines; their colours are in style.css (`.line-<field>`).
const LINES = ["acked", "retried", "dead_lettered"];

function chart(name) {
  const lines = LINES.map((field) => ({
    field,
    points: series((smp) => smp.subs.find((x) => x.name === name)?.stats[field]),
  }));
  const all = lines.flatMap((l) => l.points);
  const svg = s("svg", { class: "chart", viewBox: "0 0 600 180", preserveAspectRatio: "none", role: "img",
    "aria-label": `Messages per second of ${name}: acked, retried and dead-lettered` });
  if (all.length > 1) {
    const t0 = Math.min(...all.map((p) => p.at)), t1 = Math.max(...all.map((p) => p.at));
    const max = Math.max(1, ...all.map((p) => p.rate));
    for (const l of lines) {
      const d = l.points.map((p) => `${(((p.at - t0) / Math.max(1, t1 - t0)) * 596 + 2).toFixed(1)},${(176 - (p.rate / max) * 170).toFixed(1)}`).join(" ");
      svg.append(s("polyline", { points: d, class: `line-${l.field}`, fill: "none", "stroke-width": "2", "vector-effect": "non-scaling-stroke" }));
    }
  }
  const legend = h("div", { class: "legend" }, LINES.map((f) =>
    h("span", { class: `line-${f}` }, `${f.replace("_", "-")}/s`)));
  return h("div", {}, svg, legend, h("p", { class: "muted" }, "Rates sampled by this page every 2 s (the last 5 minutes it was open)."));
}

// ---- Pages ------------------------------------------------------------------

function page(title, ...content) {
  const m = main();
  m.replaceChildren(h("h1", {}, title), ...content);
  document.title = `${title} · Switchyard`;
}

/// A page section refreshed on every poll.
function live(render) {
  const box = h("div", { "aria-live": "off" });
  box.refresh = async () => { box.replaceChildren(await render()); };
  return box;
}

async function overview() {
  const body = live(async () => {
    const now = state.history[state.history.length - 1];
    const host = await api("GET", "/v1/host");
    const lag = now.subs.reduce((a, x) => a + x.stats.lag, 0);
    const delivering = now.subs.reduce((a, x) => a + x.stats.acked_per_sec, 0);
    const publishing = lastRate((smp) => smp.topics.reduce((a, t) => a + stored(t), 0));
    const counts = await Promise.all(now.subs.map((x) =>
      api("GET", `/v1/subscriptions/${enc(x.name)}/dead-letters?limit=1000`).then((d) => d.dead_letters.length, () => undefined)));
    return h("div", {},
      h("div", { class: "cards" },
        card("Health", "ok"),
        card("Version", host.version),
        card("Uptime", duration(host.uptime_ms)),
        card("Published msg/s", fmt(publishing)),
        card("Acked msg/s", fmt(delivering)),
        card("Total lag", fmt(lag), "total-lag"),
        card("Topics", fmt(now.topics.length)),
        card("Subscriptions", fmt(now.subs.length))),
      h("h2", {}, "Dead letters by subscription"),
      table([
        { label: "Subscription", cell: (x) => h("a", { href: `#/subscriptions/${enc(x.sub.name)}` }, x.sub.name) },
        { label: "State", cell: (x) => h("span", { class: `state-${x.sub.state}` }, x.sub.state) },
        { label: "Lag", num: true, cell: (x) => fmt(x.sub.stats.lag) },
        { label: "Dead letters now", num: true, cell: (x) => (x.count === 1000 ? "1,000+" : fmt(x.count)) },
        { label: "Dead-lettered (total)", num: true, cell: (x) => fmt(x.sub.stats.dead_lettered) },
      ], now.subs.map((sub, i) => ({ sub, count: counts[i] }))));
  });
  page("Overview", body);
  return body;
}

async function topics() {
  const body = live(async () => {
    const now = state.history[state.history.length - 1];
    return table([
      { label: "Topic", cell: (t) => h("a", { href: `#/topics/${enc(t.name)}` }, t.name) },
      { label: "Partitions", num: true, cell: (t) => t.partitions },
      { label: "Messages stored", num: true, cell: (t) => fmt(stored(t) - t.first_offsets.reduce((a, b) => a + b, 0)) },
      { label: "Published (all time)", num: true, cell: (t) => fmt(stored(t)) },
      { label: "Size", num: true, cell: (t) => size(total(t.bytes)) },
      { label: "Msg/s", cell: (t) => {
        const points = series((smp) => { const x = smp.topics.find((y) => y.name === t.name); return x && stored(x); });
        return h("span", {}, sparkline(points, `messages per second of ${t.name}`), " ", fmt(points.length ? points[points.length - 1].rate : undefined));
      } },
      { label: "Retention", cell: (t) => duration(t.retention_ms) },
      { label: "Dedup window", cell: (t) => (t.dedup_window_ms ? duration(t.dedup_window_ms) : "off") },
    ], now.topics);
  });
  page("Topics", body);
  return body;
}

async function topic(name) {
  const t = await api("GET", `/v1/topics/${enc(name)}`);
  const messages = h("div", {});
  const partition = h("select", { id: "partition", name: "partition" },
    t.offsets.map((_, p) => h("option", { value: p }, `${p}`)));
  const from = h("input", { id: "from", name: "from", type: "number", min: 0, value: t.first_offsets[0] });
  partition.addEventListener("change", () => { from.value = t.first_offsets[partition.value]; });
  const read = async (ev) => {
    ev?.preventDefault();
    await attempt(async () => {
      const out = await api("GET", `/v1/topics/${enc(name)}/partitions/${partition.value}/messages?from=${Number(from.value) || 0}&limit=50`);
      messages.replaceChildren(out.messages.length ? table([
        { label: "Offset", num: true, cell: (m) => m.offset },
        { label: "Id", cell: (m) => m.id },
        { label: "Key", cell: (m) => m.key ?? "–" },
        { label: "Stored", cell: (m) => time(m.timestamp_ms) },
        { label: "Headers", cell: (m) => headersView(m.headers) },
        { label: "Payload", cell: (m) => payloadView(m) },
      ], out.messages) : h("p", { class: "muted" }, "No messages from this offset."),
      out.messages.length ? h("div", { class: "actions" }, h("button", { type: "button", onclick: () => { from.value = out.next; read(); } }, "Next page")) : null);
    });
  };
  page(`Topic ${name}`,
    table([
      { label: "Partition", num: true, cell: (p) => p },
      { label: "First offset", num: true, cell: (p) => fmt(t.first_offsets[p]) },
      { label: "Next offset", num: true, cell: (p) => fmt(t.offsets[p]) },
      { label: "Size", num: true, cell: (p) => size(t.bytes[p]) },
    ], t.offsets.map((_, p) => p)),
    h("h2", {}, "Browse"),
    h("form", { class: "inline", onsubmit: read },
      h("label", { for: "partition" }, "Partition", partition),
      h("label", { for: "from" }, "From offset", from),
      h("button", { type: "submit", class: "primary" }, "Read")),
    messages);
  await read();
}

/// `name@N` as the subscription runs it: pinned, or the latest version of
/// the plugin it follows.
function pluginVersion(sub, plugins) {
  if (!sub.plugin) return sub.mode || "–";
  if (sub.plugin.includes("@")) return sub.plugin;
  const p = plugins.find((x) => x.name === sub.plugin);
  return p ? `${sub.plugin}@${p.latest} (latest)` : sub.plugin;
}

async function subscriptions() {
  const plugins = (await api("GET", "/v1/plugins")).plugins;
  const body = live(async () => {
    const now = state.history[state.history.length - 1];
    return table([
      { label: "Subscription", cell: (x) => h("a", { href: `#/subscriptions/${enc(x.name)}` }, x.name) },
      { label: "State", cell: (x) => h("span", { class: `state-${x.state}` }, x.state) },
      { label: "Topic", cell: (x) => x.topic },
      { label: "Plugin", cell: (x) => pluginVersion(x, plugins) },
      { label: "Ordering", cell: (x) => x.ordering },
      { label: "Concurrency", num: true, cell: (x) => x.concurrency },
      { label: "Delivery", cell: (x) => x.delivery },
      { label: "Lag", num: true, cell: (x) => fmt(x.stats.lag) },
      { label: "In flight", num: true, cell: (x) => fmt(x.stats.in_flight) },
      { label: "Acked/s", num: true, cell: (x) => fmt(x.stats.acked_per_sec) },
      { label: "Dead-lettered", num: true, cell: (x) => fmt(x.stats.dead_lettered) },
    ], now.subs);
  });
  page("Subscriptions", body);
  return body;
}

async function subscription(name) {
  const path = `/v1/subscriptions/${enc(name)}`;
  const plugins = (await api("GET", "/v1/plugins")).plugins;
  const letters = h("div", {});
  const loadLetters = async () => {
    const out = await api("GET", `${path}/dead-letters?limit=1000`);
    letters.replaceChildren(
      h("div", { class: "actions" },
        h("button", { type: "button", disabled: !isAdmin() || !out.dead_letters.length, onclick: () => redrive(name, null, loadLetters) }, "Redrive all"),
        h("button", { type: "button", class: "danger", disabled: !isAdmin() || !out.dead_letters.length, onclick: () => purge(name, null, loadLetters) }, "Purge all")),
      out.dead_letters.length ? table([
        { label: "Message", cell: (d) => h("a", { href: `#/dead-letters/${enc(name)}/${enc(d.id)}` }, d.id) },
        { label: "Reason", cell: (d) => d.reason },
        { label: "Attempts", num: true, cell: (d) => d.attempts.length },
        { label: "Dead since", cell: (d) => time(d.dead_at_ms) },
        { label: "Key", cell: (d) => d.key ?? "–" },
      ], out.dead_letters, "Dead letters") : h("p", { class: "muted", id: "no-dead-letters" }, "No dead letters."));
  };
  const body = live(async () => {
    const sub = state.history[state.history.length - 1].subs.find((x) => x.name === name);
    if (!sub) return h("p", { class: "muted" }, "No such subscription.");
    const st = sub.stats;
    const spec = Object.entries(sub).filter(([k]) => !["name", "state", "stats"].includes(k));
    return h("div", {},
      h("div", { class: "actions" },
        h("button", { type: "button", disabled: !isAdmin() || sub.state === "paused", onclick: () => setPaused(name, true) }, "Pause"),
        h("button", { type: "button", disabled: !isAdmin() || sub.state !== "paused", onclick: () => setPaused(name, false) }, "Resume")),
      h("div", { class: "cards" },
        card("State", h("span", { class: `state-${sub.state}`, id: "sub-state" }, sub.state)),
        card("Plugin", h("span", { id: "sub-plugin" }, pluginVersion(sub, plugins))),
        card("Lag", fmt(st.lag), "sub-lag"),
        card("In flight", fmt(st.in_flight)),
        card("Acked/s", fmt(st.acked_per_sec)),
        card("Acked", fmt(st.acked)),
        card("Retried", fmt(st.retried)),
        card("Dead-lettered", fmt(st.dead_lettered), "sub-dead-lettered"),
        card("Delivered", fmt(st.delivered))),
      h("h2", {}, "Rates"),
      chart(name),
      h("h2", {}, "Settings"),
      h("dl", { class: "spec" }, spec.map(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "object" ? JSON.stringify(v) : String(v))])));
  });
  body.refreshLetters = loadLetters;
  page(`Subscription ${name}`, body, h("h2", {}, "Dead letters"), letters);
  await loadLetters();
  return body;
}

async function setPaused(name, paused) {
  await attempt(async () => {
    await api("POST", `/v1/subscriptions/${enc(name)}/${paused ? "pause" : "resume"}`);
    await sample();
    await current?.refresh?.();
  });
}

async function redrive(name, id, after) {
  const what = id ? `dead letter ${id}` : "every dead letter";
  if (!confirm(`Send ${what} of ${name} back into the subscription?`)) return;
  await attempt(async () => {
    await api("POST", `/v1/subscriptions/${enc(name)}/dead-letters/redrive`, id ? { ids: [id] } : undefined);
    await after();
  });
}

async function purge(name, id, after) {
  const what = id ? `dead letter ${id}` : "every dead letter";
  if (!confirm(`Delete ${what} of ${name} for good?`)) return;
  await attempt(async () => {
    await api("DELETE", `/v1/subscriptions/${enc(name)}/dead-letters${id ? "/" + enc(id) : ""}`);
    await after();
  });
}

function attemptsTable(attempts) {
  return table([
    { label: "#", num: true, cell: (a) => a.attempt },
    { label: "Started", cell: (a) => time(a.started_ms) },
    { label: "Took", num: true, cell: (a) => `${fmt(a.duration_us / 1000)} ms` },
    { label: "Outcome", cell: (a) => h("span", { class: a.outcome === "ack" ? "ok" : "bad" }, a.outcome) },
    { label: "Error", cell: (a) => a.error ?? "–" },
    { label: "Plugin", cell: (a) => a.plugin ?? "–" },
    { label: "Logs", cell: (a) => (a.logs?.length ? h("pre", {}, a.logs.join("\n")) : "–") },
    { label: "Outbound HTTP", cell: (a) => (a.http?.length ? h("pre", {}, a.http.map((r) =>
      `${r.method} ${r.target} → ${r.status ?? r.error} (${fmt(r.duration_us / 1000)} ms)`).join("\n")) : "–") },
  ], attempts, "Attempts");
}

async function deadLetter(name, id) {
  const path = `/v1/subscriptions/${enc(name)}/dead-letters/${enc(id)}`;
  const d = await api("GET", path);
  const back = () => { location.hash = `#/subscriptions/${enc(name)}`; };
  page(`Dead letter ${id}`,
    h("p", {}, "Of ", h("a", { href: `#/subscriptions/${enc(name)}` }, name), `, from ${d.topic} partition ${d.partition} offset ${d.offset}.`),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", disabled: !isAdmin(), onclick: () => redrive(name, id, back) }, "Redrive"),
      h("button", { type: "button", class: "danger", disabled: !isAdmin(), onclick: () => purge(name, id, back) }, "Purge")),
    h("dl", { class: "spec" },
      h("dt", {}, "Reason"), h("dd", { id: "reason" }, d.reason),
      h("dt", {}, "Dead since"), h("dd", {}, time(d.dead_at_ms)),
      h("dt", {}, "Key"), h("dd", {}, d.key ?? "–"),
      h("dt", {}, "Published"), h("dd", {}, time(d.timestamp_ms)),
      h("dt", {}, "Headers"), h("dd", {}, headersView(d.headers))),
    h("h2", {}, "Payload"), payloadView(d),
    h("h2", {}, "Attempts"), attemptsTable(d.attempts));
}

async function trace(id) {
  const input = h("input", { id: "message-id", name: "id", required: true, value: id || "", autocomplete: "off" });
  const results = h("div", {});
  const search = async (ev) => {
    ev?.preventDefault();
    const wanted = input.value.trim();
    if (!wanted) return;
    if (location.hash !== `#/trace/${enc(wanted)}`) history.replaceState(null, "", `#/trace/${enc(wanted)}`);
    await attempt(async () => {
      const subs = (await api("GET", "/v1/subscriptions")).subscriptions;
      const found = await Promise.all(subs.map((x) =>
        api("GET", `/v1/subscriptions/${enc(x.name)}/messages/${enc(wanted)}`).then((l) => [x.name, l], (e) => {
          if (e.status === 404) return null;
          throw e;
        })));
      const hits = found.filter(Boolean);
      results.replaceChildren(...(hits.length ? hits.map(([sub, l]) => h("section", {},
        h("h2", {}, h("a", { href: `#/subscriptions/${enc(sub)}` }, sub), " — ", h("span", { class: l.state === "acked" ? "ok" : "bad" }, l.state)),
        h("p", { class: "muted" }, `${l.topic} partition ${l.partition} offset ${l.offset}`),
        attemptsTable(l.attempts))) : [h("p", { class: "muted" },
        "No subscription has a delivery record of this message (records are kept for messages with a failed attempt, or every message under \"ledger\": \"all\").")]));
    });
  };
  page("Message trace",
    h("form", { class: "inline", onsubmit: search },
      h("label", { for: "message-id" }, "Message id", input),
      h("button", { type: "submit", class: "primary" }, "Trace")),
    results);
  if (id) await search();
}

async function plugins() {
  const [list, subs] = await Promise.all([api("GET", "/v1/plugins"), api("GET", "/v1/subscriptions")]);
  const users = (name) => subs.subscriptions.filter((x) => x.plugin === name || x.plugin?.startsWith(name + "@")).map((x) => x.plugin === name ? x.name : `${x.name} (${x.plugin})`);
  page("Plugins", table([
    { label: "Plugin", cell: (p) => p.name },
    { label: "Latest", num: true, cell: (p) => p.latest },
    { label: "Language", cell: (p) => (p.versions[p.versions.length - 1]?.languages ?? []).join(", ") || "–" },
    { label: "Versions", cell: (p) => h("pre", {}, p.versions.map((v) =>
      `${v.version}  ${v.digest.slice(0, 19)}…  ${size(v.size)}  ${time(v.created_ms)}`).join("\n")) },
    { label: "Used by", cell: (p) => users(p.name).join(", ") || "–" },
  ], list.plugins));
}

async function liveTail() {
  const [topicsOut, subsOut] = await Promise.all([api("GET", "/v1/topics"), api("GET", "/v1/subscriptions")]);
  const feed = h("div", { class: "feed scroll" });
  const status = h("p", { class: "muted", "aria-live": "polite" });
  const rows = [];
  const show = (line) => {
    rows.unshift(line);
    if (rows.length > 200) rows.pop();
    feed.replaceChildren(h("pre", {}, rows.join("\n")));
  };
  const start = (path, what, render) => {
    state.streams.abort();
    state.streams = new AbortController();
    rows.length = 0;
    feed.replaceChildren();
    status.textContent = `Following ${what}…`;
    follow(path, (name, data) => show(render(name, data)), (why) => { status.textContent = `Stopped: ${why}`; },
      () => { status.textContent = `Following ${what} (connected).`; });
  };
  const topicPick = h("select", { id: "tail-topic" }, topicsOut.topics.map((t) => h("option", { value: t.name }, t.name)));
  const subPick = h("select", { id: "events-sub" }, subsOut.subscriptions.map((x) => h("option", { value: x.name }, x.name)));
  page("Live",
    h("form", { class: "inline", onsubmit: (ev) => { ev.preventDefault(); start(`/v1/topics/${enc(topicPick.value)}/tail`, `topic ${topicPick.value}`,
      (name, m) => name === "message" ? `${time(m.timestamp_ms)}  p${m.partition}@${m.offset}  ${m.key ?? "-"}  ${m.payload ?? "(binary)"}` : `${name}: ${JSON.stringify(m)}`); } },
      h("label", { for: "tail-topic" }, "Topic", topicPick),
      h("button", { type: "submit", disabled: !topicsOut.topics.length }, "Tail new messages")),
    h("form", { class: "inline", onsubmit: (ev) => { ev.preventDefault(); start(`/v1/subscriptions/${enc(subPick.value)}/events`, `attempts of ${subPick.value}`,
      (name, e) => `${time(e.attempt?.started_ms)}  ${name}  ${e.message_id}  attempt ${e.attempt?.attempt} ${e.attempt?.outcome}${e.attempt?.error ? "  " + e.attempt.error : ""}`); } },
      h("label", { for: "events-sub" }, "Subscription", subPick),
      h("button", { type: "submit", disabled: !subsOut.subscriptions.length }, "Follow attempts")),
    status, feed);
}

// ---- Login and routing --------------------------------------------------------

function showLogin(why) {
  stopPolling();
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true });
  main().replaceChildren(h("form", { class: "login", onsubmit: async (ev) => {
    ev.preventDefault();
    state.token = input.value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    await boot();
  } },
  h("h1", {}, "Sign in"),
  h("p", { class: "muted" }, why || "This host needs a token."),
  h("p", { class: "muted" }, "It is kept in this tab only (sessionStorage)."),
  h("label", { for: "token" }, "Token", input),
  h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in"))));
  document.getElementById("who").textContent = "";
  input.focus();
}

let current = null;

function stopPolling() {
  clearInterval(state.timer);
  state.timer = null;
}

async function route() {
  stopPolling();
  state.streams.abort();
  state.streams = new AbortController();
  notice("");
  current = null;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("nav a")) {
    const target = a.getAttribute("href").replace(/^#\/?/, "");
    if (target === (parts[0] || "")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  await attempt(async () => {
    const polled = {
      "": overview, topics, subscriptions,
    };
    if (parts[0] === "topics" && parts[1]) return topic(parts[1]);
    if (parts[0] === "subscriptions" && parts[1]) return polling(() => subscription(parts[1]));
    if (parts[0] === "dead-letters" && parts[2]) return deadLetter(parts[1], parts[2]);
    if (parts[0] === "trace") return trace(parts[1]);
    if (parts[0] === "plugins") return plugins();
    if (parts[0] === "live") return liveTail();
    if (polled[parts[0] || ""]) return polling(polled[parts[0] || ""]);
    page("Not found", h("p", {}, "No such page. ", h("a", { href: "#/" }, "Overview")));
  });
  main().focus({ preventScroll: true });
}

/// Render a page whose data refreshes every poll.
async function polling(render) {
  await sample();
  const body = await render();
  current = body;
  await body.refresh();
  state.timer = setInterval(() => attempt(async () => {
    await sample();
    if (current === body) await body.refresh();
  }), POLL_MS);
}

async function boot() {
  try {
    const host = await api("GET", "/v1/host");
    state.role = host.role;
    state.version = host.version;
    document.getElementById("who").textContent =
      `v${host.version} · ${host.role}${host.role === "admin" ? "" : " (read-only here)"}`;
  } catch (e) {
    if (e.status !== 401) notice(`${e.code}: ${e.message}`);
    return;
  }
  await route();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", boot);
