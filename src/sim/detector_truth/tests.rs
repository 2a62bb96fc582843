//! Unit tests of the truth file format, the per-run resolution and the per-run file.

use super::*;

fn realistic() -> DetectorTruth {
    DetectorTruth::load("realistic").unwrap()
}

fn with(replace: &str, by: &str) -> Result<DetectorTruth, TruthError> {
    let text = include_str!("../../../conditions/truth-realistic.toml");
    assert!(text.contains(replace), "{replace}");
    DetectorTruth::parse(&text.replace(replace, by), Path::new("t.toml"))
}

#[test]
fn lifetime_follows_the_schedule_across_runs() {
    let t = realistic();
    let tau = |run| t.lifetime_us(run).unwrap();
    assert_eq!(tau(17000), 7500.0);
    assert_eq!(tau(17390), 7500.0 + 4.0 * 390.0);
    assert_eq!(tau(17399), 7500.0 + 4.0 * 399.0);
    assert!((tau(17400) - (7500.0 + 4.0 * 400.0) * 1.3).abs() < 1e-9);
    assert!(tau(17400) / tau(17399) > 1.29);
    assert_eq!(t.resolve(17390).unwrap().electron_lifetime_us, tau(17390));
    // Without a [lifetime] table every run has the base's lifetime.
    let text = include_str!("../../../conditions/truth-realistic.toml");
    let (a, b) = (
        text.find("[lifetime]").unwrap(),
        text.find("[gains]").unwrap(),
    );
    let text = format!("{}{}", &text[..a], &text[b..]);
    let flat = DetectorTruth::parse(&text, Path::new("t.toml")).unwrap();
    assert_eq!(flat.lifetime_us(17500).unwrap(), 9000.0);
    // A schedule that reaches zero is an error naming the run.
    let e = with("drift_us_per_run = 4.0", "drift_us_per_run = -40.0")
        .unwrap()
        .lifetime_us(17400)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.toml") && e.contains("run 17400"), "{e}");
}

#[test]
fn gains_are_a_few_percent_off_nominal_and_drift_slowly() {
    let t = realistic();
    let nominal = &t.base.detector.params.pmts.spe_area_adc;
    let rms = |a: &[f64], b: &[f64]| {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x / y).ln()).collect();
        let m = d.iter().sum::<f64>() / d.len() as f64;
        (d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / d.len() as f64).sqrt()
    };
    let g0 = t.spe_area_adc(17000);
    let g1 = t.spe_area_adc(17390);
    assert!(
        (0.025..0.035).contains(&rms(&g0, nominal)),
        "{}",
        rms(&g0, nominal)
    );
    // 390 runs of N(0, 5e-5) per run: about 2 % rms of drift.
    assert!((0.015..0.025).contains(&rms(&g1, &g0)), "{}", rms(&g1, &g0));
    assert_eq!(g1, t.spe_area_adc(17390), "seeded");
    let truth = t.resolve(17390).unwrap();
    assert_eq!(truth.spe_area_adc, g1);
    assert_eq!(truth.dead_channels.len(), 5);
    assert!(truth.is_dead(311) && !truth.is_dead(312));
    assert_eq!(truth.noisy_channels, vec![233]);
}

#[test]
fn simulated_detector_carries_the_true_lifetime_and_gains() {
    let d = realistic().simulated_detector(17390).unwrap();
    let p = &d.conditions.detector.params;
    assert_eq!(p.tpc.electron_lifetime_us, d.truth.electron_lifetime_us);
    assert_eq!(p.pmts.spe_area_adc, d.truth.spe_area_adc);
    assert_eq!(d.conditions.tag, "v1");
}

#[test]
fn bad_truth_files_name_the_file_and_field() {
    let msg = with("dead_channels = [17,", "dead_channels = [600, 17,")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("t.toml") && msg.contains("gains.dead_channels") && msg.contains("600"),
        "{msg}"
    );
    let msg = with("noisy_channels = [233]", "noisy_channels = [17]")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("gains.noisy_channels"), "{msg}");
    let msg = with("rms = 0.03", "rms = 0.03\ngain_typo = 1")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("t.toml") && msg.contains("gain_typo"), "{msg}");
    let msg = with("base = \"v1\"", "base = \"v0\"")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("t.toml") && msg.contains("v0"), "{msg}");
    let msg = with("first_us = 7500.0", "first_us = -1.0")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lifetime.first_us"), "{msg}");
    let msg = DetectorTruth::load("no-such-truth")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no-such-truth") && msg.contains("realistic"),
        "{msg}"
    );
}

