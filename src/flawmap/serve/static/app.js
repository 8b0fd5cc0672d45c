// flawmap inspection page: talks to the `flawmap serve` HTTP API (/v1/...).
// Plain ES2020, no framework, no external URLs. Every server or file string reaches the DOM
// through textContent or setAttribute, never through innerHTML.
"use strict";

const TOKEN_KEY = "flawmap.token";

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  cards: new Map(), // model name -> model card
  model: null, // selected model name
  threshold: null, // threshold the page labels with (slider), number or null
  rows: [], // shown results, newest first: {result, el, urls, removed}
  busy: 0, // operations in flight
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- small helpers

/** Create an element; attrs go through setAttribute, children strings become text nodes. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** A number with `digits` significant digits, without exponent notation for big values. */
function fmt(x, digits = 4) {
  if (x === null || x === undefined) return "—";
  if (typeof x !== "number" || !Number.isFinite(x)) return String(x);
  const s = x.toPrecision(digits);
  return s.includes("e+") ? String(Number(s)) : s;
}

/** A threshold: 5 significant digits, trailing zeros dropped. */
function fmtThreshold(x) {
  return Number.isFinite(x) ? String(Number(x.toPrecision(5))) : fmt(x);
}

function fmtTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

const enc = encodeURIComponent;

class AuthError extends Error {}

/** An API error: the service's message, the HTTP status and its Retry-After (seconds). */
class HttpError extends Error {
  constructor(message, status, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** Fetch an API path with the token; returns parsed JSON (or the Response when raw). */
async function api(path, { method = "GET", json, body, raw = false } = {}) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers, body });
  if (response.status === 401) {
    askToken(state.token ? "That token was not accepted. Enter the token again." : "");
    throw new AuthError("token required");
  }
  if (!response.ok) {
    const retryAfter = Number(response.headers.get("Retry-After"));
    throw new HttpError(await errorMessage(response), response.status, retryAfter);
  }
  return raw ? response : response.json();
}

