//! The simulator against the physics it must reproduce: NEST means through
//! g1/g2, drift time, and the top/bottom light sharing, measured both on
//! truth and on the digitised waveforms of the raw file.

use rayon::prelude::*;
use tpcflow::conditions::Conditions;
use tpcflow::raw::OwnedEvent;
use tpcflow::raw::{self, RawFile, RawHeader};
use tpcflow::sim::quanta::{mean_quanta, Recoil};
use tpcflow::sim::signals::{Deposits, EventSimulator, VertexTruth};
use tpcflow::sim::source::{uniform_point, Vertex};
use tpcflow::sim::{digitise::Digitiser, event_rng};
use tpcflow_reco::{DetectorModel, EventView};

use crate::common::*;

/// Area [phd] of an event's waveforms inside [t_lo, t_hi) ns, split (top, bottom).
fn area_in_window(ev: &EventView<'_>, m: &DetectorModel, t_lo: f64, t_hi: f64) -> (f64, f64, f64) {
    let dt = m.params.daq.sample_ns;
    let pre = m.params.daq.pre_samples as usize;
    let (mut top, mut bottom, mut tsum) = (0.0, 0.0, 0.0);
    for p in ev.pods {
        let s = ev.pod_samples(p);
        let base = s[..pre.min(s.len())]
            .iter()
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / pre.min(s.len()) as f64;
        let gain = m.phd_area_adc(p.channel as usize);
        for (i, &v) in s.iter().enumerate() {
            let t = (f64::from(p.start_sample) + i as f64) * dt;
            if t >= t_lo && t < t_hi {
                let a = (base - f64::from(v)) / gain;
                tsum += a * t;
                if m.pmts.is_top(p.channel as usize) {
                    top += a;
                } else {
                    bottom += a;
                }
            }
        }
    }
    (top, bottom, tsum)
}

struct Sample {
    truth: VertexTruth,
    s1: (f64, f64, f64),
    s2: (f64, f64, f64),
}

