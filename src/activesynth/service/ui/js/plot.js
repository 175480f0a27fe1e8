// Small inline-SVG line plots (no library): axes with ticks, one series, optional step line.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function ticks(lo, hi, n = 5) {
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((st) => st >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

/**
 * A line plot as an <svg> element.
 * @param {{x: number, y: number}[]} points in data units
 * @param {{title: string, xLabel: string, yLabel: string, step?: boolean, xFormat?: Function,
 *          yMin?: number, yMax?: number, width?: number, height?: number}} opts
 */
export function linePlot(points, opts) {
  const W = opts.width || 560;
  const H = opts.height || 260;
  const m = { l: 56, r: 16, t: 28, b: 44 };
  const svg = el("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img" });
  svg.appendChild(el("title", {}, opts.title));
  svg.appendChild(el("text", { x: m.l, y: 18, class: "plot-title" }, opts.title));
  if (!points.length) {
    svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "plot-empty" }, opts.empty || "no data yet"));
    return svg;
  }
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [opts.yMin ?? Math.min(...ys), opts.yMax ?? Math.max(...ys)];
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 === y0) [y0, y1] = [y0 - 1, y1 + 1];
  const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sy = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const fx = opts.xFormat || ((v) => String(v));
  svg.appendChild(el("line", { x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b, class: "axis" }));
  svg.appendChild(el("line", { x1: m.l, y1: m.t, x2: m.l, y2: H - m.b, class: "axis" }));
  for (const t of opts.xTicks ? opts.xTicks(x0, x1) : ticks(x0, x1)) {
    svg.appendChild(el("line", { x1: sx(t), y1: H - m.b, x2: sx(t), y2: H - m.b + 4, class: "axis" }));
    svg.appendChild(el("text", { x: sx(t), y: H - m.b + 16, "text-anchor": "middle", class: "tick" }, fx(t)));
  }
  for (const t of ticks(y0, y1)) {
    svg.appendChild(el("line", { x1: m.l - 4, y1: sy(t), x2: m.l, y2: sy(t), class: "axis" }));
    svg.appendChild(el("line", { x1: m.l, y1: sy(t), x2: W - m.r, y2: sy(t), class: "grid" }));
    svg.appendChild(el("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end", class: "tick" }, String(t)));
  }
  svg.appendChild(el("text", { x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle", class: "label" }, opts.xLabel));
  svg.appendChild(el("text", { x: 14, y: (m.t + H - m.b) / 2, "text-anchor": "middle", class: "label", transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})` }, opts.yLabel));
  let d = "";
  points.forEach((p, i) => {
    if (i === 0) d += `M${sx(p.x)},${sy(p.y)}`;
    else if (opts.step) d += `H${sx(p.x)}V${sy(p.y)}`;
    else d += `L${sx(p.x)},${sy(p.y)}`;
  });
  svg.appendChild(el("path", { d, class: "series" }));
  for (const p of points) {
    const dot = el("circle", { cx: sx(p.x), cy: sy(p.y), r: 3, class: "dot" });
    dot.appendChild(el("title", {}, p.label || `${fx(p.x)}: ${p.y}`));
    svg.appendChild(dot);
  }
  return svg;
}
