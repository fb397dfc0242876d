// voxelpipe's viewer page (docs/viewer.md): one study, or a subject's studies, drawn with NiiVue.
//
// The link's grant is in the URL's fragment (#grant=…), which the browser never sends to a server;
// this script presents it as a bearer token to the viewer's data API and to the live progress
// WebSocket. Signals for tests and embedding pages, on <html>: data-viewer-ready="true" once the
// volumes are loaded and drawn, data-viewer-error="<code>" when the page cannot show the study.

const root = document.documentElement;
const mode = root.dataset.mode === "subject" ? "subject" : "study";
const grant = new URLSearchParams(location.hash.slice(1)).get("grant");
const pageId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const dataUrl = new URL(`../api/${mode === "study" ? "studies" : "subjects"}/${encodeURIComponent(pageId)}`, location.href);
const TERMINAL = new Set(["COMPLETED", "FAILED", "REJECTED", "DELETED"]);
// NiiVue's enums by value (SHOW_RENDER.ALWAYS, MULTIPLANAR_TYPE.GRID), as 0.69 numbers them.
const SHOW_RENDER_ALWAYS = 1;
const MULTIPLANAR_GRID = 2;

const $ = (id) => document.getElementById(id);
const state = { nv: null, niivue: null, study: null, studies: [], labelMaps: [], hidden: new Map(), loadedKey: null, live: null };

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code || `http_${status}`;
  }
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

function fail(code, text) {
  showMessage(text);
  root.dataset.viewerError = code;
  delete root.dataset.viewerReady;
}

function explain(error) {
  if (error instanceof ApiError) {
    if (error.code === "grant_expired") return "This viewer link has expired: ask for a new one (viewer links last minutes).";
    if (error.status === 401) return `This viewer link is not valid (${error.message}): ask for a new one.`;
    if (error.status === 404) return mode === "study" ? "No such study, or this link does not cover it." : "No studies of this subject that this link covers.";
    return `The viewer's data could not be read: ${error.message}`;
  }
  return `The viewer could not show the study: ${error && error.message ? error.message : error}`;
}

async function fetchData() {
  const response = await fetch(dataUrl, { headers: { authorization: `Bearer ${grant}` }, cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.code, body.detail || body.title);
  return body;
}

// -- the panels -------------------------------------------------------------------------------
function renderProgress(study) {
  $("status").textContent = `${study.status} (attempt ${study.attempt})` + (study.reason ? ` — ${study.reason}: ${study.reason_detail || ""}` : "") + (study.error ? ` — ${study.error}` : "");
  $("status").dataset.status = study.status;
  const list = $("steps");
  list.replaceChildren(...(study.steps || []).map((step) => stepItem(step.step, step.status, step.progress)));
}

function stepItem(name, status, progress) {
  const text = `${name}: ${status}` + (progress && status === "RUNNING" ? ` ${progress}%` : "");
  return element("li", { "data-step": name, "data-status": status, text });
}

function updateStep(message) {
  if (!state.study || message.study_id !== state.study.study.study_id) return;
  if (message.attempt !== undefined && message.attempt !== state.study.study.attempt) return;
  const list = $("steps");
  const item = stepItem(message.step, message.status, message.progress);
  const existing = [...list.children].find((li) => li.dataset.step === message.step);
  if (existing) existing.replaceWith(item);
  else list.append(item);
}

function flatten(value, prefix, rows) {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, rows);
  } else if (Array.isArray(value)) {
    rows.push([prefix, value.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(", ")]);
  } else {
    rows.push([prefix, value === null ? "—" : typeof value === "number" ? formatNumber(value) : String(value)]);
  }
  return rows;
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(5)));
}

