// Families page: campaigns with progress, expandable per run, from /api/families.
"use strict";
let filter = new URLSearchParams(location.search).get("q") || "";
$("#filter").value = filter;
const expanded = new Set();
function bar(done, failed, total) {
  const pct = v => (total > 0 ? (100 * v) / total : 0).toFixed(1) + "%";
  // Widths through the CSSOM: the Content-Security-Policy forbids inline style attributes.
  const d = el("span", { class: "done" }), f = el("span", { class: "failed" });
  d.style.width = pct(done); f.style.width = pct(failed);
  return el("span", { class: "progress", title: `${done} done, ${failed} failed of ${total}` }, d, f);
}
function familyRow(f) {
  const tr = el("tr", { "data-family": f.name, class: "family" });
  tr.append(el("td", { class: "l", text: f.name, title: `runs ${f.first_run}-${f.last_run}, conditions ${f.conditions_tag}, lineage ${f.lineage_hash}` }));
  tr.append(el("td", { class: "l", text: f.start_date }));
  tr.append(el("td", { class: "c-samples", text: String(f.samples) }));
  const sim = f.simulation;
  tr.append(el("td", { class: "l state-" + f.status, text: (f.prompt ? "prompt · " : sim ? "simulation · " : "") + f.status }));
  // A simulation family: its production first, then its reconstruction out of every file it makes.
  const total = sim ? sim.files : f.tasks;
  const progress = el("td", { class: "l" });
  if (sim) {
    progress.append(el("span", { class: "c-sim", title: `runs ${sim.first_run}-${sim.last_run}: made at USDC ${sim.made_at_usdc}, UKDC ${sim.made_at_ukdc}; ${sim.in_flight} in flight` },
      bar(sim.simulated, sim.failed, sim.files), " simulated ",
      el("span", { class: "c-simulated", text: String(sim.simulated) }), " / ", el("span", { class: "c-sim-failed", text: String(sim.failed) }),
      " / ", el("span", { class: "c-sim-files", text: String(sim.files) })), el("br"), "reconstructed ");
  }
  progress.append(bar(f.done, f.failed, total), " ",
    el("span", { class: "c-done", text: String(f.done) }), " / ", el("span", { class: "c-failed", text: String(f.failed) }),
    " / ", el("span", { class: "c-tasks", text: String(total) }));
  tr.append(progress);
  const btn = el("button", { type: "button", class: "expand", text: expanded.has(f.name) ? "− collapse" : "+ expand" });
  btn.addEventListener("click", () => toggle(f.name, tr, btn));
  tr.append(el("td", {}, btn));
  return tr;
}
async function toggle(name, tr, btn) {
  const subs = document.querySelectorAll(`tr.sub[data-of="${CSS.escape(name)}"]`);
  if (expanded.has(name)) { expanded.delete(name); subs.forEach(s => s.remove()); btn.textContent = "+ expand"; return; }
  expanded.add(name); btn.textContent = "− collapse";
  await expand(name, tr);
}
async function expand(name, tr) {
  const { ok, data } = await getJSON("/api/family?name=" + encodeURIComponent(name));
  if (!ok) { setStatus(data.error, "error"); return; }
  let after = tr;
  for (const r of data.runs) {
    const sub = el("tr", { class: "sub", "data-of": name, "data-run": r.run },
      el("td", { class: "l" }, "run ", el("a", { href: "/event?run=" + r.run, text: String(r.run) })),
      el("td", { class: "l", text: (r.start_time || "–").slice(0, 10) }),
      el("td", { text: "" }),
      el("td", { class: "l", text: r.in_flight ? `${r.in_flight} in flight` : "" }),
      el("td", { class: "l" }, bar(r.done, r.failed, r.tasks), " ",
        el("span", { class: "c-done", text: String(r.done) }), " / ", el("span", { class: "c-failed", text: String(r.failed) }),
        " / ", el("span", { class: "c-tasks", text: String(r.tasks) })),
      el("td", {}));
    after.after(sub); after = sub;
  }
  setStatus(`expanded ${name}: ${data.runs.length} runs`, "loaded");
}
async function load() {
  const q = filter.trim() ? "?q=" + encodeURIComponent(filter.trim()) : "";
  history.replaceState(null, "", q || location.pathname);
  const { ok, data } = await getJSON("/api/families" + q);
  const body = $("#families-table tbody");
  if (!ok) { body.replaceChildren(); setStatus(data.error || "error", "error"); return; }
  body.replaceChildren(...data.families.map(familyRow));
  for (const f of data.families) if (expanded.has(f.name)) await expand(f.name, $(`tr.family[data-family="${CSS.escape(f.name)}"]`));
  setStatus(`${data.families.length} of ${data.total} families`, "loaded");
}
$("#filter").addEventListener("input", debounce(e => { filter = e.target.value; load(); }, 250));
setInterval(() => { if (!document.hidden) load(); }, 30000);
load();
