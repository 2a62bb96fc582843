//! Reconstruction accuracy against simulation truth: S1 and S2 finding and
//! classification, drift time, xy against the Cramer-Rao bound, single vs
//! multiple scatter, and the kr83m energy peak.
//!
//! Events are simulated with controlled vertices (the simulator's physics and
//! digitiser, default conditions `v1`), reconstructed in memory with
//! `RecoConfig::default()`, and shared between the tests (one `OnceLock` per
//! sample). Every test prints its table (`--nocapture`) before asserting.
//!
//! ```text
//! singles  5000  one vertex, uniform in the volume: 2/3 ER log-uniform 0.03-150 keV,
//!                1/3 NR log-uniform 1-60 keV
//! small    1500  one vertex, ER log-uniform 0.02-1.5 keV (1-60 extracted electrons)
//! doubles  1200  two vertices dz uniform 0-40 mm apart (dxy < 30 mm), ER 5-50 keV split
//!                with weights U(0.2, 1) like the simulator's multiple scatters
//! kr83m     600  one vertex, ER 41.5 keV
//! ```

use std::sync::OnceLock;

use rand::Rng;
use rayon::prelude::*;
use tpcflow::conditions::Conditions;
use tpcflow::raw::OwnedEvent;
use tpcflow::sim::digitise::Digitiser;
use tpcflow::sim::event_rng;
use tpcflow::sim::quanta::Recoil;
use tpcflow::sim::signals::{Deposits, EventSimulator, VertexTruth};
use tpcflow::sim::source::{uniform_point, Vertex};
use tpcflow::validate::metrics::{clipped_mean_sd, mean_sd, norm_rms, quantile, XyRow};
use tpcflow_reco::interactions::s1_time_ns;
use tpcflow_reco::xy::excess_variance_factor;
use tpcflow_reco::{
    cramer_rao_xy, reconstruct_event_with, EventRecon, EventView, InteractionKind, PulseKind,
    PulseRq, RecoConfig, RecoScratch,
};

/// One simulated and reconstructed event.
struct Ev {
    truth: Vec<VertexTruth>,
    recon: EventRecon,
}

fn conditions() -> &'static Conditions {
    static COND: OnceLock<Conditions> = OnceLock::new();
    COND.get_or_init(|| Conditions::load("v1").expect("v1 conditions"))
}

/// Simulate the given vertex lists (one event each) and reconstruct them.
/// The interaction time puts the largest expected S2 at the trigger position,
/// as the simulator's `simulate_event` does.
fn simulate_and_reconstruct(events: Vec<Vec<Vertex>>, seed: u64) -> Vec<Ev> {
    let cond = conditions();
    let (m, p) = (&cond.detector, &cond.sim);
    let cfg = RecoConfig::default();
    events
        .into_par_iter()
        .enumerate()
        .map_init(
            || {
                (
                    Deposits::default(),
                    Digitiser::default(),
                    RecoScratch::default(),
                )
            },
            |(dep, dig, scratch), (i, vertices)| {
                let mut rng = event_rng(seed, 7, i as u64, 5);
                let mut sim = EventSimulator::new(m, p);
                let main = vertices
                    .iter()
                    .max_by(|a, b| {
                        sim.expected_s2_electrons(a)
                            .total_cmp(&sim.expected_s2_electrons(b))
                    })
                    .expect("one vertex");
                let t0 = m.params.daq.window_before_ns - m.drift_ns_from_z(main.z);
                let truth = sim.simulate(&mut rng, &vertices, t0, dep);
                let mut ev = OwnedEvent {
                    event_id: i as u64,
                    ..Default::default()
                };
                dig.digitise(
                    &mut rng,
                    m,
                    p.baseline_spread_adc,
                    sim.window_samples(),
                    dep,
                    &mut ev.pods,
                    &mut ev.samples,
                );
                let view = EventView {
                    event_id: ev.event_id,
                    trigger_time_ns: 0,
                    pods: &ev.pods,
                    samples: &ev.samples,
                };
                let recon = reconstruct_event_with(&view, m, &cfg, scratch).expect("valid event");
                Ev { truth, recon }
            },
        )
        .collect()
}

fn log_uniform<R: Rng>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi / lo).ln()).exp()
}

