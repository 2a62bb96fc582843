//! Calibration products against the `realistic` detector truth
//! (`conditions/truth-realistic.toml`), which the reconstruction is not told:
//!
//! - Kr83m single scatters as the RQ files hold them, drawn from a run's
//!   effective truth (lifetime, S1 and S2 light-collection maps, SE gain and
//!   EL duration of the local gas gap) with the simulator's quanta model:
//!   3e4 events per run, the size of the benchmark run, in about a
//!   second. The gas-gap map, the tilt, the Kr83m peak uniformity and the
//!   lifetime step at run 17400 are checked on them.
//! - One run simulated with `tpcflow sim --detector-truth realistic` (2400
//!   events), reconstructed with v1, found through a catalog by
//!   `tpcflow calibrate --runs --catalog` and calibrated: the noisy and dead
//!   channels, the lifetime, the gas gap and the peak uniformity of the real
//!   chain against the truth written beside the data, and the same figures in
//!   `tpcflow validate --calibration`'s section.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Normal};
use tpcflow::calibrate::inputs::KrEvent;
use tpcflow::calibrate::liquid_level::width_50;
use tpcflow::calibrate::truth_check::gas_gap_rms;
use tpcflow::calibrate::{measure_kr, KrProducts};
use tpcflow::conditions::Conditions;
use tpcflow::sim::detector_truth::{DetectorTruth, EffectiveTruth};
use tpcflow::sim::quanta::{draw_quanta, Recoil};

use crate::common::{path_str, tpcflow_ok};

/// Relative rms of a reconstructed S2's 50 % width at drift time `t_ns`:
/// measured on run 17390 of the realistic truth (5000 events, reco v1) as the
/// robust sd of w50 / model - 1: 1.8 % below 100 us, 3.0 % at 100-200 us,
/// 3.6 % at 200-400 us, 4.2 % beyond.
fn w50_resolution(t_ns: f64) -> f64 {
    0.018 + 0.025 * (1.0 - (-t_ns / 250e3).exp())
}

/// `n` Kr83m single scatters of one run of the truth, in the RQ files' terms.
fn kr_events(truth: &EffectiveTruth, base: &Conditions, seed: u64, n: usize) -> Vec<KrEvent> {
    let m = &base.detector;
    let p = &m.params;
    let l = &p.light;
    let r = p.tpc.radius_mm;
    let sigma_t_ns = |t_ns: f64| {
        (2.0 * base.sim.diffusion_long_mm2_per_us * t_ns * 1e-3).sqrt()
            / p.tpc.drift_velocity_mm_per_us
            * 1e3
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let unit = Normal::new(0.0, 1.0).unwrap();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (x, y) = (rng.random_range(-r..r), rng.random_range(-r..r));
        if x.hypot(y) > r {
            continue;
        }
        let z = rng.random_range(p.tpc.cathode_z_mm..p.tpc.gate_z_mm);
        let t_ns = m.drift_ns_from_z(z);
        let (ph, el) = draw_quanta(&mut rng, &base.sim, Recoil::Er, 41.5);
        let p1 = (l.g1 * truth.light.s1_light_collection(x, y, z)).min(1.0);
        let n1 = Binomial::new(ph, p1).unwrap().sample(&mut rng) as f64;
        let s1 = n1 + (n1 * 0.338 * 0.338).sqrt() * unit.sample(&mut rng);
        let survive = (-t_ns * 1e-3 / truth.electron_lifetime_us).exp() * l.extraction_efficiency;
        let ne = Binomial::new(el, survive).unwrap().sample(&mut rng) as f64;
        let g = truth.se_size_phd(x, y);
        let s2 = ne * g + ne.sqrt() * g * l.se_resolution * unit.sample(&mut rng);
        let w50 = width_50(truth.gas_gap.el_width_ns(x, y), sigma_t_ns(t_ns))
            * (1.0 + w50_resolution(t_ns) * unit.sample(&mut rng));
        if s1 > 0.0 && s2 > 0.0 {
            out.push(KrEvent {
                drift_ns: t_ns,
                s1_phd: s1,
                s2_phd: s2,
                x_mm: x,
                y_mm: y,
                z_mm: z,
                s2_width_50_ns: w50,
            });
        }
    }
    out
}

