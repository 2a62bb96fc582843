//! `tpcflow validate` end to end: simulate a kr83m run and a mixed run,
//! reconstruct them with the `tpcflow reco` binary, validate the RQ files
//! against truth, and check the report's numbers against an independent
//! computation from the same files; by run through the catalog (salted files
//! skipped); a truth file of another run is refused naming both files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tpcflow::catalog::ingest::{self, IngestConfig};
use tpcflow::catalog::{Catalog, NewCampaign, NewOutput};
use tpcflow::conditions::Conditions;
use tpcflow::raw::truth_path_for;
use tpcflow::rq::{read_rq_file, ColumnData};
use tpcflow::sim::{SimOptions, Source};
use tpcflow::truth::read_truth_file;

use crate::common::*;

const KR_RUN: u32 = 17390;
const MIXED_RUN: u32 = 17391;
const FILES: u32 = 2;
const EVENTS: u32 = 100;

struct Sample {
    root: PathBuf,
    /// (RQ file, truth file), kr83m run first.
    pairs: Vec<(PathBuf, PathBuf)>,
    /// The reco lineage hash.
    lineage: String,
}

fn tpcflow(args: &[&str]) -> Output {
    let out = Command::new(tpcflow_bin())
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("SLURM_CPUS_PER_TASK")
        .env_remove("TPCFLOW_CATALOG")
        .env_remove("TPCFLOW_DATA_ROOT")
        .output()
        .expect("tpcflow runs");
    eprintln!(
        "$ tpcflow {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Simulate both runs under `root` and reconstruct them.
fn sample(root: &Path) -> Sample {
    let root = root.to_path_buf();
    let cond = Conditions::load("v1").unwrap();
    let mut raws = Vec::new();
    for (run, source) in [(KR_RUN, Source::Kr83m), (MIXED_RUN, Source::Mixed)] {
        let opts = SimOptions {
            run,
            files: FILES,
            events_per_file: EVENTS,
            seed: 5,
            out: root.join("SURF"),
            source,
            first_sequence: 0,
            live_rate_hz: None,
        };
        raws.extend(tpcflow::sim::run(&opts, &cond).unwrap().files);
    }
    let out_dir = root.join("rq");
    let mut args = vec![
        "reco",
        "--out-dir",
        s(&out_dir),
        "--threads",
        "2",
        "--inputs",
    ];
    args.extend(raws.iter().map(|p| s(p)));
    let out = tpcflow(&args);
    assert!(out.status.success(), "reco failed");
    let mut pairs = Vec::new();
    let mut lineage = String::new();
    for raw in &raws {
        let stem = raw
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".raw.h5")
            .to_string();
        let rq = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let n = p.file_name().unwrap().to_str().unwrap();
                n.starts_with(&format!("{stem}.")) && n.ends_with(".rq.h5")
            })
            .unwrap_or_else(|| panic!("no RQ file for {stem}"));
        lineage = rq_lineage(&rq);
        pairs.push((rq, truth_path_for(raw)));
    }
    Sample {
        root,
        pairs,
        lineage,
    }
}

fn rq_lineage(rq: &Path) -> String {
    read_rq_file(rq).unwrap().header.lineage_hash
}

fn validate_pairs(out: &Path, pairs: &[(PathBuf, PathBuf)]) -> Output {
    let mut args = vec!["validate", "--out", s(out), "--rq"];
    args.extend(pairs.iter().map(|p| s(&p.0)));
    args.push("--truth");
    args.extend(pairs.iter().map(|p| s(&p.1)));
    tpcflow(&args)
}

fn col_f64(c: &ColumnData) -> Vec<f64> {
    match c {
        ColumnData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        ColumnData::F64(v) => v.clone(),
        ColumnData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        ColumnData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        ColumnData::U64(v) => v.iter().map(|&x| x as f64).collect(),
        ColumnData::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        ColumnData::U16(v) => v.iter().map(|&x| f64::from(x)).collect(),
        ColumnData::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
    }
}