function renderMeasures(measures) {
  const box = $("measures");
  const analyses = Object.entries(measures || {});
  if (!analyses.length) {
    box.replaceChildren(element("p", { class: "muted", text: "No measures yet: they appear when the study completes." }));
    return;
  }
  box.replaceChildren(...analyses.map(([name, values], index) => {
    const rows = flatten(values, "", []);
    const table = element("table", {}, ...rows.map(([key, value]) => element("tr", {}, element("th", { text: key }), element("td", { class: "value", text: value }))));
    const details = element("details", { "data-analysis": name }, element("summary", { text: `${name} (${rows.length})` }), table);
    if (name === "volumetrics" || (index === 0 && !measures.volumetrics)) details.open = true;
    return details;
  }));
}

function renderLegends(labelMaps) {
  const box = $("legends");
  if (!labelMaps.length) {
    box.replaceChildren(element("p", { class: "muted", text: "No label maps yet." }));
    return;
  }
  box.replaceChildren(...labelMaps.map((map, mapIndex) => {
    const hidden = state.hidden.get(map.analysis) || new Set();
    const items = map.legend.map((entry) => {
      const box = element("input", { type: "checkbox", "data-analysis": map.analysis, "data-index": String(entry.index) });
      box.checked = !hidden.has(entry.index);
      box.addEventListener("change", () => toggleLabel(mapIndex, entry.index, box.checked));
      const swatch = element("span", { class: "swatch", style: `background:${entry.colour}` });
      return element("li", { "data-colour": entry.colour }, element("label", {}, box, swatch, document.createTextNode(entry.name)));
    });
    return element("section", {}, element("h3", { text: `${map.analysis} (${map.name})` }), element("ul", { class: "legend" }, ...items));
  }));
}

// -- NiiVue -----------------------------------------------------------------------------------
function rgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

// A label map's colours as NiiVue takes them: a hidden label transparent. (How much the labels hide
// the anatomy is the overlay volume's opacity, the slider's: NiiVue blends with it, not with this.)
function colormapLabel(map) {
  const hidden = state.hidden.get(map.analysis) || new Set();
  const cm = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""] };
  for (const entry of map.legend) {
    const [r, g, b] = rgb(entry.colour);
    cm.R.push(r); cm.G.push(g); cm.B.push(b);
    cm.A.push(hidden.has(entry.index) ? 0 : 255);
    cm.I.push(entry.index);
    cm.labels.push(entry.name);
  }
  return cm;
}

function toggleLabel(mapIndex, index, visible) {
  const map = state.labelMaps[mapIndex];
  const hidden = state.hidden.get(map.analysis) || new Set();
  if (visible) hidden.delete(index); else hidden.add(index);
  state.hidden.set(map.analysis, hidden);
  applyColours();
}

function applyColours() {
  if (!state.nv) return;
  state.labelMaps.forEach((map, i) => state.nv.volumes[i + 1].setColormapLabel(colormapLabel(map)));
  state.nv.updateGLVolume();
}

async function niivue() {
  if (!state.niivue) {
    const path = document.querySelector('meta[name="niivue-module"]').content;
    state.niivue = await import(new URL(path, location.href).href);
  }
  return state.niivue;
}

async function viewer() {
  if (state.nv) return state.nv;
  const { Niivue } = await niivue();
  const nv = new Niivue({
    backColor: [0, 0, 0, 1],
    show3Dcrosshair: true,
    isColorbar: false,
    logLevel: "error",
    multiplanarShowRender: SHOW_RENDER_ALWAYS,
    multiplanarLayout: MULTIPLANAR_GRID,
    loadingText: "loading…",
  });
  await nv.attachToCanvas($("niivue"));
  nv.setSliceType(nv.sliceTypeMultiplanar);
  state.nv = nv;
  window.voxelpipeNiivue = nv; // for the browser's console, and the browser test's pixel checks
  return nv;
}

function nextFrame() {
  return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}

