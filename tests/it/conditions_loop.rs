//! Conditions made by the pipeline, on the real local SLURM cluster: a
//! sequence of runs (calibration, science, science, calibration after an
//! electron-lifetime step, science) simulated with a detector truth the
//! reconstruction is not told, goes through the dispatcher. Each calibration
//! run is reconstructed, then calibrated by a SLURM job; its products become a
//! tag published from that run on; the science runs after it are processed
//! with it. The dispatcher is killed while the second calibration job runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use tpcflow::catalog::{CalibrationState, Catalog, ConditionsState};
use tpcflow::conditions::Conditions;

use crate::common::*;

/// Kr83m total energy [keV].
const KR_KEV: f64 = 41.5;

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    catalog: PathBuf,
    config: PathBuf,
    truth: PathBuf,
}

fn setup() -> Setup {
    let dir = scratch("conditions-loop");
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("SURF")).unwrap();
    let config = dir.path().join("dispatch.toml");
    std::fs::write(
        &config,
        "prompt_conditions = \"v1\"\nfiles_per_job = 1\nbackoff_s = 1.0\n\
         [conditions]\ncalibrate = true\nauto_publish = true\nmax_lifetime_change = 0.8\n\
         settle_s = 1.0\n",
    )
    .unwrap();
    // The real detector: lifetime 6 ms, halved from run 4 on (v1 says 9 ms).
    let truth = dir.path().join("truth.toml");
    std::fs::write(
        &truth,
        "name = \"lifetime-step\"\nbase = \"v1\"\nfirst_run = 1\n[lifetime]\nfirst_us = 6000.0\n\
         drift_us_per_run = 0.0\nsteps = [{ run = 4, factor = 0.5 }]\n",
    )
    .unwrap();
    Setup {
        catalog: dir.path().join("catalog.db"),
        root,
        config,
        truth,
        _dir: dir,
    }
}

/// Simulate a Kr83m run into SURF (a calibration run gets its RUNINFO first).
fn sim_run(s: &Setup, run: u32, files: u32, events: u32, calibration: bool) {
    let dir = s.root.join("SURF").join(format!("{run:06}"));
    std::fs::create_dir_all(&dir).unwrap();
    if calibration {
        std::fs::write(dir.join("RUNINFO.toml"), "run_type = \"calibration\"\n").unwrap();
    }
    let o = tpcflow_cmd()
        .args([
            "sim",
            "--run",
            &run.to_string(),
            "--files",
            &files.to_string(),
        ])
        .args([
            "--events-per-file",
            &events.to_string(),
            "--source",
            "kr83m",
        ])
        .args([
            "--seed",
            &(100 + run).to_string(),
            "--threads",
            "2",
            "--out",
        ])
        .arg(s.root.join("SURF"))
        .arg("--detector-truth")
        .arg(&s.truth)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn dispatch_cmd(s: &Setup) -> Command {
    let mut c = tpcflow_cmd();
    c.arg("dispatch")
        .arg("--catalog")
        .arg(&s.catalog)
        .arg("--data-root")
        .arg(&s.root)
        .arg("--config")
        .arg(&s.config);
    // Replicas are hard links: the test checks conditions, not copies.
    for site in ["USDC", "UKDC", "ARCHIVE"] {
        c.arg("--copy-command")
            .arg(format!("{site}=ln {{src}} {{dst}}"));
    }
    c
}

/// Passes until `done(catalog)`; panics with the last report after `limit`.
fn dispatch_until(s: &Setup, limit: Duration, done: impl Fn(&Catalog) -> bool) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        let o: Output = dispatch_cmd(s).arg("--once").output().unwrap();
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "dispatch failed: {last}");
        if done(&Catalog::open(&s.catalog).unwrap()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("not done after {limit:?}; last pass: {last}");
}

fn run_processed(c: &Catalog, run: u32) -> bool {
    let files = c.files_of_run(run).unwrap();
    !files.is_empty()
        && files
            .iter()
            .all(|f| f.state == tpcflow::catalog::FileState::Processed)
}

fn calibration_state(c: &Catalog, run: u32) -> Option<CalibrationState> {
    c.calibration(run).unwrap().map(|k| k.state)
}

/// The RQ files of a run with their conditions attributes (tag, sha256).
fn rq_of_run(c: &Catalog, run: u32) -> Vec<(PathBuf, String, String)> {
    c.prompt_outputs_of_run(run)
        .unwrap()
        .into_iter()
        .map(|(path, _)| {
            let f = hdf5::File::open(&path).unwrap();
            let attr = |n: &str| {
                f.attr(n)
                    .unwrap()
                    .read_scalar::<hdf5::types::VarLenUnicode>()
                    .unwrap()
                    .to_string()
            };
            let tag = attr("conditions_tag");
            let sha = attr("conditions_sha256");
            (PathBuf::from(path), tag, sha)
        })
        .collect()
}