fn vertex_at((x, y, z): (f64, f64, f64), energy_kev: f64, recoil: Recoil) -> Vertex {
    Vertex {
        x,
        y,
        z,
        energy_kev,
        recoil,
    }
}

fn singles() -> &'static [Ev] {
    static S: OnceLock<Vec<Ev>> = OnceLock::new();
    S.get_or_init(|| {
        let m = &conditions().detector;
        let specs = (0..5000u64)
            .map(|i| {
                let mut rng = event_rng(11, 7, i, 1);
                let pos = uniform_point(&mut rng, m);
                if i % 3 == 0 {
                    vec![vertex_at(pos, log_uniform(&mut rng, 1.0, 60.0), Recoil::Nr)]
                } else {
                    vec![vertex_at(
                        pos,
                        log_uniform(&mut rng, 0.03, 150.0),
                        Recoil::Er,
                    )]
                }
            })
            .collect();
        simulate_and_reconstruct(specs, 11)
    })
}

fn small() -> &'static [Ev] {
    static S: OnceLock<Vec<Ev>> = OnceLock::new();
    S.get_or_init(|| {
        let m = &conditions().detector;
        let specs = (0..1500u64)
            .map(|i| {
                let mut rng = event_rng(12, 7, i, 1);
                let pos = uniform_point(&mut rng, m);
                vec![vertex_at(pos, log_uniform(&mut rng, 0.02, 1.5), Recoil::Er)]
            })
            .collect();
        simulate_and_reconstruct(specs, 12)
    })
}

fn doubles() -> &'static [Ev] {
    static S: OnceLock<Vec<Ev>> = OnceLock::new();
    S.get_or_init(|| {
        let m = &conditions().detector;
        let t = &m.params.tpc;
        let specs = (0..1200u64)
            .map(|i| {
                let mut rng = event_rng(13, 7, i, 1);
                let dz = rng.random_range(0.0..40.0);
                let (x, y, _) = uniform_point(&mut rng, m);
                let z1 = rng.random_range(t.cathode_z_mm + dz + 1.0..t.gate_z_mm - 1.0);
                let (d, phi) = (
                    rng.random_range(0.0..30.0),
                    rng.random_range(0.0..std::f64::consts::TAU),
                );
                let (mut x2, mut y2) = (x + d * phi.cos(), y + d * phi.sin());
                let r = x2.hypot(y2);
                if r > t.radius_mm - 1.0 {
                    x2 *= (t.radius_mm - 1.0) / r;
                    y2 *= (t.radius_mm - 1.0) / r;
                }
                let e = rng.random_range(5.0..50.0);
                let (w1, w2) = (rng.random_range(0.2..1.0), rng.random_range(0.2..1.0));
                vec![
                    vertex_at((x, y, z1), e * w1 / (w1 + w2), Recoil::Er),
                    vertex_at((x2, y2, z1 - dz), e * w2 / (w1 + w2), Recoil::Er),
                ]
            })
            .collect();
        simulate_and_reconstruct(specs, 13)
    })
}

fn kr83m() -> &'static [Ev] {
    static S: OnceLock<Vec<Ev>> = OnceLock::new();
    S.get_or_init(|| {
        let m = &conditions().detector;
        let specs = (0..600u64)
            .map(|i| {
                let mut rng = event_rng(14, 7, i, 1);
                vec![vertex_at(uniform_point(&mut rng, m), 41.5, Recoil::Er)]
            })
            .collect();
        simulate_and_reconstruct(specs, 14)
    })
}

/// Longitudinal diffusion of the electron cloud in time [ns] after `drift_ns`.
fn sigma_t_ns(drift_ns: f64) -> f64 {
    let c = conditions();
    (2.0 * c.sim.diffusion_long_mm2_per_us * drift_ns * 1e-3).sqrt()
        / c.detector.params.tpc.drift_velocity_mm_per_us
        * 1e3
}

/// Transverse diffusion [mm] after `drift_ns`.
fn sigma_xy_mm(drift_ns: f64) -> f64 {
    (2.0 * conditions().sim.diffusion_trans_mm2_per_us * drift_ns * 1e-3).sqrt()
}