fn realistic() -> (DetectorTruth, Conditions) {
    let t = DetectorTruth::load("realistic").unwrap();
    let v1 = Conditions::load("v1").unwrap();
    assert_eq!(t.base.tag, "v1");
    (t, v1)
}

/// Tilt [mrad] and its direction [deg] against the truth's: relative error of the angle.
fn tilt_error(k: &KrProducts, truth: &EffectiveTruth) -> f64 {
    let l = k.liquid.as_ref().expect("gas gap measured");
    let g = &truth.gas_gap;
    eprintln!(
        "tilt {:.3} +- {:.3} mrad toward {:.1} deg; truth {:.3} mrad toward {:.1} deg",
        l.tilt_mrad, l.sigma_tilt_mrad, l.tilt_direction_deg, g.tilt_mrad, g.tilt_azimuth_deg
    );
    l.tilt_mrad / g.tilt_mrad - 1.0
}

#[test]
fn gas_gap_tilt_and_kr_uniformity_on_3e4_events_of_the_realistic_truth() {
    let (t, v1) = realistic();
    let truth = t.resolve(17390).unwrap();
    let ev = kr_events(&truth, &v1, 11, 30_000);
    let k = measure_kr(&v1, &ev, truth.se_gain_centre_phd).unwrap();
    let l = k.liquid.as_ref().expect("gas gap measured");
    let rms = gas_gap_rms(&l.map, &truth.gas_gap);
    eprintln!("gas-gap map: rms {rms:.3} mm vs truth");
    assert!(rms < 0.2, "gas-gap map {rms:.3} mm rms from the truth");
    let tilt = tilt_error(&k, &truth);
    assert!(tilt.abs() < 0.10, "tilt off by {:.1} %", 100.0 * tilt);
    let d = (l.tilt_direction_deg - truth.gas_gap.tilt_azimuth_deg).abs();
    assert!(d < 10.0, "tilt direction off by {d:.1} deg");
    let (ub, um) = (&k.uniformity_base, &k.uniformity_measured);
    eprintln!(
        "Kr83m peak over {} cells: rms {:.2} % with the measured products, {:.2} % with v1 \
         (statistics alone {:.2} %)",
        um.cells,
        100.0 * um.rms,
        100.0 * ub.rms,
        100.0 * um.statistical_rms
    );
    assert_eq!(um.cells, 80);
    assert!(um.rms < 0.01, "uniformity {:.2} %", 100.0 * um.rms);
    assert!(ub.rms > 1.5 * um.rms, "v1 {:.2} %", 100.0 * ub.rms);
}

#[test]
fn the_lifetime_step_of_the_realistic_truth_is_followed() {
    let (t, v1) = realistic();
    let fits: Vec<_> = [17399, 17400]
        .iter()
        .map(|&run| {
            let truth = t.resolve(run).unwrap();
            let ev = kr_events(&truth, &v1, u64::from(run), 10_000);
            let f = tpcflow::calibrate::lifetime::fit_lifetime(&ev, 728.0).unwrap();
            let pull = (f.inverse_lifetime_per_ms - 1e3 / truth.electron_lifetime_us)
                / f.sigma_inverse_lifetime_per_ms;
            eprintln!(
                "run {run}: truth {:.0} us, fitted {:.0} us (1/tau +- {:.1} %), pull {pull:+.2}",
                truth.electron_lifetime_us,
                f.lifetime_us,
                100.0 * f.sigma_inverse_lifetime_per_ms / f.inverse_lifetime_per_ms
            );
            assert!(pull.abs() < 3.5, "run {run}: pull {pull}");
            f
        })
        .collect();
    // The step multiplies tau by 1.3 at run 17400: 1/tau falls by 23 %.
    let step = fits[0].inverse_lifetime_per_ms - fits[1].inverse_lifetime_per_ms;
    let sigma = fits[0]
        .sigma_inverse_lifetime_per_ms
        .hypot(fits[1].sigma_inverse_lifetime_per_ms);
    assert!(
        step / sigma > 3.0,
        "step {step:.4} /ms = {:.1} sigma",
        step / sigma
    );
}

