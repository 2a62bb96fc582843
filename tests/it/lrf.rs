//! The light response learned from calibration data, against the truth.
//!
//! Accuracy: a 3e4-event Kr83m calibration set and a separate evaluation set
//! of S2s from 1e3 to 1e5 phd, both drawn at the level of the top-array
//! areas from the realistic detector truth (its light response, per-PMT
//! efficiencies and dead channels; Poisson phd smeared like the PMTs), fitted
//! with the reconstruction's xy fit. Simulating 3e4 Kr83m events as
//! waveforms takes ~20 min and 17 GB here, so the waveform path is checked
//! on a smaller run: `sim --detector-truth realistic` -> `reco` with v1 ->
//! `calibrate` writes the learned response -> `reco` with it.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};
use tpcflow::calibrate::lrf::{learn_lrf, pattern_difference, with_response};
use tpcflow::conditions::Conditions;
use tpcflow::sim::detector_truth::{load_for_run, DetectorTruth};
use tpcflow_reco::xy::{cramer_rao_xy, excess_variance_factor, fit_xy};
use tpcflow_reco::DetectorModel;

use crate::common::*;

/// One drawn S2: true position, top phd asked for, top areas.
struct Drawn {
    x: f64,
    y: f64,
    n_top: f64,
    areas: Vec<f64>,
}

/// Events uniform in the TPC; top phd from `n_top` (called per event);
/// channels in `dead` record nothing.
fn draw(
    truth: &DetectorModel,
    n: usize,
    seed: u64,
    dead: &[usize],
    mut n_top: impl FnMut(&mut ChaCha8Rng) -> f64,
) -> Vec<Drawn> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = truth.params.tpc.radius_mm;
    let res = Normal::new(1.0, truth.params.pmts.spe_resolution).unwrap();
    let q = truth.params.pmts.double_phe_prob;
    let mut p = vec![0.0; truth.pmts.n_top];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (x, y) = (rng.random_range(-r..r), rng.random_range(-r..r));
        if x.hypot(y) > r {
            continue;
        }
        let nt = n_top(&mut rng);
        truth.top_pattern(x, y, &mut p);
        let areas = p
            .iter()
            .enumerate()
            .map(|(k, &pk)| {
                let count = Poisson::new(nt * pk).unwrap().sample(&mut rng) as u64;
                let mut a = 0.0;
                for _ in 0..count {
                    let phe = if rng.random::<f64>() < q { 2 } else { 1 };
                    for _ in 0..phe {
                        a += f64::max(res.sample(&mut rng), 0.02);
                    }
                }
                if dead.contains(&k) {
                    0.0
                } else {
                    a / (1.0 + q)
                }
            })
            .collect();
        out.push(Drawn {
            x,
            y,
            n_top: nt,
            areas,
        });
    }
    out
}

/// `model` with these channels dead in its conditions.
fn with_dead(model: &DetectorModel, dead: &[u16]) -> DetectorModel {
    let mut p = model.params.clone();
    p.calibration.dead_channels = dead.to_vec();
    DetectorModel::new(model.tag.clone(), p).unwrap()
}

/// Figures of one model on the evaluation set.
#[derive(Debug)]
struct Figures {
    /// Per S2 decade: rms residual x, y over the rms CRB (true response).
    resolution_over_crb: Vec<(f64, f64)>,
    pull_width: (f64, f64),
    /// Mean r_fit - r_true per 0.1 R ring [mm].
    radial_bias: Vec<f64>,
    mean_gof: f64,
}