/// Independent count from the files: (kr83m SS energies, S2s of >= 5
/// extracted electrons in single-vertex events, of which the largest pulse
/// overlapping the electrons' arrival window is classified S2).
fn direct_counts(pairs: &[(PathBuf, PathBuf)]) -> (Vec<f64>, usize, usize) {
    let cond = Conditions::load("v1").unwrap();
    let v_d = cond.detector.params.tpc.drift_velocity_mm_per_us;
    let (el, d_l) = (cond.sim.el_width_ns, cond.sim.diffusion_long_mm2_per_us);
    let (mut kr, mut n5, mut ok5) = (Vec::new(), 0, 0);
    for (rq_path, truth_path) in pairs {
        let rq = read_rq_file(rq_path).unwrap();
        let truth: HashMap<u64, _> = read_truth_file(truth_path)
            .unwrap()
            .into_iter()
            .map(|t| (t.event_id, t))
            .collect();
        let ev = |n| col_f64(rq.event_column(n).unwrap());
        let pu = |n| col_f64(rq.pulse_column(n).unwrap());
        let (ids, kind, energy, first, np) = (
            ev("event_id"),
            ev("interaction"),
            ev("energy_kev"),
            ev("first_pulse"),
            ev("n_pulses"),
        );
        let (pk, area, start, end) = (pu("kind"), pu("area_phd"), pu("start_ns"), pu("end_ns"));
        for i in 0..ids.len() {
            let t = &truth[&(ids[i] as u64)];
            if t.source == 2 && kind[i] == 1.0 && energy[i].is_finite() {
                kr.push(energy[i]);
            }
            if t.vertices.len() != 1 || t.vertices[0].n_extracted < 5 {
                continue;
            }
            let v = &t.vertices[0];
            let sig = (2.0 * d_l * v.drift_ns * 1e-3).sqrt() / v_d * 1e3;
            let (lo, hi) = (v.t_s2_ns - 2.0 * sig, v.t_s2_ns + el + 2.0 * sig);
            let a = first[i] as usize;
            let best = (a..a + np[i] as usize)
                .filter(|&k| end[k] > lo && start[k] < hi)
                .max_by(|&x, &y| area[x].total_cmp(&area[y]));
            n5 += 1;
            ok5 += usize::from(best.is_some_and(|k| pk[k] == 2.0));
        }
    }
    (kr, n5, ok5)
}

/// Clipped mean at 2.5 sd, as the accuracy test computes the kr83m peak.
fn clipped_peak(v: &[f64]) -> f64 {
    let stats = |x: &[f64]| {
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let sd = (x.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / (n - 1.0)).sqrt();
        (m, sd)
    };
    let (mut m, mut sd) = stats(v);
    for _ in 0..20 {
        let core: Vec<f64> = v
            .iter()
            .copied()
            .filter(|x| (x - m).abs() < 2.5 * sd)
            .collect();
        let (m2, s2) = stats(&core);
        if (m2 - m).abs() < 1e-9 * sd && (s2 - sd).abs() < 1e-9 * sd {
            break;
        }
        (m, sd) = (m2, s2);
    }
    m
}

/// One sample for every check; the scratch directory (a few hundred MB of
/// raw files) is removed when the test ends.
#[test]
fn validate_reports_truth_matched_accuracy() {
    let dir = scratch("validate");
    let smp = sample(dir.path());
    report_matches_an_independent_count_and_figures_are_valid_svg(&smp);
    a_truth_file_of_another_run_is_refused_naming_both_files(&smp);
    runs_from_the_catalog_skip_salted_files(&smp);
}