async function loadVolumes(data) {
  const key = JSON.stringify([data.study.study_id, data.study.attempt, data.volume && data.volume.name, data.label_maps.map((m) => m.analysis)]);
  if (key === state.loadedKey) return;
  const background = data.volume || data.label_maps[0];
  if (!background) return; // nothing written yet: the live updates bring the study back
  delete root.dataset.viewerReady;
  const nv = await viewer();
  const overlays = data.volume ? data.label_maps : data.label_maps.slice(1);
  state.labelMaps = overlays;
  const opacity = Number($("opacity").value);
  await nv.loadVolumes([
    { url: background.url, name: background.name, colormap: "gray" },
    ...overlays.map((map) => ({ url: map.url, name: map.name, opacity })),
  ]);
  applyColours();
  await nextFrame();
  state.loadedKey = key;
  root.dataset.viewerReady = "true";
}

$("opacity").addEventListener("input", (event) => {
  if (!state.nv) return;
  for (let i = 1; i < state.nv.volumes.length; i += 1) state.nv.setOpacity(i, Number(event.target.value));
  state.nv.drawScene();
});

// -- a study ----------------------------------------------------------------------------------
async function show(data) {
  state.study = data;
  const study = data.study;
  const subject = study.subject && study.subject.subject_ref ? ` · subject ${study.subject.subject_ref}` : "";
  $("title").textContent = `Study ${study.study_id}${subject} · ${study.analyses.join(", ")}`;
  renderProgress(study);
  renderMeasures(data.measures);
  // Without the volume, the first label map is the background: the legends are the overlays'.
  renderLegends(data.volume ? data.label_maps : data.label_maps.slice(1));
  if (study.status === "REJECTED") showMessage(`This upload was rejected (${study.reason}): ${study.reason_detail || ""}`);
  else if (study.status === "FAILED") showMessage(`This study failed: ${study.error || "see its steps"}`);
  else if (study.status !== "COMPLETED") showMessage(`The study is ${study.status}: it is not ready yet. This page shows what is done and updates as it runs.`, "info");
  else if (!data.volume) showMessage("The study's volume is no longer kept (the canonical copy expires after some days): its label maps are shown alone.", "info");
  else showMessage("");
  if (!data.volume && !data.label_maps.length) {
    root.dataset.viewerState = "waiting";
    return;
  }
  root.dataset.viewerState = "loading";
  await loadVolumes(data);
  root.dataset.viewerState = "shown";
}

async function refresh() {
  const data = await fetchData();
  if (mode === "study") return show(data);
  state.studies = data.studies;
  showTimeline(data.timeline);
  const current = state.study && data.studies.find((s) => s.study.study_id === state.study.study.study_id);
  return show(current || data.studies[0]);
}

function showSubject(data) {
  state.studies = data.studies;
  showTimeline(data.timeline);
  const nav = $("studies");
  nav.hidden = false;
  nav.replaceChildren(...data.studies.map((entry) => {
    const button = element("button", { type: "button", "data-study": entry.study.study_id, text: `${entry.study.created_at.slice(0, 10)} · ${entry.study.status}` });
    button.addEventListener("click", () => {
      for (const other of nav.children) other.setAttribute("aria-current", String(other === button));
      show(entry).catch((error) => fail("load_failed", explain(error)));
    });
    return button;
  }));
  const first = data.studies.find((s) => s.study.status === "COMPLETED") || data.studies[0];
  if (!first) {
    showMessage("This subject has no studies yet.", "info");
    return null;
  }
  nav.querySelector(`[data-study="${first.study.study_id}"]`).setAttribute("aria-current", "true");
  return first;
}