/// The pulse holding a truth S2 (the largest one overlapping the electrons'
/// arrival window) and its index.
fn s2_pulse<'a>(ev: &'a Ev, v: &VertexTruth) -> Option<(usize, &'a PulseRq)> {
    let el = conditions().sim.el_width_ns;
    let s = sigma_t_ns(v.drift_ns);
    let (lo, hi) = (v.t_s2_ns - 2.0 * s, v.t_s2_ns + el + 2.0 * s);
    ev.recon
        .pulses
        .iter()
        .enumerate()
        .filter(|(_, p)| (p.end_ns as f64) > lo && (p.start_ns as f64) < hi)
        .max_by(|a, b| a.1.area_phd.total_cmp(&b.1.area_phd))
}

/// A pulse holding the truth S1 (starting within [-50, +300] ns of it), the
/// S1-classified one first.
fn s1_pulse<'a>(ev: &'a Ev, v: &VertexTruth) -> Option<&'a PulseRq> {
    let near = |p: &&PulseRq| {
        let t = p.start_ns as f64 - v.t_s1_ns;
        (-50.0..300.0).contains(&t)
    };
    let mut it = ev.recon.pulses.iter().filter(near);
    let first = it.clone().find(|p| p.kind == PulseKind::S1);
    first.or_else(|| it.next())
}

#[test]
fn s1_detection_efficiency_above_5_phd() {
    let mut bins: Vec<(u64, u64, usize, usize, usize)> = [
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 5),
        (5, 6),
        (6, 8),
        (8, 10),
        (10, 15),
        (15, 20),
        (20, 50),
        (50, 200),
        (200, u64::MAX),
    ]
    .iter()
    .map(|&(a, b)| (a, b, 0, 0, 0))
    .collect();
    let (mut n5, mut ok5) = (0usize, 0usize);
    for ev in singles().iter().chain(small()) {
        let v = &ev.truth[0];
        let found = s1_pulse(ev, v);
        let is_s1 = found.is_some_and(|p| p.kind == PulseKind::S1);
        if let Some(b) = bins.iter_mut().find(|b| v.s1_phd >= b.0 && v.s1_phd < b.1) {
            b.2 += 1;
            b.3 += usize::from(found.is_some());
            b.4 += usize::from(is_s1);
        }
        if v.s1_phd >= 5 {
            n5 += 1;
            ok5 += usize::from(is_s1);
        }
    }
    eprintln!("S1 efficiency vs truth S1 [phd] (S1 = width50 < 150 ns, rise < 100 ns, >= 3 PMTs with a hit within +-100 ns of the peak):");
    eprintln!("  phd        events  found  as S1   eff(S1)");
    for (a, b, n, f, s) in &bins {
        let hi = if *b == u64::MAX {
            "inf".to_string()
        } else {
            b.to_string()
        };
        eprintln!(
            "  [{a:>3},{hi:>4})  {n:>6} {f:>6} {s:>6}   {:.3}",
            *s as f64 / (*n).max(1) as f64
        );
    }
    let eff = ok5 as f64 / n5 as f64;
    eprintln!("  >= 5 phd: {ok5}/{n5} = {eff:.4} (target >= 0.95)");
    assert!(n5 > 1000, "only {n5} S1s of >= 5 phd");
    assert!(eff >= 0.95, "S1 efficiency above 5 phd {eff:.4} < 0.95");
}

