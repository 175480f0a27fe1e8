// The annotation UI: hash-routed pages (login, queue, label, progress, help) on our /api/v1 and
// MONAI Label's routes. window.__activesynth exposes state for the browser test and the benchmark.

import * as api from "./api.js";
import { encodeGreyPng } from "./png.js";
import { linePlot } from "./plot.js";
import { CLASS_COLOURS, Viewer } from "./viewer.js";

const $ = (sel) => document.querySelector(sel);
const STRATEGY_KEY = "activesynth.strategy";

const state = {
  auth: null, // server wants tokens?
  info: null, // GET /info/
  viewer: null,
  imageId: null,
  lease: null, // the open image's live lease as last seen: {holder, expires_at}, or null
  held: null, // {id, expires_at}: the lease this page took and has not submitted or given back
  readOnly: false, // the open image is leased to someone else: look, do not edit or submit
  leaseError: null, // the server's 409 sentence when the open image could not be leased
  leased: null, // {id, lease}: just leased by "take next", so opening it needs no second request
  loadSeq: 0,
  firstImageMs: null,
  loaded: null, // id of the image whose page (lease, classes, pre-label) is complete
  lastSave: null,
  savedEdits: 0, // viewer.edits at the last successful submit
  busy: false,
};
window.__activesynth = state;

// Opened on a label page: ask for the image's pixels at once, in parallel with the rest of the
// start (the time to first image is mostly waiting); showLabel takes the answer over.
const early = location.hash.match(/^#\/label\/(.+)$/);
if (early) {
  const id = decodeURIComponent(early[1]);
  const promise = api.pixels(id);
  promise.catch(() => {}); // a 401 before login is handled by the route itself
  state.prefetch = { id, promise };
}

// ---- messages
function showError(err) {
  const box = $("#error");
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
  $("#notice").hidden = true;
  if (err instanceof api.ApiError && err.status === 401) {
    api.setLogin(null);
    updateWho();
    if (!location.hash.startsWith("#/login")) location.hash = "#/login";
  }
}

function notice(text) {
  const box = $("#notice");
  box.textContent = text;
  box.hidden = false;
  $("#error").hidden = true;
}

function clearMessages() {
  $("#error").hidden = true;
  $("#notice").hidden = true;
}

function me() {
  return api.user() || api.clientId();
}

function updateWho() {
  const name = api.user();
  $("#who").textContent = state.auth ? (name ? `logged in as ${name}` : "not logged in") : `no accounts; you are ${api.clientId()}`;
  $("#logout").hidden = !(state.auth && name);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function info() {
  if (!state.info) state.info = await api.getJSON("/info/", "read the server's info");
  return state.info;
}

function strategy() {
  const names = Object.keys(state.info?.strategies || {});
  const saved = localStorage.getItem(STRATEGY_KEY);
  if (saved && names.includes(saved)) return saved;
  return names.includes("entropy") ? "entropy" : names[0] || "random";
}

// ---- routing
const pages = ["login", "queue", "label", "progress", "help"];

async function route() {
  performance.mark("activesynth:route");
  const [, page = "queue", arg] = location.hash.match(/^#\/([^/]*)\/?(.*)$/) || [];
  const name = pages.includes(page) ? page : "queue";
  if (state.auth && !api.token() && name !== "login" && name !== "help") {
    location.hash = "#/login";
    return;
  }
  for (const p of pages) $(`#page-${p}`).hidden = p !== name;
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === name));
  try {
    if (name === "login") await showLogin();
    else if (name === "queue") await showQueue();
    else if (name === "label") await showLabel(arg ? decodeURIComponent(arg) : null);
    else if (name === "progress") await showProgress();
    else if (name === "help") $("#help-server").textContent = location.origin;
  } catch (err) {
    showError(err);
  }
}

// ---- login
async function showLogin() {
  $("#login-form").hidden = !state.auth;
  $("#login-noauth").hidden = Boolean(state.auth);
  $("#login-client").textContent = api.clientId();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("#login-user").value.trim();
  try {
    await api.login(name, $("#login-password").value);
    $("#login-password").value = "";
    state.info = null;
    updateWho();
    clearMessages();
    location.hash = "#/queue";
  } catch (err) {
    showError(err);
  }
});