fn report_matches_an_independent_count_and_figures_are_valid_svg(smp: &Sample) {
    let out = smp.root.join("report");
    let o = validate_pairs(&out, &smp.pairs);
    assert!(o.status.success(), "validate failed");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("kr83m peak"), "{stdout}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let header: String = md.lines().take(25).collect::<Vec<_>>().join("\n");
    eprintln!("{header}");
    assert!(md.contains("## Targets of the reconstruction"));
    assert_eq!(json["targets"].as_array().unwrap().len(), 6);

    let total = (2 * FILES * EVENTS) as u64;
    assert_eq!(json["matched_events"].as_u64(), Some(total));
    for f in json["files"].as_array().unwrap() {
        assert_eq!(f["rq_without_truth"].as_u64(), Some(0), "{f}");
    }

    let (kr, n5, ok5) = direct_counts(&smp.pairs);
    let peak = json["kr83m"]["peak_kev"].as_f64().unwrap();
    assert_eq!(json["kr83m"]["ss_events"].as_u64(), Some(kr.len() as u64));
    assert!(kr.len() > 100, "only {} kr83m single scatters", kr.len());
    assert!((peak - clipped_peak(&kr)).abs() < 1e-9, "{peak}");
    assert!((peak / 41.5 - 1.0).abs() < 0.02, "kr83m peak {peak:.2} keV");
    let s2 = &json["s2_efficiency"];
    assert_eq!(s2["n_above"].as_u64(), Some(n5 as u64));
    assert_eq!(s2["ok_above"].as_u64(), Some(ok5 as u64));
    assert!(n5 > 100, "only {n5} S2s");
    let kr_target = json["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "kr83m peak")
        .unwrap();
    assert_eq!(kr_target["met"], serde_json::Value::Bool(true));

    // Every figure is linked from the report, parses as XML and has its series.
    let figures: Vec<String> = json["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert!(figures.len() >= 8, "{figures:?}");
    for f in &figures {
        assert!(
            md.contains(&format!("]({f})")),
            "report.md lacks a link to {f}"
        );
    }
    let paths: Vec<PathBuf> = figures.iter().map(|f| out.join(f)).collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let texts = run_python(
        "import sys, xml.etree.ElementTree as ET\n\
         for p in sys.argv[1:]:\n\
         \x20   root = ET.parse(p).getroot()\n\
         \x20   assert root.tag.endswith('svg'), (p, root.tag)\n\
         \x20   words = ' '.join(' '.join((t.text or '').split()) for t in root.iter() if t.tag.endswith('text'))\n\
         \x20   print(p.rsplit('/', 1)[-1] + '\\t' + words)\n",
        &refs,
    );
    let text_of: HashMap<&str, &str> = texts.lines().filter_map(|l| l.split_once('\t')).collect();
    for (figure, series) in [
        ("xy_resolution.svg", "Cramer-Rao bound"),
        ("xy_resolution.svg", "LUX"),
        ("xy_resolution.svg", "reconstructed rms"),
        ("s1_efficiency.svg", "classified S1"),
        ("s1_efficiency.svg", "3-fold coincidence"),
        ("s2_efficiency.svg", "target 99 %"),
        ("drift_residuals.svg", "target +-100 ns"),
        ("drift_pulls.svg", "unit Gaussian"),
        ("kr83m_energy.svg", "41.5 keV line"),
        ("er_energy.svg", "reco = true"),
    ] {
        let text = text_of
            .get(figure)
            .unwrap_or_else(|| panic!("{figure} not parsed"));
        assert!(text.contains(series), "{figure} lacks `{series}`: {text}");
    }
}

fn a_truth_file_of_another_run_is_refused_naming_both_files(smp: &Sample) {
    let (rq, _) = &smp.pairs[0];
    let (_, wrong) = &smp.pairs[FILES as usize];
    let o = validate_pairs(&smp.root.join("bad"), &[(rq.clone(), wrong.clone())]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains(&name(rq)) && err.contains(&name(wrong)),
        "{err}"
    );
    assert!(err.contains("017390_00000.truth.h5"), "{err}");
    assert!(!smp.root.join("bad/report.json").exists());

    // Unequal numbers of RQ and truth files are a usage error.
    let o = tpcflow(&["validate", "--rq", s(rq), "--out", s(&smp.root.join("bad"))]);
    assert_eq!(o.status.code(), Some(i32::from(tpcflow::exit::USAGE)));
}

fn runs_from_the_catalog_skip_salted_files(smp: &Sample) {
    let catalog_path = smp.root.join("catalog.sqlite");
    let catalog = Catalog::init(&catalog_path).unwrap();
    ingest::run(
        &IngestConfig {
            surf_root: smp.root.join("SURF"),
        },
        &catalog,
    )
    .unwrap();
    let campaign = "prompt-v1";
    catalog
        .create_campaign(&NewCampaign {
            name: campaign.into(),
            first_run: KR_RUN,
            last_run: MIXED_RUN,
            conditions_tag: "v1".into(),
            lineage_hash: smp.lineage.clone(),
        })
        .unwrap();
    for (rq, truth) in &smp.pairs {
        let name = truth
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace(".truth.h5", ".raw.h5");
        let f = catalog.file(&name).unwrap();
        catalog
            .record_output(&NewOutput {
                file_id: f.id,
                lineage_hash: smp.lineage.clone(),
                rq_path: s(rq).to_string(),
                checksum: "00000000".into(),
                events: u64::from(EVENTS),
            })
            .unwrap();
    }
    // One file of the mixed run is marked salted: it must be left out.
    let salted = catalog
        .file(&format!("{MIXED_RUN:06}_00001.raw.h5"))
        .unwrap();
    catalog.set_salted(salted.id, true).unwrap();
    drop(catalog);
    let out = smp.root.join("by-run");
    let o = tpcflow(&[
        "validate",
        "--runs",
        &KR_RUN.to_string(),
        &MIXED_RUN.to_string(),
        "--catalog",
        s(&catalog_path),
        "--data-root",
        s(&smp.root),
        "--campaign",
        campaign,
        "--out",
        s(&out),
    ]);
    assert!(o.status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 2 * FILES as usize - 1);
    assert!(files
        .iter()
        .all(|f| f["input_file"] != format!("{MIXED_RUN:06}_00001.raw.h5").as_str()));
    assert_eq!(
        json["matched_events"].as_u64(),
        Some(u64::from((2 * FILES - 1) * EVENTS))
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("1 salted file(s) skipped"), "{md}");
}