// -- the subject's timeline (docs/viewer.md): plain SVG, no chart library ------------------------
const SVG = "http://www.w3.org/2000/svg";
// The lines drawn: the cumulative change since the first study, paired (solid) and, for the whole
// brain, by volume subtraction (dashed), as the report draws them.
const TIMELINE_LINES = [
  { region: "brain", field: "paired_change_pct", label: "whole brain (paired)", colour: "#6b9bff" },
  { region: "hippocampus_left", field: "paired_change_pct", label: "left hippocampus (paired)", colour: "#ff6b6b" },
  { region: "hippocampus_right", field: "paired_change_pct", label: "right hippocampus (paired)", colour: "#ffb36b" },
  { region: "brain", field: "subtraction_change_pct", label: "whole brain (volume subtraction)", colour: "#6b9bff", dashed: true },
];

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function timelineSeries(timeline) {
  const path = (timeline.first_to_last && timeline.first_to_last.path) || [];
  const since = new Map(timeline.studies.map((s) => [s.study_id, s.years_since_first]));
  const dated = path.every((step) => typeof since.get(step.study_id) === "number");
  const x = path.map((step, i) => (dated ? since.get(step.study_id) : i));
  const series = [];
  for (const line of TIMELINE_LINES) {
    const values = path.map((step) => ((step.regions || {})[line.region] || {})[line.field]);
    if (path.length >= 2 && values.every((v) => typeof v === "number")) {
      series.push({ ...line, points: path.map((step, i) => ({ study: step.study_id, x: x[i], y: values[i] })) });
    }
  }
  return { series, dated };
}

function renderTimelineChart(timeline) {
  const { series, dated } = timelineSeries(timeline);
  if (!series.length) return element("p", { class: "muted", text: "No change measured yet: the subject needs two studies compared by the longitudinal analysis." });
  const width = 640, height = 220, left = 52, right = 12, top = 12, bottom = 34;
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const ys = [0, ...series.flatMap((s) => s.points.map((p) => p.y))];
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1];
  const pad = Math.max(0.5, (Math.max(...ys) - Math.min(...ys)) * 0.1);
  const [y0, y1] = [Math.min(...ys) - pad, Math.max(...ys) + pad];
  const px = (x) => left + ((x - x0) / (x1 - x0 || 1)) * (width - left - right);
  const py = (y) => top + ((y1 - y) / (y1 - y0)) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "change since the first study (%)", "data-timeline-chart": "true" });
  chart.append(svg("line", { class: "axis", x1: left, x2: width - right, y1: py(0), y2: py(0) }));
  chart.append(svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: height - bottom }));
  for (const y of [y0, 0, y1]) {
    const label = svg("text", { x: left - 6, y: py(y) + 4, "text-anchor": "end" });
    label.textContent = `${y.toFixed(1)} %`;
    chart.append(label);
  }
  const caption = svg("text", { x: (left + width - right) / 2, y: height - 6, "text-anchor": "middle" });
  caption.textContent = dated ? "years since the first study" : "study (no scan dates: in order)";
  chart.append(caption);
  series.forEach((line, index) => {
    const polyline = svg("polyline", {
      points: line.points.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(" "),
      fill: "none", stroke: line.colour, "stroke-width": 2, "data-region": line.region, "data-field": line.field,
    });
    if (line.dashed) polyline.setAttribute("stroke-dasharray", "6 4");
    const title = svg("title");
    title.textContent = line.label;
    polyline.append(title);
    chart.append(polyline);
    for (const p of line.points) {
      chart.append(svg("circle", { cx: px(p.x).toFixed(1), cy: py(p.y).toFixed(1), r: 3.5, fill: line.colour, "data-region": line.region, "data-field": line.field, "data-study": p.study, "data-years": p.x, "data-change": p.y }));
    }
    const key = svg("text", { x: left + 8, y: top + 14 + index * 14, fill: line.colour });
    key.textContent = line.label;
    chart.append(key);
  });
  return chart;
}

function renderTimelineTable(timeline) {
  const cell = (value, unit = "") => element("td", { class: "value", text: typeof value === "number" ? `${formatNumber(value)}${unit}` : "–" });
  const rows = timeline.studies.map((study) => {
    const change = study.change_from_prior || {};
    const brain = (change.regions || {}).brain || {};
    const z = (brain.rate_z || {}).z;
    return element(
      "tr", { "data-study": study.study_id },
      element("td", { text: study.scan_date || study.created_at.slice(0, 10) }),
      cell(study.years_since_first),
      cell(brain.paired_change_pct, " %"),
      cell(brain.paired_rate_pct_per_year, " %/y"),
      cell(z),
    );
  });
  const head = element("tr", {}, ...["Scan date", "Years", "Brain change", "Annual rate", "Rate z"].map((t) => element("th", { text: t })));
  return element("table", {}, element("thead", {}, head), element("tbody", {}, ...rows));
}