#[test]
fn s2_classification_and_single_electrons() {
    // (lo, hi) extracted electrons -> (events, S2, SE, other kinds)
    let edges = [1u64, 2, 3, 4, 5, 7, 10, 20, 50, 200, 1000, u64::MAX];
    let mut table = vec![[0usize; 5]; edges.len() - 1];
    let (mut n5, mut ok5, mut n1, mut se1) = (0usize, 0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for ev in singles().iter().chain(small()) {
        let v = &ev.truth[0];
        if v.n_extracted == 0 {
            continue;
        }
        let kind = s2_pulse(ev, v).map(|(_, p)| p.kind);
        let b = edges
            .windows(2)
            .position(|w| v.n_extracted >= w[0] && v.n_extracted < w[1]);
        let row = &mut table[b.expect("binned")];
        row[0] += 1;
        match kind {
            Some(PulseKind::S2) => row[1] += 1,
            Some(PulseKind::SingleElectron) => row[2] += 1,
            Some(_) => row[3] += 1,
            None => row[4] += 1,
        }
        if v.n_extracted >= 5 {
            n5 += 1;
            if kind == Some(PulseKind::S2) {
                ok5 += 1;
            } else if failures.len() < 8 {
                failures.push((v.n_extracted, v.drift_ns, kind));
            }
        }
        if v.n_extracted == 1 {
            n1 += 1;
            se1 += usize::from(kind == Some(PulseKind::SingleElectron));
        }
    }
    eprintln!("S2 classification vs extracted electrons (largest pulse in the electrons' arrival window):");
    eprintln!("  electrons     events     S2     SE  other  none");
    for (w, r) in edges.windows(2).zip(&table) {
        let hi = if w[1] == u64::MAX {
            "inf".into()
        } else {
            w[1].to_string()
        };
        eprintln!(
            "  [{:>4},{hi:>4})  {:>7} {:>6} {:>6} {:>6} {:>5}",
            w[0], r[0], r[1], r[2], r[3], r[4]
        );
    }
    let eff = ok5 as f64 / n5 as f64;
    let se_eff = se1 as f64 / n1 as f64;
    eprintln!("  >= 5 electrons classified S2: {ok5}/{n5} = {eff:.4} (target >= 0.99)");
    eprintln!("  lone single electrons classified SE: {se1}/{n1} = {se_eff:.4}");
    eprintln!("  first failures (electrons, drift ns, kind): {failures:?}");
    // Random single electrons of the simulator (1 kHz over the 4.5 ms window):
    // pulses classified SE per event away from the S1/S2 of the vertex.
    let rate = conditions().sim.single_electron_rate_hz * 4.5e-3;
    let sample = singles();
    let n_se: usize = sample.iter().map(|e| e.recon.event.n_se as usize).sum();
    eprintln!(
        "  SE pulses per event in the singles sample: {:.2} (background SEs simulated: {rate:.2} per event)",
        n_se as f64 / sample.len() as f64
    );
    assert!(
        n5 > 1000 && n1 > 50,
        "sample too small: {n5} S2s, {n1} lone SEs"
    );
    assert!(eff >= 0.99, "S2 classification {eff:.4} < 0.99");
    assert!(se_eff >= 0.95, "lone SEs classified SE: {se_eff:.4}");
}

/// Irreducible spread of (reco - truth) drift time [ns] for one vertex: the
/// mean arrival of N_e electrons (sigma_t / sqrt(N_e)), the mean emission time
/// of the S2 photons over the EL width, and the S1 photons' mean delay
/// (about 24 ns rms per photon for the singlet/triplet mix and transit).
fn drift_spread_ns(v: &VertexTruth) -> f64 {
    let el = conditions().sim.el_width_ns;
    let n_e = v.n_extracted.max(1) as f64;
    let s2 = sigma_t_ns(v.drift_ns).powi(2) / n_e + el * el / 12.0 / (v.s2_phd.max(1) as f64);
    let s1 = 24.0f64.powi(2) / (v.s1_phd.max(1) as f64);
    (s2 + s1).sqrt()
}

#[test]
fn drift_time_and_z_resolution() {
    let v_d = conditions().detector.params.tpc.drift_velocity_mm_per_us;
    // Single scatters (truth one vertex, reco SingleScatter).
    let ss: Vec<(&VertexTruth, f64)> = singles()
        .iter()
        .chain(kr83m())
        .filter(|e| e.recon.event.kind == InteractionKind::SingleScatter)
        .map(|e| {
            (
                &e.truth[0],
                e.recon.event.drift_time_ns - e.truth[0].drift_ns,
            )
        })
        .collect();
    let within = |set: &[&(&VertexTruth, f64)]| {
        set.iter().filter(|(_, d)| d.abs() < 100.0).count() as f64 / set.len().max(1) as f64
    };
    eprintln!("Drift time residual (reco - truth) of single scatters, by extracted electrons:");
    eprintln!("  electrons     events  median[ns]  rms68[ns]  z rms68[mm]  |d|<100ns  pull sd  expected spread[ns]");
    let edges = [5u64, 20, 100, 300, 1000, 3000, u64::MAX];
    for w in edges.windows(2) {
        let set: Vec<&(&VertexTruth, f64)> = ss
            .iter()
            .filter(|(v, _)| v.n_extracted >= w[0] && v.n_extracted < w[1])
            .collect();
        if set.is_empty() {
            continue;
        }
        let mut d: Vec<f64> = set.iter().map(|s| s.1).collect();
        let med = quantile(&mut d, 0.5);
        let mut ad: Vec<f64> = d.iter().map(|x| (x - med).abs()).collect();
        let r68 = quantile(&mut ad, 0.68);
        let pulls: Vec<f64> = set.iter().map(|(v, d)| d / drift_spread_ns(v)).collect();
        let (_, psd, _) = clipped_mean_sd(&pulls, 4.0);
        let mut spread: Vec<f64> = set.iter().map(|(v, _)| drift_spread_ns(v)).collect();
        let hi = if w[1] == u64::MAX {
            "inf".into()
        } else {
            w[1].to_string()
        };
        eprintln!(
            "  [{:>4},{hi:>4})  {:>7}  {med:>9.1}  {r68:>9.1}  {:>10.3}  {:>9.4}  {psd:>7.3}  {:>8.1}",
            w[0],
            set.len(),
            r68 * v_d * 1e-3,
            within(&set),
            quantile(&mut spread, 0.5)
        );
    }
    let all: Vec<&(&VertexTruth, f64)> = ss.iter().filter(|(v, _)| v.n_extracted >= 5).collect();
    // The target applies where physics allows it: 99 % within 100 ns needs the
    // irreducible spread below 100 / 2.576 = 38.8 ns, e.g. S2s of more than
    // ~1700 electrons at the cathode, ~200 at mid height.
    let resolvable: Vec<&(&VertexTruth, f64)> = all
        .iter()
        .copied()
        .filter(|(v, _)| drift_spread_ns(v) < 100.0 / 2.576)
        .collect();
    let f_all = within(&all);
    let f_res = within(&resolvable);
    let pulls: Vec<f64> = all.iter().map(|(v, d)| d / drift_spread_ns(v)).collect();
    let (pmean, psd, kept) = clipped_mean_sd(&pulls, 4.0);
    let mut dz: Vec<f64> = all.iter().map(|(_, d)| (d * v_d * 1e-3).abs()).collect();
    eprintln!(
        "  all SS (>= 5 e): {} events, |d| < 100 ns: {f_all:.4}; z resolution (68 %): {:.3} mm, (95 %): {:.3} mm",
        all.len(),
        quantile(&mut dz, 0.68),
        quantile(&mut dz, 0.95)
    );
    eprintln!(
        "  expected spread < 38.8 ns: {} events, |d| < 100 ns: {f_res:.4} (target >= 0.99)",
        resolvable.len()
    );
    eprintln!(
        "  pull (d / expected spread): mean {pmean:.3} sd {psd:.3} ({kept}/{} within 4 sd)",
        pulls.len()
    );
    for s2_min in [1e4, 3e4, 6e4] {
        let set: Vec<&(&VertexTruth, f64)> = all
            .iter()
            .copied()
            .filter(|(v, _)| v.s2_phd as f64 >= s2_min)
            .collect();
        eprintln!(
            "  S2 >= {s2_min:>6.0} phd (any depth): {} events, |d| < 100 ns: {:.4}",
            set.len(),
            within(&set)
        );
    }
    assert!(
        resolvable.len() > 500,
        "only {} resolvable",
        resolvable.len()
    );
    assert!(f_res >= 0.99, "drift within 100 ns for {f_res:.4} < 0.99");
    assert!(
        pmean.abs() < 0.2 && psd < 1.2,
        "drift pull {pmean} +- {psd}"
    );
}

#[test]
fn xy_resolution_against_the_cramer_rao_bound() {
    let cond = conditions();
    let m = &cond.detector;
    let f = excess_variance_factor(m);
    let aft = m.params.light.s2_top_fraction;
    let mut rows = Vec::new();
    for ev in singles().iter().chain(kr83m()).chain(small()) {
        let rq = &ev.recon.event;
        let v = &ev.truth[0];
        // The table takes every event whose main S2 is the vertex's S2 (S2-only
        // events too, for the small S2s); the target only single scatters.
        let main_is_truth = s2_pulse(ev, v).is_some_and(|(i, _)| i as i32 == rq.main_s2);
        if !main_is_truth || !rq.x_mm.is_finite() {
            continue;
        }
        let s2 = v.s2_phd as f64;
        // CRB at the true position with the true top light.
        let (cx, cy) = cramer_rao_xy(m, v.x, v.y, s2 * aft, f);
        // Transverse diffusion moves the centroid of the N_e extracted
        // electrons off the vertex by sigma_xy / sqrt(N_e) (as the simulator draws it).
        let n_sub = v.n_extracted.max(1) as f64;
        let diff = sigma_xy_mm(v.drift_ns) / n_sub.sqrt();
        rows.push(XyRow {
            ss: rq.kind == InteractionKind::SingleScatter,
            s2,
            res: [rq.x_mm - v.x, rq.y_mm - v.y],
            crb: cx.hypot(cy) / std::f64::consts::SQRT_2,
            diff,
            pull: [
                (rq.x_mm - v.x) / rq.sigma_x_mm,
                (rq.y_mm - v.y) / rq.sigma_y_mm,
            ],
        });
    }
    eprintln!("xy resolution of single scatters by S2 [phd] (per axis, x and y pooled; CRB at the true position and true top light):");
    eprintln!("  S2 phd          events  rms[mm]  core sd[mm]  CRB[mm]  CRB+diff[mm]  res/CRB  res/(CRB+diff)  pull sd");
    let edges = [150.0, 250.0, 1e3, 3e3, 1e4, 3e4, 1e5, 1e7];
    let mut bins: Vec<[f64; 2]> = edges.windows(2).map(|w| [w[0], w[1]]).collect();
    bins.push([3000.0, 5000.0]); // beside LUX's 4000
    let mut in_range: Vec<&XyRow> = Vec::new();
    let mut worst_bin: f64 = 0.0;
    for (b, w) in bins.iter().enumerate() {
        let set: Vec<&XyRow> = rows
            .iter()
            .filter(|r| r.s2 >= w[0] && r.s2 < w[1])
            .collect();
        if set.len() < 10 {
            continue;
        }
        let res: Vec<f64> = set.iter().flat_map(|r| r.res).collect();
        let rms = (res.iter().map(|x| x * x).sum::<f64>() / res.len() as f64).sqrt();
        let (_, core, _) = clipped_mean_sd(&res, 3.0);
        let crb = (set.iter().map(|r| r.crb * r.crb).sum::<f64>() / set.len() as f64).sqrt();
        let crbd = (set
            .iter()
            .map(|r| r.crb * r.crb + r.diff * r.diff)
            .sum::<f64>()
            / set.len() as f64)
            .sqrt();
        let pulls: Vec<f64> = set.iter().flat_map(|r| r.pull).collect();
        let (_, psd) = mean_sd(&pulls);
        eprintln!(
            "  [{:>7.0},{:>7.0})  {:>6}  {rms:>7.2}  {core:>11.2}  {crb:>7.2}  {crbd:>12.2}  {:>7.3}  {:>14.3}  {psd:>7.3}",
            w[0],
            w[1],
            set.len(),
            norm_rms(&set, false),
            norm_rms(&set, true)
        );
        if w[0] >= 1e3 && w[1] <= 1e5 && b + 1 < bins.len() {
            worst_bin = worst_bin.max(norm_rms(&set, true));
            in_range.extend(set.into_iter().filter(|r| r.ss));
        }
    }
    // LUX (arXiv:1710.02752, 2-inch PMTs): 8.2 mm at 200 detected S2 photons,
    // 1.7 mm at 4000. Our bound for the same light at the centre / mid radius.
    for n in [200.0, 4000.0] {
        let (c0, _) = cramer_rao_xy(m, 0.0, 0.0, n * aft, f);
        let (c1, _) = cramer_rao_xy(m, 400.0, 0.0, n * aft, f);
        let (t0, _) = cramer_rao_xy(m, 0.0, 0.0, n, f);
        eprintln!(
            "  S2 = {n:>4} phd: CRB {c0:.2} mm (centre), {c1:.2} mm (r = 400 mm); with all {n} phd on the top array {t0:.2} mm; LUX {} mm",
            if n < 1000.0 { 8.2 } else { 1.7 }
        );
    }
    let pulls: Vec<f64> = in_range.iter().flat_map(|r| r.pull).collect();
    let (pmean, psd) = mean_sd(&pulls);
    let (r_stat, r_diff) = (norm_rms(&in_range, false), norm_rms(&in_range, true));
    eprintln!(
        "  1e3-1e5 phd: {} events, resolution / CRB = {r_stat:.3}, / (CRB (+) diffusion) = {r_diff:.3} (target <= 1.2); pull mean {pmean:.3} sd {psd:.3} (target 0.8-1.25)",
        in_range.len()
    );
    assert!(in_range.len() > 800, "only {} events", in_range.len());
    // The fit ignores the diffusion (it fits one point source), and the
    // simulator's electrons sit on at most 16 diffused sub-positions, so the
    // light's centroid scatters by sigma_xy / 4 even for large S2s (physically
    // it would be sigma_xy / sqrt(N_e)): above ~1e4 phd that term is comparable
    // to the bound. Against the bound alone the large-S2 bins exceed 1.2 (see
    // the table); against the bound convolved with that scatter every bin passes.
    assert!(
        r_diff <= 1.2,
        "xy resolution {r_diff:.3} x (CRB + diffusion)"
    );
    assert!(
        worst_bin <= 1.2,
        "xy resolution {worst_bin:.3} x (CRB + diffusion) in one S2 bin"
    );
    assert!((0.8..=1.25).contains(&psd), "xy pull sd {psd:.3}");
}

#[test]
fn single_vs_multiple_scatter() {
    use InteractionKind::*;
    let kinds = [
        SingleScatter,
        MultipleScatter,
        S2Only,
        S1Only,
        Other,
        NoSignal,
    ];
    let count = |set: &[&Ev]| kinds.map(|k| set.iter().filter(|e| e.recon.event.kind == k).count());
    // Clear truth: S1 of >= 10 phd, every vertex >= 10 extracted electrons and
    // the smaller S2 at least 10 % of the larger (the reco counts S2s above 5 %).
    let clear = |e: &&Ev| {
        let s2: Vec<f64> = e.truth.iter().map(|v| v.s2_phd as f64).collect();
        let max = s2.iter().copied().fold(0.0, f64::max);
        e.truth.iter().map(|v| v.s1_phd).sum::<u64>() >= 10
            && e.truth.iter().all(|v| v.n_extracted >= 10)
            && s2.iter().all(|&a| a >= 0.1 * max)
    };
    eprintln!("Interaction kind by truth (SS MS S2only S1only Other NoSignal):");
    let singles: Vec<&Ev> = singles().iter().chain(kr83m()).filter(clear).collect();
    let c = count(&singles);
    let ss_ok = c[0] as f64 / singles.len() as f64;
    eprintln!(
        "  singles          {:>5}: {c:?}  correct (SS) {ss_ok:.4}",
        singles.len()
    );
    let mut ms_n = 0;
    let mut ms_ok = 0;
    for (lo, hi) in [
        (0.0, 2.0),
        (2.0, 5.0),
        (5.0, 8.0),
        (8.0, 10.0),
        (10.0, 12.0),
        (12.0, 15.0),
        (15.0, 20.0),
        (20.0, 30.0),
        (30.0, 40.0),
    ] {
        let set: Vec<&Ev> = doubles()
            .iter()
            .filter(clear)
            .filter(|e| {
                let dz = (e.truth[0].z - e.truth[1].z).abs();
                dz >= lo && dz < hi
            })
            .collect();
        let c = count(&set);
        eprintln!(
            "  dz [{lo:>4.1},{hi:>4.1}) mm {:>5}: {c:?}  MS fraction {:.3}",
            set.len(),
            c[1] as f64 / set.len().max(1) as f64
        );
        if lo >= 10.0 {
            ms_n += set.len();
            ms_ok += c[1];
        }
    }
    let ms_frac = ms_ok as f64 / ms_n as f64;
    eprintln!("  doubles dz >= 10 mm: MS {ms_ok}/{ms_n} = {ms_frac:.4} (target >= 0.95); singles SS {ss_ok:.4} (target >= 0.95)");
    assert!(ms_n > 500 && singles.len() > 1000);
    assert!(ms_frac >= 0.95, "MS for dz >= 10 mm: {ms_frac:.4}");
    assert!(ss_ok >= 0.95, "SS for singles: {ss_ok:.4}");
}

#[test]
fn kr83m_energy_peak_and_resolution() {
    let e: Vec<f64> = kr83m()
        .iter()
        .filter(|e| e.recon.event.kind == InteractionKind::SingleScatter)
        .map(|e| e.recon.event.energy_kev)
        .filter(|e| e.is_finite())
        .collect();
    let (peak, sd, kept) = clipped_mean_sd(&e, 2.5);
    // sd of a Gaussian clipped at +-2.5 sd is 0.9465 sd.
    let sigma = sd / 0.9465;
    let mut sorted = e.clone();
    let median = quantile(&mut sorted, 0.5);
    let s1: Vec<f64> = kr83m()
        .iter()
        .filter(|e| e.recon.event.kind == InteractionKind::SingleScatter)
        .map(|e| e.recon.event.s1c_phd)
        .collect();
    let s2: Vec<f64> = kr83m()
        .iter()
        .filter(|e| e.recon.event.kind == InteractionKind::SingleScatter)
        .map(|e| e.recon.event.s2c_phd)
        .collect();
    eprintln!(
        "kr83m 41.5 keV: {} SS of {} events; peak {peak:.2} keV ({:+.2} %), median {median:.2} keV, sigma {sigma:.2} keV, sigma/E {:.2} % ({kept} in the core); <S1c> {:.1} phd <S2c> {:.0} phd",
        e.len(),
        kr83m().len(),
        (peak / 41.5 - 1.0) * 100.0,
        sigma / peak * 100.0,
        mean_sd(&s1).0,
        mean_sd(&s2).0
    );
    assert!(e.len() > 400);
    assert!((peak / 41.5 - 1.0).abs() < 0.02, "peak {peak:.2} keV");
}

#[test]
fn s1_time_estimate_is_unbiased() {
    // The S1 time estimator against the interaction time, for S1 >= 20 phd.
    let cfg = RecoConfig::default();
    let d: Vec<f64> = singles()
        .iter()
        .filter(|e| e.truth[0].s1_phd >= 20)
        .filter_map(|e| {
            let v = &e.truth[0];
            s1_pulse(e, v)
                .filter(|p| p.kind == PulseKind::S1)
                .map(|p| s1_time_ns(p, &cfg) - v.t_s1_ns)
        })
        .collect();
    let (mean, sd, _) = clipped_mean_sd(&d, 4.0);
    eprintln!(
        "S1 time - interaction time (S1 >= 20 phd): mean {mean:.1} ns, sd {sd:.1} ns ({} events)",
        d.len()
    );
    assert!(mean.abs() < 10.0, "S1 time bias {mean:.1} ns");
}

#[test]
#[ignore = "diagnostic"]
fn xy_outliers_diagnostic() {
    let cond = conditions();
    let m = &cond.detector;
    let mut worst: Vec<(f64, String)> = Vec::new();
    for ev in singles().iter().chain(kr83m()) {
        let rq = &ev.recon.event;
        if rq.kind != InteractionKind::SingleScatter || !rq.x_mm.is_finite() {
            continue;
        }
        let v = &ev.truth[0];
        let d = (rq.x_mm - v.x).hypot(rq.y_mm - v.y);
        let mut top = vec![0.0; m.pmts.n_top];
        for c in ev.recon.pulse_channel_areas(rq.main_s2 as usize) {
            if (c.channel as usize) < m.pmts.n_top {
                top[c.channel as usize] = f64::from(c.area_phd);
            }
        }
        let fit = tpcflow_reco::fit_xy(m, &top, 50, 0.01).unwrap();
        worst.push((
            d / rq.sigma_x_mm,
            format!(
                "d {d:.1} mm truth ({:.1},{:.1}) r {:.0} reco ({:.1},{:.1}) sig {:.2} s2 {} gof {:.2} it {} conv {} centroid ({:.1},{:.1})",
                v.x, v.y, v.x.hypot(v.y), rq.x_mm, rq.y_mm, rq.sigma_x_mm, v.s2_phd, rq.xy_gof, fit.iterations, fit.converged, fit.centroid_x_mm, fit.centroid_y_mm
            ),
        ));
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    for w in worst.iter().take(30) {
        eprintln!("{:.1} {}", w.0, w.1);
    }
}
