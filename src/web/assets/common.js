// Shared helpers of the tpcflow pages (no external libraries).
"use strict";
const $ = (s, root) => (root || document).querySelector(s);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}
const SVGNS = "http://www.w3.org/2000/svg";
function sv(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
async function getJSON(url) {
  let r;
  try { r = await fetch(url, { headers: { Accept: "application/json" } }); }
  catch (e) { return { ok: false, status: 0, data: { error: "server unreachable: " + e } }; }
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: "bad response (" + r.status + ")" }; }
  return { ok: r.ok, status: r.status, data };
}
function setStatus(text, state) {
  const s = $("#status");
  if (!s) return;
  s.textContent = text; s.dataset.state = state; s.classList.toggle("error", state === "error");
}
function fmt(v, digits) {
  if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "–";
  if (typeof v !== "number") return String(v);
  if (digits === undefined) return Number.isInteger(v) ? String(v) : v.toPrecision(6);
  return v.toFixed(digits);
}
function debounce(f, ms) { let t; return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); }; }
function niceTicks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(+v.toPrecision(12));
  return out;
}
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colour(t) {
  t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
  return `rgb(${a.map((v, k) => Math.round(v + f * (b[k] - v))).join(",")})`;
}
const tick = v => String(+v.toPrecision(6));
function axes(svg, x0, x1, y0, y1, box, xlabel, ylabel, nx) {
  const [L, T, W, H] = box, X = v => L + ((v - x0) / (x1 - x0 || 1)) * W, Y = v => T + H - ((v - y0) / (y1 - y0 || 1)) * H;
  for (const t of niceTicks(x0, x1, nx || 8)) {
    svg.append(sv("line", { class: "gridline", x1: X(t), x2: X(t), y1: T, y2: T + H }));
    svg.append(sv("text", { x: X(t), y: T + H + 14, "text-anchor": "middle" }, tick(t)));
  }
  for (const t of niceTicks(y0, y1, 5)) {
    svg.append(sv("line", { class: "gridline", x1: L, x2: L + W, y1: Y(t), y2: Y(t) }));
    svg.append(sv("text", { x: L - 4, y: Y(t) + 4, "text-anchor": "end" }, tick(t)));
  }
  svg.append(sv("rect", { x: L, y: T, width: W, height: H, fill: "none", class: "axis" }));
  if (xlabel) svg.append(sv("text", { x: L + W / 2, y: T + H + 28, "text-anchor": "middle" }, xlabel));
  if (ylabel) svg.append(sv("text", { x: 12, y: T + H / 2, transform: `rotate(-90 12 ${T + H / 2})`, "text-anchor": "middle" }, ylabel));
  return { X, Y };
}