/** The `message` of a JSON error body, else the HTTP status. */
async function errorMessage(response) {
  try {
    const data = await response.json();
    return data.message || data.error || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status} ${response.statusText}`.trim();
  }
}

/** Run an async action with the busy indicator on; report failures in the page. */
async function run(action, label = "Working…") {
  state.busy += 1;
  $("busy").textContent = label;
  $("busy").hidden = false;
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof AuthError)) showAppError(error.message);
    return undefined;
  } finally {
    state.busy -= 1;
    $("busy").hidden = state.busy === 0;
  }
}

function showAppError(message) {
  $("app-error").textContent = message;
  $("app-error").hidden = !message;
}

// ---------------------------------------------------------------- token

/** Forget the token and show the token form (with an optional error line). */
function askToken(message = "") {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearRows();
  $("main").hidden = true;
  $("token-section").hidden = false;
  $("token-error").textContent = message;
  $("token-error").hidden = !message;
  $("token-input").value = "";
  $("token-input").focus();
}

async function onTokenSubmit(event) {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token-section").hidden = true;
  await run(loadModels, "Loading models…");
}

// ---------------------------------------------------------------- models

async function loadModels() {
  const data = await api("/v1/models");
  state.cards = new Map(data.models.map((card) => [card.name, card]));
  const select = $("model-select");
  const previous = state.model;
  const options = data.models.map((card) => el("option", { value: card.name }, card.name));
  select.replaceChildren(...options);
  $("token-section").hidden = true;
  $("main").hidden = false;
  showAppError("");
  if (data.models.length === 0) {
    state.model = null;
    $("model-card").replaceChildren(el("p", {}, "The service has no models loaded."));
    updateSlider();
    return;
  }
  const name = state.cards.has(previous) ? previous : data.models[0].name;
  select.value = name;
  await selectModel(name);
}

async function selectModel(name) {
  state.model = name;
  clearRows();
  const card = state.cards.get(name);
  state.threshold = card.threshold ?? null;
  $("threshold-confirm").hidden = true;
  $("threshold-saved").hidden = true;
  renderCard(card);
  updateSlider();
  const [, stored] = await Promise.all([
    loadHistory(name),
    api(`/v1/results?model=${enc(name)}&limit=100`),
  ]);
  if (state.model !== name) return; // another model was chosen meanwhile
  for (const result of stored.results) addRow(result, false);
  updateSlider();
  applyLabels();
}

/** Re-read one model card from the service and show it. */
async function refreshCard(name) {
  const card = await api(`/v1/models/${enc(name)}`);
  state.cards.set(name, card);
  if (state.model === name) renderCard(card);
  return card;
}

function renderCard(card) {
  const dl = el("dl");
  const field = (term, value) => dl.append(el("dt", {}, term), el("dd", {}, value));
  const pair = (v) => (Array.isArray(v) ? v.join(" × ") : "—");
  const training = card.training || {};
  field("Name", card.name);
  field("Kind", card.kind ?? "—");
  field("Model type", card.model ?? "—");
  field("Backbone", card.backbone ?? "—");
  if (card.runtime) field("Runtime", card.runtime);
  field("Image size (h × w)", pair(card.image_size));
  field("Tiles (rows × cols)", pair(card.tiles));
  field("Threshold in use", fmtThreshold(card.threshold));
  field("Threshold in model folder", fmtThreshold(card.model_threshold));
  if (card.threshold_saved_at) field("Threshold saved here at", fmtTime(card.threshold_saved_at));
  field("Training images", training.n_train == null ? "—" : String(training.n_train));
  field(
    "Training time",
    training.train_seconds == null ? "—" : `${training.train_seconds.toFixed(1)} s`,
  );
  field("Training data", training.data ?? "—");

  const metrics = card.metrics && Object.keys(card.metrics).length ? card.metrics : null;
  let metricsNode;
  if (metrics) {
    metricsNode = el("dl", { class: "metrics", "data-testid": "model-metrics" });
    for (const [key, value] of Object.entries(metrics)) {
      metricsNode.append(el("dt", {}, key), el("dd", {}, fmt(value)));
    }
    if (card.metrics_data) {
      metricsNode.append(el("dt", {}, "evaluated on"), el("dd", {}, card.metrics_data));
    }
    if (card.metrics_time) {
      metricsNode.append(el("dt", {}, "evaluated at"), el("dd", {}, fmtTime(card.metrics_time)));
    }
  } else {
    const attrs = { class: "muted", "data-testid": "model-metrics" };
    metricsNode = el("p", attrs, "no evaluation recorded");
  }
  const params = el(
    "details",
    {},
    el("summary", {}, "Parameters"),
    el("pre", {}, JSON.stringify(card.params ?? {}, null, 2)),
  );
  $("model-card").replaceChildren(dl, el("h3", {}, "Last evaluation"), metricsNode, params);
}

// ---------------------------------------------------------------- threshold

/** Fit the slider's range to the shown scores and the threshold; show the threshold. */
function updateSlider() {
  const slider = $("threshold-slider");
  const values = state.rows.map((row) => row.result.score).filter(Number.isFinite);
  if (Number.isFinite(state.threshold)) values.push(state.threshold);
  let lo = values.length ? Math.min(...values) : 0;
  let hi = values.length ? Math.max(...values) : 1;
  const span = hi - lo;
  const margin = span > 0 ? span * 0.1 : Math.max(Math.abs(hi) * 0.1, 0.01);
  lo -= margin;
  hi += margin;
  // A fine, round step: about a thousandth of the range.
  const step = 10 ** Math.floor(Math.log10((hi - lo) / 1000));
  slider.step = String(step);
  slider.min = String(Math.floor(lo / step) * step);
  slider.max = String(Math.ceil(hi / step) * step);
  slider.value = String(Number.isFinite(state.threshold) ? state.threshold : lo);
  slider.disabled = state.model === null;
  $("threshold-value").textContent = Number.isFinite(state.threshold)
    ? fmtThreshold(state.threshold)
    : "not set";
  $("save-threshold").disabled = state.model === null || !Number.isFinite(state.threshold);
}

function onSliderInput() {
  state.threshold = Number($("threshold-slider").value);
  $("threshold-value").textContent = fmtThreshold(state.threshold);
  $("save-threshold").disabled = state.model === null;
  $("threshold-confirm").hidden = true;
  $("threshold-saved").hidden = true;
  applyLabels();
}

/** First click on "Save": ask inside the page. */
function onSaveThreshold() {
  const card = state.cards.get(state.model);
  if (!card || !Number.isFinite(state.threshold)) return;
  $("threshold-confirm-text").textContent =
    `Save threshold ${fmtThreshold(state.threshold)} for model "${card.name}" ` +
    `(now ${fmtThreshold(card.threshold)})? Later predictions are labelled with it.`;
  $("threshold-confirm").hidden = false;
  $("threshold-confirm-yes").focus();
}

async function onConfirmThreshold() {
  $("threshold-confirm").hidden = true;
  const name = state.model;
  const threshold = state.threshold;
  await run(async () => {
    const change = await api(`/v1/models/${enc(name)}/threshold`, {
      method: "POST",
      json: { threshold },
    });
    await Promise.all([refreshCard(name), loadHistory(name)]);
    if (state.model !== name) return;
    state.threshold = change.new;
    $("threshold-saved").textContent = `Saved: ${describeChange(change)}`;
    $("threshold-saved").hidden = false;
    $("threshold-history").closest("details").open = true;
    updateSlider();
    applyLabels();
  }, "Saving threshold…");
}

/** "old → new at time" for one saved threshold change. */
function describeChange(change) {
  return `${fmtThreshold(change.old)} → ${fmtThreshold(change.new)} at ${fmtTime(change.time)}`;
}

async function loadHistory(name) {
  const data = await api(`/v1/models/${enc(name)}/threshold-history`);
  if (state.model !== name) return;
  const changes = [...data.changes].sort((a, b) => Date.parse(b.time) - Date.parse(a.time));
  const items = changes.map((change) => el("li", {}, describeChange(change)));
  if (!items.length) items.push(el("li", { class: "muted" }, "No changes saved in this service."));
  $("threshold-history").replaceChildren(...items);
}

// ---------------------------------------------------------------- results

/** The label the page shows: from the slider threshold when set, else the stored one. */
function shownLabel(result) {
  if (!Number.isFinite(state.threshold)) return result.label;
  return result.score >= state.threshold ? "defective" : "good";
}

function addRow(result, newest) {
  const row = { result, urls: [], removed: false };
  const name = result.filename || result.id;
  const thumb = el("img", { alt: `Image ${name}`, class: "thumb" });
  const overlay = el("img", { alt: `Anomaly overlay of ${name}`, class: "overlay" });
  const newTab = { target: "_blank", rel: "noopener" };
  const thumbLink = el("a", { ...newTab, title: "Open the image" }, thumb);
  const overlayLink = el("a", { ...newTab, title: "Open the overlay" }, overlay);
  const regions = result.regions ? result.regions.length : 0;
  // Review buttons; their accessible names say which image they are about.
  const reviewButton = (verdict) => {
    const text = `Actually ${verdict}`;
    const attrs = { type: "button", "data-testid": `review-${verdict}` };
    return el("button", { ...attrs, "aria-label": `${text}: ${name}` }, text);
  };
  const good = reviewButton("good");
  const bad = reviewButton("defective");
  good.addEventListener("click", () => review(row, "good"));
  bad.addEventListener("click", () => review(row, "defective"));

  row.el = el(
    "li",
    {
      class: "row",
      "data-testid": "result-row",
      "data-result-id": result.id,
      "data-filename": result.filename ?? "",
    },
    el("div", { class: "images" }, thumbLink, overlayLink),
    el(
      "div",
      { class: "info" },
      el("p", { class: "filename" }, name),
      el(
        "p",
        {},
        el("span", { class: "label", "data-testid": "result-label" }),
        " score ",
        el("span", { class: "score", "data-testid": "result-score" }, fmt(result.score)),
        ` · ${regions} region${regions === 1 ? "" : "s"}`,
      ),
      el("p", { class: "stored muted", "data-testid": "result-stored" }),
      el("p", { class: "muted" }, fmtTime(result.created)),
      el("p", {}, el("span", { "data-testid": "result-review" }), " ", good, " ", bad),
    ),
  );
  if (newest) {
    state.rows.unshift(row);
    $("results").prepend(row.el);
  } else {
    state.rows.push(row);
    $("results").append(row.el);
  }
  renderReview(row);
  loadImage(row, result.thumbnail_url, thumb, thumbLink);
  loadImage(row, result.overlay_url, overlay, overlayLink);
}

/** Images need the token header: fetch as a blob, show through an object URL. */
async function loadImage(row, url, img, link) {
  if (!url) return;
  try {
    const blob = await (await api(url, { raw: true })).blob();
    const objectUrl = URL.createObjectURL(blob);
    if (row.removed) {
      URL.revokeObjectURL(objectUrl);
      return;
    }
    row.urls.push(objectUrl);
    img.src = objectUrl;
    link.href = objectUrl;
  } catch (error) {
    if (!(error instanceof AuthError)) img.alt = `${img.alt} (unavailable: ${error.message})`;
  }
}

function clearRows() {
  for (const row of state.rows) {
    row.removed = true;
    row.urls.forEach((url) => URL.revokeObjectURL(url));
    row.el.remove();
  }
  state.rows = [];
  applyLabels();
}

/** Label every row at the current threshold, mark changes from the stored decision, filter. */
function applyLabels() {
  const filter = $("filter").value;
  let visible = 0;
  for (const row of state.rows) {
    const stored = row.result.label;
    const label = shownLabel(row.result);
    const changed = stored !== null && stored !== undefined && label !== stored;
    row.el.dataset.label = label ?? "";
    const labelNode = row.el.querySelector('[data-testid="result-label"]');
    labelNode.textContent = label ?? "unlabelled";
    labelNode.className = `label ${label ?? "none"}`;
    row.el.classList.toggle("changed", changed);
    const storedAt = fmtThreshold(row.result.threshold);
    row.el.querySelector('[data-testid="result-stored"]').textContent = changed
      ? `changed by the slider: stored decision ${stored} (threshold ${storedAt})`
      : "";
    row.el.hidden = filter !== "all" && label !== filter;
    if (!row.el.hidden) visible += 1;
  }
  const total = state.rows.length;
  $("result-count").textContent = total ? `(${visible} of ${total} shown)` : "";
  $("no-results").hidden = total > 0;
}

function renderReview(row) {
  const { review, reviewed_at: at } = row.result;
  row.el.querySelector('[data-testid="result-review"]').textContent = review
    ? `Reviewed: ${review} (${fmtTime(at)})`
    : "Not reviewed";
  for (const verdict of ["good", "defective"]) {
    const button = row.el.querySelector(`[data-testid="review-${verdict}"]`);
    button.setAttribute("aria-pressed", String(review === verdict));
  }
}

async function review(row, verdict) {
  await run(async () => {
    const updated = await api(`/v1/results/${enc(row.result.id)}/review`, {
      method: "POST",
      json: { verdict },
    });
    row.result = updated;
    if (!row.removed) renderReview(row);
  }, "Saving review…");
}

// ---------------------------------------------------------------- upload

function showFileError(filename, message) {
  // The service's message usually names the file already.
  const text = message.includes(filename) ? message : `${filename}: ${message}`;
  $("errors").append(el("li", { class: "error", "data-testid": "error" }, text));
}

/** POST one file; while the service is busy (503), wait its Retry-After and try again. */
async function predict(model, file, attempts = 3) {
  for (let attempt = 1; ; attempt += 1) {
    const form = new FormData();
    form.append("files", file, file.name);
    try {
      return await api(`/v1/models/${enc(model)}/predict`, { method: "POST", body: form });
    } catch (error) {
      if (!(error instanceof HttpError) || error.status !== 503 || attempt >= attempts) throw error;
      const seconds = Math.min(error.retryAfter > 0 ? error.retryAfter : 1, 30);
      $("busy").textContent = `Service busy: retrying ${file.name} in ${seconds} s`;
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    }
  }
}

/** One request per file, so one unreadable file does not hide the others' results. */
async function uploadFiles(files) {
  const model = state.model;
  if (!model || !files.length) return;
  $("errors").replaceChildren();
  await run(async () => {
    for (const [index, file] of files.entries()) {
      $("busy").textContent = `Inspecting ${index + 1} of ${files.length}: ${file.name}`;
      try {
        const data = await predict(model, file);
        if (state.model === model) data.results.forEach((result) => addRow(result, true));
      } catch (error) {
        if (error instanceof AuthError) return;
        showFileError(file.name, error.message);
      }
      updateSlider();
      applyLabels();
    }
  });
}

// ---------------------------------------------------------------- export

async function exportCsv() {
  const model = state.model;
  await run(async () => {
    const query = model ? `?model=${enc(model)}` : "";
    const blob = await (await api(`/v1/export.csv${query}`, { raw: true })).blob();
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: `flawmap-${model ?? "all"}-results.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000); // give the download time to start
  }, "Exporting…");
}

