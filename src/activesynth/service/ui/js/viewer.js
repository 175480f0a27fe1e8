// The labelling canvas: image with window/level, the model's pre-label as an overlay, the mask
// being painted (brush, eraser, polygon), zoom and pan, undo/redo. Coordinates: an image pixel
// (x, y) covers [x, x + 1) x [y, y + 1); screen = image * view.s + (view.tx, view.ty).

export const CLASS_COLOURS = [
  [0, 0, 0],
  [255, 70, 70],
  [60, 200, 255],
  [255, 210, 0],
  [110, 240, 110],
  [255, 110, 255],
  [255, 160, 60],
  [160, 120, 255],
  [0, 240, 200],
  [220, 220, 220],
];

const MAX_UNDO = 100;

/**
 * Paint a capsule into `mask`: every pixel whose centre lies within `r` of segment a-b.
 * (The browser test recomputes this region in Python with the same formula.)
 */
export function paintSegment(mask, width, height, ax, ay, bx, by, r, value) {
  const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - r));
  const x1 = Math.min(width - 1, Math.ceil(Math.max(ax, bx) + r));
  const y0 = Math.max(0, Math.floor(Math.min(ay, by) - r));
  const y1 = Math.min(height - 1, Math.ceil(Math.max(ay, by) + r));
  const dx = bx - ax;
  const dy = by - ay;
  const len2 = dx * dx + dy * dy;
  const r2 = r * r;
  let changed = false;
  for (let y = y0; y <= y1; y++) {
    const cy = y + 0.5;
    for (let x = x0; x <= x1; x++) {
      const cx = x + 0.5;
      let t = len2 > 0 ? ((cx - ax) * dx + (cy - ay) * dy) / len2 : 0;
      t = Math.min(1, Math.max(0, t));
      const px = cx - (ax + t * dx);
      const py = cy - (ay + t * dy);
      if (px * px + py * py <= r2) {
        const i = y * width + x;
        if (mask[i] !== value) {
          mask[i] = value;
          changed = true;
        }
      }
    }
  }
  return changed;
}

/** Fill the pixels whose centre is inside the polygon `pts` ([[x, y], ...], even-odd rule). */
export function fillPolygon(mask, width, height, pts, value) {
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const x0 = Math.max(0, Math.floor(Math.min(...xs)));
  const x1 = Math.min(width - 1, Math.ceil(Math.max(...xs)));
  const y0 = Math.max(0, Math.floor(Math.min(...ys)));
  const y1 = Math.min(height - 1, Math.ceil(Math.max(...ys)));
  const n = pts.length;
  for (let y = y0; y <= y1; y++) {
    const py = y + 0.5;
    for (let x = x0; x <= x1; x++) {
      const px = x + 0.5;
      let inside = false;
      for (let i = 0, j = n - 1; i < n; j = i++) {
        const [xi, yi] = pts[i];
        const [xj, yj] = pts[j];
        if (yi > py !== yj > py && px < ((xj - xi) * (py - yi)) / (yj - yi) + xi) inside = !inside;
      }
      if (inside) mask[y * width + x] = value;
    }
  }
}

/**
 * Class colours of `mask` into the image-sized canvas `target`. With `outline`, a region's
 * border pixels are opaque and its inside faint (the pre-label, told apart from the mask).
 */
function colourise(target, mask, width, height, outline = false) {
  const ctx = target.getContext("2d");
  const out = ctx.createImageData(width, height);
  const d = out.data;
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i];
    if (v === 0) continue;
    const c = CLASS_COLOURS[v % CLASS_COLOURS.length];
    d[4 * i] = c[0];
    d[4 * i + 1] = c[1];
    d[4 * i + 2] = c[2];
    let alpha = 255;
    if (outline) {
      const x = i % width;
      const y = (i - x) / width;
      const border =
        (x > 0 && mask[i - 1] !== v) ||
        (x < width - 1 && mask[i + 1] !== v) ||
        (y > 0 && mask[i - width] !== v) ||
        (y < height - 1 && mask[i + width] !== v);
      alpha = border ? 255 : 70;
    }
    d[4 * i + 3] = alpha;
  }
  ctx.putImageData(out, 0, 0);
}

