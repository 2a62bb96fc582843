//! Unit tests of the detector a conditions tag describes.

use std::path::Path;

use super::*;
use crate::sim::{simulate_event, simulate_event_with_truth, EventSpec, Scratch, Source};

fn spec(source: Source, k: u64) -> EventSpec {
    EventSpec {
        source,
        seed: 31,
        run: 17401,
        event_index: k,
        event_id: k,
        trigger_time_ns: 1_000_000 * k as i64,
    }
}

/// v1 with calibration products: two dead channels (one per array), a noisy
/// one, an S2 map rising along x and a uniform 9 mm gas gap.
fn measured() -> Conditions {
    let text = format!(
        "{}\n[detector.calibration]\ndead_channels = [17, 311]\nnoisy_channels = [233]\n\
         noisy_rate_hz = [10000.0]\n\
         [detector.calibration.kr_s2_xy]\nhalf_width_mm = 728.0\nnx = 2\nny = 1\nvalues = [0.9, 1.1]\n\
         [detector.calibration.gas_gap_mm]\nhalf_width_mm = 728.0\nnx = 1\nny = 1\nvalues = [9.0]\n",
        crate::conditions::builtin_text("v1").unwrap()
    );
    Conditions::parse(&text, Path::new("measured.toml")).unwrap()
}

#[test]
fn nominal_conditions_give_the_nominal_simulator_bit_for_bit() {
    let v1 = Conditions::load("v1").unwrap();
    let told = ToldDetector::new(v1.clone());
    let (mut a, mut b) = (Scratch::default(), Scratch::default());
    for (k, source) in [(0, Source::Wimp), (1, Source::Kr83m), (2, Source::Wimp)] {
        let nominal = simulate_event(&v1.detector, &v1.sim, spec(source, k), &mut a);
        let via_tag =
            simulate_event_with_truth(&v1.detector, &v1.sim, Some(&told), spec(source, k), &mut b);
        assert_eq!(nominal, via_tag, "event {k}");
    }
}

#[test]
fn a_measured_tag_sets_dead_and_noisy_channels_the_gap_and_the_se_size() {
    let told = ToldDetector::new(measured());
    let m = &told.conditions.detector;
    assert!(told.is_dead(17) && told.is_dead(311) && !told.is_dead(18));
    assert_eq!(told.noisy_channels(), &[233]);
    assert_eq!(told.noisy_rate_hz(0), 1e4);
    // EL duration: 9 mm of gas at the nominal speed (8 mm in 1000 ns).
    assert!((told.el_width_ns(100.0, -50.0) - 1125.0).abs() < 1e-9);
    // The S2 map's shape, scaled so that what lone SEs show (light on dead
    // channels lost), averaged over the area, is the tag's SE gain.
    let r = m.params.tpc.radius_mm;
    let ratio = told.se_size_phd(300.0, 0.0) / told.se_size_phd(-300.0, 0.0);
    let map = |x: f64| 0.9 + 0.2 * (x / (2.0 * 364.0) + 0.5).clamp(0.0, 1.0);
    assert!((ratio - map(300.0) / map(-300.0)).abs() < 1e-9, "{ratio}");
    let (mut sum, mut n) = (0.0, 0.0);
    for i in -36..=36 {
        for j in -36..=36 {
            let (x, y) = (f64::from(i) * 19.7 + 3.0, f64::from(j) * 19.7 - 5.0);
            if x.hypot(y) <= r {
                sum += told.se_size_phd(x, y) * (1.0 - told.dead_loss(x, y));
                n += 1.0;
            }
        }
    }
    let detected = sum / n;
    let gain = m.params.light.se_gain_phd;
    assert!((detected / gain - 1.0).abs() < 2e-3, "{detected} vs {gain}");
    // Under a dead top PMT its share of the light is lost.
    let (x, y) = (m.pmts.x[17], m.pmts.y[17]);
    assert!(told.dead_loss(x, y) > 0.05, "{}", told.dead_loss(x, y));
    assert!(told.dead_loss(-x, -y) < 0.01);
}

#[test]
fn salt_on_a_measured_tag_has_no_signal_on_dead_channels_and_noise_on_noisy_ones() {
    let told = ToldDetector::new(measured());
    let c = &told.conditions;
    let mut scratch = Scratch::default();
    let (mut noisy_pods, mut events) = (0usize, 0usize);
    for k in 0..12 {
        let (ev, _) = simulate_event_with_truth(
            &c.detector,
            &c.sim,
            Some(&told),
            spec(Source::Wimp, k),
            &mut scratch,
        );
        assert!(
            ev.pods.iter().all(|p| p.channel != 17 && p.channel != 311),
            "event {k} has a pod on a dead channel"
        );
        noisy_pods += ev.pods.iter().filter(|p| p.channel == 233).count();
        events += 1;
    }
    // 10 kHz over a 4.5 ms window: ~45 single phe per event (some share a pod).
    let per_event = noisy_pods as f64 / events as f64;
    assert!((30.0..50.0).contains(&per_event), "{per_event}");
}
