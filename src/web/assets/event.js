// Event display: header, waveforms, pulses, hit maps, drawn as SVG from /api/event.
"use strict";
let cur = null;                       // the last /api/event answer
const want = { run: null, event: null, pulse: null, xmin: null, xmax: null };
function apiQuery() {
  const p = new URLSearchParams({ run: want.run });
  if (want.event !== null) p.set("event", want.event);
  if (want.pulse !== null) p.set("pulse", want.pulse);
  if (want.xmin !== null && want.xmax !== null) { p.set("xmin_us", want.xmin); p.set("xmax_us", want.xmax); }
  return p.toString();
}
async function load() {
  if (want.run === null || want.run === "") { setStatus("type a run and event number", "idle"); return; }
  const q = apiQuery();
  history.replaceState(null, "", "?" + q);
  $("#export").href = "/api/event?" + q;
  $("#export").setAttribute("download", `run${want.run}_event${want.event ?? "first"}.json`);
  setStatus("loading…", "loading");
  const { ok, data } = await getJSON("/api/event?" + q);
  if (!ok) { setStatus(data.error || "error", "error"); return; }
  cur = data; want.event = data.header.event_id; want.pulse = data.selected_pulse;
  $("#run").value = data.header.run; $("#event").value = data.header.event_id;
  const q2 = apiQuery();
  history.replaceState(null, "", "?" + q2);
  $("#export").href = "/api/event?" + q2;
  $("#export").setAttribute("download", `run${data.header.run}_event${data.header.event_id}.json`);
  render();
  setStatus(`event ${data.header.event_id} of run ${data.header.run} (${data.events_in_run} events)`, "loaded");
}
function render() {
  const d = cur, h = d.header;
  $("#prev-event").disabled = d.previous_event === null; $("#next-event").disabled = d.next_event === null;
  $("#source").textContent = `RQ file found in data catalog: ${d.rq.path} (event ${d.rq.event_index + 1} / ${d.rq.events_in_file} in the file)` +
    (d.raw ? ` · waveforms from ${d.raw.file} at ${d.raw.site}` : "") + (d.warnings.length ? " · " + d.warnings.join("; ") : "");
  const items = [
    ["Run, Event ID", `${h.run}, ${h.event_id}`, "run-event"],
    ["Trigger time [ns]", fmt(h.trigger_time_ns), "trigger"],
    ["Interaction", h.interaction, "interaction"],
    ["S1 pulse ID", h.s1_pulse === null ? "–" : String(h.s1_pulse), "s1-pulse"],
    ["S2 pulse IDs", "[" + h.s2_pulses.join(" ") + "]", "s2-pulses"],
    ["Drift time [ns]", fmt(h.drift_time_ns, 1), "drift"],
    ["S1 area [phd]", fmt(h.s1_area_phd, 2), "s1"], ["S2 area [phd]", fmt(h.s2_area_phd, 2), "s2"],
    ["S1c [phd]", fmt(h.s1c_phd, 2), "s1c"], ["S2c [phd]", fmt(h.s2c_phd, 2), "s2c"],
    ["x [mm]", fmt(h.x_mm, 2), "x"], ["y [mm]", fmt(h.y_mm, 2), "y"], ["z [mm]", fmt(h.z_mm, 2), "z"],
    ["Energy [keV]", fmt(h.energy_kev, 3), "energy"],
    ["Software / conditions", `tpcflow ${h.software_version} / condTag ${d.rq.conditions_tag}` +
      (d.rq.conditions_sha256 ? ` (${d.rq.conditions_sha256.slice(0, 12)})` : ""), "software"],
    ["Lineage", h.lineage_hash, "lineage"],
  ];
  $("#header").replaceChildren(...items.map(([k, v, id]) => el("div", {}, el("b", { text: k }), el("span", { id: "h-" + id, text: v }))));
  $("#lineage-json")?.remove();
  $("#h-lineage").title = JSON.stringify(d.rq.lineage, null, 1);
  drawSummed(); drawPulse(); drawPulses(); drawHitmaps(); drawChannels();
}
function stepPath(tr, X, Y) {
  let p = "";
  tr.values.forEach((v, i) => {
    const a = (tr.t0_ns + i * tr.bin_ns) / 1e3, b = a + tr.bin_ns / 1e3;
    p += (i ? "L" : "M") + X(a).toFixed(1) + "," + Y(v).toFixed(1) + "L" + X(b).toFixed(1) + "," + Y(v).toFixed(1);
  });
  return p;
}
function drawSummed() {
  const svg = $("#summed"); svg.replaceChildren();
  $("#wferror").textContent = cur.waveform_error ? "No waveforms: " + cur.waveform_error : "";
  const w = cur.waveform; if (!w) return;
  const x0 = cur.raw.range_ns[0] / 1e3, x1 = cur.raw.range_ns[1] / 1e3;
  $("#xmin").value = fmt(x0, 3); $("#xmax").value = fmt(x1, 3);
  const ymax = Math.max(1e-3, ...w.top.values, ...w.bottom.values) * 1.05;
  const ymin = Math.min(0, ...w.top.values, ...w.bottom.values);
  const { X, Y } = axes(svg, x0, x1, ymin, ymax, [60, 10, 1020, 250], "time in event window [μs]", "phd / sample");
  if ($("#shade").checked) cur.pulses.forEach(p => {
    const a = Math.max(x0, p.start_ns / 1e3), b = Math.min(x1, p.end_ns / 1e3);
    if (b <= a) return;
    const r = sv("rect", { class: `pulse ${p.kind_name}${p.index === cur.selected_pulse ? " sel" : ""}`, x: X(a), y: 10,
      width: Math.max(2, X(b) - X(a)), height: 250, "data-pulse": p.index });
    r.append(sv("title", {}, `pulse ${p.index}: ${p.kind_name}, ${fmt(p.area_phd, 1)} phd`));
    r.addEventListener("click", () => selectPulse(p.index));
    svg.append(r);
  });
  if ($("#pods").checked) drawPods(svg, cur.pods, X, x0, x1, 10, 250);
  svg.append(sv("path", { class: "bottom", d: stepPath(w.bottom, X, Y) }));
  svg.append(sv("path", { class: "top", d: stepPath(w.top, X, Y) }));
  $("#podinfo").textContent = $("#pods").checked ? `${cur.pods.length} pods (DAQ buffers) overlap the range` +
    (cur.pods_truncated ? " (more not listed)" : "") + ": a pair of lines marks each one's start and end" : "";
}
// Pod boundaries: for each pod a group with a line at its start and at its end.
function drawPods(svg, pods, X, x0, x1, top, height) {
  const g = sv("g", { class: "pods" });
  for (const p of pods) {
    const pod = sv("g", { class: "pod", "data-channel": p.channel, "data-start-ns": p.start_ns, "data-end-ns": p.end_ns });
    for (const [t, k] of [[p.start_ns, "pod-start"], [p.end_ns, "pod-end"]]) {
      const u = Math.min(x1, Math.max(x0, t / 1e3));
      pod.append(sv("line", { class: "pod-edge " + k, x1: X(u), x2: X(u), y1: top, y2: top + height }));
    }
    pod.append(sv("title", {}, `pod of channel ${p.channel}: ${fmt(p.start_ns / 1e3, 3)}-${fmt(p.end_ns / 1e3, 3)} μs`));
    g.append(pod);
  }
  svg.append(g);
}
// The selected pulse: its summed waveform (both arrays) and area-fraction-time markers.
function drawPulse() {
  const svg = $("#pulse-wf"); svg.replaceChildren();
  const pw = cur.pulse_waveform;
  $("#pulse-title").textContent = pw ? `pulse ${pw.pulse} (${cur.pulses[pw.pulse].kind_name}), both arrays summed; lines: area-fraction times` : "(no pulse selected or no waveforms)";
  $("#aft-list").textContent = pw ? "Area-fraction times [μs]: " + (pw.aft.length
    ? pw.aft.map(a => `${fmt(100 * a.fraction, 0)} % at ${fmt(a.time_ns / 1e3, 4)}`).join(", ") : "none (no positive area)") : "";
  if (!pw) return;
  const tr = pw.trace, x0 = tr.t0_ns / 1e3, x1 = (tr.t0_ns + tr.values.length * tr.bin_ns) / 1e3;
  const box = [60, 10, 1020, 200];
  Object.entries({ "x0-us": x0, "x1-us": x1, left: box[0], width: box[2] }).forEach(([k, v]) => svg.setAttribute("data-" + k, v));
  const { X, Y } = axes(svg, x0, x1, Math.min(0, ...tr.values), Math.max(1e-3, ...tr.values) * 1.15, box, "time in event window [μs]", "phd / sample");
  svg.append(sv("rect", { class: `pulse ${cur.pulses[pw.pulse].kind_name}`, x: X(pw.start_ns / 1e3), y: 10,
    width: Math.max(1, X(pw.end_ns / 1e3) - X(pw.start_ns / 1e3)), height: 200 }));
  svg.append(sv("path", { class: "sum", d: stepPath(tr, X, Y) }));
  pw.aft.forEach((a, i) => {
    const x = X(a.time_ns / 1e3);
    const m = sv("line", { class: "aft", x1: x, x2: x, y1: 10, y2: 210, "data-fraction": a.fraction, "data-time-ns": a.time_ns });
    m.append(sv("title", {}, `${fmt(100 * a.fraction, 0)} % of the area at ${fmt(a.time_ns / 1e3, 4)} μs`));
    svg.append(m);
    svg.append(sv("text", { class: "aft-label", x: x + 2, y: 22 + 12 * i }, `${fmt(100 * a.fraction, 0)} %`));
  });
}
function drawPulses() {
  $("#pulses tbody").replaceChildren(...cur.pulses.map(p => {
    const tr = el("tr", { "data-pulse": p.index, class: p.index === cur.selected_pulse ? "sel" : null },
      el("td", { text: String(p.index) }), el("td", { class: "l", text: p.kind_name }),
      el("td", { text: fmt(p.start_ns / 1e3, 3) }), el("td", { text: fmt(p.end_ns / 1e3, 3) }),
      el("td", { text: fmt(p.area_phd, 2) }), el("td", { text: fmt(p.area_fraction_top, 3) }),
      el("td", { text: fmt(p.width_50_ns, 0) }), el("td", { text: String(p.n_channels) }));
    tr.addEventListener("click", () => selectPulse(p.index));
    return tr;
  }));
}
function scaleRange() {
  const hm = cur.hitmap;
  if ($("#adaptive").checked || !hm) { if (hm) { $("#cmin").value = fmt(hm.min_phd, 3); $("#cmax").value = fmt(hm.max_phd, 3); } return hm ? [hm.min_phd, hm.max_phd] : [0, 1]; }
  const a = parseFloat($("#cmin").value), b = parseFloat($("#cmax").value);
  return [isFinite(a) ? a : hm.min_phd, isFinite(b) && b > a ? b : hm.max_phd];
}
function drawArray(svg, title, offset, areas, lo, hi) {
  svg.replaceChildren();
  const pm = cur.pmts, R = pm.radius_mm * 1.08, S = 170 / R, cx = 180, cy = 195;
  svg.append(sv("text", { x: cx, y: 14, "text-anchor": "middle" }, title));
  svg.append(sv("circle", { cx, cy, r: pm.radius_mm * S, fill: "none", stroke: "#bbb" }));
  areas.forEach((a, k) => {
    const ch = k + offset, t = hi > lo ? (a - lo) / (hi - lo) : 1;
    const c = sv("circle", { class: "pmt" + (a > 0 ? "" : " empty"), cx: cx + pm.x[ch] * S, cy: cy - pm.y[ch] * S,
      r: (pm.pitch_mm / 2) * 0.92 * S, "data-channel": ch });
    if (a > 0) c.setAttribute("fill", colour(t));
    c.append(sv("title", {}, `channel ${ch}: ${fmt(a, 2)} phd`));
    svg.append(c);
  });
}
function drawHitmaps() {
  const hm = cur.hitmap;
  $("#hit-title").textContent = hm ? `pulse ${hm.pulse} (${cur.pulses[hm.pulse].kind_name})` : "(no pulse selected)";
  const [lo, hi] = scaleRange();
  drawArray($("#hit-top"), "Top array", 0, hm ? hm.top : [], lo, hi);
  drawArray($("#hit-bottom"), "Bottom array", cur.pmts.n_top, hm ? hm.bottom : [], lo, hi);
  const cb = $("#colorbar"); cb.replaceChildren();
  for (let i = 0; i < 50; i++) cb.append(sv("rect", { x: 10, y: 40 + (49 - i) * 6, width: 18, height: 6.5, fill: colour(i / 49) }));
  cb.append(sv("text", { x: 4, y: 30 }, "phd"));
  cb.append(sv("text", { x: 32, y: 46 }, fmt(hi, 1))); cb.append(sv("text", { x: 32, y: 340 }, fmt(lo, 1)));
}
function drawChannels() {
  $("#channels").replaceChildren(...cur.channels.map(c => {
    const svg = sv("svg", { width: 330, height: 130, "data-channel": c.channel });
    const v = c.trace.values, x0 = c.trace.t0_ns / 1e3, x1 = (c.trace.t0_ns + v.length * c.trace.bin_ns) / 1e3;
    const { X, Y } = axes(svg, x0, x1, Math.min(0, ...v), Math.max(1e-3, ...v) * 1.05, [44, 18, 276, 90], null, null, 3);
    svg.append(sv("text", { x: 48, y: 12 }, `ch ${c.channel} (${c.top ? "top" : "bottom"}) · ${fmt(c.area_phd, 1)} phd`));
    if ($("#pods").checked) drawPods(svg, c.pods, X, x0, x1, 18, 90);
    svg.append(sv("path", { class: c.top ? "top" : "bottom", d: stepPath(c.trace, X, Y) }));
    return el("div", { class: "panel" }, svg);
  }));
}
function selectPulse(k) { want.pulse = k; load(); }
$("#pick").addEventListener("submit", e => {
  e.preventDefault(); want.run = $("#run").value.trim(); want.event = $("#event").value.trim() || null;
  want.pulse = null; want.xmin = want.xmax = null; load();
});
$("#prev-event").addEventListener("click", () => { if (cur && cur.previous_event !== null) { want.event = cur.previous_event; want.pulse = null; load(); } });
$("#next-event").addEventListener("click", () => { if (cur && cur.next_event !== null) { want.event = cur.next_event; want.pulse = null; load(); } });
$("#xrange").addEventListener("submit", e => { e.preventDefault(); want.xmin = $("#xmin").value.trim(); want.xmax = $("#xmax").value.trim(); load(); });
$("#xreset").addEventListener("click", () => { want.xmin = want.xmax = null; load(); });
$("#shade").addEventListener("change", () => cur && drawSummed());
$("#pods").addEventListener("change", () => { if (cur) { drawSummed(); drawChannels(); } });
$("#scale").addEventListener("submit", e => { e.preventDefault(); $("#adaptive").checked = false; cur && drawHitmaps(); });
$("#adaptive").addEventListener("change", () => cur && drawHitmaps());
const u = new URLSearchParams(location.search);
want.run = u.get("run"); want.event = u.get("event");
want.pulse = u.get("pulse"); want.xmin = u.get("xmin_us"); want.xmax = u.get("xmax_us");
if (want.run !== null) load();