// ---------------------------------------------------------------- start

function wire() {
  $("token-form").addEventListener("submit", onTokenSubmit);
  $("model-select").addEventListener("change", (event) =>
    run(() => selectModel(event.target.value), "Loading model…"),
  );
  $("threshold-slider").addEventListener("input", onSliderInput);
  $("save-threshold").addEventListener("click", onSaveThreshold);
  $("threshold-confirm-yes").addEventListener("click", onConfirmThreshold);
  $("threshold-confirm-no").addEventListener("click", () => {
    $("threshold-confirm").hidden = true;
  });
  $("filter").addEventListener("change", applyLabels);
  $("export-csv").addEventListener("click", exportCsv);

  const input = $("file-input");
  input.addEventListener("change", () => {
    const files = Array.from(input.files);
    input.value = ""; // the same file can be picked again
    uploadFiles(files);
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    uploadFiles(Array.from(event.dataTransfer.files));
  });
  // A file dropped beside the zone must not make the browser navigate away.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

async function start() {
  wire();
  await run(async () => {
    let info;
    try {
      info = await api("/v1/info");
    } catch (error) {
      throw new Error(`Cannot reach the inspection service: ${error.message}`);
    }
    $("version").textContent = info.version ? `service ${info.version}` : "";
    if (info.auth && !state.token) {
      askToken();
      return;
    }
    await loadModels();
  }, "Loading…");
}

start();
