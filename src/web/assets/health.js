// Detector health: calibration trends across runs, the gas-gap and gain maps
// of one calibration, and the tag in force, drawn as SVG from /api/health.
"use strict";
let cur = null;                       // the last /api/health answer
let wantTag = new URLSearchParams(location.search).get("tag");
// Trend plots: key of the point in /api/health, title, unit.
const TRENDS = [
  ["electron_lifetime_us", "Electron lifetime", "μs"],
  ["se_gain_phd", "Single-electron gain", "phd"],
  ["kr83m_peak_kev", "Kr83m peak position", "keV"],
  ["kr83m_width_kev", "Kr83m peak width (σ)", "keV"],
  ["dead_channels", "Dead channels", "channels"],
  ["event_rate_hz", "Event rate", "Hz"],
  ["se_rate_hz", "Single-electron rate", "Hz"],
  ["s2_width_at_gate_ns", "S2 width (50 %) at the gate", "ns"],
  ["tilt_mrad", "Liquid-surface tilt", "mrad"],
];
const NA = "n/a";
// A trend value as {value, sigma}: counts have no uncertainty.
function measured(p, key) {
  const v = p[key];
  if (v === null || v === undefined) return { value: null, sigma: null };
  return typeof v === "number" ? { value: v, sigma: null } : v;
}
function withSigma(m, digits) {
  if (m.value === null) return NA;
  return m.sigma === null ? fmt(m.value, digits) : `${fmt(m.value, digits)} ± ${fmt(m.sigma, digits)}`;
}
function drawTrend(key, title, unit) {
  const svg = sv("svg", { width: 430, height: 210, id: "plot-" + key, "data-key": key, role: "img", "aria-label": title });
  const pts = cur.trends.map(p => ({ p, m: measured(p, key) })).filter(o => o.m.value !== null);
  svg.append(sv("text", { x: 60, y: 13 }, `${title} [${unit}]` + (pts.length ? "" : ": n/a for every calibration")));
  const runs = cur.trends.map(p => p.source_run);
  // At least 4 runs wide, so that the run ticks are whole numbers.
  let x0 = Math.min(...runs), x1 = Math.max(...runs);
  const xpad = Math.max(0.06 * (x1 - x0), (4 - (x1 - x0)) / 2);
  x0 -= xpad; x1 += xpad;
  const lo = pts.map(o => o.m.value - (o.m.sigma || 0)), hi = pts.map(o => o.m.value + (o.m.sigma || 0));
  let y0 = pts.length ? Math.min(...lo) : 0, y1 = pts.length ? Math.max(...hi) : 1;
  const pad = (y1 - y0) * 0.12 || Math.abs(y1) * 0.1 || 1;
  y0 -= pad; y1 += pad;
  if (key === "dead_channels" && y0 < 0) y0 = 0;
  const { X, Y } = axes(svg, x0, x1, y0, y1, [60, 22, 340, 150], "calibration run", null, 5);
  for (const { p, m } of pts) {
    const g = sv("g", { class: "point " + p.state, "data-tag": p.tag, "data-run": p.source_run });
    if (m.sigma !== null) {
      const [a, b] = [m.value - m.sigma, m.value + m.sigma];
      g.append(sv("line", { class: "err", x1: X(p.source_run), x2: X(p.source_run), y1: Y(a), y2: Y(b), "data-lo": a, "data-hi": b }));
      for (const v of [a, b]) g.append(sv("line", { class: "err", x1: X(p.source_run) - 4, x2: X(p.source_run) + 4, y1: Y(v), y2: Y(v) }));
    }
    const c = sv("circle", { class: "pt", cx: X(p.source_run), cy: Y(m.value), r: 4.5,
      "data-value": m.value, "data-sigma": m.sigma === null ? "" : m.sigma });
    c.append(sv("title", {}, `${p.tag} (run ${p.source_run}, ${p.state}): ${withSigma(m)} ${unit}`));
    g.append(c);
    g.addEventListener("click", () => { wantTag = p.tag; load(); });
    svg.append(g);
  }
  return el("div", { class: "panel" }, svg);
}
function cell(key, text, extra) { return el("td", Object.assign({ class: "c-" + key, text }, extra || {})); }
function drawTable() {
  $("#tags tbody").replaceChildren(...cur.trends.map(p => {
    const tr = el("tr", { "data-tag": p.tag, class: cur.maps && cur.maps.tag === p.tag ? "sel" : null },
      el("td", { class: "l", text: p.tag }),
      el("td", { class: "l state-" + p.state, text: p.state }),
      cell("run", String(p.source_run)),
      cell("first_run", p.first_run === null ? "–" : String(p.first_run)),
      cell("electron_lifetime_us", withSigma(p.electron_lifetime_us, 0)),
      cell("se_gain_phd", withSigma(p.se_gain_phd, 2)),
      cell("kr83m_peak_kev", withSigma(p.kr83m_peak_kev, 2)),
      cell("kr83m_width_kev", withSigma(p.kr83m_width_kev, 2)),
      cell("event_rate_hz", withSigma(p.event_rate_hz, 2)),
      cell("se_rate_hz", withSigma(p.se_rate_hz, 1)),
      cell("s2_width_at_gate_ns", withSigma(p.s2_width_at_gate_ns, 0)),
      cell("tilt_mrad", withSigma(p.tilt_mrad, 3)),
      cell("dead_channels", p.dead_channels === null ? NA : String(p.dead_channels)),
      cell("noisy_channels", p.noisy_channels === null ? NA : String(p.noisy_channels)),
      el("td", { class: "l c-used_by_runs", text: p.used_by_runs.length ? p.used_by_runs.join(" ") : "none" }),
      cell("latency", p.products_latency_s === null ? NA : fmt(p.products_latency_s, 1)));
    tr.addEventListener("click", () => { wantTag = p.tag; load(); });
    return tr;
  }));
}
// The gas-gap map: grid cells inside the TPC, its outline, the tilt arrow.
function drawGap() {
  const svg = $("#gap-map"); svg.replaceChildren();
  const m = cur.maps, g = m && m.gas_gap_mm;
  svg.append(sv("text", { x: 190, y: 14, "text-anchor": "middle" }, "Gas gap [mm]"));
  if (!g) { svg.append(sv("text", { x: 190, y: 200, "text-anchor": "middle", id: "gap-na" }, "gas gap: " + NA)); return; }
  const R = m.gains.radius_mm, S = 150 / R, cx = 170, cy = 200, lo = Math.min(...g.values), hi = Math.max(...g.values);
  const clip = sv("clipPath", { id: "tpc-clip" }); clip.append(sv("circle", { cx, cy, r: R * S }));
  svg.append(clip);
  const cells = sv("g", { "clip-path": "url(#tpc-clip)" });
  const w = (2 * g.half_width_mm) / g.nx, h = (2 * g.half_width_mm) / g.ny;
  g.values.forEach((v, k) => {
    const i = k % g.nx, j = Math.floor(k / g.nx), x = -g.half_width_mm + i * w, y = -g.half_width_mm + j * h;
    const r = sv("rect", { class: "gap-cell", x: cx + x * S, y: cy - (y + h) * S, width: w * S + 0.5, height: h * S + 0.5,
      fill: colour(hi > lo ? (v - lo) / (hi - lo) : 0.5), "data-mm": v });
    r.append(sv("title", {}, `x ${fmt(x + w / 2, 0)}, y ${fmt(y + h / 2, 0)} mm: ${fmt(v, 3)} mm`));
    cells.append(r);
  });
  svg.append(cells);
  svg.append(sv("circle", { cx, cy, r: R * S, fill: "none", stroke: "#555" }));
  const dir = m.tilt_direction_deg, t = m.tilt_mrad;
  const label = sv("text", { x: 190, y: 375, "text-anchor": "middle", id: "tilt",
    "data-mrad": t.value === null ? "" : t.value, "data-sigma": t.sigma === null ? "" : t.sigma, "data-direction": dir === null ? "" : dir },
    t.value === null ? "tilt: " + NA : `tilt ${withSigma(t, 3)} mrad toward ${fmt(dir, 0)}°`);
  svg.append(label);
  if (dir !== null) {
    const a = dir * Math.PI / 180, L = R * S * 0.8;
    const x2 = cx + L * Math.cos(a), y2 = cy - L * Math.sin(a);
    svg.append(sv("line", { class: "tilt-arrow", x1: cx, y1: cy, x2, y2 }));
    const h1 = a + Math.PI * 0.85, h2 = a - Math.PI * 0.85;
    svg.append(sv("path", { class: "tilt-head", d: `M${x2},${y2}L${x2 + 10 * Math.cos(h1)},${y2 - 10 * Math.sin(h1)}L${x2 + 10 * Math.cos(h2)},${y2 - 10 * Math.sin(h2)}Z` }));
  }
  for (let i = 0; i < 40; i++) svg.append(sv("rect", { x: 350, y: 60 + (39 - i) * 6, width: 14, height: 6.5, fill: colour(i / 39) }));
  svg.append(sv("text", { x: 346, y: 52 }, fmt(hi, 2))); svg.append(sv("text", { x: 346, y: 314 }, fmt(lo, 2)));
  if (m.plane_gap_mm !== null) svg.append(sv("text", { x: 190, y: 392, "text-anchor": "middle" }, `plane gap at the centre ${fmt(m.plane_gap_mm, 3)} mm`));
}
// PMT arrays coloured by gain (or gain / base gain); dead marked, noisy ringed.
function gainValues() {
  const gm = cur.maps.gains, rel = $("#gain-mode").value === "rel" && gm.base_gain_adc;
  return gm.gain_adc.map((g, k) => (rel ? g / gm.base_gain_adc[k] : g));
}
function drawGainArray(svg, title, first, last, values, lo, hi) {
  svg.replaceChildren();
  const gm = cur.maps.gains, R = gm.radius_mm * 1.08, S = 165 / R, cx = 180, cy = 200;
  svg.append(sv("text", { x: cx, y: 14, "text-anchor": "middle" }, title));
  svg.append(sv("circle", { cx, cy, r: gm.radius_mm * S, fill: "none", stroke: "#bbb" }));
  const dead = new Set(gm.dead), noisy = new Set(gm.noisy), r = (gm.pitch_mm / 2) * 0.92 * S;
  for (let ch = first; ch < last; ch++) {
    const x = cx + gm.x[ch] * S, y = cy - gm.y[ch] * S, v = values[ch], isDead = dead.has(ch);
    const c = sv("circle", { class: "gain-cell pmt" + (isDead ? " dead" : "") + (noisy.has(ch) ? " noisy" : ""), cx: x, cy: y, r,
      "data-channel": ch, "data-gain": gm.gain_adc[ch] });
    c.setAttribute("fill", isDead ? "#222" : colour(hi > lo ? (v - lo) / (hi - lo) : 0.5));
    const s = gm.gain_sigma_adc[ch];
    c.append(sv("title", {}, `channel ${ch}: gain ${fmt(gm.gain_adc[ch], 2)}${s === null ? "" : " ± " + fmt(s, 2)} ADC` +
      (gm.base_gain_adc ? ` (${gm.base_tag}: ${fmt(gm.base_gain_adc[ch], 2)})` : "") + (isDead ? ", dead" : "") + (noisy.has(ch) ? ", noisy" : "")));
    svg.append(c);
    if (isDead) {
      const d = r * 0.6;
      svg.append(sv("path", { class: "dead-mark", d: `M${x - d},${y - d}L${x + d},${y + d}M${x - d},${y + d}L${x + d},${y - d}` }));
    }
  }
}
function drawGains() {
  const m = cur.maps;
  if (!m) { ["#gain-top", "#gain-bottom", "#gain-colorbar"].forEach(s => $(s).replaceChildren()); return; }
  const gm = m.gains, vals = gainValues(), dead = new Set(gm.dead);
  const live = vals.filter((v, k) => !dead.has(k) && isFinite(v)).sort((a, b) => a - b);
  // Colour scale over the live channels' 1st-99th percentiles: one outlier does not flatten the map.
  const q = f => live.length ? live[Math.min(live.length - 1, Math.floor(f * (live.length - 1) + 0.5))] : 0;
  const lo = q(0.01), hi = q(0.99);
  drawGainArray($("#gain-top"), `Top array (${gm.n_top} PMTs)`, 0, gm.n_top, vals, lo, hi);
  drawGainArray($("#gain-bottom"), `Bottom array (${gm.gain_adc.length - gm.n_top} PMTs)`, gm.n_top, gm.gain_adc.length, vals, lo, hi);
  const cb = $("#gain-colorbar"); cb.replaceChildren();
  const rel = $("#gain-mode").value === "rel" && gm.base_gain_adc;
  cb.append(sv("text", { x: 4, y: 30 }, rel ? `/ ${gm.base_tag}` : "ADC·samples"));
  for (let i = 0; i < 50; i++) cb.append(sv("rect", { x: 10, y: 40 + (49 - i) * 6, width: 18, height: 6.5, fill: colour(i / 49) }));
  cb.append(sv("text", { x: 32, y: 46 }, fmt(hi, rel ? 3 : 1))); cb.append(sv("text", { x: 32, y: 340 }, fmt(lo, rel ? 3 : 1)));
  $("#gain-mode").options[1].disabled = !gm.base_gain_adc;
}
function render() {
  const d = cur;
  $("#newest-run").textContent = d.newest_run === null ? "–" : String(d.newest_run);
  $("#in-force").textContent = d.tag_in_force || "none";
  $("#in-force-from").textContent = d.in_force_from_run === null ? "" : `(valid from run ${d.in_force_from_run})`;
  $("#trends").replaceChildren(...TRENDS.map(t => drawTrend(...t)));
  drawTable();
  $("#map-tag").replaceChildren(...d.trends.map(p => el("option", { value: p.tag, text: `${p.tag} (run ${p.source_run}, ${p.state})`,
    selected: d.maps && d.maps.tag === p.tag })));
  $("#map-title").textContent = d.maps ? `run ${d.maps.source_run}, ${d.maps.state}` : "(no calibration yet)";
  drawGap(); drawGains();
}
async function load() {
  const q = wantTag ? "?tag=" + encodeURIComponent(wantTag) : "";
  history.replaceState(null, "", q || location.pathname);
  setStatus("loading…", "loading");
  const { ok, data } = await getJSON("/api/health" + q);
  if (!ok) { setStatus(data.error || "error", "error"); return; }
  cur = data;
  render();
  const n = data.trends.length;
  setStatus(`${n} calibration${n === 1 ? "" : "s"}` + (data.maps ? ` · maps of ${data.maps.tag}` : ""), "loaded");
}
$("#map-tag").addEventListener("change", e => { wantTag = e.target.value; load(); });
$("#gain-mode").addEventListener("change", () => cur && cur.maps && drawGains());
setInterval(() => { if (!document.hidden) load(); }, 60000);
load();