function showTimeline(timeline) {
  const section = $("timeline");
  if (!timeline || timeline.studies.length < 2) {
    section.hidden = true;
    return;
  }
  section.hidden = false;
  $("timeline-chart").replaceChildren(renderTimelineChart(timeline));
  $("timeline-table").replaceChildren(renderTimelineTable(timeline));
}

// -- live progress (docs/viewer.md: the WebSocket protocol) ------------------------------------
function setLive(stateName, text) {
  $("live").dataset.state = stateName;
  $("live").textContent = text;
}

function connectLive(liveUrl, studyIds, attempt = 0) {
  if (!liveUrl) {
    setLive("unavailable", "Live updates unavailable: refresh the page for news.");
    return;
  }
  let socket;
  try {
    const url = new URL(liveUrl);
    url.searchParams.set("token", grant);
    socket = new WebSocket(url.href);
  } catch (error) {
    setLive("unavailable", `Live updates unavailable (${error.message}).`);
    return;
  }
  state.live = socket;
  let opened = false;
  socket.addEventListener("open", () => {
    opened = true;
    for (const studyId of studyIds) socket.send(JSON.stringify({ action: "subscribe", study_id: studyId }));
  });
  socket.addEventListener("message", (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    if (message.type === "subscribed") setLive("live", "Live updates on.");
    else if (message.type === "step") updateStep(message);
    else if (message.type === "status") onStatus(message);
    else if (message.type === "error") setLive("error", `Live updates: ${message.code}${message.detail ? `: ${message.detail}` : ""}`);
  });
  socket.addEventListener("close", () => {
    state.live = null;
    if (opened && attempt < 3) {
      setLive("connecting", "Live updates: reconnecting…");
      setTimeout(() => connectLive(liveUrl, studyIds, attempt + 1), 2000 * (attempt + 1));
    } else {
      setLive("unavailable", "Live updates unavailable: refresh the page for news.");
    }
  });
}

function onStatus(message) {
  if (!state.study || message.study_id !== state.study.study.study_id) return;
  $("status").textContent = `${message.status} (attempt ${message.attempt})`;
  $("status").dataset.status = message.status;
  // Each step that ends may have written a label map; the end brings the measures.
  scheduleRefresh();
}

// One refresh at a time (news arrive in bursts: VALIDATED, QUEUED, RUNNING within a second), and
// one more after it for whatever came meanwhile: two loads into one canvas at once would clash.
let refreshing = null;
let refreshAgain = false;
function scheduleRefresh() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = (async () => {
    do {
      refreshAgain = false;
      await refresh();
    } while (refreshAgain);
  })()
    .catch((error) => fail(error.code || "load_failed", explain(error)))
    .finally(() => { refreshing = null; });
}

// -- start ------------------------------------------------------------------------------------
async function start() {
  if (!grant) {
    fail("no_grant", "This address carries no viewer grant: open the viewer link the API gave (it ends in #grant=…).");
    setLive("unavailable", "Live updates unavailable.");
    return;
  }
  let data;
  try {
    data = await fetchData();
  } catch (error) {
    fail(error.code || "load_failed", explain(error));
    setLive("unavailable", "Live updates unavailable.");
    return;
  }
  const studies = mode === "study" ? [data] : data.studies;
  // A study page follows its study whatever its status (a reprocess opens a new attempt); a subject
  // page follows those of its studies still running, and needs no socket when none is.
  const following = studies.map((s) => s.study.study_id).filter((id, i) => mode === "study" || !TERMINAL.has(studies[i].study.status));
  if (following.length) connectLive(data.live_url, following);
  else setLive("idle", "Live updates: none of these studies is running.");
  try {
    const first = mode === "study" ? data : showSubject(data);
    if (first) await show(first);
  } catch (error) {
    fail("load_failed", explain(error));
  }
}

start();