$("#logout").addEventListener("click", async () => {
  await giveBack(null); // while the token still works
  api.setLogin(null);
  state.info = null;
  updateWho();
  location.hash = "#/login";
});

// ---- queue
async function showQueue() {
  const inf = await info();
  const sel = $("#strategy");
  if (!sel.options.length) {
    for (const [name, s] of Object.entries(inf.strategies || {})) {
      sel.append(el("option", { value: name, title: s.description || "" }, name));
    }
  }
  sel.value = strategy();
  await refreshQueue();
}

async function refreshQueue() {
  const strat = $("#strategy").value || strategy();
  const [sug, leases, inf] = await Promise.all([
    api.getJSON(`/api/v1/suggestions?strategy=${encodeURIComponent(strat)}&limit=50`, "read the suggestions"),
    api.getJSON("/api/v1/leases", "read the leases"),
    api.getJSON("/info/", "read the server's info"),
  ]);
  state.info = inf;
  const ds = inf.datastore || {};
  $("#queue-meta").textContent =
    `${ds.completed ?? "?"} of ${ds.total ?? "?"} images labelled; ranked by ${sug.ranked_by}` +
    (sug.model_version ? ` (model ${sug.model_version}${sug.stale ? ", scores being refreshed" : ""})` : "");
  const body = $("#queue-table tbody");
  body.replaceChildren();
  sug.items.forEach((it, k) => {
    const mine = it.leased_by && it.leased_by === me();
    body.append(
      el(
        "tr",
        { class: it.leased_by && !mine ? "leased" : "", "data-id": it.id },
        el("td", {}, k + 1),
        el("td", {}, it.id),
        el("td", {}, it.score == null ? "-" : it.score.toFixed(4)),
        el("td", {}, it.leased_by ? (mine ? `${it.leased_by} (you)` : it.leased_by) : ""),
        el(
          "td",
          {},
          el(
            "a",
            { href: `#/label/${encodeURIComponent(it.id)}`, title: it.leased_by && !mine ? `leased to ${it.leased_by}: opens read-only` : "lease it to you and open it" },
            it.leased_by && !mine ? "view" : "open",
          ),
        ),
      ),
    );
  });
  if (!sug.items.length) body.append(el("tr", {}, el("td", { colspan: 5 }, "Every image is labelled.")));
  const lb = $("#lease-table tbody");
  lb.replaceChildren();
  for (const l of leases) {
    lb.append(el("tr", {}, el("td", {}, l.image_id), el("td", {}, l.holder), el("td", {}, l.strategy || ""), el("td", {}, l.expires_at)));
  }
  if (!leases.length) lb.append(el("tr", {}, el("td", { colspan: 4 }, "No image is leased.")));
  state.queueShown = (state.queueShown || 0) + 1; // queue tables rebuilt so far (for the tests)
}

// leases come and go: the queue refreshes itself while it is on screen
setInterval(() => {
  if (!$("#page-queue").hidden && document.visibilityState === "visible" && state.ready) {
    refreshQueue().catch(showError);
  }
}, 15000);

$("#strategy").addEventListener("change", () => {
  localStorage.setItem(STRATEGY_KEY, $("#strategy").value);
  refreshQueue().catch(showError);
});
$("#queue-refresh").addEventListener("click", () => refreshQueue().catch(showError));
$("#take-next").addEventListener("click", () => takeNext().catch(showError));

/** Lease the next image of the current strategy and open it. */
async function takeNext() {
  const v = state.viewer;
  const unsaved = !$("#page-label").hidden && v && v.px && v.edits !== state.savedEdits;
  if (unsaved && !state.discardArmed) {
    state.discardArmed = true;
    setTimeout(() => (state.discardArmed = false), 5000);
    showError(new Error("This image has unsaved changes: press s to submit them, or n again to drop them."));
    return;
  }
  state.discardArmed = false;
  await info();
  const got = await api.sendJSON("POST", "/api/v1/leases", { strategy: strategy(), client_id: api.clientId() }, "take the next image");
  if (!got.image) {
    notice("Every image is labelled or leased: nothing to take.");
    return;
  }
  state.leased = { id: got.image.id, lease: got.lease };
  leasesChanged();
  location.hash = `#/label/${encodeURIComponent(got.image.id)}`;
}