#[test]
fn the_truth_of_a_run_round_trips_through_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let truth = realistic().resolve(17391).unwrap();
    let path = truth.write_for_run(dir.path()).unwrap();
    assert_eq!(path, dir.path().join("017391/017391.detector-truth.json"));
    // JSON keeps every number to within a unit in the last place.
    let back = load_for_run(dir.path(), 17391).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-14 * a.abs().max(1.0);
    assert!(close(back.electron_lifetime_us, truth.electron_lifetime_us));
    assert!(close(back.se_gain_centre_phd, truth.se_gain_centre_phd));
    assert_eq!(back.spe_area_adc.len(), truth.spe_area_adc.len());
    assert!(back
        .spe_area_adc
        .iter()
        .zip(&truth.spe_area_adc)
        .all(|(a, b)| close(*a, *b)));
    assert!(close(
        back.gas_gap.gas_gap_mm(300.0, -200.0),
        truth.gas_gap.gas_gap_mm(300.0, -200.0)
    ));
    assert!(close(
        back.light.s1_light_collection(300.0, -200.0, 50.0),
        truth.light.s1_light_collection(300.0, -200.0, 50.0)
    ));
    assert_eq!(
        (
            &back.dead_channels,
            &back.noisy_channels,
            back.run,
            &back.name
        ),
        (
            &truth.dead_channels,
            &truth.noisy_channels,
            truth.run,
            &truth.name
        )
    );
    let msg = load_for_run(dir.path(), 5).unwrap_err().to_string();
    assert!(msg.contains("000005.detector-truth.json"), "{msg}");
    std::fs::write(&path, "{\"format\": 1}").unwrap();
    let msg = load_for_run(dir.path(), 17391).unwrap_err().to_string();
    assert!(
        msg.contains("017391.detector-truth.json") && msg.contains("missing field"),
        "{msg}"
    );
}

#[test]
#[allow(clippy::needless_range_loop)]
fn the_true_light_response_differs_from_nominal_and_is_written_with_the_run() {
    let t = realistic();
    let d = t.simulated_detector(17390).unwrap();
    let lrf = d.truth.lrf.as_ref().expect("realistic has an [lrf] table");
    let e = &lrf.relative_efficiency;
    assert_eq!(e.len(), 253);
    let rms = (e.iter().map(|v| (v - 1.0).powi(2)).sum::<f64>() / 253.0).sqrt();
    assert!((0.08..0.12).contains(&rms), "efficiency rms {rms}");
    // The simulated detector's top pattern follows the truth, not v1's form.
    let nominal = &t.base.detector;
    let (mut p_true, mut p_nom) = (vec![0.0; 253], vec![0.0; 253]);
    let (x, y) = (nominal.pmts.x[40] + 20.0, nominal.pmts.y[40]);
    d.conditions.detector.top_pattern(x, y, &mut p_true);
    nominal.top_pattern(x, y, &mut p_nom);
    let mut expected: Vec<f64> = (0..253)
        .map(|k| {
            let rho = (x - nominal.pmts.x[k]).hypot(y - nominal.pmts.y[k]);
            e[k] * lrf.shape.value(rho)
        })
        .collect();
    let sum: f64 = expected.iter().sum();
    expected.iter_mut().for_each(|v| *v /= sum);
    for k in 0..253 {
        assert!(
            (p_true[k] / expected[k] - 1.0).abs() < 1e-5,
            "PMT {k}: {} vs {}",
            p_true[k],
            expected[k]
        );
    }
    let rel = |k: usize| (p_true[k] / p_nom[k] - 1.0).abs();
    assert!(rel(40) > 0.02 && (0..253).any(|k| rel(k) > 0.15));
    // Written beside the data and read back whole.
    let dir = tempfile::tempdir().unwrap();
    d.truth.write_for_run(dir.path()).unwrap();
    let back = load_for_run(dir.path(), 17390).unwrap();
    assert_eq!(back.lrf.as_ref().map(|l| &l.shape), Some(&lrf.shape));
    // Without an [lrf] table the run's truth has no response and its JSON no field.
    let text = include_str!("../../../conditions/truth-realistic.toml");
    let cut = text.find("\n[lrf]").unwrap();
    let plain = DetectorTruth::parse(&text[..cut], Path::new("t.toml")).unwrap();
    let d = plain.simulated_detector(17390).unwrap();
    assert!(d.truth.lrf.is_none() && d.conditions.detector.response.is_none());
    assert!(!serde_json::to_string(&d.truth).unwrap().contains("\"lrf\""));
    let msg = with("r0_mm = 66.0", "r0_mm = 0.0").unwrap_err().to_string();
    assert!(msg.contains("t.toml") && msg.contains("lrf.r0_mm"), "{msg}");
}
