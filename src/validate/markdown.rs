//! `report.md`: the header of targets, then one section per study with its
//! table and figures (the numbers are those of `report.json`).

use std::fmt::Write;

use super::metrics::{Confusion, Efficiency, ValidationReport};

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.1} %", 100.0 * x)
    } else {
        "-".into()
    }
}

fn num(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "-".into()
    }
}

fn edge(lo: u64, hi: Option<u64>) -> String {
    match hi {
        Some(h) if h == lo + 1 => lo.to_string(),
        Some(h) => format!("{lo}-{}", h - 1),
        None => format!(">= {lo}"),
    }
}

fn efficiency_table(out: &mut String, e: &Efficiency, what: &str) {
    let _ = writeln!(
        out,
        "| {} | signals | pulse found | classified {what} | efficiency |",
        e.variable
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for b in e.bins.iter().filter(|b| b.events > 0) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} +- {} |",
            edge(b.lo, b.hi),
            b.events,
            b.found,
            b.classified,
            pct(b.efficiency),
            pct(b.error)
        );
    }
    let _ = writeln!(
        out,
        "\n>= {}: {}/{} = **{}**\n",
        e.threshold,
        e.ok_above,
        e.n_above,
        pct(e.efficiency_above)
    );
}

fn confusion_table(out: &mut String, c: &Confusion, corner: &str) {
    let _ = writeln!(out, "| {corner} | {} |", c.columns.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(c.columns.len()));
    for (name, row) in c.rows.iter().zip(&c.counts) {
        let cells: Vec<String> = row.iter().map(usize::to_string).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn figure(out: &mut String, r: &ValidationReport, name: &str, alt: &str) {
    if r.figures.iter().any(|f| f == name) {
        let _ = writeln!(out, "![{alt}]({name})\n");
    }
}

/// The Markdown report.
pub(super) fn render(r: &ValidationReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Reconstruction validation against simulation truth\n");
    let _ = writeln!(
        o,
        "tpcflow {}, conditions `{}`: {} events matched to truth in {} file(s), {} with one truth vertex.\n",
        r.software_version,
        r.conditions_tag,
        r.matched_events,
        r.files.len(),
        r.single_vertex_events
    );
    let _ = writeln!(o, "## Targets of the reconstruction\n");
    let _ = writeln!(o, "| target | requirement | measured | events | status |");
    let _ = writeln!(o, "|---|---|---|---:|---|");
    for t in &r.targets {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | **{}** |",
            t.name,
            t.target,
            t.measured,
            t.events,
            t.status()
        );
    }
    let met = r.targets.iter().filter(|t| t.met == Some(true)).count();
    let judged = r.targets.iter().filter(|t| t.met.is_some()).count();
    let _ = writeln!(
        o,
        "\n{met} of {judged} judged targets met ({} not judged: fewer than {} events).\n",
        r.targets.len() - judged,
        super::metrics::MIN_EVENTS
    );
    for t in r.targets.iter().filter(|t| !t.note.is_empty()) {
        let _ = writeln!(o, "- {}: {}", t.name, t.note);
    }
    o.push('\n');
    let _ = writeln!(o, "## Inputs\n");
    let _ = writeln!(
        o,
        "Events are matched by event id to the truth of their raw file. Salted science files are not validated (their salt events have no truth and their ids may be renumbered); RQ events without truth are counted and skipped.\n"
    );
    let _ = writeln!(
        o,
        "| RQ file | raw input | truth | RQ events | matched | RQ without truth | truth without RQ |"
    );
    let _ = writeln!(o, "|---|---|---|---:|---:|---:|---:|");
    for f in &r.files {
        let name = |p: &std::path::Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            name(&f.rq),
            f.input_file,
            name(&f.truth),
            f.rq_events,
            f.matched,
            f.rq_without_truth,
            f.truth_without_rq
        );
    }
    for n in &r.notes {
        let _ = writeln!(o, "- {n}");
    }
    o.push('\n');

    let _ = writeln!(o, "## S1 and S2 finding efficiency\n");
    let _ = writeln!(o, "Single-vertex events. An S1 counts when a pulse starting within [-50, +300] ns of the truth S1 is classified S1, which requires the 3-fold coincidence (>= 3 PMTs with a hit within +-100 ns of the peak). An S2 counts when the largest pulse overlapping the electrons' arrival window is classified S2.\n");
    efficiency_table(&mut o, &r.s1_efficiency, "S1");
    figure(&mut o, r, "s1_efficiency.svg", "S1 efficiency");
    efficiency_table(&mut o, &r.s2_efficiency, "S2");
    figure(&mut o, r, "s2_efficiency.svg", "S2 efficiency");

    let _ = writeln!(o, "## Pulse classification\n");
    let _ = writeln!(
        o,
        "Truth signal (rows) against the kind of the reconstructed pulse found for it (columns).\n"
    );
    confusion_table(&mut o, &r.classification, "truth \\ reco");

    let d = &r.drift;
    let _ = writeln!(o, "## Drift time and z\n");
    let _ = writeln!(
        o,
        "Single scatters (one truth vertex, reconstructed SS) with >= 5 extracted electrons: {} events. |drift residual| 68 % / 95 %: {} / {} ns; |z residual| 68 % / 95 %: {} / {} mm. Within 100 ns: {} of all, {} of the {} whose expected spread is below 38.8 ns. Pull (residual / expected spread from diffusion, EL width and S1 photon statistics): mean {}, sd {}.\n",
        d.events,
        num(d.abs_68_ns, 1),
        num(d.abs_95_ns, 1),
        num(d.z_abs_68_mm, 3),
        num(d.z_abs_95_mm, 3),
        pct(d.within_100ns),
        pct(d.within_100ns_resolvable),
        d.resolvable_events,
        num(d.pull_mean, 3),
        num(d.pull_sd, 3)
    );
    let _ = writeln!(o, "| electrons | events | median [ns] | r68 [ns] | z r68 [mm] | within 100 ns | pull sd | expected spread [ns] |");
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for b in &d.bins {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            edge(b.lo, b.hi),
            b.events,
            num(b.median_ns, 1),
            num(b.r68_ns, 1),
            num(b.z_r68_mm, 3),
            pct(b.within_100ns),
            num(b.pull_sd, 3),
            num(b.expected_spread_ns, 1)
        );
    }
    o.push('\n');
    figure(&mut o, r, "drift_residuals.svg", "drift residuals");
    figure(&mut o, r, "z_residuals.svg", "z residuals");
    figure(&mut o, r, "drift_pulls.svg", "drift pulls");

    let x = &r.xy;
    let _ = writeln!(o, "## xy against the Cramer-Rao bound\n");
    let _ = writeln!(o, "Single-vertex events whose main S2 is the truth S2 ({} events). The bound is computed at the true position with the true S2 x top fraction; the simulator also scatters the light's centroid by sigma_xy / sqrt(min(N_e, 16)) (diffusion).\n", x.events);
    let _ = writeln!(o, "| S2 [phd] | events | rms [mm] | core sd [mm] | CRB [mm] | CRB (+) diff [mm] | res/CRB | res/(CRB (+) diff) | pull sd |");
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for b in &x.bins {
        let _ = writeln!(
            o,
            "| {:.0}-{:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            b.lo,
            b.hi,
            b.events,
            num(b.rms_mm, 2),
            num(b.core_sd_mm, 2),
            num(b.crb_mm, 2),
            num(b.crb_diff_mm, 2),
            num(b.res_over_crb, 3),
            num(b.res_over_crb_diff, 3),
            num(b.pull_sd, 3)
        );
    }
    let _ = writeln!(
        o,
        "\n1e3-1e5 phd single scatters: {} events, res/CRB {}, res/(CRB (+) diffusion) {}, pull mean {} sd {}.\n",
        x.in_range_events,
        num(x.ratio_crb, 3),
        num(x.ratio_crb_diff, 3),
        num(x.pull_mean, 3),
        num(x.pull_sd, 3)
    );
    for l in &x.lux {
        let _ = writeln!(
            o,
            "- {:.0} detected S2 photons: LUX {} mm (arXiv:1710.02752, 2-inch PMTs); our bound {} mm at the centre, {} mm at r = 400 mm",
            l.s2_phd,
            l.lux_mm,
            num(l.crb_centre_mm, 2),
            num(l.crb_r400_mm, 2)
        );
    }
    o.push('\n');
    xy_truth_section(&mut o, r);
    figure(&mut o, r, "xy_resolution.svg", "xy resolution");
    figure(&mut o, r, "xy_pulls.svg", "xy pulls");

    let _ = writeln!(o, "## Single vs multiple scatter\n");
    let _ = writeln!(o, "Clear truth only: S1 >= 10 phd, every vertex >= 10 extracted electrons, every S2 >= 10 % of the largest; dz is the largest vertical distance between vertices. SS fraction of singles {}, MS fraction for dz >= 10 mm {}.\n", pct(r.ss_fraction_singles), pct(r.ms_fraction_dz10));
    confusion_table(&mut o, &r.scatter, "truth \\ reco");

    let k = &r.kr83m;
    let _ = writeln!(o, "## Energy\n");
    let _ = writeln!(
        o,
        "kr83m (41.5 keV): {} events, {} reconstructed as single scatters; peak {} keV ({} from the line), median {} keV, sigma {} keV, sigma/E {}.\n",
        k.events,
        k.ss_events,
        num(k.peak_kev, 2),
        pct(k.deviation),
        num(k.median_kev, 2),
        num(k.sigma_kev, 2),
        pct(k.sigma_over_e)
    );
    figure(&mut o, r, "kr83m_energy.svg", "kr83m energy");
    let e = &r.er_energy;
    let _ = writeln!(
        o,
        "er-flat (tritium-like ER, 0.5-20 keV): {} single scatters, median reco/true {}.\n",
        e.events,
        num(e.median_ratio, 3)
    );
    let _ = writeln!(
        o,
        "| true energy [keV] | events | median reco/true | resolution sigma/E |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|");
    for b in &e.bins {
        let _ = writeln!(
            o,
            "| {}-{} | {} | {} | {} |",
            b.lo_kev,
            b.hi_kev,
            b.events,
            num(b.median_ratio, 3),
            pct(b.resolution)
        );
    }
    o.push('\n');
    figure(&mut o, r, "er_energy.svg", "er-flat energy");
    if let Some(c) = &r.calibration {
        o.push_str(&crate::calibrate::truth_check::markdown_vs_truth(c));
        o.push('\n');
    }
    let _ = writeln!(o, "All numbers are in `report.json`.");
    o
}