/// Median Kr83m energy of RQ files over its true value, minus one.
fn energy_scale(files: &[PathBuf]) -> f64 {
    // Kr83m single scatters (interaction 1): the line the energy scale is
    // set by; multiple scatters' summed energies sit ~1 % lower.
    let mut e: Vec<f64> = Vec::new();
    for p in files {
        let f = tpcflow::rq::read_rq_file(p).unwrap();
        let energy = match f.event_column("energy_kev").unwrap() {
            tpcflow::rq::ColumnData::F64(v) => v.clone(),
            other => panic!("energy_kev: {other:?}"),
        };
        let interaction = match f.event_column("interaction").unwrap() {
            tpcflow::rq::ColumnData::U8(v) => v.clone(),
            other => panic!("interaction: {other:?}"),
        };
        e.extend(
            energy
                .iter()
                .zip(&interaction)
                .filter(|(e, i)| **i == 1 && e.is_finite() && **e > 20.0 && **e < 70.0)
                .map(|(e, _)| *e),
        );
    }
    assert!(e.len() > 200, "only {} Kr83m energies", e.len());
    e.sort_by(f64::total_cmp);
    e[e.len() / 2] / KR_KEV - 1.0
}

/// SLURM calibration jobs of run `run` of this catalog in the jobcomp file.
fn calibration_jobs_that_ran(c: &Catalog, run: u32) -> usize {
    let name = format!(" Name=tpcflow-{}-cal{run}-a", c.instance_id().unwrap());
    std::fs::read_to_string("/var/log/slurm/jobcomp.log")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&name))
        .count()
}

