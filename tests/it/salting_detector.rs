//! Salting follows the detector: on a detector whose truth differs from v1
//! (the `realistic` truth: other gains, dead and noisy channels, lifetime,
//! liquid surface, light maps and light response), salt made with the
//! conditions in force for the run (a `tpcflow calibrate` tag measured from a
//! simulated Kr83m run) cannot be told from real events of the same physics,
//! while salt made from v1 on the same data can.
//!
//! ```text
//! run 17400  Kr83m, realistic truth -> reco (v1) -> calibrate -> tag kr-17400
//! run 17401  WIMP-like NR (the salt's own source), realistic truth, copied twice:
//!   A: catalog with kr-17400 published from run 17400 -> `tpcflow salt` (in force)
//!   B: catalog with no tag published                  -> `tpcflow salt` (the file's v1)
//!   each salted file reconstructed with kr-17400 (prompt processing's conditions)
//! salt vs real: the vault's record says which events are salt; per single
//!   scatter, features from the raw file (pods on dead and noisy channels,
//!   pods, baselines) and the RQ file (hit channels, per-channel areas of the
//!   main S2: dead-channel share, brightest share and residuals against the
//!   tag's light response; xy goodness of fit, AFTs, S2 width against the
//!   width at its drift time, S1 and S2 areas, drift, radius); over all
//!   events, the interaction type
//!   two-sample: KS per feature, chi-square of the interaction type,
//!               Bonferroni over the family at 1 %
//!   classifier: logistic regression and the best stump, two-fold
//!               cross-validated on balanced classes, within 3 sd of chance
//! ```
//!
//! The salt's seed is a secret drawn from the OS, so every run compares
//! fresh salt: with salt as real as the data, the test fails by chance in
//! about 0.4 % of runs (0.1 % the two-sample family, 0.13 % each classifier).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tpcflow::catalog::ingest::{self, IngestConfig};
use tpcflow::catalog::{Catalog, NewConditions};
use tpcflow::conditions::Conditions;
use tpcflow::raw::RawFile;
use tpcflow::rq::{read_rq_file, ColumnData, RqFile};
use tpcflow::salt::{SaltRecord, Vault, VaultKey};
use tpcflow::sim::detector_truth::load_for_run;

use crate::common::*;
use crate::two_sample::{chi2, classify, ks};

const KR_RUN: u32 = 17400;
const RUN: u32 = 17401;
const KR_EVENTS: &str = "1500";
const EVENTS: &str = "1500";
const TAG: &str = "kr-17400";
/// Family-wise false-alarm probability of the two-sample tests.
const FAMILY_ALPHA: f64 = 0.001;
/// Classifier accuracies above chance by more than this many sd tell salt from real.
const CLASSIFIER_SD: f64 = 3.0;

fn rq_in(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rq.h5"))
        .expect("an RQ file")
}

fn f64s(f: &RqFile, group: &str, name: &str) -> Vec<f64> {
    let c = match group {
        "events" => f.event_column(name),
        "pulses" => f.pulse_column(name),
        _ => f.channels.iter().find(|c| c.name == name).map(|c| &c.data),
    };
    match c {
        Some(ColumnData::F64(v)) => v.clone(),
        Some(ColumnData::F32(v)) => v.iter().map(|&x| f64::from(x)).collect(),
        Some(ColumnData::U64(v)) => v.iter().map(|&x| x as f64).collect(),
        Some(ColumnData::U32(v)) => v.iter().map(|&x| f64::from(x)).collect(),
        Some(ColumnData::I32(v)) => v.iter().map(|&x| f64::from(x)).collect(),
        Some(ColumnData::U16(v)) => v.iter().map(|&x| f64::from(x)).collect(),
        Some(ColumnData::U8(v)) => v.iter().map(|&x| f64::from(x)).collect(),
        other => panic!("/{group}/{name}: {other:?}"),
    }
}