/// xy against the bound of the true detector, with the baseline beside.
fn xy_truth_section(o: &mut String, r: &ValidationReport) {
    let Some(t) = &r.xy_truth else {
        return;
    };
    let _ = writeln!(o, "### xy against the bound of the true detector\n");
    let _ = writeln!(o, "The bound computed with the detector the events were simulated with ({}: its light response, per-PMT efficiencies and dead channels), which the reconstruction was not told; {} events.\n", t.detector, t.xy.events);
    let base = r.xy_baseline.as_ref();
    let base_truth = base.and_then(|b| b.truth.as_ref());
    let tag = base.map_or(String::new(), |b| b.conditions_tag.clone());
    if base.is_some() {
        let _ = writeln!(o, "| S2 [phd] | events | rms [mm] | true CRB [mm] | true CRB (+) diff [mm] | res/(true CRB (+) diff) | rms with {tag} [mm] | with {tag}: res/(true CRB (+) diff) |");
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|");
    } else {
        let _ = writeln!(o, "| S2 [phd] | events | rms [mm] | true CRB [mm] | true CRB (+) diff [mm] | res/(true CRB (+) diff) |");
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
    }
    for b in &t.xy.bins {
        let mut line = format!(
            "| {:.0}-{:.0} | {} | {} | {} | {} | {} |",
            b.lo,
            b.hi,
            b.events,
            num(b.rms_mm, 2),
            num(b.crb_mm, 2),
            num(b.crb_diff_mm, 2),
            num(b.res_over_crb_diff, 3)
        );
        if let Some(base) = base {
            let rms = base
                .xy
                .bins
                .iter()
                .find(|x| x.lo == b.lo)
                .map_or(f64::NAN, |x| x.rms_mm);
            let ratio = base_truth
                .and_then(|t| t.xy.bins.iter().find(|x| x.lo == b.lo))
                .map_or(f64::NAN, |x| x.res_over_crb_diff);
            let _ = write!(line, " {} | {} |", num(rms, 2), num(ratio, 3));
        }
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(
        o,
        "\n1e3-1e5 phd single scatters: {} events, res/(true CRB (+) diffusion) {}{}.\n",
        t.xy.in_range_events,
        num(t.xy.ratio_crb_diff, 3),
        base_truth.map_or(String::new(), |b| format!(
            "; with {tag}: {}",
            num(b.xy.ratio_crb_diff, 3)
        ))
    );
}
