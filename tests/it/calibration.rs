//! `tpcflow calibrate` against a detector the reconstruction is not told
//! about: a Kr83m run simulated with conditions that differ from v1 (shorter
//! electron lifetime, larger single-electron gain, per-channel gains off by a
//! few %, two channels without signal), reconstructed with v1, calibrated,
//! and reconstructed again with the measured conditions. The lifetime fit's
//! statistics (uncertainty, pull, a step between runs) are checked on many
//! seeded runs of RQ-like values drawn with the simulator's own quanta model.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Normal};
use tpcflow::calibrate::inputs::KrEvent;
use tpcflow::calibrate::lifetime::fit_lifetime;
use tpcflow::conditions::Conditions;
use tpcflow::sim::quanta::{draw_quanta, Recoil};

use crate::common::*;

/// Kr83m single scatters as the RQ files hold them, drawn with the
/// simulator's quanta model and the v1 detector: S1 = binomial(photons,
/// g1 lce), S2 = surviving (exp(-t/tau)) and extracted electrons times the
/// SE gain, phd areas smeared by the SPE and SE resolutions.
fn kr_events(seed: u64, n: usize, lifetime_us: f64) -> Vec<KrEvent> {
    let cond = Conditions::load("v1").unwrap();
    let m = &cond.detector;
    let l = &m.params.light;
    let r = m.params.tpc.radius_mm;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (x, y) = (rng.random_range(-r..r), rng.random_range(-r..r));
        if x.hypot(y) > r {
            continue;
        }
        let z = rng.random_range(0.0..m.drift_length_mm());
        let t_ns = m.drift_ns_from_z(z);
        let (ph, el) = draw_quanta(&mut rng, &cond.sim, Recoil::Er, 41.5);
        let p1 = (l.g1 * m.s1_light_collection(x, y, z)).min(1.0);
        let n1 = Binomial::new(ph, p1).unwrap().sample(&mut rng) as f64;
        let s1 = Normal::new(n1, (n1 * 0.338 * 0.338).sqrt().max(1e-9))
            .unwrap()
            .sample(&mut rng);
        let survive = (-t_ns * 1e-3 / lifetime_us).exp() * l.extraction_efficiency;
        let ne = Binomial::new(el, survive).unwrap().sample(&mut rng) as f64;
        let g = l.se_gain_phd * m.s2_light_collection(x, y);
        let s2 = Normal::new(ne * g, (ne.sqrt() * g * l.se_resolution).max(1e-9))
            .unwrap()
            .sample(&mut rng);
        if s1 > 0.0 && s2 > 0.0 {
            out.push(KrEvent {
                drift_ns: t_ns,
                s1_phd: s1,
                s2_phd: s2,
                x_mm: x,
                y_mm: y,
                z_mm: z,
                s2_width_50_ns: f64::NAN,
            });
        }
    }
    out
}