fn sd(v: &[f64]) -> f64 {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

fn figures(model: &DetectorModel, truth_crb: &DetectorModel, events: &[Drawn]) -> Figures {
    let f = excess_variance_factor(truth_crb);
    let radius = model.params.tpc.radius_mm;
    let mut decades = vec![(Vec::new(), Vec::new(), 0.0, 0.0, 0usize); 2];
    let (mut px, mut py) = (Vec::new(), Vec::new());
    let mut rings = [(0.0, 0usize); 10];
    let mut gof = 0.0;
    for e in events {
        let Some(fit) = fit_xy(model, &e.areas, 50, 1e-3) else {
            continue;
        };
        let (cx, cy) = cramer_rao_xy(truth_crb, e.x, e.y, fit.n_top_phd, f);
        let s2 = e.n_top / 0.64;
        let d = if s2 < 1e4 { 0 } else { 1 };
        let (rx, ry, sx, sy, n) = &mut decades[d];
        rx.push(fit.x_mm - e.x);
        ry.push(fit.y_mm - e.y);
        *sx += cx * cx;
        *sy += cy * cy;
        *n += 1;
        px.push((fit.x_mm - e.x) / fit.sigma_x_mm);
        py.push((fit.y_mm - e.y) / fit.sigma_y_mm);
        let ring = ((e.x.hypot(e.y) / radius) * 10.0).floor().min(9.0) as usize;
        rings[ring].0 += fit.x_mm.hypot(fit.y_mm) - e.x.hypot(e.y);
        rings[ring].1 += 1;
        gof += fit.gof / events.len() as f64;
    }
    Figures {
        resolution_over_crb: decades
            .iter()
            .map(|(rx, ry, sx, sy, n)| {
                let n = *n as f64;
                (sd(rx) / (sx / n).sqrt(), sd(ry) / (sy / n).sqrt())
            })
            .collect(),
        pull_width: (sd(&px), sd(&py)),
        radial_bias: rings.iter().map(|(s, n)| s / (*n).max(1) as f64).collect(),
        mean_gof: gof,
    }
}

#[test]
fn learned_light_response_reaches_the_bound_of_the_true_detector() {
    let truth_spec = DetectorTruth::load("realistic").unwrap();
    let sim = truth_spec.simulated_detector(17390).unwrap();
    let truth_dead: Vec<u16> = sim.truth.dead_channels.clone();
    let top_dead: Vec<usize> = truth_dead
        .iter()
        .map(|&c| usize::from(c))
        .filter(|&c| c < 253)
        .collect();
    let truth = with_dead(&sim.conditions.detector, &truth_dead);
    let truth_lrf = sim
        .truth
        .lrf
        .clone()
        .expect("realistic has a light response");
    // What the calibration knows: v1 with the dead channels (measured by calibrate).
    let v1 = Conditions::load("v1").unwrap().detector;
    let told = with_dead(&v1, &truth_dead);
    // Gains are those of v1 in both (the efficiencies are the response's own).
    let kr = draw(&truth, 30_000, 11, &top_dead, |_| 0.64 * 2.0e4);
    let areas: Vec<f64> = kr.iter().flat_map(|e| e.areas.iter().copied()).collect();
    let t0 = std::time::Instant::now();
    let learned = learn_lrf(&told, &areas).unwrap();
    eprintln!(
        "learned from {} Kr83m patterns in {:.1} s",
        kr.len(),
        t0.elapsed().as_secs_f64()
    );
    for it in &learned.iterations {
        eprintln!("  {it:?}");
    }
    assert!(learned.converged, "{:?}", learned.iterations);
    let model = with_response(&told, &learned.response).unwrap();
    let d_learned = pattern_difference(&model, &truth, 0.9);
    let d_nominal = pattern_difference(&told, &truth, 0.9);
    let live: Vec<usize> = (0..253).filter(|k| !top_dead.contains(k)).collect();
    let eff_rms = (live
        .iter()
        .map(|&k| {
            (learned.response.relative_efficiency[k] / truth_lrf.relative_efficiency[k] - 1.0)
                .powi(2)
        })
        .sum::<f64>()
        / live.len() as f64)
        .sqrt();
    let eff_rms_nominal = (live
        .iter()
        .map(|&k| (1.0 / truth_lrf.relative_efficiency[k] - 1.0).powi(2))
        .sum::<f64>()
        / live.len() as f64)
        .sqrt();
    eprintln!(
        "pattern vs truth (r < 0.9 R): learned {:.2} %, nominal {:.2} %; efficiencies rms {:.2} % (nominal {:.2} %)",
        100.0 * d_learned,
        100.0 * d_nominal,
        100.0 * eff_rms,
        100.0 * eff_rms_nominal
    );
    assert!(d_learned < 0.03, "learned pattern {d_learned}");
    assert!(eff_rms < 0.02, "efficiencies {eff_rms}");

    // Evaluation: S2 log-uniform in 1e3-1e5 phd, 64 % on top.
    let eval = draw(&truth, 4000, 12, &top_dead, |rng| {
        0.64 * 10f64.powf(rng.random_range(3.0..5.0))
    });
    let learned_fig = figures(&model, &truth, &eval);
    let nominal_fig = figures(&told, &truth, &eval);
    eprintln!("learned: {learned_fig:?}\nnominal: {nominal_fig:?}");
    for (d, &(rx, ry)) in learned_fig.resolution_over_crb.iter().enumerate() {
        assert!(
            rx < 1.15 && ry < 1.15,
            "S2 decade {d}: resolution / CRB {rx:.3} {ry:.3}"
        );
    }
    let (wx, wy) = learned_fig.pull_width;
    assert!(
        (0.8..=1.25).contains(&wx) && (0.8..=1.25).contains(&wy),
        "pulls {wx} {wy}"
    );
    for (ring, b) in learned_fig.radial_bias.iter().enumerate().take(9) {
        assert!(b.abs() < 2.0, "ring {ring}: radial bias {b:.2} mm");
    }
    let worst_nominal = nominal_fig.resolution_over_crb[1].0;
    assert!(
        worst_nominal > 1.5,
        "the nominal response should be far from the bound at large S2: {worst_nominal}"
    );

    // One more dead PMT than the calibration knew about: events around it
    // fit worse and the goodness of fit flags them.
    let extra = 60usize;
    let mut dead_more = top_dead.clone();
    dead_more.push(extra);
    let near: Vec<Drawn> = draw(&truth, 20_000, 13, &dead_more, |_| 0.64 * 2.0e4)
        .into_iter()
        .filter(|e| (e.x - truth.pmts.x[extra]).hypot(e.y - truth.pmts.y[extra]) < 60.0)
        .collect();
    let same: Vec<Drawn> = draw(&truth, 20_000, 13, &top_dead, |_| 0.64 * 2.0e4)
        .into_iter()
        .filter(|e| (e.x - truth.pmts.x[extra]).hypot(e.y - truth.pmts.y[extra]) < 60.0)
        .collect();
    let hit = figures(&model, &truth, &near);
    let fine = figures(&model, &truth, &same);
    let shift = |ev: &[Drawn]| {
        ev.iter()
            .filter_map(|e| {
                fit_xy(&model, &e.areas, 50, 1e-3).map(|f| (f.x_mm - e.x).hypot(f.y_mm - e.y))
            })
            .sum::<f64>()
            / ev.len() as f64
    };
    eprintln!(
        "PMT {extra} dead but not known: {} events within 60 mm, mean GoF {:.2} (known: {:.2}), mean distance {:.2} mm (known: {:.2} mm)",
        near.len(),
        hit.mean_gof,
        fine.mean_gof,
        shift(&near),
        shift(&same)
    );
    assert!(near.len() > 50);
    assert!(
        hit.mean_gof > 3.0 * fine.mean_gof,
        "GoF {} vs {}",
        hit.mean_gof,
        fine.mean_gof
    );
}

fn rq_file(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rq.h5"))
        .expect("an RQ file")
}

#[test]
fn calibrate_learns_the_response_from_simulated_waveforms_and_reco_uses_it() {
    let dir = scratch("lrf");
    let root = dir.path();
    let raw = root.join("raw");
    tpcflow_ok(&[
        "sim",
        "--run",
        "17390",
        "--files",
        "1",
        "--events-per-file",
        "1500",
        "--source",
        "kr83m",
        "--seed",
        "4",
        "--out",
        path_str(&raw),
        "--detector-truth",
        "realistic",
        "--threads",
        "2",
    ]);
    let truth = load_for_run(&raw, 17390).unwrap();
    let truth_lrf = truth
        .lrf
        .clone()
        .expect("the run's truth carries its response");
    let raw_file = raw.join("017390/017390_00000.raw.h5");
    let rq1 = root.join("rq-v1");
    tpcflow_ok(&[
        "reco",
        "--inputs",
        path_str(&raw_file),
        "--out-dir",
        path_str(&rq1),
        "--conditions",
        "v1",
        "--threads",
        "2",
    ]);
    let cal = root.join("cal");
    let out = tpcflow_ok(&[
        "calibrate",
        "--rq",
        path_str(&rq_file(&rq1)),
        "--out",
        path_str(&cal),
        "--tag",
        "kr-17390",
        "--runs",
        "17390",
        "--json",
    ]);
    let products: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let iterations = products["light_response"]["iterations"].as_array().unwrap();
    assert!(!iterations.is_empty());
    let report = std::fs::read_to_string(cal.join("report.md")).unwrap();
    assert!(
        report.contains("## Light response of the top array"),
        "{report}"
    );
    let measured = Conditions::load(path_str(&cal.join("conditions.toml"))).unwrap();
    assert!(
        measured.detector.params.calibration.lrf.is_some(),
        "the conditions carry the learned response"
    );
    // Against the truth's response with the truth's dead channels.
    let mut p = Conditions::load("v1").unwrap().detector.params;
    p.calibration.dead_channels = truth.dead_channels.clone();
    p.calibration.lrf = Some(truth_lrf);
    let truth_model = DetectorModel::new("truth", p).unwrap();
    let d = pattern_difference(&measured.detector, &truth_model, 0.9);
    let v1 = with_dead(
        &Conditions::load("v1").unwrap().detector,
        &truth.dead_channels,
    );
    let d_v1 = pattern_difference(&v1, &truth_model, 0.9);
    eprintln!(
        "waveform run: {} iterations, pattern vs truth {:.2} % (v1 {:.2} %)",
        iterations.len(),
        100.0 * d,
        100.0 * d_v1
    );
    assert!(d < 0.05 && d < 0.2 * d_v1, "pattern {d} (v1 {d_v1})");
    // The reconstruction reads it: the same raw file with the measured conditions.
    let rq2 = root.join("rq-measured");
    tpcflow_ok(&[
        "reco",
        "--inputs",
        path_str(&raw_file),
        "--out-dir",
        path_str(&rq2),
        "--conditions",
        path_str(&cal.join("conditions.toml")),
        "--threads",
        "2",
    ]);
    let gof = |dir: &Path| {
        let f = hdf5::File::open(rq_file(dir)).unwrap();
        let v: Vec<f64> = f.dataset("events/xy_gof").unwrap().read_raw().unwrap();
        let v: Vec<f64> = v.into_iter().filter(|g| g.is_finite()).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (g1, g2) = (gof(&rq1), gof(&rq2));
    eprintln!("mean xy GoF: v1 {g1:.2}, learned {g2:.2}");
    assert!(g2 < 0.5 * g1 && g2 < 1.5, "GoF v1 {g1} learned {g2}");

    // validate: the resolution against the bound of the true detector (found
    // beside the truth file), the v1 reconstruction of the same file beside.
    let val = root.join("validation");
    let out = tpcflow_ok(&[
        "validate",
        "--rq",
        path_str(&rq_file(&rq2)),
        "--truth",
        path_str(&raw.join("017390/017390_00000.truth.h5")),
        "--baseline-rq",
        path_str(&rq_file(&rq1)),
        "--conditions",
        path_str(&cal.join("conditions.toml")),
        "--out",
        path_str(&val),
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &r["xy_truth"];
    let b = &r["xy_baseline"];
    assert!(
        t["detector"]
            .as_str()
            .unwrap()
            .starts_with("realistic (runs 17390)"),
        "{t}"
    );
    assert_eq!(b["conditions_tag"], "v1", "{b}");
    let (learned, nominal) = (
        t["xy"]["ratio_crb_diff"].as_f64().unwrap(),
        b["truth"]["xy"]["ratio_crb_diff"].as_f64().unwrap(),
    );
    eprintln!(
        "xy of {} single scatters (1e3-1e5 phd) over the true bound: learned {learned:.3}, v1 {nominal:.3}",
        t["xy"]["in_range_events"]
    );
    assert!(t["xy"]["in_range_events"].as_u64().unwrap() > 500, "{t}");
    // Issue 20's line: within 15 % of the true bound (learned from 1500
    // Kr83m events here); v1's response is several times the bound away.
    assert!(
        learned < 1.15 && nominal > 2.0,
        "learned {learned}, v1 {nominal}"
    );
    let svg = std::fs::read_to_string(val.join("xy_resolution.svg")).unwrap();
    for label in [
        "bound of the true detector",
        "reconstructed rms with v1",
        "LUX",
    ] {
        assert!(svg.contains(label), "xy_resolution.svg lacks {label}");
    }
    let md = std::fs::read_to_string(val.join("report.md")).unwrap();
    assert!(md.contains("### xy against the bound of the true detector"));
}