export class Viewer {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{onChange?: Function, onStatus?: Function, onFirstImage?: Function}} hooks
   */
  constructor(canvas, hooks = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.hooks = hooks;
    this.tool = "brush";
    this.brushSize = 8;
    this.cls = 1;
    this.maskOpacity = 0.5;
    this.preOpacity = 0.8;
    this.showPre = true;
    this.view = { s: 1, tx: 0, ty: 0 };
    this.edits = 0;
    this.readOnly = false; // looking only (someone else holds the image): no mask edits
    this.px = null;
    this.mask = null;
    this.pre = null;
    this.undoStack = [];
    this.redoStack = [];
    this.polygon = [];
    this.drag = null;
    this.cursor = null;
    this.firstPainted = false;
    this.imgCanvas = document.createElement("canvas");
    this.maskCanvas = document.createElement("canvas");
    this.preCanvas = document.createElement("canvas");
    this._bind();
    this._resize();
    new ResizeObserver(() => this._resize()).observe(canvas);
  }

  // ---- data
  setImage(px) {
    this.px = px;
    const { width, height } = px;
    for (const c of [this.imgCanvas, this.maskCanvas, this.preCanvas]) {
      c.width = width;
      c.height = height;
    }
    this.window = [px.window[0], px.window[1]];
    this.mask = new Uint8Array(width * height);
    this.pre = null;
    this.undoStack = [];
    this.redoStack = [];
    this.polygon = [];
    this.edits = 0; // changes of the mask since the image was opened (undo/redo count too)
    this.renderImage();
    this.renderMask();
    this.fit();
  }

  setPrelabel(mask) {
    this.pre = mask;
    if (mask) colourise(this.preCanvas, mask, this.px.width, this.px.height, true);
    this.draw();
  }

  /** Replace the mask by the pre-label (one undo step). */
  usePrelabel() {
    if (!this.pre || this.readOnly) return false;
    this._snapshot();
    this.mask.set(this.pre);
    this._edited();
    return true;
  }

  clearMask() {
    if (this.readOnly) return false;
    this._snapshot();
    this.mask.fill(0);
    this._edited();
  }

  setWindow(lo, hi) {
    if (!(hi > lo)) return;
    this.window = [lo, hi];
    this.renderImage();
    this.draw();
    this._emit();
  }

  // ---- rendering
  renderImage() {
    const { data, width, height, channels } = this.px;
    const [lo, hi] = this.window;
    const k = 255 / (hi - lo);
    const ctx = this.imgCanvas.getContext("2d");
    const out = ctx.createImageData(width, height);
    const d = out.data;
    const n = width * height;
    const grey = (v) => {
      const g = v < 0 ? 0 : v > 255 ? 255 : v | 0;
      return (0xff000000 | (g << 16) | (g << 8) | g) >>> 0; // RGBA bytes, little endian
    };
    if (channels === 1) {
      const px32 = new Uint32Array(d.buffer);
      if (data instanceof Uint8Array) {
        const lut = new Uint32Array(256); // 8-bit images: one table lookup a pixel
        for (let v = 0; v < 256; v++) lut[v] = grey((v - lo) * k);
        for (let i = 0; i < n; i++) px32[i] = lut[data[i]];
      } else {
        for (let i = 0; i < n; i++) px32[i] = grey((data[i] - lo) * k);
      }
    } else {
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < 3; c++) {
          const v = (data[3 * i + c] - lo) * k;
          d[4 * i + c] = v < 0 ? 0 : v > 255 ? 255 : v;
        }
        d[4 * i + 3] = 255;
      }
    }
    ctx.putImageData(out, 0, 0);
  }

  renderMask() {
    colourise(this.maskCanvas, this.mask, this.px.width, this.px.height);
  }

  draw() {
    const { ctx, canvas } = this;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!this.px) return;
    const { s, tx, ty } = this.view;
    const w = this.px.width * s;
    const h = this.px.height * s;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.imgCanvas, tx, ty, w, h);
    if (this.pre && this.showPre) {
      ctx.globalAlpha = this.preOpacity;
      ctx.drawImage(this.preCanvas, tx, ty, w, h);
    }
    ctx.globalAlpha = this.maskOpacity;
    ctx.drawImage(this.maskCanvas, tx, ty, w, h);
    ctx.globalAlpha = 1;
    if (this.polygon.length) {
      ctx.strokeStyle = "#ff0";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      this.polygon.forEach(([x, y], i) => {
        const sx = x * s + tx;
        const sy = y * s + ty;
        if (i === 0) ctx.moveTo(sx, sy);
        else ctx.lineTo(sx, sy);
      });
      if (this.cursor) ctx.lineTo(this.cursor[0] * s + tx, this.cursor[1] * s + ty);
      ctx.stroke();
      ctx.fillStyle = "#ff0";
      for (const [x, y] of this.polygon) ctx.fillRect(x * s + tx - 2, y * s + ty - 2, 4, 4);
    }
    if (this.cursor && (this.tool === "brush" || this.tool === "eraser")) {
      ctx.strokeStyle = this.tool === "brush" ? "#fff" : "#f88";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.arc(this.cursor[0] * s + tx, this.cursor[1] * s + ty, (this.brushSize / 2) * s, 0, 2 * Math.PI);
      ctx.stroke();
    }
    if (!this.firstPainted) {
      this.firstPainted = true;
      requestAnimationFrame(() => this.hooks.onFirstImage && this.hooks.onFirstImage());
    }
  }

  // ---- view
  fit() {
    if (!this.px) return;
    const { width, height } = this.canvas;
    let s = Math.min(width / this.px.width, height / this.px.height);
    if (s >= 1) s = Math.floor(s); // whole screen pixels per image pixel: crisp and exact
    this.view = {
      s,
      tx: Math.round((width - this.px.width * s) / 2),
      ty: Math.round((height - this.px.height * s) / 2),
    };
    this.draw();
    this._emit();
  }

  zoomAt(sx, sy, factor) {
    const { s, tx, ty } = this.view;
    const ns = Math.min(64, Math.max(0.05, s * factor));
    this.view = { s: ns, tx: sx - ((sx - tx) * ns) / s, ty: sy - ((sy - ty) * ns) / s };
    this.draw();
    this._emit();
  }

  toImage(sx, sy) {
    const { s, tx, ty } = this.view;
    return [(sx - tx) / s, (sy - ty) / s];
  }

  _resize() {
    const r = this.canvas.getBoundingClientRect();
    const w = Math.max(1, Math.round(r.width));
    const h = Math.max(1, Math.round(r.height));
    if (w === this.canvas.width && h === this.canvas.height) return;
    this.canvas.width = w;
    this.canvas.height = h;
    if (this.px) this.fit();
    else this.draw();
  }

  // ---- editing
  _snapshot() {
    this.edits++;
    this.undoStack.push(this.mask.slice());
    if (this.undoStack.length > MAX_UNDO) this.undoStack.shift();
    this.redoStack = [];
  }

  _edited() {
    this.renderMask();
    this.draw();
    this._emit();
  }

  undo() {
    if (this.polygon.length) {
      this.polygon.pop();
      this.draw();
      return true;
    }
    if (!this.undoStack.length || this.readOnly) return false;
    this.edits++;
    this.redoStack.push(this.mask);
    this.mask = this.undoStack.pop();
    this._edited();
    return true;
  }

  redo() {
    if (!this.redoStack.length || this.readOnly) return false;
    this.edits++;
    this.undoStack.push(this.mask);
    this.mask = this.redoStack.pop();
    this._edited();
    return true;
  }

  setTool(tool) {
    if (tool !== "polygon") this.polygon = [];
    this.tool = tool;
    this.draw();
    this._emit();
  }

  closePolygon() {
    if (this.polygon.length < 3 || this.readOnly) return false;
    this._snapshot();
    fillPolygon(this.mask, this.px.width, this.px.height, this.polygon, this.cls);
    this.polygon = [];
    this._edited();
    return true;
  }

  cancelPolygon() {
    this.polygon = [];
    this.draw();
  }

  foregroundPixels() {
    let n = 0;
    for (let i = 0; i < this.mask.length; i++) if (this.mask[i]) n++;
    return n;
  }

  _emit() {
    if (this.hooks.onChange) this.hooks.onChange(this);
  }

  _status(text) {
    if (this.hooks.onStatus) this.hooks.onStatus(text);
  }

  // ---- input
  _local(ev) {
    const r = this.canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  _bind() {
    const c = this.canvas;
    c.addEventListener("contextmenu", (ev) => ev.preventDefault());
    c.addEventListener("pointerdown", (ev) => this._down(ev));
    c.addEventListener("pointermove", (ev) => this._move(ev));
    c.addEventListener("pointerup", (ev) => this._up(ev));
    c.addEventListener("pointercancel", (ev) => this._up(ev));
    c.addEventListener("pointerleave", () => {
      this.cursor = null;
      this.draw();
    });
    c.addEventListener("dblclick", (ev) => {
      if (this.tool === "polygon") {
        ev.preventDefault();
        this.closePolygon();
      }
    });
    c.addEventListener(
      "wheel",
      (ev) => {
        ev.preventDefault();
        const [sx, sy] = this._local(ev);
        this.zoomAt(sx, sy, ev.deltaY < 0 ? 1.25 : 0.8);
      },
      { passive: false },
    );
  }

  _down(ev) {
    if (!this.px) return;
    const [sx, sy] = this._local(ev);
    const p = this.toImage(sx, sy);
    c_capture(this.canvas, ev);
    if (ev.button === 1 || (ev.button === 0 && (ev.shiftKey || ev.altKey))) {
      ev.preventDefault();
      this.drag = { kind: "pan", sx, sy, tx: this.view.tx, ty: this.view.ty };
      return;
    }
    if (ev.button === 2 || (ev.button === 0 && ev.ctrlKey)) {
      this.drag = { kind: "wl", sx, sy, window: [...this.window] };
      return;
    }
    if (ev.button !== 0 || this.readOnly) return;
    if (this.tool === "polygon") {
      const first = this.polygon[0];
      if (first && this.polygon.length >= 3) {
        const { s } = this.view;
        if (Math.hypot((first[0] - p[0]) * s, (first[1] - p[1]) * s) <= 6) {
          this.closePolygon();
          return;
        }
      }
      this.polygon.push(p);
      this.draw();
      return;
    }
    const value = this.tool === "eraser" ? 0 : this.cls;
    this._snapshot();
    this.drag = { kind: "paint", last: p, value };
    paintSegment(this.mask, this.px.width, this.px.height, p[0], p[1], p[0], p[1], this.brushSize / 2, value);
    this._edited();
  }

  _move(ev) {
    if (!this.px) return;
    const [sx, sy] = this._local(ev);
    const p = this.toImage(sx, sy);
    this.cursor = p;
    const d = this.drag;
    if (d && d.kind === "pan") {
      this.view = { ...this.view, tx: d.tx + sx - d.sx, ty: d.ty + sy - d.sy };
    } else if (d && d.kind === "wl") {
      const [lo, hi] = d.window;
      const span = Math.max(1e-6, this.px.range[1] - this.px.range[0]);
      const k = span / 500; // 500 screen pixels of drag cover the image's value range
      const width = Math.max(span / 1000, hi - lo + (sx - d.sx) * k);
      const level = (lo + hi) / 2 - (sy - d.sy) * k;
      this.window = [level - width / 2, level + width / 2];
      this.renderImage();
      this._emit();
    } else if (d && d.kind === "paint") {
      const [ax, ay] = d.last;
      paintSegment(this.mask, this.px.width, this.px.height, ax, ay, p[0], p[1], this.brushSize / 2, d.value);
      d.last = p;
      this.renderMask();
    }
    const xi = Math.floor(p[0]);
    const yi = Math.floor(p[1]);
    if (xi >= 0 && yi >= 0 && xi < this.px.width && yi < this.px.height) {
      const i = yi * this.px.width + xi;
      const v = this.px.channels === 1 ? this.px.data[i] : Array.from(this.px.data.subarray(3 * i, 3 * i + 3));
      this._status(`x ${xi}, y ${yi}: value ${Array.isArray(v) ? v.join("/") : +v.toFixed(4)}, label ${this.mask[i]}`);
    }
    this.draw();
  }

  _up(ev) {
    if (this.drag && this.drag.kind === "paint") this._emit();
    this.drag = null;
    try {
      this.canvas.releasePointerCapture(ev.pointerId);
    } catch {
      /* not captured */
    }
  }
}

function c_capture(canvas, ev) {
  try {
    canvas.setPointerCapture(ev.pointerId);
  } catch {
    /* synthetic events have no capturable pointer */
  }
}