/// Names of the per-event features, in row order.
const FEATURES: [&str; 18] = [
    "pods on dead channels",
    "pods on noisy channels",
    "pods",
    "baseline mean [ADC]",
    "baseline rms [ADC]",
    "S1 hit channels",
    "S2 hit channels",
    "S2 share on dead channels",
    "S2 brightest top share",
    "S2 top residuals vs the tag's response",
    "xy goodness of fit",
    "S2 AFT",
    "S1 AFT",
    "S2 width / width at its drift",
    "ln S1 area",
    "ln S2 area",
    "drift time [us]",
    "r^2 [m^2]",
];

/// Per-event features of one salted, reconstructed file, split into salt and real.
struct Sample {
    salt: Vec<Vec<f64>>,
    real: Vec<Vec<f64>>,
    /// Interaction codes of every event (0-5), salt and real.
    salt_kind: [f64; 6],
    real_kind: [f64; 6],
}

/// The truth's dead and noisy channels, and the tag's model for the pattern residuals.
struct Detector {
    dead: Vec<u16>,
    noisy: Vec<u16>,
    tag: Conditions,
}

fn features(raw_path: &Path, rq_path: &Path, salt_ids: &HashSet<u64>, det: &Detector) -> Sample {
    let raw = RawFile::open(raw_path).unwrap();
    let pre = det.tag.detector.params.daq.pre_samples as usize;
    let mut raw_features = std::collections::HashMap::new();
    for ev in raw.events() {
        let (mut dead, mut noisy) = (0.0, 0.0);
        let (mut bsum, mut rsum, mut nb) = (0.0, 0.0, 0.0);
        for p in ev.pods {
            dead += f64::from(u8::from(det.dead.contains(&p.channel)));
            noisy += f64::from(u8::from(det.noisy.contains(&p.channel)));
            let a = p.offset as usize;
            let k = pre.min(p.length as usize);
            if k >= 2 {
                let v: Vec<f64> = ev.samples[a..a + k].iter().map(|&x| f64::from(x)).collect();
                let m = v.iter().sum::<f64>() / k as f64;
                bsum += m;
                rsum += (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (k - 1) as f64).sqrt();
                nb += 1.0;
            }
        }
        raw_features.insert(
            ev.event_id,
            [dead, noisy, ev.pods.len() as f64, bsum / nb, rsum / nb],
        );
    }
    let rq = read_rq_file(rq_path).unwrap();
    let ev = |n: &str| f64s(&rq, "events", n);
    let (ids, interaction, xy_flag) = (ev("event_id"), ev("interaction"), ev("xy_flag"));
    let (first, main_s1, main_s2) = (ev("first_pulse"), ev("main_s1"), ev("main_s2"));
    let (gof, s2_aft, s1_aft) = (ev("xy_gof"), ev("s2_aft"), ev("s1_aft"));
    let (s1, s2, drift, x, y) = (
        ev("s1_area_phd"),
        ev("s2_area_phd"),
        ev("drift_time_ns"),
        ev("x_mm"),
        ev("y_mm"),
    );
    let pu = |n: &str| f64s(&rq, "pulses", n);
    let (n_channels, width50, first_ch, n_ch) = (
        pu("n_channels"),
        pu("width_50_ns"),
        pu("first_channel"),
        pu("n_channel_areas"),
    );
    let (ch, ch_area) = (
        f64s(&rq, "channels", "channel"),
        f64s(&rq, "channels", "area_phd"),
    );
    let model = &det.tag.detector;
    let n_top = model.pmts.n_top;
    let mut pattern = vec![0.0; n_top];
    let mut sample = Sample {
        salt: Vec::new(),
        real: Vec::new(),
        salt_kind: [0.0; 6],
        real_kind: [0.0; 6],
    };
    let mut rows: Vec<(bool, Vec<f64>, f64)> = Vec::new();
    for i in 0..ids.len() {
        let id = ids[i] as u64;
        let is_salt = salt_ids.contains(&id);
        let kind = (interaction[i] as usize).min(5);
        if is_salt {
            sample.salt_kind[kind] += 1.0;
        } else {
            sample.real_kind[kind] += 1.0;
        }
        if !(interaction[i] == 1.0 && xy_flag[i] == 0.0 && main_s1[i] >= 0.0 && main_s2[i] >= 0.0) {
            continue;
        }
        let p1 = (first[i] + main_s1[i]) as usize;
        let p2 = (first[i] + main_s2[i]) as usize;
        let (c0, c1) = (first_ch[p2] as usize, (first_ch[p2] + n_ch[p2]) as usize);
        let mut top = vec![0.0; n_top];
        let (mut dead_area, mut all) = (0.0, 0.0);
        for k in c0..c1 {
            let c = ch[k] as usize;
            all += ch_area[k];
            if det.dead.contains(&(c as u16)) {
                dead_area += ch_area[k];
            }
            if c < n_top {
                top[c] += ch_area[k];
            }
        }
        let top_sum: f64 = top.iter().sum();
        let brightest = top.iter().copied().fold(0.0, f64::max) / top_sum.max(1e-9);
        // Residuals of the live top areas against the tag's response at the fit.
        model.top_pattern(x[i], y[i], &mut pattern);
        let live: Vec<usize> = (0..n_top).filter(|&k| model.is_live(k)).collect();
        let norm: f64 = live.iter().map(|&k| pattern[k]).sum();
        let live_sum: f64 = live.iter().map(|&k| top[k]).sum();
        let resid = live
            .iter()
            .map(|&k| {
                let e = live_sum * pattern[k] / norm;
                (top[k] - e).powi(2) / e.max(1.0)
            })
            .sum::<f64>()
            / live.len() as f64;
        let r = raw_features[&id];
        let row = vec![
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            n_channels[p1],
            n_channels[p2],
            dead_area / all.max(1e-9),
            brightest,
            resid,
            gof[i],
            s2_aft[i],
            s1_aft[i],
            width50[p2],
            s1[i].max(1e-3).ln(),
            s2[i].max(1e-3).ln(),
            drift[i] * 1e-3,
            (x[i] * x[i] + y[i] * y[i]) * 1e-6,
        ];
        rows.push((is_salt, row, drift[i]));
    }
    // S2 width relative to the median width at its drift time (10 slices of
    // equal counts over salt and real together: no label enters).
    let mut drifts: Vec<f64> = rows.iter().map(|r| r.2).collect();
    drifts.sort_by(f64::total_cmp);
    let edges: Vec<f64> = (1..10).map(|k| drifts[k * drifts.len() / 10]).collect();
    let slice = |d: f64| edges.iter().filter(|&&e| d >= e).count();
    let mut widths = vec![Vec::new(); 10];
    for r in &rows {
        widths[slice(r.2)].push(r.1[13]);
    }
    let medians: Vec<f64> = widths
        .iter_mut()
        .map(|w| {
            w.sort_by(f64::total_cmp);
            w[w.len() / 2]
        })
        .collect();
    for (is_salt, mut row, d) in rows {
        row[13] /= medians[slice(d)];
        if is_salt {
            sample.salt.push(row);
        } else {
            sample.real.push(row);
        }
    }
    sample
}

