// The conduit control panel: renders /api/events (server-sent status snapshots), posts controls to /api/*.
"use strict";

const $ = (id) => document.getElementById(id);
let last = null;          // the newest status snapshot
let paramKeys = "";       // which parameter inputs are built

// A token given as ?token=... (printed by the conduit when the panel listens beyond this machine).
const query = new URLSearchParams(location.search);
if (query.get("token")) {
  sessionStorage.setItem("conduit-token", query.get("token"));
  history.replaceState(null, "", location.pathname);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function fill(table, head, rows) {
  table.replaceChildren(el("tr", {}, ...head.map((h) => el("th", { text: h }))));
  for (const row of rows) {
    table.append(el("tr", {}, ...row.map((c) => (c instanceof Node ? c : el("td", { text: c ?? "–" })))));
  }
}

// "direction_none 12, too_few_points 3": what a stage counted (dropped), largest first.
const countsText = (counts) => Object.entries(counts || {}).filter(([, n]) => n).sort((a, b) => b[1] - a[1])
  .map(([reason, n]) => `${reason} ${num(n)}`).join(", ") || "–";

const num = (v, digits = 0) => (v === null || v === undefined || Number.isNaN(v) ? "–"
  : Number(v).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }));
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${sec} s` : `${sec} s`;
}
const td = (text, cls) => el("td", cls ? { class: cls, text } : { text });

// -- controls ------------------------------------------------------------------------------------

async function post(path, body, messageTarget = $("message")) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem("conduit-token");
  if (token) headers["Authorization"] = `Bearer ${token}`;
  messageTarget.className = messageTarget.id === "message" ? "message" : "errors";
  messageTarget.textContent = messageTarget.id === "message" ? "…" : "";
  let reply;
  try {
    const response = await fetch(`/api/${path}`, { method: "POST", headers, body: JSON.stringify(body || {}) });
    reply = await response.json();
    if (response.status === 401) {
      const given = prompt(`${reply.errors.join("\n")}\n\nToken (printed where the conduit was started):`);
      if (given) { sessionStorage.setItem("conduit-token", given.trim()); return post(path, body, messageTarget); }
    }
  } catch (err) {
    reply = { ok: false, errors: [`no answer from the conduit: ${err}`] };
  }
  if (!reply.ok) {
    messageTarget.className = messageTarget.id === "message" ? "message error" : "errors";
    messageTarget.textContent = reply.errors.join("\n");
  } else if (messageTarget.id === "message") {
    messageTarget.textContent = describe(path, reply);
  }
  return reply;
}

function describe(path, reply) {
  const now = new Date().toLocaleTimeString();
  if (path === "new-run") return `${now}: run ${reply.run} started; closed ${reply.closed.length} file(s)`;
  if (path === "pause") return `${now}: analysis paused (recording goes on)`;
  if (path === "resume") return `${now}: analysis resumed`;
  if (path === "reset") return `${now}: histograms reset`;
  if (path === "stop") return `${now}: stopping: finishing events in flight, closing files`;
  return `${now}: done`;
}

for (const id of ["pause", "resume", "reset"]) {
  $(id).addEventListener("click", () => post(id));
}
$("stop").addEventListener("click", () => {
  if (confirm("Stop the run? Events in flight are finished and every file is closed.")) post("stop");
});
$("newrun").addEventListener("click", () => {
  const value = $("newrun-number").value.trim();
  post("new-run", value === "" ? {} : { run: Number(value) });
});

$("params-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const assignments = [];
  for (const input of document.querySelectorAll("#params input.changed")) {
    assignments.push(`${input.dataset.key}=${tomlValue(input)}`);
  }
  const free = $("set-free").value.trim();
  if (free) assignments.push(free);
  if (!assignments.length) { $("param-errors").textContent = "nothing changed"; return; }
  const reply = await post("set", { set: assignments }, $("param-errors"));
  if (reply.ok) {
    $("set-free").value = "";
    for (const input of document.querySelectorAll("#params input.changed")) input.classList.remove("changed");
    paramKeys = "";  // rebuild with the values now in force
  }
});

function tomlValue(input) {
  const text = input.value.trim();
  if (input.dataset.type === "str" && !/^".*"$/.test(text)) return JSON.stringify(text);
  return text;
}

$("gate-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const gate = { name: $("gate-name").value.trim(), histogram: $("gate-histogram").value };
  const numbers = $("gate-shape").value.split(/[;\n]/).map((p) => p.trim()).filter(Boolean)
    .map((p) => p.split(/[ ,]+/).filter(Boolean).map(Number));
  if (numbers.length === 1 && numbers[0].length === 2) gate.interval = numbers[0];
  else gate.polygon = numbers;
  const reply = await post("gates", gate, $("gate-errors"));
  if (reply.ok) { $("gate-name").value = ""; $("gate-shape").value = ""; }
});

// -- rendering ---------------------------------------------------------------------------------

function render(s) {
  last = s;
  const phase = s.paused && s.phase === "running" ? "paused" : s.phase;
  $("phase").textContent = phase;
  $("phase").className = `badge ${phase}`;
  $("run").textContent = `run ${s.run ?? "–"}`;
  document.title = `run ${s.run ?? "–"} · ${phase} · conduit`;
  $("pipeline").textContent = s.pipeline;
  $("source").textContent = s.source + (s.live ? " (live)" : "");
  $("uptime").textContent = duration(s.uptime_s);
  const viewer = $("viewer");
  viewer.replaceChildren();
  for (const url of s.viewer.web) viewer.append("Rerun ", el("a", { href: url, target: "_blank", text: "web viewer" }), " ");
  for (const url of s.viewer.grpc) viewer.append(el("span", { text: `viewer: rerun ${url}` }));

  const running = s.phase === "running";
  $("pause").disabled = !running || s.paused;
  $("resume").disabled = !running || !s.paused;
  $("reset").disabled = !running && s.phase !== "starting";
  $("newrun").disabled = !running;
  $("stop").disabled = s.phase === "closing" || s.phase === "ended" || s.phase === "stopping";
  const next = $("newrun-number");
  if (document.activeElement !== next) next.value = s.run === null ? "" : s.run + 1;

  renderAlarms(s);
  renderEvents(s);
  fill($("streams"), ["stream", "state", "frames/s", "MB/s", "errors", "last data"],
    s.streams.map((c) => [c.name, td(c.state || "connected", stateClass(c)), num(c.frames_per_s, 1),
      num(c.mb_per_s, 2), td(num(c.errors), c.errors ? "bad" : ""),
      c.age_s === null ? "never" : `${num(c.age_s, 1)} s ago`]));
  if (!s.streams.length) fill($("streams"), ["stream"], [["this source has no streams (not a DAQ)"]]);
  fill($("stages"), ["stage", "calls", "mean ms", "p99 ms", "failures", "not run", "gave nothing", "counted"],
    s.stages.map((t) => [t.name, num(t.calls), num(t.mean_ms, 2), num(t.p99_ms, 2),
      td(num(t.failures), t.failures ? "bad" : ""), td(num(t.skipped), t.skipped ? "bad" : ""), num(t.empty),
      countsText(t.counts)]));
  const outputs = s.sinks.flatMap((k) => k.outputs.map((o) => [k.name, o.path, o.local ? bytes(o.bytes) : ""]));
  fill($("outputs"), ["sink", "output", "size"], outputs.length ? outputs : [["–", "nothing written yet", ""]]);
  fill($("disks"), ["disk", "free", "free %"], s.disks.map((d) => [d.path, bytes(d.free_bytes),
    num(100 * d.free_bytes / d.total_bytes, 1)]));
  const losses = Object.entries(s.losses);
  fill($("losses"), ["lost, by reason", "count"], losses.length ? losses.map(([k, v]) => [k, td(num(v), "bad")])
    : [["nothing lost", "0"]]);
  renderParams(s);
  renderGates(s);
  fill($("changes"), ["time", "run", "from event", "change"], s.changes.slice().reverse().map((c) => [
    c.time.replace("T", " "), c.run ?? "–", c.event === null ? `#${c.sequence} (next)` : `${c.event} (#${c.sequence})`,
    Object.entries(c.changes).map(([k, v]) => `${k}: ${shortValue(v.old)} → ${shortValue(v.new)}`).join("; ")]));
  fill($("runs"), ["run", "last event #", "files (complete)"], s.runs.map((r) => [r.run, r.last_sequence,
    r.outputs.join("  ")]));
  $("runs-card").style.display = s.runs.length ? "" : "none";
  $("footer").textContent = `conduit ${s.conduit} · pid ${s.pid} · snapshot ${new Date(s.time * 1000).toLocaleTimeString()}`
    + (s.error ? ` · error: ${s.error}` : "");
}