// ---- leases of the open image
/** The queue shows who holds what: refresh it now if it is on screen (it refreshes when shown). */
function leasesChanged() {
  if (!$("#page-queue").hidden && state.ready) refreshQueue().catch(showError);
}

/** Give back the lease this page holds unless it is on `keepId` (leaving that image unsaved). */
async function giveBack(keepId) {
  const held = state.held;
  if (!held || held.id === keepId) return;
  state.held = null;
  try {
    await api.releaseLease(held.id, held.expires_at);
  } catch (err) {
    showError(err);
  }
  leasesChanged();
}

/**
 * Lease `imageId` to this annotator (or take over the lease "take next" just made). Sets
 * state.held on success; on a 409 (someone else holds it) the page turns read-only.
 * Returns the seq-checked outcome: false when the page moved on meanwhile.
 */
async function leaseOpened(imageId, seq) {
  let lease = null;
  let refused = null;
  const fresh = state.leased && state.leased.id === imageId ? state.leased.lease : null;
  state.leased = null;
  if (fresh) lease = fresh;
  else {
    try {
      lease = (await api.leaseImage(imageId)).lease;
    } catch (err) {
      if (!(err instanceof api.ApiError && err.status === 409)) throw err;
      refused = err.detail;
    }
  }
  if (seq !== state.loadSeq) {
    // another image was opened meanwhile: this lease is not wanted any more
    if (lease && state.wanted !== imageId) await api.releaseLease(imageId, lease.expires_at).catch(() => {});
    return false;
  }
  if (lease) state.held = { id: imageId, expires_at: lease.expires_at };
  state.leaseError = refused;
  setReadOnly(Boolean(refused));
  leasesChanged();
  return true;
}

/** Editing and submit off (`on`) or back on; the viewer ignores painting while off. */
function setReadOnly(on) {
  state.readOnly = on;
  const v = state.viewer;
  if (v) {
    v.readOnly = on;
    if (on && v.polygon.length) v.cancelPolygon();
  }
  $("#page-label").classList.toggle("read-only", on);
  document.querySelectorAll("[data-tool]").forEach((b) => (b.disabled = on));
  if (v && v.px) syncControls(v);
  else $("#submit").disabled = on;
}

// closing or reloading the tab, or leaving the site: the unsaved image's lease goes back
window.addEventListener("pagehide", () => {
  state.heldAtHide = state.held ? state.held.id : null;
  if (state.held) api.releaseOnUnload(state.held.id, state.held.expires_at);
  state.held = null;
});
// back from the browser's back-forward cache with that image still open: lease it again
window.addEventListener("pageshow", (ev) => {
  if (!ev.persisted || !state.heldAtHide || state.heldAtHide !== state.imageId) return;
  state.heldAtHide = null;
  leaseOpened(state.imageId, state.loadSeq)
    .then(() => {
      if (state.readOnly) notice(`Read-only now: ${state.leaseError}`);
    })
    .catch(showError);
});

// ---- label
function viewer() {
  if (!state.viewer) {
    state.viewer = new Viewer($("#canvas"), {
      onChange: syncControls,
      onStatus: (t) => ($("#pixel-status").textContent = t),
      onFirstImage: () => {
        state.firstImageMs = performance.now();
        performance.mark("activesynth:first-image");
      },
    });
  }
  return state.viewer;
}