/// What the comparison found.
struct Verdict {
    min_p: f64,
    worst: String,
    logistic: f64,
    stump: f64,
    sd: f64,
    n_salt: usize,
    n_real: usize,
}

fn compare(label: &str, sample: &Sample) -> Verdict {
    let k = FEATURES.len() + 1;
    eprintln!(
        "\n== {label}: {} salt vs {} real single scatters (Bonferroni threshold p < {:.1e}) ==",
        sample.salt.len(),
        sample.real.len(),
        FAMILY_ALPHA / k as f64
    );
    let (mut min_p, mut worst) = (1.0f64, String::new());
    for (j, name) in FEATURES.iter().enumerate() {
        let a: Vec<f64> = sample.salt.iter().map(|r| r[j]).collect();
        let b: Vec<f64> = sample.real.iter().map(|r| r[j]).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (d, p) = ks(&a, &b);
        eprintln!(
            "  {name:<40} salt mean {:>10.4}  real mean {:>10.4}  KS D {d:.3}  p {p:.2e}",
            mean(&a),
            mean(&b)
        );
        if p < min_p {
            (min_p, worst) = (p, name.to_string());
        }
    }
    let (c, p) = chi2(&sample.salt_kind, &sample.real_kind);
    eprintln!(
        "  {:<40} salt {:?}  real {:?}  chi2 {c:.1}  p {p:.2e}",
        "interaction type (all events)", sample.salt_kind, sample.real_kind
    );
    if p < min_p {
        (min_p, worst) = (p, "interaction type".into());
    }
    let cl = classify(&sample.salt, &sample.real, 7);
    eprintln!(
        "  classifiers (two-fold, {} events, chance 0.500 +- {:.3}): logistic {:.3}, best stump {:.3} (on {})",
        cl.n,
        cl.sd(),
        cl.logistic,
        cl.stump,
        FEATURES[cl.stump_feature]
    );
    eprintln!(
        "  a classifier 5 % above chance would be {:.1} sd off it",
        0.05 / cl.sd()
    );
    Verdict {
        min_p,
        worst,
        logistic: cl.logistic,
        stump: cl.stump,
        sd: cl.sd(),
        n_salt: sample.salt.len(),
        n_real: sample.real.len(),
    }
}