fn squeue_has(name_part: &str) -> bool {
    let o = Command::new("squeue")
        .args(["-h", "-o", "%j %T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .any(|l| l.contains(name_part))
}

#[test]
fn calibration_runs_make_the_tags_the_science_runs_after_them_use() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let s = setup();
    let limit = Duration::from_secs(600);

    // Run 1: calibration, reconstructed with v1, then calibrated by a SLURM job.
    sim_run(&s, 1, 2, 750, true);
    dispatch_until(&s, limit, |c| {
        calibration_state(c, 1) == Some(CalibrationState::Done)
    });
    let c = Catalog::open(&s.catalog).unwrap();
    let cal1 = c
        .conditions_tag("cal-000001")
        .unwrap()
        .expect("tag from run 1");
    assert_eq!(cal1.state, ConditionsState::Published, "{cal1:?}");
    assert_eq!((cal1.first_run, cal1.source_run), (Some(1), Some(1)));
    let log: Vec<String> = c
        .conditions_log(Some("cal-000001"))
        .unwrap()
        .into_iter()
        .map(|d| format!("{} by {}: {}", d.action, d.by, d.reason))
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[1].starts_with("publish from run 1 by tpcflow dispatch: automatic"),
        "{log:?}"
    );
    drop(c);

    // Runs 2 and 3: science, processed with the tag made from run 1.
    sim_run(&s, 2, 1, 250, false);
    sim_run(&s, 3, 1, 250, false);
    dispatch_until(&s, limit, |c| run_processed(c, 2) && run_processed(c, 3));

    // Run 4: calibration after the lifetime step. The dispatcher runs as a
    // daemon and is killed while the calibration job is in SLURM.
    sim_run(&s, 4, 2, 750, true);
    let mut daemon: Child = dispatch_cmd(&s)
        .args(["--daemon", "--interval", "0.3"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let live = loop {
        if start.elapsed() > limit {
            break None;
        }
        let submitted = Catalog::open_read_only(&s.catalog)
            .ok()
            .and_then(|c| calibration_state(&c, 4))
            == Some(CalibrationState::Submitted);
        if submitted {
            let instance = Catalog::open_read_only(&s.catalog)
                .unwrap()
                .instance_id()
                .unwrap();
            break Some(squeue_has(&format!("tpcflow-{instance}-cal4-a1")));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let killed_while_running = live.expect("calibration job of run 4 never submitted");
    assert!(
        killed_while_running,
        "the calibration job had finished before the kill"
    );
    let c = Catalog::open(&s.catalog).unwrap();
    assert!(
        c.conditions_tag("cal-000004").unwrap().is_none(),
        "nothing published yet"
    );
    drop(c);
    dispatch_until(&s, limit, |c| {
        calibration_state(c, 4) == Some(CalibrationState::Done)
    });
    let c = Catalog::open(&s.catalog).unwrap();
    let k4 = c.calibration(4).unwrap().unwrap();
    assert_eq!(k4.attempts, 1, "{k4:?}");
    assert_eq!(
        calibration_jobs_that_ran(&c, 4),
        1,
        "one calibration job for run 4"
    );
    let actions: Vec<String> = c
        .conditions_log(Some("cal-000004"))
        .unwrap()
        .into_iter()
        .map(|d| d.action)
        .collect();
    assert_eq!(actions, ["add", "publish from run 4"], "published once");
    drop(c);

    // Run 5: science after the step, processed with the tag made from run 4.
    sim_run(&s, 5, 1, 400, false);
    dispatch_until(&s, limit, |c| run_processed(c, 5));

    let c = Catalog::open(&s.catalog).unwrap();
    for (run, tag) in [(2, "cal-000001"), (3, "cal-000001"), (5, "cal-000004")] {
        let sha = c.conditions_tag(tag).unwrap().unwrap().content_sha256;
        let rq = rq_of_run(&c, run);
        assert!(!rq.is_empty(), "run {run} has RQ files");
        for (path, t, h) in &rq {
            assert_eq!(
                (t.as_str(), h.as_str()),
                (tag, sha.as_str()),
                "{}",
                path.display()
            );
        }
    }
    let truth_tau = |run: u32| {
        let t: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                s.root
                    .join("SURF")
                    .join(format!("{run:06}/{run:06}.detector-truth.json")),
            )
            .unwrap(),
        )
        .unwrap();
        t["electron_lifetime_us"].as_f64().unwrap()
    };
    let tau4 = tag_conditions(&c, "cal-000004")
        .detector
        .params
        .tpc
        .electron_lifetime_us;
    eprintln!(
        "lifetime: truth run 1 {:.0} us, run 4 {:.0} us; measured run 4 {tau4:.0} us",
        truth_tau(1),
        truth_tau(4)
    );
    // Energy scale of run 5 (after the step) with the loop, and without it:
    // the same raw file reconstructed with v1, and with the tag of run 1.
    let rq5: Vec<PathBuf> = rq_of_run(&c, 5).into_iter().map(|r| r.0).collect();
    let with_loop = energy_scale(&rq5);
    let raw5 = s.root.join("SURF/000005/000005_00000.raw.h5");
    let scale_with = |conditions: &str, out: &Path| {
        let o = tpcflow_cmd()
            .args(["reco", "--threads", "2", "--inputs"])
            .arg(&raw5)
            .arg("--out-dir")
            .arg(out)
            .args(["--conditions", conditions])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let files: Vec<PathBuf> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".rq.h5"))
            .collect();
        energy_scale(&files)
    };
    let without = scale_with("v1", &s.root.join("rq-v1"));
    let cal1_file =
        tpcflow::dispatch::prompt_conditions::job_conditions(&c, &s.root.join("RQ"), "cal-000001")
            .unwrap();
    let stale = scale_with(&cal1_file, &s.root.join("rq-cal1"));
    // For comparison: v1 told the true lifetime of run 5 (the lifetime
    // alone is not the whole detector: v1's gains, SE gain and g1 stay).
    let told = s.root.join("truth-told.toml");
    std::fs::write(
        &told,
        include_str!("../../conditions/v1.toml")
            .replace("tag = \"v1\"", "tag = \"v1-told-truth\"")
            .replace(
                "electron_lifetime_us = 9000.0",
                &format!("electron_lifetime_us = {:.1}", truth_tau(5)),
            ),
    )
    .unwrap();
    let reference = scale_with(told.to_str().unwrap(), &s.root.join("rq-told"));
    eprintln!(
        "run 5 Kr83m energy scale (median / 41.5 keV - 1): told the truth {:+.2} %, with the loop \
         {:+.2} %, v1 (no calibration) {:+.2} %, tag of run 1 (no second calibration) {:+.2} %",
        100.0 * reference,
        100.0 * with_loop,
        100.0 * without,
        100.0 * stale
    );
    // The issue: within 1 % of the truth (41.5 keV) with the loop; off
    // without it.
    assert!(
        with_loop.abs() < 0.01,
        "with the loop {with_loop} (told the truth {reference})"
    );
    assert!(
        without.abs() > 0.01 && stale.abs() > 0.01,
        "without the loop: v1 {without}, tag of run 1 {stale}"
    );
}

/// Conditions of a catalog tag.
fn tag_conditions(c: &Catalog, tag: &str) -> Conditions {
    Conditions::parse(
        &c.conditions_content(tag).unwrap(),
        Path::new(&format!("catalog:{tag}")),
    )
    .unwrap()
}
