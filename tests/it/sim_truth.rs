//! Detector truth apart from the conditions (`tpcflow sim --detector-truth`):
//! the raw data follow the truth (dead and noisy channels, PMT gains, the
//! lifetime of each run), the truth is written beside the data, and without
//! a truth the files are the bytes the nominal simulator wrote.

use std::path::{Path, PathBuf};
use std::process::Command;

use tpcflow::adler::digest_file;
use tpcflow::conditions::Conditions;
use tpcflow::raw::{raw_file_path, truth_path_for, RawFile};
use tpcflow::sim::detector_truth::{load_for_run, DetectorTruth};
use tpcflow::sim::{FileClosing, SimOptions, Source};

use crate::common::*;

/// Run `tpcflow sim` with `args` into `out`; panics with stderr on failure.
pub fn sim(out: &Path, args: &[&str]) {
    let o = Command::new(tpcflow_bin())
        .arg("sim")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tpcflow sim {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Pods per channel, summed over the events of `files`.
fn pods_per_channel(files: &[PathBuf], n_channels: usize) -> (Vec<u64>, u64) {
    let mut counts = vec![0u64; n_channels];
    let mut events = 0;
    for f in files {
        let raw = RawFile::open(f).unwrap();
        for ev in raw.events() {
            events += 1;
            for p in ev.pods {
                counts[usize::from(p.channel)] += 1;
            }
        }
    }
    (counts, events)
}

/// SHA-256 (16 hex digits) of a raw file's every dataset (name, dtype,
/// bytes) and every attribute but `software_version`, read with h5py: the
/// simulated content, whatever version of tpcflow wrote it.
fn raw_content_digest(path: &Path) -> String {
    const CODE: &str = r#"
import sys, hashlib, h5py, numpy as np
h = hashlib.sha256()
with h5py.File(sys.argv[1], "r") as f:
    def attrs(name, obj):
        for k in sorted(obj.attrs):
            if k != "software_version":
                h.update(f"{name}@{k}={np.asarray(obj.attrs[k]).tobytes()!r}".encode())
    attrs("/", f)
    def visit(name, obj):
        attrs(name, obj)
        if isinstance(obj, h5py.Dataset):
            h.update(name.encode()); h.update(str(obj.dtype).encode()); h.update(obj[()].tobytes())
    f.visititems(visit)
print(h.hexdigest()[:16])
"#;
    run_python(CODE, &[path]).trim().to_string()
}

/// Arguments of `tpcflow sim` and, per file it must write, its Adler-32
/// (truth files) or [`raw_content_digest`] (raw files).
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

#[test]
fn without_a_truth_the_files_are_the_bytes_main_wrote() {
    // What the nominal simulator (no detector truth, NEST's mean quanta)
    // writes with these exact arguments: the Adler-32 of each truth file,
    // and for raw files, which carry the software version that wrote them,
    // a digest of everything else (`raw_content_digest`). They change only
    // with a deliberate change of the simulated physics.
    let cases: [Case<'_>; 2] = [
        (
            &[
                "--run",
                "7",
                "--files",
                "2",
                "--events-per-file",
                "10",
                "--seed",
                "42",
                "--source",
                "mixed",
                "--threads",
                "2",
            ],
            &[
                ("000007/000007_00000.raw.h5", "9895b4975a966b21"),
                ("000007/000007_00000.truth.h5", "df2f1672"),
                ("000007/000007_00001.raw.h5", "051a3d75e6e64f33"),
                ("000007/000007_00001.truth.h5", "b64e4a2d"),
            ],
        ),
        (
            &[
                "--run",
                "8",
                "--files",
                "1",
                "--events-per-file",
                "8",
                "--seed",
                "5",
                "--source",
                "kr83m",
                "--close-on-time",
                "--threads",
                "1",
            ],
            &[
                ("000008/000008_00000.raw.h5", "d6dd670823f358d3"),
                ("000008/000008_00000.truth.h5", "6b1cf825"),
            ],
        ),
    ];
    let dir = scratch("truth-nominal");
    for (args, expected) in cases {
        sim(dir.path(), args);
        for (name, want) in expected {
            let path = dir.path().join(name);
            let got = if name.ends_with(".raw.h5") {
                raw_content_digest(&path)
            } else {
                digest_file(&path).unwrap().adler32
            };
            assert_eq!(got, *want, "{name} differs from the pinned nominal output");
        }
    }
    let json = std::fs::read_dir(dir.path().join("000007"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(json, 0, "no detector truth file without --detector-truth");
}

#[test]
fn dead_channels_record_nothing_and_the_noisy_channel_floods() {
    let dir = scratch("truth-channels");
    let common = [
        "--run",
        "17390",
        "--files",
        "2",
        "--events-per-file",
        "12",
        "--seed",
        "9",
        "--source",
        "kr83m",
    ];
    let (truth_out, nominal_out) = (dir.path().join("truth"), dir.path().join("nominal"));
    sim(
        &truth_out,
        &[&common[..], &["--detector-truth", "realistic"]].concat(),
    );
    sim(&nominal_out, &common);
    let truth = load_for_run(&truth_out, 17390).unwrap();
    assert_eq!(truth.name, "realistic");
    assert_eq!(truth.run, 17390);
    assert_eq!(truth.dead_channels, vec![17, 102, 189, 311, 460]);
    let files = |root: &Path| {
        (0..2)
            .map(|s| raw_file_path(root, 17390, s))
            .collect::<Vec<_>>()
    };
    let (counts, events) = pods_per_channel(&files(&truth_out), 494);
    let (nominal, _) = pods_per_channel(&files(&nominal_out), 494);
    assert_eq!(events, 24);
    for &c in &truth.dead_channels {
        let c = usize::from(c);
        assert_eq!(counts[c], 0, "dead channel {c} has pods");
        assert!(
            nominal[c] > 0,
            "the nominal detector's channel {c} has pods"
        );
    }
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    let median = sorted[247] as f64 / events as f64;
    let noisy = counts[233] as f64 / events as f64;
    // 10 kHz over a 4.5 ms window: 45 single phe per event on top of the
    // channel's share of the event's light (the median channel's pods).
    let expected = truth.noisy_rate_hz * 4.5e-3;
    assert!(
        (noisy - median - expected).abs() < 0.25 * expected && noisy > 8.0 * median,
        "noisy channel: {noisy:.1} pods/event (expected {expected:.0}), median channel {median:.2}"
    );
    assert!(nominal[233] as f64 / (events as f64) < 3.0 * median.max(1.0));
}

/// Median area of lone single-phe pods per channel [ADC counts x samples].
fn lone_phe_median_area(files: &[PathBuf], n_channels: usize) -> (Vec<f64>, usize) {
    let mut areas: Vec<Vec<f64>> = vec![Vec::new(); n_channels];
    for f in files {
        let raw = RawFile::open(f).unwrap();
        for ev in raw.events() {
            for p in ev.pods {
                // A lone phe: 20 pre samples, up to 4 above threshold, 30 post.
                if !(44..=54).contains(&p.length) || p.start_sample == 0 {
                    continue;
                }
                let s = ev.pod_samples(p);
                let base = s[..15].iter().map(|&v| f64::from(v)).sum::<f64>() / 15.0;
                let area: f64 = s[17..28].iter().map(|&v| base - f64::from(v)).sum();
                areas[usize::from(p.channel)].push(area);
            }
        }
    }
    let least = areas.iter().map(Vec::len).min().unwrap_or(0);
    let medians = areas
        .into_iter()
        .map(|mut a| {
            a.sort_unstable_by(f64::total_cmp);
            a[a.len() / 2]
        })
        .collect();
    (medians, least)
}

/// rms of ln(a / b) about its mean.
fn log_ratio_rms(a: &[f64], b: &[f64]) -> f64 {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x / y).ln()).collect();
    let m = d.iter().sum::<f64>() / d.len() as f64;
    (d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / d.len() as f64).sqrt()
}

#[test]
fn lone_phe_areas_follow_the_truth_gains() {
    let dir = scratch("truth-gains");
    // A base with 20 kHz of dark counts per PMT: ~90 lone phe per channel and event.
    let base = dir.path().join("dark.toml");
    let v1 = include_str!("../../conditions/v1.toml");
    assert!(v1.contains("dark_rate_hz = 20.0"));
    std::fs::write(
        &base,
        v1.replace("dark_rate_hz = 20.0", "dark_rate_hz = 20000.0"),
    )
    .unwrap();
    let text = format!(
        "name = \"gains\"\nbase = \"{}\"\nfirst_run = 1\n[gains]\nseed = 4\nrms = 0.06\n",
        base.display()
    );
    let truth = DetectorTruth::parse(&text, Path::new("gains.toml")).unwrap();
    let out = dir.path().join("SURF");
    let opts = SimOptions {
        run: 3,
        files: 2,
        events_per_file: 10,
        seed: 11,
        out: out.clone(),
        source: Source::ErFlat,
        first_sequence: 0,
        live_rate_hz: None,
    };
    let cond = Conditions::load("v1").unwrap();
    let report =
        tpcflow::sim::run_with_truth(&opts, &cond, Some(&truth), FileClosing::Count).unwrap();
    let written = load_for_run(&out, 3).unwrap();
    let (measured, least) = lone_phe_median_area(&report.files, 494);
    assert!(least > 1000, "only {least} lone phe on some channel");
    let nominal = &cond.detector.params.pmts.spe_area_adc;
    let vs_truth = log_ratio_rms(&measured, &written.spe_area_adc);
    let vs_nominal = log_ratio_rms(&measured, nominal);
    let truth_vs_nominal = log_ratio_rms(&written.spe_area_adc, nominal);
    assert!(
        vs_truth < 0.025 && vs_nominal > 0.05 && truth_vs_nominal > 0.05,
        "rms of ln(median lone-phe area / gain): {vs_truth:.4} vs truth, {vs_nominal:.4} vs \
         nominal (truth is {truth_vs_nominal:.4} off nominal)"
    );
}

/// Electron lifetime [us] fitted from the truth files: ln(extracted /
/// (electrons x extraction)) against drift time, least squares.
fn fitted_lifetime_us(files: &[PathBuf], extraction: f64) -> f64 {
    let (mut sx, mut sy, mut sxx, mut sxy, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for f in files {
        for ev in tpcflow::truth::read_truth_file(&truth_path_for(f)).unwrap() {
            for v in ev.vertices.iter().filter(|v| v.n_electrons >= 300) {
                let x = v.drift_ns * 1e-3;
                let y = (v.n_extracted as f64 / (v.n_electrons as f64 * extraction)).ln();
                (sx, sy, sxx, sxy, n) = (sx + x, sy + y, sxx + x * x, sxy + x * y, n + 1.0);
            }
        }
    }
    let slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
    -1.0 / slope
}

#[test]
fn the_lifetime_follows_the_schedule_across_runs() {
    let dir = scratch("truth-lifetime");
    let out = dir.path().join("SURF");
    let mut fitted = Vec::new();
    for run in [17399u32, 17400] {
        let r = run.to_string();
        sim(
            &out,
            &[
                "--run",
                &r,
                "--files",
                "1",
                "--events-per-file",
                "600",
                "--seed",
                "2",
                "--source",
                "kr83m",
                "--detector-truth",
                "realistic",
            ],
        );
        let truth = load_for_run(&out, run).unwrap();
        let spec = DetectorTruth::load("realistic").unwrap();
        assert_eq!(truth.electron_lifetime_us, spec.lifetime_us(run).unwrap());
        let tau = fitted_lifetime_us(&[raw_file_path(&out, run, 0)], 0.726);
        // Binomial survival and extraction of ~790 electrons: ~2.2 % rms per
        // event in ln, so 600 events over 1.1 ms of drift measure 1/tau to
        // ~3.5 % (tau ~ 12 ms): 15 % is > 4 sigma.
        assert!(
            (tau / truth.electron_lifetime_us - 1.0).abs() < 0.15,
            "run {run}: fitted {tau:.0} us, truth {:.0} us",
            truth.electron_lifetime_us
        );
        fitted.push((truth.electron_lifetime_us, tau));
    }
    // The step at run 17400 (x1.3) is in the truth and in the data.
    assert!((fitted[1].0 / fitted[0].0 - 1.3 * 9100.0 / 9096.0).abs() < 1e-9);
    assert!(fitted[1].1 / fitted[0].1 > 1.15, "{fitted:?}");
}

#[test]
fn one_file_of_a_run_is_byte_for_byte_the_file_the_whole_run_writes() {
    // What a simulation campaign's job array element writes (`--file-index`),
    // with and without a detector truth, and with files closed on DAQ time.
    let dir = scratch("sim-file-index");
    for (name, extra) in [
        ("plain", &[][..]),
        ("truth", &["--detector-truth", "realistic"][..]),
        ("on-time", &["--close-on-time"][..]),
    ] {
        let base = [
            "--run",
            "17400",
            "--files",
            "3",
            "--events-per-file",
            "3",
            "--seed",
            "11",
            "--source",
            "wimp",
            "--threads",
            "2",
        ];
        let whole = dir.path().join(format!("{name}-whole"));
        sim(&whole, &[&base[..], extra].concat());
        for i in 0..3u32 {
            let one = dir.path().join(format!("{name}-{i}"));
            let index = i.to_string();
            sim(
                &one,
                &[&base[..], extra, &["--file-index", &index]].concat(),
            );
            let written: Vec<_> = std::fs::read_dir(one.join("017400"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".h5"))
                .collect();
            assert_eq!(
                written.len(),
                2,
                "{name} {i}: one raw file and its truth: {written:?}"
            );
            let raw = raw_file_path(&one, 17400, i);
            for path in [truth_path_for(&raw), raw] {
                let rel = path.strip_prefix(&one).unwrap();
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    std::fs::read(whole.join(rel)).unwrap(),
                    "{name}: {}",
                    rel.display()
                );
            }
        }
    }
    // A production numbered apart simulates the detector of a real run.
    let apart = dir.path().join("apart");
    sim(
        &apart,
        &[
            "--run",
            "900000",
            "--files",
            "1",
            "--events-per-file",
            "1",
            "--detector-truth",
            "realistic",
            "--truth-run",
            "17400",
        ],
    );
    let at = load_for_run(&apart, 900_000).unwrap();
    let real = load_for_run(&dir.path().join("truth-whole"), 17400).unwrap();
    assert_eq!(at.run, 900_000);
    assert_eq!(at.electron_lifetime_us, real.electron_lifetime_us);
    assert_eq!(at.spe_area_adc, real.spe_area_adc);

    let o = Command::new(tpcflow_bin())
        .args([
            "sim",
            "--run",
            "9",
            "--files",
            "3",
            "--file-index",
            "3",
            "--out",
        ])
        .arg(dir.path().join("beyond"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("--file-index 3 is not a file of a run of --files 3"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