// A list of named tables (gates) by its names; anything else as JSON.
function shortValue(v) {
  if (Array.isArray(v) && v.every((x) => x && typeof x === "object" && "name" in x)) {
    return `[${v.map((x) => x.name).join(", ")}]`;
  }
  return JSON.stringify(v);
}

function stateClass(c) {
  if (c.state === "connected" || c.state === "") return "state-ok";
  if (c.state === "silent" || c.state === "behind") return "state-warn";
  return "state-err";
}

function renderAlarms(s) {
  const box = $("alarms");
  box.replaceChildren();
  if (s.paused) box.append(el("div", { class: "alarm warning", text: "analysis paused: events are recorded, not analysed" }));
  for (const a of s.alarms) {
    box.append(el("div", { class: `alarm ${a.level}` }, a.message,
      el("span", { class: "since", text: `since ${new Date(a.since * 1000).toLocaleTimeString()}` })));
  }
  if (!s.alarms.length && !s.paused) box.append(el("div", { class: "alarm ok", text: "no alarms" }));
}

function renderEvents(s) {
  const e = s.events, r = e.rates;
  const pct = (n) => (e.received ? ` (${num(100 * n / e.received, 1)} %)` : "");
  fill($("events"), ["events", "total", "per s"], [
    ["received", num(e.received) + (e.total ? ` / ${num(e.total)}` : ""), num(r.received, 1)],
    ["complete", num(e.complete), ""],
    ["incomplete", td(num(e.incomplete) + pct(e.incomplete), e.incomplete ? "state-warn" : ""), ""],
    ["analysed", num(e.analysed), num(r.analysed, 1)],
    ["skipped (analysis behind)", td(num(e.skipped) + pct(e.skipped), e.skipped ? "state-warn" : ""), num(r.skipped, 1)],
    ["not analysed (paused)", num(e.paused), ""],
    ["not analysed (stopped by an error)", td(num(e.halted), e.halted ? "bad" : ""), ""],
    ["delivered to outputs", num(e.delivered), ""],
    ["stage failures", td(num(e.failed), e.failed ? "bad" : ""), ""],
  ]);
  const q = s.queue, fraction = q.size ? q.depth / q.size : 0;
  $("queue-bar").style.width = `${Math.min(100, 100 * fraction)}%`;
  $("queue-bar").style.background = fraction > 0.8 ? "var(--err)" : fraction > 0.5 ? "var(--warn)" : "var(--ok)";
  $("queue-text").textContent = `${q.depth}/${q.size} · analysing ${q.in_flight}/${q.max_in_flight} · policy ${q.policy}`;
}

