// The service's REST API as the UI uses it: bearer token, client id, errors with the server's text.

const TOKEN_KEY = "activesynth.token";
const USER_KEY = "activesynth.user";
const CLIENT_KEY = "activesynth.client_id";

/** An HTTP error answer: `status` and the server's `detail` sentence. */
export class ApiError extends Error {
  constructor(status, detail, what) {
    super(`${what}: ${detail} (HTTP ${status})`);
    this.status = status;
    this.detail = detail;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function user() {
  return sessionStorage.getItem(USER_KEY);
}

export function setLogin(tok, name) {
  if (tok) {
    sessionStorage.setItem(TOKEN_KEY, tok);
    sessionStorage.setItem(USER_KEY, name);
  } else {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
  }
}

/** A per-browser id sent with leases and labels (the lease holder when auth is off). */
export function clientId() {
  let id = localStorage.getItem(CLIENT_KEY);
  if (!id) {
    const rnd = new Uint8Array(6);
    crypto.getRandomValues(rnd);
    id = "ui-" + Array.from(rnd, (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem(CLIENT_KEY, id);
  }
  return id;
}

async function detailOf(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    if (typeof body.detail === "string") return body.detail;
    if (body.detail) return JSON.stringify(body.detail);
    return text;
  } catch {
    return text || resp.statusText || "no answer text";
  }
}

/** fetch() with the token; throws ApiError on a non-2xx answer, TypeError-wrapped on no answer. */
export async function request(method, path, { body, headers = {}, what } = {}) {
  const h = { ...headers };
  const tok = token();
  if (tok) h["Authorization"] = `Bearer ${tok}`;
  let resp;
  try {
    resp = await fetch(path, { method, body, headers: h });
  } catch (err) {
    throw new ApiError(0, `the server did not answer (${err.message}); is it running?`, what || `${method} ${path}`);
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, await detailOf(resp), what || `${method} ${path}`);
  }
  return resp;
}

export async function getJSON(path, what) {
  return (await request("GET", path, { what })).json();
}

export async function sendJSON(method, path, obj, what) {
  const resp = await request(method, path, {
    body: JSON.stringify(obj),
    headers: { "Content-Type": "application/json" },
    what,
  });
  return resp.json();
}

/** POST /auth/token with form fields; stores the token. */
export async function login(name, password) {
  const form = new URLSearchParams({ username: name, password });
  const resp = await request("POST", "/auth/token", {
    body: form,
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    what: "log in",
  });
  const got = await resp.json();
  setLogin(got.access_token, name);
  return got;
}

/** Whether the server wants a token: GET /auth/ exists only when auth is on. */
export async function authEnabled() {
  const resp = await fetch("/auth/");
  if (resp.status === 404) return false;
  if (!resp.ok) return true;
  const body = await resp.json();
  return Boolean(body.enabled);
}

/** The raw intensities of an image: {data, height, width, channels, window: [lo, hi], range}. */
export async function pixels(imageId) {
  const resp = await request("GET", `/api/v1/images/${encodeURIComponent(imageId)}/pixels`, {
    what: `load image ${imageId}`,
  });
  const shape = resp.headers.get("X-Shape").split(",").map(Number);
  const dtype = resp.headers.get("X-Dtype");
  const buf = await resp.arrayBuffer();
  const data = dtype === "uint8" ? new Uint8Array(buf) : new Float32Array(buf);
  const window = resp.headers.get("X-Window").split(",").map(Number);
  const range = resp.headers.get("X-Range").split(",").map(Number);
  return { data, height: shape[0], width: shape[1], channels: shape[2] || 1, window, range, dtype };
}

/**
 * The model's pre-label (MONAI Label's infer): {mask: Uint8Array class ids, modelVersion}, or
 * null with a reason when no model is trained yet (409).
 */
export async function prelabel(imageId) {
  let resp;
  try {
    resp = await request("POST", `/infer/segmentation?image=${encodeURIComponent(imageId)}`, {
      what: `pre-label of ${imageId}`,
    });
  } catch (err) {
    if (err instanceof ApiError && err.status === 409) return { mask: null, reason: err.detail };
    throw err;
  }
  const form = await resp.formData();
  const params = JSON.parse(form.get("params"));
  const file = form.get("image");
  const bmp = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const c = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  const rgba = ctx.getImageData(0, 0, bmp.width, bmp.height).data;
  const mask = new Uint8Array(bmp.width * bmp.height);
  for (let i = 0; i < mask.length; i++) mask[i] = rgba[4 * i];
  return { mask, width: bmp.width, height: bmp.height, modelVersion: params.model_version };
}

/** PUT a label (PNG bytes) as a new version of the image's `final` label. */
export async function saveLabel(imageId, pngBytes) {
  const form = new FormData();
  form.append("params", JSON.stringify({ client_id: clientId(), client: "activesynth-ui" }));
  form.append("label", new Blob([pngBytes], { type: "image/png" }), `${imageId}.png`);
  const resp = await request("PUT", `/api/v1/images/${encodeURIComponent(imageId)}/labels/final`, {
    body: form,
    what: `save the label of ${imageId}`,
  });
  return resp.json();
}

/**
 * Lease one chosen image to this annotator (renewed when it is already theirs). Throws an
 * ApiError 409 naming the holder when someone else holds a live lease on it.
 */
export async function leaseImage(imageId) {
  return sendJSON("POST", "/api/v1/leases", { image_id: imageId, client_id: clientId() }, `lease ${imageId}`);
}

function releasePath(imageId, expiresAt) {
  const q = new URLSearchParams({ client_id: clientId() });
  if (expiresAt) q.set("expires_at", expiresAt);
  return `/api/v1/leases/${encodeURIComponent(imageId)}?${q}`;
}

/**
 * Give this annotator's lease on an image back (DELETE). `expiresAt` (the lease's expiry as the
 * server gave it) releases only that lease, not a renewal made since. True when released; false
 * when there was nothing of ours to release (404, 403, 409).
 */
export async function releaseLease(imageId, expiresAt) {
  try {
    await request("DELETE", releasePath(imageId, expiresAt), { what: `give back the lease of ${imageId}` });
    return true;
  } catch (err) {
    if (err instanceof ApiError && [403, 404, 409].includes(err.status)) return false;
    throw err;
  }
}

/**
 * The same while the page is going away (closed, reloaded, navigated off): a keepalive fetch
 * outlives the page and, unlike sendBeacon, carries the Authorization header.
 */
export function releaseOnUnload(imageId, expiresAt) {
  const h = {};
  const tok = token();
  if (tok) h["Authorization"] = `Bearer ${tok}`;
  try {
    fetch(releasePath(imageId, expiresAt), { method: "DELETE", headers: h, keepalive: true }).catch(() => {});
  } catch {
    /* the page is going away; the lease expires by itself */
  }
}