#[test]
fn lifetime_fit_uncertainty_pull_and_a_step_between_runs() {
    let tau = 9000.0;
    let runs = 24;
    let mut pulls = Vec::new();
    let mut rel = Vec::new();
    for seed in 0..runs {
        let ev = kr_events(100 + seed, 10_000, tau);
        let f = fit_lifetime(&ev, 728.0).unwrap();
        let truth = 1e3 / tau;
        pulls.push((f.inverse_lifetime_per_ms - truth) / f.sigma_inverse_lifetime_per_ms);
        rel.push(f.sigma_inverse_lifetime_per_ms / f.inverse_lifetime_per_ms);
    }
    let n = pulls.len() as f64;
    let mean = pulls.iter().sum::<f64>() / n;
    let sd = (pulls.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let rel_mean = rel.iter().sum::<f64>() / n;
    eprintln!(
        "1/tau pull over {runs} runs: mean {mean:.3}, sd {sd:.3}; relative sigma {:.2} %",
        100.0 * rel_mean
    );
    // Target: |mean| < 0.2; 24 runs measure the mean to +-0.2 (1/sqrt 24), so
    // the assertion allows 0.3.
    assert!(mean.abs() < 0.3, "pull mean {mean}");
    assert!((0.8..=1.25).contains(&sd), "pull width {sd}");
    // The target is 3 %. What 1e4 single scatters can give: the
    // information bound sigma(ln S2) / (sqrt(N) sd(t) / tau), with the spread
    // of ln S2 about the truth (lifetime and S2 light collection taken out),
    // which NEST's recombination fluctuations dominate (~11.7 % rms of the
    // electron count at 41.5 keV; with extraction and SE-gain smearing ~12 %
    // in ln S2): ~3.4 % over 1.1 ms of drift. The fit is asserted to reach
    // that bound (within 8 %) and its figure to stay below 3.7 %; 3 % needs
    // ~1.3e4 single scatters.
    let bound = {
        let cond = Conditions::load("v1").unwrap();
        let ev = kr_events(100, 10_000, tau);
        let resid: Vec<f64> = ev
            .iter()
            .map(|e| {
                e.s2_phd.ln() + e.drift_ns * 1e-3 / tau
                    - cond.detector.s2_light_collection(e.x_mm, e.y_mm).ln()
            })
            .collect();
        let sd = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
        };
        let t_ms: Vec<f64> = ev.iter().map(|e| e.drift_ns * 1e-6).collect();
        sd(&resid) * tau * 1e-3 / ((ev.len() as f64).sqrt() * sd(&t_ms))
    };
    eprintln!(
        "relative sigma of 1/tau {:.2} %, information bound {:.2} % (ratio {:.3})",
        100.0 * rel_mean,
        100.0 * bound,
        rel_mean / bound
    );
    assert!(
        (0.95..=1.08).contains(&(rel_mean / bound)),
        "the fit's sigma {rel_mean} vs the bound {bound}"
    );
    assert!(
        rel_mean <= 0.037,
        "relative uncertainty of 1/tau {:.2} % > 3.7 %",
        100.0 * rel_mean
    );
    // A purification step: 9 ms, then 6 ms; each run's fit follows its own lifetime.
    let before = fit_lifetime(&kr_events(7, 10_000, 9000.0), 728.0).unwrap();
    let after = fit_lifetime(&kr_events(8, 10_000, 6000.0), 728.0).unwrap();
    for (f, tau) in [(&before, 9000.0), (&after, 6000.0)] {
        let pull = (f.inverse_lifetime_per_ms - 1e3 / tau) / f.sigma_inverse_lifetime_per_ms;
        assert!(
            pull.abs() < 3.5,
            "tau {tau}: fitted {:.0} us, pull {pull:.2}",
            f.lifetime_us
        );
    }
    let step = after.inverse_lifetime_per_ms - before.inverse_lifetime_per_ms;
    let sigma = before
        .sigma_inverse_lifetime_per_ms
        .hypot(after.sigma_inverse_lifetime_per_ms);
    assert!(
        step / sigma > 3.0,
        "step of 1/tau {step:.4} /ms is {:.1} sigma",
        step / sigma
    );
}

/// v1 with another detector: lifetime 5 ms, SE gain 50 phd, gains off by
/// 4 % x sin, channels 17 and 300 without signal (a gain far below the pod
/// threshold), 100 Hz dark counts (more single phe per event for the gains).
fn truth_conditions() -> (String, Vec<f64>) {
    let text = tpcflow::conditions::builtin_text("v1").unwrap();
    let mut doc: toml::Table = text.parse().unwrap();
    doc.insert("tag".into(), "kr-truth".into());
    let det = doc["detector"].as_table_mut().unwrap();
    det["tpc"].as_table_mut().unwrap()["electron_lifetime_us"] = 5000.0.into();
    det["light"].as_table_mut().unwrap()["se_gain_phd"] = 50.0.into();
    let pmts = det["pmts"].as_table_mut().unwrap();
    let gains: Vec<f64> = pmts["spe_area_adc"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(k, g)| {
            let g = g.as_float().unwrap();
            if k == 17 || k == 300 {
                0.001
            } else {
                g * (1.0 + 0.04 * (1.7 * k as f64 + 0.3).sin())
            }
        })
        .collect();
    pmts["spe_area_adc"] = toml::Value::Array(gains.iter().map(|g| (*g).into()).collect());
    doc["simulation"].as_table_mut().unwrap()["dark_rate_hz"] = 100.0.into();
    (toml::to_string(&doc).unwrap(), gains)
}