/// Simulate `n` single-vertex events of one recoil type and energy, digitise
/// them, write and re-read a raw file, and measure S1/S2 on the waveforms.
fn simulate_mono(cond: &Conditions, recoil: Recoil, energy: f64, n: u64, seed: u64) -> Vec<Sample> {
    let m = &cond.detector;
    let p = &cond.sim;
    let produced: Vec<(OwnedEvent, VertexTruth)> = (0..n)
        .into_par_iter()
        .map_init(
            || (Deposits::default(), Digitiser::default()),
            |(dep, dig), i| {
                let mut rng = event_rng(seed, 1, i, 3);
                let (x, y, z) = uniform_point(&mut rng, m);
                let v = Vertex {
                    x,
                    y,
                    z,
                    energy_kev: energy,
                    recoil,
                };
                let mut sim = EventSimulator::new(m, p);
                let t0 = m.params.daq.window_before_ns - m.drift_ns_from_z(z);
                let truth = sim.simulate(&mut rng, &[v], t0, dep)[0];
                let mut ev = OwnedEvent {
                    event_id: i,
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
                (ev, truth)
            },
        )
        .collect();
    let dir = scratch("mono");
    let path = raw::raw_file_path(dir.path(), 1, 0);
    let header = RawHeader {
        run: 1,
        sequence: 0,
        sample_period_ns: m.params.daq.sample_ns,
        conditions_tag: cond.tag.clone(),
        n_channels: m.n_channels() as u32,
        window_samples: 450_000,
    };
    let events: Vec<OwnedEvent> = produced.iter().map(|(e, _)| e.clone()).collect();
    raw::write_raw_file(&path, &header, &events).unwrap();
    let file = RawFile::open(&path).unwrap();
    let el = p.el_width_ns;
    file.events()
        .zip(produced.iter().map(|(_, t)| *t))
        .map(|(ev, truth)| {
            let s1 = area_in_window(&ev, m, truth.t_s1_ns - 100.0, truth.t_s1_ns + 700.0);
            let sigma = (2.0 * p.diffusion_long_mm2_per_us * truth.drift_ns * 1e-3).sqrt()
                / m.params.tpc.drift_velocity_mm_per_us
                * 1e3;
            let s2 = area_in_window(
                &ev,
                m,
                truth.t_s2_ns - 5.0 * sigma - 300.0,
                truth.t_s2_ns + el + 5.0 * sigma + 600.0,
            );
            Sample { truth, s1, s2 }
        })
        .collect()
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

#[test]
fn s1_and_s2_means_follow_nest_through_g1_and_g2() {
    let cond = Conditions::load("v1").unwrap();
    let m = &cond.detector;
    for (recoil, energy, seed) in [
        (Recoil::Nr, 10.0, 1),
        (Recoil::Nr, 30.0, 2),
        (Recoil::Er, 2.0, 3),
        (Recoil::Er, 10.0, 4),
    ] {
        let samples = simulate_mono(&cond, recoil, energy, 500, seed);
        let n = samples.len() as f64;
        let (ph, el) = mean_quanta(&cond.sim, recoil, energy);
        let s1_expected = m.params.light.g1 * ph;
        // S2 expected per event: g2 * electrons * survival * xy light collection.
        let s2_expected: f64 = samples
            .iter()
            .map(|s| {
                let t = &s.truth;
                m.g2()
                    * el
                    * (-t.drift_ns * 1e-3 / m.params.tpc.electron_lifetime_us).exp()
                    * m.s2_light_collection(t.x, t.y)
            })
            .sum::<f64>()
            / n;
        let s1_truth = samples.iter().map(|s| s.truth.s1_phd as f64).sum::<f64>() / n;
        let s2_truth = samples.iter().map(|s| s.truth.s2_phd as f64).sum::<f64>() / n;
        let s1_wave = samples.iter().map(|s| s.s1.0 + s.s1.1).sum::<f64>() / n;
        let s2_wave = samples.iter().map(|s| s.s2.0 + s.s2.1).sum::<f64>() / n;
        let label = format!("{recoil:?} {energy} keV");
        eprintln!(
            "{label}: S1 expected {s1_expected:.1} truth {s1_truth:.1} waveform {s1_wave:.1} | \
             S2 expected {s2_expected:.0} truth {s2_truth:.0} waveform {s2_wave:.0}"
        );
        for (what, got, want) in [
            ("S1 truth", s1_truth, s1_expected),
            ("S1 waveform", s1_wave, s1_expected),
            ("S2 truth", s2_truth, s2_expected),
            ("S2 waveform", s2_wave, s2_expected),
        ] {
            let r = ratio(got, want);
            assert!(
                (r - 1.0).abs() < 0.10,
                "{label}: {what} mean {got:.1} vs {want:.1} (ratio {r:.3})"
            );
        }
    }
}

#[test]
fn drift_time_and_area_fractions_top() {
    let cond = Conditions::load("v1").unwrap();
    let m = &cond.detector;
    let samples = simulate_mono(&cond, Recoil::Nr, 30.0, 400, 9);
    let v = m.params.tpc.drift_velocity_mm_per_us;
    let half_el = cond.sim.el_width_ns / 2.0;
    let (mut s1_top, mut s1_all, mut s2_top, mut s2_all, mut aft_s1_expected) =
        (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut offsets = Vec::new();
    for s in &samples {
        let t = &s.truth;
        // Truth: drift time is the drift from z up to the liquid surface.
        let want = (m.params.tpc.liquid_z_mm - t.z) / v * 1e3;
        assert!(
            (t.drift_ns - want).abs() < 1e-6,
            "truth drift {} vs {want}",
            t.drift_ns
        );
        // Waveforms: S2 centroid - S1 centroid = drift + half the EL width (within the S1 decay).
        let (a1, a2) = (s.s1.0 + s.s1.1, s.s2.0 + s.s2.1);
        if a1 > 20.0 && a2 > 1000.0 {
            let measured = s.s2.2 / a2 - s.s1.2 / a1;
            offsets.push(measured - (want + half_el));
        }
        s1_top += s.s1.0;
        s1_all += a1;
        s2_top += s.s2.0;
        s2_all += a2;
        aft_s1_expected += m.s1_top_fraction(t.z) * a1;
    }
    // The S2 centroid fluctuates by sigma_diffusion / sqrt(electrons) (up to
    // ~200 ns near the cathode): check the mean offset and the spread.
    let n = offsets.len() as f64;
    let mean = offsets.iter().sum::<f64>() / n;
    let rms = (offsets.iter().map(|o| (o - mean) * (o - mean)).sum::<f64>() / n).sqrt();
    assert!(n > 300.0, "only {n} events with clear S1 and S2");
    assert!(
        mean.abs() < 40.0,
        "S2-S1 centroid differs from drift + EL/2 by {mean:.0} ns on average"
    );
    assert!(
        rms < 200.0,
        "S2-S1 centroid scatter {rms:.0} ns around drift + EL/2"
    );
    let aft2 = s2_top / s2_all;
    let aft1 = s1_top / s1_all;
    let aft1_expected = aft_s1_expected / s1_all;
    eprintln!("AFT S2 {aft2:.3} (configured {}), AFT S1 {aft1:.3} (expected {aft1_expected:.3}); drift offset {mean:.0} +- {rms:.0} ns",
        m.params.light.s2_top_fraction);
    assert!(
        (aft2 - m.params.light.s2_top_fraction).abs() < 0.02,
        "S2 AFT {aft2}"
    );
    assert!(
        (aft1 - aft1_expected).abs() < 0.03,
        "S1 AFT {aft1} vs {aft1_expected}"
    );
}

#[test]
fn simulation_is_identical_whatever_the_thread_count() {
    let cond = Conditions::load("v1").unwrap();
    let run = |threads: usize, dir: &std::path::Path| {
        let opts = tpcflow::sim::SimOptions {
            run: 3,
            files: 1,
            events_per_file: 12,
            seed: 99,
            out: dir.to_path_buf(),
            source: tpcflow::sim::Source::Mixed,
            first_sequence: 0,
            live_rate_hz: None,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let report = pool.install(|| tpcflow::sim::run(&opts, &cond)).unwrap();
        let f = RawFile::open(&report.files[0]).unwrap();
        (f.samples().to_vec(), f.event_ids().to_vec())
    };
    let (d1, d2) = (scratch("t1"), scratch("t2"));
    let a = run(1, d1.path());
    let b = run(2, d2.path());
    assert!(!a.0.is_empty());
    assert_eq!(a, b);
}