function renderParams(s) {
  const editable = s.parameters.filter((p) => ["float", "int", "bool", "str"].includes(p.type) || p.type.includes("'"));
  const keys = editable.map((p) => `${p.key}=${JSON.stringify(p.value)}`).join("|");
  if (keys === paramKeys) return;  // unchanged: leave what the user is typing alone
  paramKeys = keys;
  const box = $("params");
  box.replaceChildren();
  for (const p of editable) {
    const input = el("input", { "data-key": p.key, "data-type": p.type, title: `${p.doc}${p.range ? ` (${p.range})` : ""}` });
    input.value = typeof p.value === "string" ? p.value : JSON.stringify(p.value);
    input.dataset.original = input.value;
    input.addEventListener("input", () => input.classList.toggle("changed", input.value !== input.dataset.original));
    box.append(el("div", { class: "param" },
      el("label", { title: p.doc }, el("span", { class: "stage", text: `${p.stage}.` }), p.name), input));
  }
}

function renderGates(s) {
  const g = s.gates;
  $("gate-form").style.display = g.editable ? "" : "none";
  const select = $("gate-histogram");
  const names = g.histograms.map((h) => h.name).join(",");
  if (select.dataset.names !== names) {
    select.dataset.names = names;
    select.replaceChildren(...g.histograms.map((h) => el("option", { value: h.name,
      text: `${h.name} (${h.y ? `${h.y} vs ${h.x}` : h.x})` })));
  }
  const rows = g.gates.map((gate) => {
    const shape = gate.polygon ? `polygon ${gate.polygon.map((v) => v.join(", ")).join("; ")}`
      : gate.interval ? `interval ${gate.interval.join(", ")}`
      : ["all_of", "any_of", "negate"].filter((k) => gate[k]).map((k) => `${k} ${[].concat(gate[k]).join(", ")}`).join("");
    const edit = el("button", { type: "button", text: "edit" });
    edit.addEventListener("click", () => {
      $("gate-name").value = gate.name;
      if (gate.histogram) select.value = gate.histogram;
      $("gate-shape").value = gate.polygon ? gate.polygon.map((v) => v.join(", ")).join("; ")
        : gate.interval ? gate.interval.join(", ") : "";
    });
    const remove = el("button", { type: "button", text: "remove" });
    remove.addEventListener("click", () => post("gates/remove", { name: gate.name }, $("gate-errors")));
    return [gate.name, gate.histogram ?? "–", shape, el("td", {}, edit, " ", remove)];
  });
  fill($("gates"), ["gate", "histogram", "shape", ""], rows.length ? rows : [["no gates", "", "", ""]]);
}

// -- the stream ----------------------------------------------------------------------------------

function connect() {
  const source = new EventSource("/api/events");
  source.onmessage = (msg) => {
    $("link").textContent = "live";
    $("link").className = "link-state";
    render(JSON.parse(msg.data));
  };
  source.onerror = () => {
    // A run that was stopping closes its panel with it: that is its end, not a lost connection.
    const ended = last && ["stopping", "closing", "ended"].includes(last.phase);
    $("link").textContent = ended ? "run ended: panel closed" : "no connection to the conduit";
    $("link").className = "link-state offline";
    if (last) {
      $("phase").textContent = ended ? "ended" : "offline";
      $("phase").className = "badge offline";
      for (const button of document.querySelectorAll(".controls button")) button.disabled = true;
    }
    if (ended) source.close();
  };
}
connect();
