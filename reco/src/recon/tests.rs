//! End-to-end kernel tests: synthetic waveforms -> expected pulses and events.

use super::synthetic::{Synth, SynthEvent};
use super::*;
use crate::PodRecord;

const T_S2: f64 = 2.0e6;

/// Top and bottom channels for an S1 spread over `n` PMTs (40 % top).
fn s1_channels(model: &DetectorModel, n: usize) -> Vec<usize> {
    let n_top = n * 2 / 5;
    (0..n_top)
        .map(|k| k * 7)
        .chain((0..n - n_top).map(|k| model.pmts.n_top + k * 5))
        .collect()
}

struct Case {
    name: &'static str,
    build: fn(&mut Synth<'_>),
    /// Expected pulses (kind, relative area tolerance against the true
    /// deposited area or None for no area check), in time order.
    want: Vec<(PulseKind, Option<f64>)>,
}

#[test]
fn synthetic_waveforms_give_the_expected_pulses() {
    let model = DetectorModel::default_lz_like();
    let cfg = RecoConfig::default();
    let cases = vec![
        Case {
            name: "lone S1, 20 phd on 30 PMTs",
            build: |s| {
                let ch = s1_channels(s.model, 30);
                s.s1(20, 1.0e6, &ch);
            },
            want: vec![(PulseKind::S1, Some(0.05))],
        },
        Case {
            name: "S2 of 5000 phd",
            build: |s| s.s2(106, T_S2, 500.0, 100.0, -50.0),
            want: vec![(PulseKind::S2, Some(0.02))],
        },
        Case {
            name: "S1 then S2 5 us later",
            build: |s| {
                let ch = s1_channels(s.model, 40);
                s.s1(40, T_S2 - 5000.0, &ch);
                s.s2(100, T_S2, 300.0, 0.0, 0.0);
            },
            want: vec![(PulseKind::S1, None), (PulseKind::S2, None)],
        },
        Case {
            name: "two S2s 5 us apart",
            build: |s| {
                s.s2(106, T_S2, 1000.0, 200.0, 0.0);
                s.s2(106, T_S2 + 5000.0, 1000.0, 300.0, 0.0);
            },
            want: vec![(PulseKind::S2, None), (PulseKind::S2, None)],
        },
        Case {
            name: "two S2s of 1000 electrons 5 us apart at the cathode (sigma 1.6 us)",
            build: |s| {
                s.s2(1000, T_S2, 1600.0, 200.0, 0.0);
                s.s2(1000, T_S2 + 5000.0, 1600.0, 300.0, 0.0);
            },
            want: vec![(PulseKind::S2, None), (PulseKind::S2, None)],
        },
        Case {
            name: "single electron",
            build: |s| s.s2(1, T_S2, 10.0, -300.0, 100.0),
            want: vec![(PulseKind::SingleElectron, Some(0.08))],
        },
        Case {
            name: "dark count",
            build: |s| s.photon(17, 3.3e6),
            want: vec![(PulseKind::SinglePhe, None)],
        },
    ];
    for case in cases {
        for seed in 0..5u64 {
            let mut synth = Synth::new(&model, seed);
            (case.build)(&mut synth);
            let n_phd = synth.n_phd as f64;
            let true_area = synth.true_area_phd;
            let ev = synth.digitise();
            let r = reconstruct_event(&ev.view(seed), &model, &cfg).unwrap();
            let got: Vec<PulseKind> = r.pulses.iter().map(|p| p.kind).collect();
            let want: Vec<PulseKind> = case.want.iter().map(|w| w.0).collect();
            assert_eq!(got, want, "{} seed {seed}: {:#?}", case.name, r.pulses);
            if let (1, Some(tol)) = (r.pulses.len(), case.want[0].1) {
                let area = f64::from(r.pulses[0].area_phd);
                assert!(
                    (area / true_area - 1.0).abs() < tol,
                    "{} seed {seed}: area {area} for {true_area} ({n_phd} phd)",
                    case.name
                );
            }
        }
    }
}

#[test]
fn drift_time_matches_truth_within_100_ns() {
    let model = DetectorModel::default_lz_like();
    let cfg = RecoConfig::default();
    // (z [mm], electrons)
    let cases = [(1400.0, 200), (700.0, 200), (100.0, 400), (20.0, 1000)];
    for (z, n_e) in cases {
        let drift = model.drift_ns_from_z(z);
        let sigma = (2.0 * 0.002 * drift * 1e-3).sqrt() / 1.33 * 1e3;
        let mut sum = 0.0;
        let t0 = T_S2 - drift;
        for seed in 0..6u64 {
            let mut s = Synth::new(&model, 100 + seed);
            let ch = s1_channels(&model, 30);
            s.s1(30, t0, &ch);
            s.s2(n_e, T_S2, sigma, 0.0, 200.0);
            let arrival = s.mean_arrival_ns();
            let ev = s.digitise();
            let r = reconstruct_event(&ev.view(seed), &model, &cfg).unwrap();
            assert_eq!(
                r.event.kind,
                InteractionKind::SingleScatter,
                "z {z}: {:?}",
                r.event
            );
            // The estimators themselves: S1 time vs t0, S2 time vs the electrons' mean arrival.
            let (e1, e2) = (r.event.s1_time_ns - t0, r.event.s2_time_ns - arrival);
            // Statistical spread of the S2 centre: sqrt(F) sigma_total / sqrt(N_phd).
            let spread = 1.1 * sigma.hypot(289.0) / (s.n_phd as f64).sqrt();
            assert!(e1.abs() < 20.0, "z {z} seed {seed}: S1 time off by {e1} ns");
            assert!(
                e2.abs() < 10.0 + 4.0 * spread,
                "z {z} seed {seed}: S2 time off by {e2} ns"
            );
            let err = r.event.drift_time_ns - drift;
            let allowed = 100.0_f64.max(4.0 * sigma / (n_e as f64).sqrt());
            assert!(
                err.abs() < allowed,
                "z {z} seed {seed}: drift error {err} ns"
            );
            assert!((r.event.z_mm - z).abs() < allowed * 1.33e-3 + 1e-9);
            sum += err;
        }
        let allowed_mean = 20.0 + 3.0 * sigma / (6.0 * n_e as f64).sqrt();
        assert!(
            (sum / 6.0).abs() < allowed_mean,
            "z {z}: mean drift error {} ns",
            sum / 6.0
        );
    }
}

#[test]
fn full_event_has_position_energy_and_kind() {
    let model = DetectorModel::default_lz_like();
    let mut s = Synth::new(&model, 9);
    let drift = model.drift_ns_from_z(800.0);
    let ch = s1_channels(&model, 40);
    s.s1(50, T_S2 - drift, &ch);
    s.s2(180, T_S2, 1000.0, 250.0, -180.0);
    s.photon(3, 1.0e5);
    s.photon(400, 4.0e6);
    let ev = s.digitise();
    let r = reconstruct_event(&ev.view(1), &model, &RecoConfig::default()).unwrap();
    let e = &r.event;
    assert_eq!(e.kind, InteractionKind::SingleScatter, "{e:?}");
    assert_eq!((e.n_s1, e.n_s2, e.n_spe), (1, 1, 2), "{e:?}");
    assert!((e.x_mm - 250.0).abs() < 5.0 * e.sigma_x_mm + 5.0, "{e:?}");
    assert!((e.y_mm + 180.0).abs() < 5.0 * e.sigma_y_mm + 5.0, "{e:?}");
    assert!(e.sigma_x_mm > 0.5 && e.sigma_x_mm < 20.0, "{e:?}");
    assert!(e.energy_kev > 0.0 && e.s1c_phd > 0.0 && e.s2c_phd > e.s2_area_phd * 0.9);
    let areas: f32 = r
        .pulse_channel_areas(e.main_s2 as usize)
        .iter()
        .map(|c| c.area_phd)
        .sum();
    assert!((areas - r.pulses[e.main_s2 as usize].area_phd).abs() < 1e-2);
}

#[test]
fn bad_pods_are_typed_errors() {
    let model = DetectorModel::default_lz_like();
    let cfg = RecoConfig::default();
    let samples = vec![15000i16; 100];
    let pod = |channel: u16, start_sample: i32, length: u32, offset: u64| PodRecord {
        channel,
        start_sample,
        length,
        offset,
    };
    let cases: Vec<(Vec<PodRecord>, RecoError)> = vec![
        (
            vec![pod(1, 0, 50, 0), pod(494, 10, 50, 50)],
            RecoError::BadChannel {
                event: 42,
                pod: 1,
                channel: 494,
                n_channels: 494,
            },
        ),
        (
            vec![pod(1, 0, 60, 50)],
            RecoError::PodOutOfBounds {
                event: 42,
                pod: 0,
                offset: 50,
                length: 60,
                n_samples: 100,
            },
        ),
        (
            vec![pod(1, 0, 1, u64::MAX)],
            RecoError::PodOutOfBounds {
                event: 42,
                pod: 0,
                offset: u64::MAX,
                length: 1,
                n_samples: 100,
            },
        ),
        (
            vec![pod(2, 449_990, 50, 0)],
            RecoError::PodOutsideWindow {
                event: 42,
                pod: 0,
                start_sample: 449_990,
                length: 50,
                window_samples: 450_000,
            },
        ),
        (
            vec![pod(2, -5, 50, 0)],
            RecoError::PodOutsideWindow {
                event: 42,
                pod: 0,
                start_sample: -5,
                length: 50,
                window_samples: 450_000,
            },
        ),
        (
            vec![pod(2, 100, 50, 0), pod(2, 120, 50, 50)],
            RecoError::OverlappingPods {
                event: 42,
                previous: 0,
                pod: 1,
                channel: 2,
            },
        ),
        // Out of (channel, start) order: the overlapping pods are not
        // neighbours in the order they were written.
        (
            vec![pod(2, 120, 50, 0), pod(3, 0, 10, 50), pod(2, 100, 50, 50)],
            RecoError::OverlappingPods {
                event: 42,
                previous: 2,
                pod: 0,
                channel: 2,
            },
        ),
        // Out of order before the overlapping pair.
        (
            vec![
                pod(5, 300, 10, 0),
                pod(5, 100, 80, 10),
                pod(5, 150, 20, 0),
                pod(4, 0, 10, 0),
            ],
            RecoError::OverlappingPods {
                event: 42,
                previous: 1,
                pod: 2,
                channel: 5,
            },
        ),
    ];
    for (pods, want) in cases {
        let ev = EventView {
            event_id: 42,
            trigger_time_ns: 0,
            pods: &pods,
            samples: &samples,
        };
        assert_eq!(reconstruct_event(&ev, &model, &cfg).unwrap_err(), want);
    }
    let bad = RecoConfig {
        split_min_ratio: 2.0,
        ..RecoConfig::default()
    };
    let ev = EventView {
        event_id: 1,
        trigger_time_ns: 0,
        pods: &[],
        samples: &[],
    };
    assert!(matches!(
        reconstruct_event(&ev, &model, &bad),
        Err(RecoError::BadConfig {
            field: "split_min_ratio",
            ..
        })
    ));
}

fn mixed_events(model: &DetectorModel, n: u64) -> Vec<SynthEvent> {
    (0..n)
        .map(|i| {
            let mut s = Synth::new(model, 1000 + i);
            let z = 100.0 + 130.0 * i as f64;
            let drift = model.drift_ns_from_z(z);
            let ch = s1_channels(model, 30);
            s.s1(10 + 5 * i as usize, T_S2 - drift, &ch);
            s.s2(
                50 + 20 * i as usize,
                T_S2,
                800.0,
                30.0 * i as f64,
                -20.0 * i as f64,
            );
            if i % 3 == 0 {
                s.s2(30, T_S2 + 20_000.0, 800.0, -100.0, 0.0);
            }
            for k in 0..20 {
                s.photon((k * 37 + i as usize) % 494, 1.0e5 + 2.0e5 * k as f64);
            }
            s.digitise()
        })
        .collect()
}

#[test]
fn rayon_driver_is_bit_identical_to_the_serial_one() {
    let model = DetectorModel::default_lz_like();
    let cfg = RecoConfig::default();
    let owned = mixed_events(&model, 10);
    let mut views: Vec<EventView<'_>> = owned
        .iter()
        .enumerate()
        .map(|(i, e)| e.view(i as u64))
        .collect();
    // One bad event in the middle stays an error in its slot.
    let bad_pods = [PodRecord {
        channel: 600,
        start_sample: 0,
        length: 1,
        offset: 0,
    }];
    views.insert(
        4,
        EventView {
            event_id: 99,
            trigger_time_ns: 0,
            pods: &bad_pods,
            samples: &[15000],
        },
    );
    let serial = reconstruct_serial(&views, &model, &cfg);
    assert!(serial[4].is_err());
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let parallel = pool.install(|| reconstruct_batch(&views, &model, &cfg));
        assert_eq!(parallel.len(), serial.len());
        for (a, b) in serial.iter().zip(&parallel) {
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    // Bit for bit, NaNs included: compare the debug rendering of
                    // every float via to_bits through serde-free formatting.
                    assert_eq!(format!("{a:?}"), format!("{b:?}"));
                    assert_eq!(a.event.x_mm.to_bits(), b.event.x_mm.to_bits());
                    assert_eq!(a.event.energy_kev.to_bits(), b.event.energy_kev.to_bits());
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                _ => panic!("serial and parallel disagree: {a:?} vs {b:?}"),
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Arbitrary pods (random channels, positions, garbage samples) never
    /// panic, and the pulses are self-consistent.
    #[test]
    fn arbitrary_pods_never_panic_and_pulses_are_consistent(
        pods in proptest::collection::vec((0u16..520, 0i32..450_100, 1u32..200), 0..12),
        samples in proptest::collection::vec(0i16..16384, 2400),
    ) {
        let model = DetectorModel::default_lz_like();
        let mut recs: Vec<PodRecord> = pods
            .iter()
            .enumerate()
            .map(|(i, &(channel, start_sample, length))| PodRecord {
                channel,
                start_sample,
                length,
                offset: (i * 200) as u64,
            })
            .collect();
        recs.sort_by_key(|p| (p.channel, p.start_sample));
        let ev = EventView { event_id: 5, trigger_time_ns: 0, pods: &recs, samples: &samples };
        if let Ok(r) = reconstruct_event(&ev, &model, &RecoConfig::default()) {
            for (i, p) in r.pulses.iter().enumerate() {
                proptest::prop_assert!(p.start_ns <= p.peak_ns && p.peak_ns < p.end_ns);
                proptest::prop_assert!((p.area_top_phd + p.area_bottom_phd - p.area_phd).abs() <= 1e-3 * p.area_phd.abs().max(1.0));
                proptest::prop_assert_eq!(r.pulse_channel_areas(i).len() as u32, p.n_channels);
                proptest::prop_assert!(i == 0 || r.pulses[i - 1].end_ns <= p.start_ns);
            }
        }
    }
}

/// Split purity and efficiency over many seeds (run with --ignored --nocapture).
#[test]
#[ignore = "survey, not a check"]
fn split_survey() {
    let model = DetectorModel::default_lz_like();
    let cfg = RecoConfig::default();
    for (n_e, sigma, sep) in [
        (20, 1600.0, 0.0),
        (100, 1600.0, 0.0),
        (100, 300.0, 0.0),
        (1000, 1600.0, 0.0),
        (5000, 1600.0, 0.0),
        (100, 1000.0, 5000.0),
        (100, 1600.0, 5000.0),
        (300, 1600.0, 5000.0),
        (1000, 1600.0, 5000.0),
        (100, 300.0, 3000.0),
    ] {
        let mut counts = [0usize; 5];
        for seed in 0..40u64 {
            let mut s = Synth::new(&model, 7000 + seed);
            s.s2(n_e, T_S2, sigma, 0.0, 0.0);
            if sep > 0.0 {
                s.s2(n_e, T_S2 + sep, sigma, 0.0, 0.0);
            }
            let ev = s.digitise();
            let r = reconstruct_event(&ev.view(seed), &model, &cfg).unwrap();
            let n = r.pulses.iter().filter(|p| p.kind == PulseKind::S2).count();
            counts[n.min(4)] += 1;
            if sep == 0.0 && n > 1 {
                let v: Vec<(PulseKind, f32, i64, f32)> = r
                    .pulses
                    .iter()
                    .map(|p| (p.kind, p.area_phd, p.start_ns, p.width_50_ns))
                    .collect();
                eprintln!("  {v:?}");
            }
        }
        eprintln!("n_e {n_e} sigma {sigma} sep {sep}: S2 count histogram {counts:?}");
    }
}

/// Single-core throughput in MB/s of raw i16 samples (run with --ignored --nocapture).
#[test]
#[ignore = "timing, not a check"]
fn throughput_single_core() {
    let model = DetectorModel::default_lz_like();
    let cfg = RecoConfig::default();
    let owned = mixed_events(&model, 10);
    let views: Vec<EventView<'_>> = owned
        .iter()
        .enumerate()
        .map(|(i, e)| e.view(i as u64))
        .collect();
    let bytes: u64 = views.iter().map(|v| v.n_samples() * 2).sum();
    let mut scratch = RecoScratch::default();
    let rounds = 50;
    let t = std::time::Instant::now();
    let mut n = 0;
    for _ in 0..rounds {
        for v in &views {
            n += reconstruct_event_with(v, &model, &cfg, &mut scratch)
                .unwrap()
                .pulses
                .len();
        }
    }
    let dt = t.elapsed().as_secs_f64();
    let mb = (bytes * rounds) as f64 / 1e6;
    eprintln!(
        "{} events, {:.1} MB of samples in {dt:.3} s: {:.0} MB/s, {:.0} us/event ({n} pulses)",
        views.len() * rounds as usize,
        mb,
        mb / dt,
        dt / (views.len() as f64 * rounds as f64) * 1e6
    );
}

#[test]
fn pods_in_any_order_are_accepted_when_none_overlap() {
    let model = DetectorModel::default_lz_like();
    let samples = vec![15000i16; 100];
    let pod = |channel: u16, start_sample: i32| PodRecord {
        channel,
        start_sample,
        length: 10,
        offset: 0,
    };
    for pods in [
        vec![pod(2, 500), pod(2, 100), pod(1, 0), pod(2, 300)],
        vec![pod(7, 20), pod(7, 10), pod(7, 0)],
        vec![pod(2, 100), pod(2, 110), pod(3, 105)],
    ] {
        let ev = EventView {
            event_id: 1,
            trigger_time_ns: 0,
            pods: &pods,
            samples: &samples,
        };
        assert_eq!(validate_pods(&ev, &model).map(|_| ()), Ok(()), "{pods:?}");
    }
}

#[test]
fn an_s2_without_top_light_is_flagged_not_corrected_at_the_centre() {
    let model = DetectorModel::default_lz_like();
    let mut s = Synth::new(&model, 11);
    let drift = model.drift_ns_from_z(700.0);
    let ch = s1_channels(&model, 40);
    s.s1(50, T_S2 - drift, &ch);
    // An S2-like pulse seen only by the bottom array: the top likelihood has nothing to fit.
    for i in 0..4000 {
        let ch = model.pmts.n_top + (i * 7) % (model.n_channels() - model.pmts.n_top);
        s.photon(ch, T_S2 + (i as f64 * 0.618_034).fract() * 1500.0);
    }
    let ev = s.digitise();
    let r = reconstruct_event(&ev.view(1), &model, &RecoConfig::default()).unwrap();
    let e = &r.event;
    assert!(e.main_s2 >= 0 && e.drift_time_ns.is_finite(), "{e:?}");
    assert_eq!(e.xy_flag, XY_FAILED, "{e:?}");
    assert!(e.x_mm.is_nan() && e.y_mm.is_nan(), "{e:?}");
    assert!(
        e.s1c_phd.is_nan() && e.s2c_phd.is_nan() && e.energy_kev.is_nan(),
        "no correction as if at (0, 0): {e:?}"
    );
}

#[test]
fn every_scan_path_gives_bit_identical_events() {
    let model = DetectorModel::default_lz_like();
    let cfg = RecoConfig::default();
    let owned = mixed_events(&model, 8);
    let views: Vec<EventView<'_>> = owned
        .iter()
        .enumerate()
        .map(|(i, e)| e.view(i as u64))
        .collect();
    let run = |path: ScanPath| -> Vec<EventRecon> {
        let mut scratch = RecoScratch::with_scan_path(path);
        views
            .iter()
            .map(|ev| reconstruct_event_with(ev, &model, &cfg, &mut scratch).unwrap())
            .collect()
    };
    let reference = run(ScanPath::Portable);
    assert!(reference.iter().all(|r| r.event.n_hits > 0));
    let paths = ScanPath::available();
    eprintln!("scan paths on this CPU: {paths:?}");
    for path in paths {
        for (a, b) in reference.iter().zip(run(path)) {
            // Debug prints the shortest repr that round-trips: equal strings
            // are equal bits (NaNs included, which == would not compare).
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{path:?}");
            assert_eq!(a.event.x_mm.to_bits(), b.event.x_mm.to_bits());
        }
    }
}

/// SHA-256 of the `Debug` text of the portable path's reconstruction of
/// [`mixed_events`]`(.., 8)`. The x86-64 SIMD paths are held to the portable
/// one by [`every_scan_path_gives_bit_identical_events`];
/// `scripts/test-aarch64.sh` runs this test on aarch64 (emulated), which
/// holds that build to the same bits.
const PORTABLE_EVENTS_SHA256: &str =
    "5925698bf084a5d5f3d39db4508687df068847ede46c335b423afd12acb6978d";

#[test]
fn the_portable_reconstruction_of_fixed_events_is_bit_for_bit_the_recorded_one() {
    use sha2::{Digest, Sha256};
    let model = DetectorModel::default_lz_like();
    let cfg = RecoConfig::default();
    let owned = mixed_events(&model, 8);
    let mut scratch = RecoScratch::with_scan_path(ScanPath::Portable);
    let mut sha = Sha256::new();
    for (i, e) in owned.iter().enumerate() {
        let r = reconstruct_event_with(&e.view(i as u64), &model, &cfg, &mut scratch).unwrap();
        assert!(
            r.event.n_hits > 0 && !r.pulses.is_empty(),
            "event {i}: {r:?}"
        );
        // Debug prints each float's shortest round-trip text: equal text is
        // equal bits.
        sha.update(format!("{r:?}\n").as_bytes());
    }
    let got: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        got,
        PORTABLE_EVENTS_SHA256,
        "the reconstruction's output of the fixed events changed on {}: if that is \
         intended (a change to the reconstruction, said so in its commit), record the new \
         digest in PORTABLE_EVENTS_SHA256; if not, this build or this machine computes \
         different bits",
        std::env::consts::ARCH
    );
}