function syncControls(v) {
  document.querySelectorAll("[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === v.tool));
  document.querySelectorAll("[data-class]").forEach((b) => b.classList.toggle("active", Number(b.dataset.class) === v.cls));
  if (document.activeElement !== $("#brush-size")) $("#brush-size").value = v.brushSize;
  if (v.window) {
    const [lo, hi] = v.window;
    if (document.activeElement !== $("#wl-window")) $("#wl-window").value = +(hi - lo).toPrecision(5);
    if (document.activeElement !== $("#wl-level")) $("#wl-level").value = +((lo + hi) / 2).toPrecision(5);
  }
  $("#undo").disabled = (!v.undoStack.length && !v.polygon.length) || state.readOnly;
  $("#redo").disabled = !v.redoStack.length || state.readOnly;
  $("#use-prelabel").disabled = !v.pre || state.readOnly;
  $("#clear-mask").disabled = state.readOnly;
  $("#submit").disabled = state.readOnly || state.busy;
}

function buildClasses(labels) {
  const box = $("#classes");
  box.replaceChildren();
  const entries = Object.entries(labels || { foreground: 1 }).sort((a, b) => a[1] - b[1]);
  for (const [name, value] of entries) {
    const c = CLASS_COLOURS[value % CLASS_COLOURS.length];
    const b = el(
      "button",
      { "data-class": value, title: value <= 9 ? String(value) : "", onclick: () => { viewer().cls = value; syncControls(viewer()); } },
      el("span", { class: "swatch", style: `background: rgb(${c.join(",")})` }),
      `${value} ${name}`,
    );
    box.append(b);
  }
}

async function showLabel(imageId) {
  performance.mark("activesynth:label-page");
  if (imageId && !(state.prefetch && state.prefetch.id === imageId) && imageId !== state.imageId) {
    const promise = api.pixels(imageId); // before the viewer's first layout
    promise.catch(() => {});
    state.prefetch = { id: imageId, promise };
  }
  const v = viewer();
  if (!imageId) {
    if (state.imageId) {
      location.hash = `#/label/${encodeURIComponent(state.imageId)}`;
      return;
    }
    $("#image-name").textContent = "no image: take the next one (n) or open one from the queue";
    return;
  }
  if (imageId === state.imageId && v.px) return;
  const seq = ++state.loadSeq;
  state.loaded = null;
  state.wanted = imageId;
  state.leaseError = null;
  setReadOnly(true); // until the lease is granted
  // leaving the open image unsaved gives its lease back; the new one is leased meanwhile
  const leaving = giveBack(imageId);
  const leasing = leaseOpened(imageId, seq);
  leasing.catch(() => {}); // awaited below
  $("#image-name").textContent = `${imageId} (loading...)`;
  $("#prelabel-info").textContent = "";
  // the image first: nothing else waits on the network before it is painted
  const pf = state.prefetch;
  state.prefetch = null;
  let px;
  try {
    px = await (pf && pf.id === imageId ? pf.promise : api.pixels(imageId));
  } catch (err) {
    if (seq === state.loadSeq) $("#image-name").textContent = `${imageId}: not loaded (see above)`;
    throw err;
  }
  if (seq !== state.loadSeq) return;
  performance.mark("activesynth:pixels");
  state.imageId = imageId;
  v.setImage(px);
  state.savedEdits = 0;
  await leaving;
  if (!(await leasing)) return;
  performance.mark("activesynth:drawn");
  $("#image-name").textContent = `${imageId} (${px.width} x ${px.height}${px.dtype === "uint8" ? "" : ", " + px.dtype})`;
  syncControls(v);
  const [inf, meta] = await Promise.all([info(), api.getJSON(`/api/v1/images/${encodeURIComponent(imageId)}`, `read image ${imageId}`)]);
  if (seq !== state.loadSeq) return;
  buildClasses(inf.labels);
  syncControls(v);
  const lease = meta.lease;
  state.lease = lease;
  const mine = lease && lease.holder === me();
  $("#lease-info").textContent = lease
    ? mine
      ? `leased to you until ${lease.expires_at} UTC`
      : `LEASED TO ${lease.holder} until ${lease.expires_at} UTC: read-only`
    : state.readOnly
      ? "leased to someone else: read-only"
      : "not leased";
  $("#lease-info").classList.toggle("warn", state.readOnly);
  if (state.readOnly) {
    const who = lease && !mine ? `${lease.holder} until ${lease.expires_at} UTC` : "someone else";
    notice(`Read-only: ${imageId} is leased to ${who}. You can look, not label it; take another image (n).`);
  }
  const finals = (meta.labels || []).filter((l) => l.tag === "final");
  if (finals.length) $("#image-name").textContent += `, ${finals.length} final version(s) saved`;
  $("#prelabel-info").textContent = "pre-label: asking the model...";
  try {
    const pre = await api.prelabel(imageId);
    if (seq !== state.loadSeq) return;
    if (pre.mask && (pre.width !== px.width || pre.height !== px.height)) {
      $("#prelabel-info").textContent = `pre-label is ${pre.width} x ${pre.height}, the image ${px.width} x ${px.height}: not shown`;
    } else if (pre.mask) {
      v.setPrelabel(pre.mask);
      $("#prelabel-info").textContent = `pre-label: model ${pre.modelVersion}`;
    } else {
      $("#prelabel-info").textContent = `no pre-label: ${pre.reason}`;
    }
    syncControls(v);
  } catch (err) {
    $("#prelabel-info").textContent = `pre-label failed: ${err.message}`;
  }
  state.loaded = imageId; // everything of this image is in the page
  $("#canvas").focus();
}

async function submit() {
  const v = viewer();
  if (!state.imageId || !v.px) throw new Error("No image is open: take the next one first.");
  if (state.readOnly && !state.leaseError) throw new Error(`Not saved: ${state.imageId} is still being leased to you; try again.`);
  if (state.readOnly) {
    // the server refused the lease (409): a save would be refused the same way
    throw new Error(`NOT SAVED (HTTP 409): ${state.leaseError}`);
  }
  if (state.busy) return;
  state.busy = true;
  $("#submit").disabled = true;
  try {
    const png = await encodeGreyPng(v.mask, v.px.width, v.px.height);
    const got = await api.saveLabel(state.imageId, png);
    state.lastSave = got;
    state.savedEdits = v.edits;
    if (state.held && state.held.id === got.image) state.held = null; // the save released it
    leasesChanged();
    notice(`Saved ${got.image}: final label version ${got.version} (${v.foregroundPixels()} labelled pixels). Press n for the next image.`);
    $("#lease-info").textContent = "label saved; lease released";
  } catch (err) {
    if (err instanceof api.ApiError && err.status === 409) {
      showError(new Error(`NOT SAVED (HTTP 409): ${err.detail} Take another image (n).`));
    } else {
      showError(err);
    }
  } finally {
    state.busy = false;
    $("#submit").disabled = state.readOnly;
  }
}

document.querySelectorAll("[data-tool]").forEach((b) => b.addEventListener("click", () => viewer().setTool(b.dataset.tool)));
$("#brush-size").addEventListener("change", () => {
  const n = Number($("#brush-size").value);
  if (n >= 1) viewer().brushSize = n;
  syncControls(viewer());
});
$("#undo").addEventListener("click", () => viewer().undo());
$("#redo").addEventListener("click", () => viewer().redo());
$("#use-prelabel").addEventListener("click", () => viewer().usePrelabel());
$("#clear-mask").addEventListener("click", () => viewer().clearMask());
$("#fit").addEventListener("click", () => viewer().fit());
$("#wl-reset").addEventListener("click", () => {
  const v = viewer();
  if (v.px) v.setWindow(v.px.window[0], v.px.window[1]);
});
for (const id of ["#wl-window", "#wl-level"]) {
  $(id).addEventListener("change", () => {
    const w = Number($("#wl-window").value);
    const l = Number($("#wl-level").value);
    if (!(w > 0)) {
      showError(new Error(`window ${$("#wl-window").value} must be a positive number.`));
      return;
    }
    viewer().setWindow(l - w / 2, l + w / 2);
  });
}
$("#show-pre").addEventListener("change", () => {
  viewer().showPre = $("#show-pre").checked;
  viewer().draw();
});
$("#pre-opacity").addEventListener("input", () => {
  viewer().preOpacity = Number($("#pre-opacity").value);
  viewer().draw();
});
$("#mask-opacity").addEventListener("input", () => {
  viewer().maskOpacity = Number($("#mask-opacity").value);
  viewer().draw();
});
$("#submit").addEventListener("click", () => submit().catch(showError));
$("#next").addEventListener("click", () => takeNext().catch(showError));

document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
  const onLabel = !$("#page-label").hidden;
  const v = state.viewer;
  const k = ev.key.toLowerCase();
  if (k === "n" && !ev.ctrlKey && !ev.metaKey) {
    takeNext().catch(showError);
  } else if (!onLabel || !v) {
    return;
  } else if ((k === "z" && !ev.shiftKey) || (ev.ctrlKey && k === "z" && !ev.shiftKey)) {
    v.undo();
  } else if (k === "y" || (ev.ctrlKey && ev.shiftKey && k === "z")) {
    v.redo();
  } else if (ev.ctrlKey || ev.metaKey || ev.altKey) {
    return;
  } else if (k === "b") v.setTool("brush");
  else if (k === "e") v.setTool("eraser");
  else if (k === "p") v.setTool("polygon");
  else if (k === "s") submit().catch(showError);
  else if (k === "u") v.usePrelabel();
  else if (k === "o") {
    $("#show-pre").checked = !$("#show-pre").checked;
    v.showPre = $("#show-pre").checked;
    v.draw();
  } else if (k === "f") v.fit();
  else if (k === "enter") v.closePolygon();
  else if (k === "escape") v.cancelPolygon();
  else if (k === "[") v.brushSize = Math.max(1, v.brushSize - 1);
  else if (k === "]") v.brushSize = Math.min(200, v.brushSize + 1);
  else if (/^[1-9]$/.test(k)) {
    const n = Number(k);
    if (document.querySelector(`[data-class="${n}"]`)) v.cls = n;
    else {
      showError(new Error(`class ${n} does not exist here; the classes are ${Object.values(state.info?.labels || {}).join(", ")}.`));
      return;
    }
  } else return;
  ev.preventDefault();
  syncControls(v);
});

