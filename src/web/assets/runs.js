// Runs page: the run table of data movement, drawn from /api/runs.
"use strict";
const st = { runs: "", q: "", missing: false, page: 1, per_page: 100 };
const url0 = new URLSearchParams(location.search);
st.runs = url0.get("runs") || ""; st.q = url0.get("q") || "";
st.missing = ["1", "true", "yes", "on"].includes((url0.get("missing_first") || "").toLowerCase());
st.page = parseInt(url0.get("page") || "1", 10) || 1; st.per_page = parseInt(url0.get("per_page") || "100", 10) || 100;
$("#runs").value = st.runs; $("#filter").value = st.q; $("#missing").checked = st.missing;

function query() {
  const p = new URLSearchParams();
  if (st.runs.trim()) p.set("runs", st.runs.trim());
  if (st.q.trim()) p.set("q", st.q.trim());
  if (st.missing) p.set("missing_first", "1");
  if (st.page > 1) p.set("page", st.page);
  if (st.per_page !== 100) p.set("per_page", st.per_page);
  return p.toString();
}
const COLS = ["files", "surf", "usdc", "ukdc", "archive", "reconstructed", "failed"];
function row(r) {
  const tr = el("tr", { "data-run": r.run, class: r.missing_files ? "missing" : null });
  tr.append(el("td", {}, el("a", { href: "/event?run=" + r.run, text: String(r.run) })));
  tr.append(el("td", { class: "l", text: r.run_type }));
  tr.append(el("td", { class: "l", text: (r.start_time || "–").replace("T", " ").replace("Z", "") }));
  for (const c of COLS) {
    const short = (["usdc", "ukdc", "archive", "surf"].includes(c) && r[c] < r.files) || (c === "failed" && r[c] > 0);
    tr.append(el("td", { class: "c-" + c + (short ? " num-short" : ""), text: String(r[c]) }));
  }
  return tr;
}
let inflight = 0;
async function load() {
  const my = ++inflight, q = query();
  history.replaceState(null, "", q ? "?" + q : location.pathname);
  setStatus("loading…", "loading");
  const { ok, data } = await getJSON("/api/runs" + (q ? "?" + q : ""));
  if (my !== inflight) return;
  const body = $("#runs-table tbody");
  if (!ok) { body.replaceChildren(); setStatus(data.error || "error", "error"); return; }
  body.replaceChildren(...data.rows.map(row));
  st.page = data.page;
  $("#pageinfo").textContent = ` page ${data.page} of ${data.pages} `;
  $("#prev").disabled = data.page <= 1; $("#next").disabled = data.page >= data.pages;
  let msg = `${data.matched} of ${data.total_runs} runs · read ${data.read_at.replace("T", " ").replace("Z", " UTC")}`;
  if (data.not_found.length) msg += ` · not in the catalog: ${data.not_found.join(" ")}`;
  setStatus(msg, "loaded");
}
$("#lookup").addEventListener("submit", e => { e.preventDefault(); st.runs = $("#runs").value; st.page = 1; load(); });
$("#all-btn").addEventListener("click", () => { $("#runs").value = ""; st.runs = ""; st.page = 1; load(); });
$("#missing").addEventListener("change", e => { st.missing = e.target.checked; st.page = 1; load(); });
$("#filter").addEventListener("input", debounce(e => { st.q = e.target.value; st.page = 1; load(); }, 250));
$("#prev").addEventListener("click", () => { st.page = Math.max(1, st.page - 1); load(); });
$("#next").addEventListener("click", () => { st.page += 1; load(); });
setInterval(() => { if (!document.hidden) load(); }, 30000);
load();