/// A Kr83m run of the realistic truth through the real chain: simulated,
/// reconstructed with v1, calibrated. Every product against the truth
/// written beside the data.
#[test]
fn a_realistic_kr_run_calibrated_against_its_truth() {
    let dir = crate::common::scratch("calibration-truth");
    let root = dir.path();
    let raw = root.join("raw");
    tpcflow_ok(&[
        "sim",
        "--run",
        "17390",
        "--files",
        "1",
        "--events-per-file",
        "2400",
        "--source",
        "kr83m",
        "--seed",
        "5",
        "--out",
        path_str(&raw),
        "--detector-truth",
        "realistic",
        "--threads",
        "2",
    ]);
    let truth = tpcflow::sim::detector_truth::load_for_run(&raw, 17390).unwrap();
    let rq = root.join("rq");
    tpcflow_ok(&[
        "reco",
        "--inputs",
        path_str(&raw.join("017390/017390_00000.raw.h5")),
        "--out-dir",
        path_str(&rq),
        "--conditions",
        "v1",
        "--threads",
        "2",
    ]);
    let rq_file = std::fs::read_dir(&rq)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rq.h5"))
        .expect("an RQ file");
    // The RQ file through the catalog, as prompt processing records it.
    let catalog_path = root.join("catalog.sqlite");
    let lineage = rq_file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').nth(1))
        .expect("RQ name {run}_{seq}.{lineage}.rq.h5")
        .to_string();
    {
        use tpcflow::catalog::ingest::{self, IngestConfig};
        use tpcflow::catalog::{Catalog, NewCampaign, NewOutput};
        let catalog = Catalog::init(&catalog_path).unwrap();
        ingest::run(
            &IngestConfig {
                surf_root: raw.clone(),
            },
            &catalog,
        )
        .unwrap();
        catalog
            .create_campaign(&NewCampaign {
                name: "prompt-v1".into(),
                first_run: 17390,
                last_run: 17391,
                conditions_tag: "v1".into(),
                lineage_hash: lineage.clone(),
            })
            .unwrap();
        let f = catalog.file("017390_00000.raw.h5").unwrap();
        catalog
            .record_output(&NewOutput {
                file_id: f.id,
                lineage_hash: lineage,
                rq_path: format!("rq/{}", rq_file.file_name().unwrap().to_str().unwrap()),
                checksum: "00000000".into(),
                events: 2400,
            })
            .unwrap();
    }
    let cal = root.join("cal");
    let out = tpcflow_ok(&[
        "calibrate",
        "--runs",
        "17390-17390",
        "--catalog",
        path_str(&catalog_path),
        "--out",
        path_str(&cal),
        "--tag",
        "kr-17390",
        "--json",
    ]);
    // A run of the range without an RQ file is named.
    let missing = crate::common::tpcflow_cmd()
        .args(["calibrate", "--runs", "17390-17391", "--catalog"])
        .arg(&catalog_path)
        .args(["--tag", "x", "--out"])
        .arg(root.join("cal-missing"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        err.contains("run 17391: no RQ file of campaign `prompt-v1`"),
        "{err}"
    );
    assert!(!root.join("cal-missing/conditions.toml").exists());
    let products: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let measured = Conditions::load(path_str(&cal.join("conditions.toml"))).unwrap();
    let c = &measured.detector.params.calibration;
    // Channels: every dead one found, the noisy one flagged, nothing else.
    assert_eq!(c.dead_channels, truth.dead_channels);
    assert_eq!(c.noisy_channels, truth.noisy_channels);
    // Lifetime of this run (9.06 ms) within 3.5 sigma.
    let lt = &products["lifetime"];
    let (inv, sigma) = (
        lt["inverse_lifetime_per_ms"].as_f64().unwrap(),
        lt["sigma_inverse_lifetime_per_ms"].as_f64().unwrap(),
    );
    let pull = (inv - 1e3 / truth.electron_lifetime_us) / sigma;
    assert!(pull.abs() < 3.5, "1/tau pull {pull:.2}");
    // Gas gap: the map within 0.2 mm rms; the tilt within 3 sigma (2400
    // events give ~11 % on the angle: the 10 % target is checked on 3e4
    // events above).
    let map = c.gas_gap_mm.as_ref().expect("a gas-gap map");
    let rms = gas_gap_rms(map, &truth.gas_gap);
    let l = &products["liquid_level"];
    let (tilt, sigma_tilt) = (
        l["tilt_mrad"].as_f64().unwrap(),
        l["sigma_tilt_mrad"].as_f64().unwrap(),
    );
    eprintln!(
        "gas gap rms {rms:.3} mm; tilt {tilt:.3} +- {sigma_tilt:.3} mrad (truth {:.3})",
        truth.gas_gap.tilt_mrad
    );
    assert!(rms < 0.2, "gas-gap map {rms:.3} mm rms from the truth");
    assert!(
        ((tilt - truth.gas_gap.tilt_mrad) / sigma_tilt).abs() < 3.0,
        "tilt {tilt} +- {sigma_tilt} vs {}",
        truth.gas_gap.tilt_mrad
    );
    // Kr83m peak: the non-statistical part of the cell scatter within 1 %,
    // and the measured products better than v1. The cells count only with
    // >= 20 events: 2400 events fill ~60 of the 80 (1200 filled 12, too few
    // for an rms of the cells to resolve 1 %).
    let u = |k: &str| {
        let v = &products[k];
        let (rms, stat) = (
            v["rms"].as_f64().unwrap(),
            v["statistical_rms"].as_f64().unwrap(),
        );
        (rms, (rms * rms - stat * stat).max(0.0).sqrt())
    };
    let (measured_rms, measured_excess) = u("uniformity_measured");
    let (v1_rms, v1_excess) = u("uniformity_base");
    eprintln!(
        "Kr83m peak rms: measured {:.2} % (beyond statistics {:.2} %), v1 {:.2} % ({:.2} %)",
        100.0 * measured_rms,
        100.0 * measured_excess,
        100.0 * v1_rms,
        100.0 * v1_excess
    );
    assert!(measured_excess < 0.01, "{measured_excess}");
    assert!(
        measured_rms < v1_rms,
        "measured {measured_rms} vs v1 {v1_rms}"
    );
    // `tpcflow validate` reports the same products against the truth.
    let val = root.join("validation");
    let out = tpcflow_ok(&[
        "validate",
        "--rq",
        path_str(&rq_file),
        "--truth",
        path_str(&raw.join("017390/017390_00000.truth.h5")),
        "--calibration",
        path_str(&cal.join("conditions.toml")),
        "--detector-truth",
        path_str(&raw.join("017390/017390.detector-truth.json")),
        "--out",
        path_str(&val),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &report["calibration"];
    eprintln!("validate's calibration section: {v:#}");
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!((f("lifetime_true_us") - truth.electron_lifetime_us).abs() < 1e-6);
    assert!((f("lifetime_pull") - pull).abs() < 0.05, "{v}");
    assert!((f("gas_gap_rms_mm") - rms).abs() < 1e-9, "{v}");
    assert!((f("tilt_mrad") - tilt).abs() < 1e-9, "{v}");
    assert!((f("kr_uniformity_rms") - measured_rms).abs() < 1e-9, "{v}");
    assert!((f("kr_uniformity_base_rms") - v1_rms).abs() < 1e-9, "{v}");
    for k in ["dead_missed", "dead_false", "noisy_missed", "noisy_false"] {
        assert_eq!(v[k], serde_json::json!([]), "{k}: {v}");
    }
    assert_eq!(v["noisy_true"], serde_json::json!([233]));
    for k in ["se_gain_error", "gain_rms", "gain_rms_told"] {
        assert!(f(k).is_finite(), "{k}: {v}");
    }
    let md = std::fs::read_to_string(val.join("report.md")).unwrap();
    assert!(md.contains("against the simulated truth"), "{md}");
}