// ---- progress
function parseTs(s) {
  return s ? Date.parse(s.replace(" ", "T") + "Z") : NaN;
}

function hhmm(ms) {
  const d = new Date(ms);
  return `${String(d.getUTCMonth() + 1).padStart(2, "0")}-${String(d.getUTCDate()).padStart(2, "0")} ${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}`;
}

async function showProgress() {
  const p = await api.getJSON("/api/v1/progress", "read the progress");
  const done = p.labelled.length;
  $("#progress-meta").textContent = `${done} of ${p.total_images} images have a final label; ${p.runs.filter((r) => r.status === "DONE").length} training run(s) finished.`;
  const lab = p.labelled.map((q) => ({ x: parseTs(q.ts), y: q.count, label: `${q.ts} UTC: ${q.count} labelled` }));
  $("#plot-labelled").replaceChildren(
    linePlot(lab, { title: "Labelled images over time", xLabel: "time (UTC)", yLabel: "labelled", step: true, xFormat: hhmm, yMin: 0, empty: "no image labelled yet" }),
  );
  const runs = p.runs.filter((r) => r.status === "DONE" && r.val_score != null);
  const met = runs.map((r) => ({ x: r.n_labels, y: +r.val_score.toFixed(4), label: `run ${r.run}: ${r.n_labels} labels, Dice ${r.val_score.toFixed(4)}` }));
  $("#plot-metric").replaceChildren(
    linePlot(met, { title: "Validation Dice after each retraining", xLabel: "labels the model was trained on", yLabel: "Dice", yMin: 0, yMax: 1, empty: "no training run with a validation score yet" }),
  );
  const body = $("#run-table tbody");
  body.replaceChildren();
  for (const r of p.runs) {
    body.append(el("tr", {}, el("td", {}, r.run), el("td", {}, r.status), el("td", {}, r.n_labels ?? ""), el("td", {}, r.val_score == null ? "" : r.val_score.toFixed(4)), el("td", {}, r.end_ts || "")));
  }
}

// ---- start
async function start() {
  try {
    state.auth = await api.authEnabled();
  } catch (err) {
    showError(new Error(`The server did not answer (${err.message}); is it running?`));
    return;
  }
  updateWho();
  window.addEventListener("hashchange", () => {
    clearMessages();
    route();
  });
  await route();
  state.ready = true;
}

start();