#[test]
fn salting_follows_the_detector_tag_salt_passes_for_real_and_v1_salt_does_not() {
    let start = std::time::Instant::now();
    let dir = scratch("salting-detector");
    let d = dir.path();
    // The calibration run and its tag.
    let kr = d.join("kr");
    tpcflow_ok(&[
        "sim",
        "--run",
        &KR_RUN.to_string(),
        "--files",
        "1",
        "--events-per-file",
        KR_EVENTS,
        "--source",
        "kr83m",
        "--seed",
        "4",
        "--out",
        path_str(&kr),
        "--detector-truth",
        "realistic",
        "--threads",
        "2",
    ]);
    let kr_rq = d.join("kr-rq");
    tpcflow_ok(&[
        "reco",
        "--inputs",
        path_str(&kr.join(format!("{KR_RUN:06}/{KR_RUN:06}_00000.raw.h5"))),
        "--out-dir",
        path_str(&kr_rq),
        "--conditions",
        "v1",
        "--threads",
        "2",
    ]);
    let cal = d.join("cal");
    tpcflow_ok(&[
        "calibrate",
        "--rq",
        path_str(&rq_in(&kr_rq)),
        "--out",
        path_str(&cal),
        "--tag",
        TAG,
        "--runs",
        &KR_RUN.to_string(),
    ]);
    let tag_file = cal.join("conditions.toml");
    let tag_text = std::fs::read_to_string(&tag_file).unwrap();
    let tag = Conditions::load(path_str(&tag_file)).unwrap();
    eprintln!(
        "[{:.0} s] calibration tag made",
        start.elapsed().as_secs_f64()
    );

    // The science run, simulated once, salted twice.
    let template = d.join("science");
    tpcflow_ok(&[
        "sim",
        "--run",
        &RUN.to_string(),
        "--files",
        "1",
        "--events-per-file",
        EVENTS,
        "--source",
        "wimp",
        "--seed",
        "5",
        "--out",
        path_str(&template),
        "--detector-truth",
        "realistic",
        "--threads",
        "2",
    ]);
    let truth = load_for_run(&template, RUN).unwrap();
    let det = Detector {
        dead: truth.dead_channels.clone(),
        noisy: truth.noisy_channels.clone(),
        tag: tag.clone(),
    };
    let name = format!("{RUN:06}_00000.raw.h5");
    let mut verdicts = Vec::new();
    for (label, publish) in [
        ("salt made with kr-17400", true),
        ("salt made from v1", false),
    ] {
        let data = d.join(if publish { "with-tag" } else { "with-v1" });
        let run_dir = data.join("SURF").join(format!("{RUN:06}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::copy(
            template.join(format!("{RUN:06}/{name}")),
            run_dir.join(&name),
        )
        .unwrap();
        let catalog_path = data.join("catalog.sqlite");
        {
            let catalog = Catalog::init(&catalog_path).unwrap();
            let cfg = IngestConfig {
                surf_root: data.join("SURF"),
            };
            assert_eq!(ingest::run(&cfg, &catalog).unwrap().files_registered, 1);
            if publish {
                catalog
                    .add_conditions(&NewConditions {
                        tag: TAG,
                        content: &tag_text,
                        source_run: Some(KR_RUN),
                        by: "test",
                        reason: "Kr83m run 17400",
                    })
                    .unwrap();
                catalog
                    .publish_conditions(TAG, KR_RUN, "test", "Kr83m run 17400")
                    .unwrap();
            }
        }
        let (key, vault_dir) = (data.join("salt.key"), data.join("vault"));
        tpcflow_ok(&[
            "salt",
            "keygen",
            "--key",
            path_str(&key),
            "--vault",
            path_str(&vault_dir),
            "--rate",
            "1.0",
        ]);
        tpcflow_ok(&[
            "salt",
            "--catalog",
            path_str(&catalog_path),
            "--data-root",
            path_str(&data),
            "--key",
            path_str(&key),
            "--vault",
            path_str(&vault_dir),
        ]);
        let vault = Vault::open(&vault_dir, VaultKey::load(&key).unwrap()).unwrap();
        let record: SaltRecord = vault
            .read(&SaltRecord::vault_name(RUN, 0))
            .unwrap()
            .unwrap();
        let expected = if publish {
            (TAG.to_string(), tag.sha256.clone())
        } else {
            let v1 = Conditions::load("v1").unwrap();
            (v1.tag, v1.sha256)
        };
        assert_eq!(
            (
                record.conditions_tag.clone(),
                record.conditions_sha256.clone()
            ),
            expected,
            "the vault records the conditions the salt was made with"
        );
        let rq = data.join("rq");
        tpcflow_ok(&[
            "reco",
            "--inputs",
            path_str(&run_dir.join(&name)),
            "--out-dir",
            path_str(&rq),
            "--conditions",
            path_str(&tag_file),
            "--threads",
            "2",
        ]);
        let salt_ids: HashSet<u64> = record.salt_ids().into_iter().collect();
        let sample = features(&run_dir.join(&name), &rq_in(&rq), &salt_ids, &det);
        verdicts.push((label, compare(label, &sample)));
        eprintln!("[{:.0} s] {label} compared", start.elapsed().as_secs_f64());
    }
    let threshold = FAMILY_ALPHA / (FEATURES.len() + 1) as f64;
    let (_, with_tag) = &verdicts[0];
    let (_, with_v1) = &verdicts[1];
    eprintln!(
        "\nsalting follows the detector: tag salt min p {:.2e} ({}), logistic {:.3}, stump {:.3}; \
         v1 salt min p {:.2e} ({}), logistic {:.3}, stump {:.3}; {:.0} s",
        with_tag.min_p,
        with_tag.worst,
        with_tag.logistic,
        with_tag.stump,
        with_v1.min_p,
        with_v1.worst,
        with_v1.logistic,
        with_v1.stump,
        start.elapsed().as_secs_f64()
    );
    // Enough events that a classifier 5 % above chance would stand out.
    assert!(
        0.05 > CLASSIFIER_SD * with_tag.sd,
        "too few events: {} salt, {} real",
        with_tag.n_salt,
        with_tag.n_real
    );
    assert!(
        with_tag.min_p > threshold,
        "salt made with the tag is told from real events by {} (p = {:.2e})",
        with_tag.worst,
        with_tag.min_p
    );
    for (what, acc) in [("logistic", with_tag.logistic), ("stump", with_tag.stump)] {
        assert!(
            acc < 0.5 + CLASSIFIER_SD * with_tag.sd,
            "{what} tells tag salt from real: accuracy {acc:.3} (chance 0.5 +- {:.3})",
            with_tag.sd
        );
    }
    assert!(
        with_v1.min_p < 1e-6 && with_v1.logistic > 0.5 + 5.0 * with_v1.sd,
        "salt made from v1 should be found: min p {:.2e}, logistic {:.3}",
        with_v1.min_p,
        with_v1.logistic
    );
}