#[test]
fn calibrate_measures_the_detector_reco_was_not_told_and_reco_uses_it() {
    let dir = scratch("calibration");
    let root = dir.path();
    let (text, truth_gains) = truth_conditions();
    let truth_file = root.join("truth-conditions.toml");
    std::fs::write(&truth_file, text).unwrap();
    let v1 = Conditions::load("v1").unwrap();
    let raw = root.join("raw");
    tpcflow_ok(&[
        "sim",
        "--run",
        "7",
        "--files",
        "1",
        "--events-per-file",
        "4000",
        "--source",
        "kr83m",
        "--seed",
        "3",
        "--out",
        path_str(&raw),
        "--conditions",
        path_str(&truth_file),
        "--threads",
        "2",
    ]);
    let raw_file = raw.join("000007/000007_00000.raw.h5");
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
    let rq_file = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".rq.h5"))
            .expect("an RQ file")
    };
    let cal = root.join("cal");
    let out = tpcflow_ok(&[
        "calibrate",
        "--rq",
        path_str(&rq_file(&rq1)),
        "--out",
        path_str(&cal),
        "--tag",
        "kr-7",
        "--runs",
        "7",
        "--json",
        "--truth",
        path_str(&truth_file),
    ]);
    let products: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let measured = Conditions::load(path_str(&cal.join("conditions.toml"))).unwrap();
    assert_eq!(measured.tag, "kr-7");
    let m = &measured.detector.params;
    // Electron lifetime: within 3.5 sigma of the truth (4000 events: ~7 % on 1/tau).
    let lt = &products["lifetime"];
    let (inv, sigma) = (
        lt["inverse_lifetime_per_ms"].as_f64().unwrap(),
        lt["sigma_inverse_lifetime_per_ms"].as_f64().unwrap(),
    );
    let pull = (inv - 1e3 / 5000.0) / sigma;
    eprintln!(
        "lifetime {:.0} us, 1/tau pull {pull:.2}",
        m.tpc.electron_lifetime_us
    );
    assert!(
        pull.abs() < 3.5,
        "1/tau {inv:.4} +- {sigma:.4} /ms vs truth {:.4}",
        1e3 / 5000.0
    );
    // SE gain: the conditions' is in phd of the measured gains (calibrate
    // converts each SE pulse's channel areas from v1's gains) with the hit
    // threshold's loss of single-phe area put back; the truth's, 50, is in
    // phd of the true gains and counts the light on the dead channels, which
    // lone SEs (and every S2) miss and the measured gain keeps missing.
    let live: Vec<usize> = (0..truth_gains.len())
        .filter(|&k| k != 17 && k != 300)
        .collect();
    let gain_offset = live
        .iter()
        .map(|&k| m.pmts.spe_area_adc[k] / truth_gains[k])
        .sum::<f64>()
        / live.len() as f64
        - 1.0;
    let truth_cond = Conditions::load(path_str(&truth_file)).unwrap();
    let dead_mask: Vec<bool> = (0..truth_gains.len())
        .map(|k| k == 17 || k == 300)
        .collect();
    let dead_share =
        tpcflow::sim::told_detector::dead_light_share(&truth_cond.detector, &dead_mask, |x, y| {
            truth_cond.detector.s2_light_collection(x, y)
        });
    let se_truth = 50.0 * (1.0 - dead_share);
    let loss = products["spe_threshold"]["area_loss"].as_f64().unwrap();
    eprintln!(
        "SE gain {:.2} phd, truth {se_truth:.2} (50, {:.2} % of it on the dead channels): {:+.2} %; \
         single-phe area below the hit threshold {:.2} %; measured gains' mean offset from the truth {:+.2} %",
        m.light.se_gain_phd,
        100.0 * dead_share,
        100.0 * (m.light.se_gain_phd / se_truth - 1.0),
        100.0 * loss,
        100.0 * gain_offset
    );
    assert!(
        dead_share > 0.0 && dead_share < 0.02,
        "dead channels' share {dead_share}"
    );
    assert!(loss > 0.002 && loss < 0.02, "threshold area loss {loss}");
    // Target 2 %.
    assert!(
        (m.light.se_gain_phd / se_truth - 1.0).abs() < 0.02,
        "SE gain {} vs {se_truth}",
        m.light.se_gain_phd
    );
    // Per-channel gains within 2 % rms of truth; exactly the dead channels found.
    let rms = (live
        .iter()
        .map(|&k| (m.pmts.spe_area_adc[k] / truth_gains[k] - 1.0).powi(2))
        .sum::<f64>()
        / live.len() as f64)
        .sqrt();
    let rms_v1 = (live
        .iter()
        .map(|&k| (v1.detector.params.pmts.spe_area_adc[k] / truth_gains[k] - 1.0).powi(2))
        .sum::<f64>()
        / live.len() as f64)
        .sqrt();
    eprintln!(
        "gains: rms vs truth {:.2} % (v1: {:.2} %)",
        100.0 * rms,
        100.0 * rms_v1
    );
    // Target 2 %.
    assert!(rms < 0.02 && rms < rms_v1, "gain rms {rms} (told {rms_v1})");
    assert_eq!(m.calibration.dead_channels, vec![17, 300]);
    assert!(m.calibration.kr_s2_xy.is_some() && m.calibration.kr_s1_xyz.is_some());
    let report = std::fs::read_to_string(cal.join("report.md")).unwrap();
    assert!(
        report.contains("electron lifetime") && report.contains("lifetime.svg"),
        "{report}"
    );
    assert!(
        report.contains("Against the simulated truth") && report.contains("missed []"),
        "{report}"
    );
    for svg in ["lifetime.svg", "gains.svg"] {
        let t = std::fs::read_to_string(cal.join(svg)).unwrap();
        assert!(t.starts_with("<svg") || t.contains("<svg"), "{svg}");
    }
    // Reconstruct again with the measured conditions: the Kr83m energy no
    // longer falls with drift time, as it does with v1's 9 ms lifetime.
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
    let drift_trend = |dir: &Path| {
        let f = tpcflow::rq::read_rq_file(&rq_file(dir)).unwrap();
        let col = |n: &str| match f.event_column(n).unwrap() {
            tpcflow::rq::ColumnData::F64(v) => v.clone(),
            other => panic!("{n}: {other:?}"),
        };
        let (t, e) = (col("drift_time_ns"), col("energy_kev"));
        let mut pairs: Vec<(f64, f64)> = t
            .iter()
            .zip(&e)
            .filter(|(t, e)| t.is_finite() && e.is_finite() && **e > 20.0 && **e < 70.0)
            .map(|(a, b)| (*a, *b))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Median of each third and its standard error (1.2533 sd / sqrt n).
        let third = pairs.len() / 3;
        let med = |v: &[(f64, f64)]| {
            let mut e: Vec<f64> = v.iter().map(|p| p.1).collect();
            e.sort_by(f64::total_cmp);
            let n = e.len() as f64;
            let mean = e.iter().sum::<f64>() / n;
            let sd = (e.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
            (e[e.len() / 2], 1.2533 * sd / n.sqrt())
        };
        let ((deep, s_deep), (shallow, s_shallow)) =
            (med(&pairs[2 * third..]), med(&pairs[..third]));
        let trend = deep / shallow - 1.0;
        (
            trend,
            (deep / shallow) * ((s_deep / deep).powi(2) + (s_shallow / shallow).powi(2)).sqrt(),
        )
    };
    let ((trend_v1, sigma_v1), (trend_measured, _)) = (drift_trend(&rq1), drift_trend(&rq2));
    eprintln!(
        "Kr83m energy, deep / shallow third: v1 {:+.2} +- {:.2} %, measured {:+.2} %",
        100.0 * trend_v1,
        100.0 * sigma_v1,
        100.0 * trend_measured
    );
    // v1's 9 ms for the truth's 5 ms: the deep third's S2 is ~6 % short, the
    // energy (S2 ~27 % of it at 41.5 keV) ~1.6 %: seen at > 3 sigma.
    assert!(
        trend_v1 < -3.0 * sigma_v1,
        "v1's lifetime leaves a drift trend: {trend_v1} +- {sigma_v1}"
    );
    assert!(
        trend_measured.abs() < 0.01,
        "measured conditions: {trend_measured}"
    );
}
