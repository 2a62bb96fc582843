//! Start-up of `tpcflow reco`: a job of one rank reaches its first event in
//! milliseconds, alone, under `mpirun -n 1` and under `srun -n 1` (it does
//! not initialise MPI; the multi-rank tests in `reco_mpi` do), and a 1-event
//! file's whole process takes a small fraction of a second.
//!
//! Timings on a shared machine are noisy: each figure is the best of a few
//! runs, and the bounds are the targets of the start-up work (the MPI
//! singleton start-up this avoids took ~0.45 s here).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::common::*;

/// Runs of each launch; the best one is compared with the bound.
const RUNS: usize = 5;
/// Process start to the first batch of events reconstructed [s].
const FIRST_EVENT_BOUND_S: f64 = 0.050;
/// Whole process of a 1-event file, without a launcher [s]. The target is
/// 0.1 s (measured ~0.09-0.11 s here, docs/performance.md); most of what is
/// left is the four fsyncs of the output and its record, which take 10-100
/// ms on this shared disk, so the test allows twice that: still far below
/// the ~0.5 s of a process that starts MPI.
const WHOLE_PROCESS_BOUND_S: f64 = 0.200;

/// The summary of `reco --json` run by `launcher` (empty: none) on `input`,
/// and the process's wall time seen from here.
fn run_once(launcher: &[&str], input: &Path, out: &Path) -> (serde_json::Value, f64) {
    let _ = std::fs::remove_dir_all(out);
    let mut cmd = match launcher.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(tpcflow_bin());
            c
        }
        None => Command::new(tpcflow_bin()),
    };
    mpi_env(&mut cmd)
        .env("TPCFLOW_LOG", "warn")
        .args(["reco", "--json", "--threads", "1", "--out-dir"])
        .arg(out)
        .arg("--inputs")
        .arg(input);
    let t = Instant::now();
    let o = cmd.output().expect("reco runs");
    let wall = t.elapsed().as_secs_f64();
    assert!(
        o.status.success(),
        "{launcher:?} reco failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let json = &stdout[stdout.find('{').expect("a JSON summary")..];
    let summary: serde_json::Value = serde_json::from_str(json).expect("summary JSON");
    assert_eq!(summary["ranks"], 1, "{launcher:?}: {summary}");
    assert_eq!(summary["files_ok"], 1, "{launcher:?}: {summary}");
    (summary, wall)
}

/// Best start-up and best whole-process wall of [`RUNS`] runs.
fn best_of_runs(launcher: &[&str], input: &Path, out: &Path) -> (f64, f64) {
    let (mut first, mut wall) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..RUNS {
        let (s, w) = run_once(launcher, input, out);
        let f = s["first_batch_seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("{launcher:?}: no first_batch_seconds in {s}"));
        first = first.min(f);
        wall = wall.min(w);
    }
    eprintln!("{launcher:?}: best first batch {first:.4} s, best whole process {wall:.4} s");
    (first, wall)
}

fn one_event_file(dir: &Path) -> PathBuf {
    let files = simulate_mixed(2501, dir, 1, 1);
    files[0].clone()
}

#[test]
fn a_lone_one_event_job_starts_in_milliseconds() {
    let dir = scratch("startup-lone");
    let input = one_event_file(dir.path());
    let (first, wall) = best_of_runs(&[], &input, &dir.path().join("out"));
    assert!(
        first <= FIRST_EVENT_BOUND_S,
        "first batch after {first:.3} s (bound {FIRST_EVENT_BOUND_S} s)"
    );
    assert!(
        wall <= WHOLE_PROCESS_BOUND_S,
        "whole process {wall:.3} s (bound {WHOLE_PROCESS_BOUND_S} s)"
    );
}

#[test]
fn one_rank_under_mpirun_and_srun_starts_in_milliseconds() {
    if !require_cluster() {
        return;
    }
    let _guard = cluster_shared();
    let dir = scratch("startup-launched");
    let input = one_event_file(dir.path());
    let out = dir.path().join("out");
    let launcher = mpirun(1);
    let mut mpirun_n1 = vec![launcher.get_program().to_str().unwrap()];
    mpirun_n1.extend(launcher.get_args().map(|a| a.to_str().unwrap()));
    let (first, _) = best_of_runs(&mpirun_n1, &input, &out);
    assert!(
        first <= FIRST_EVENT_BOUND_S,
        "mpirun -n 1: first batch after {first:.3} s (bound {FIRST_EVENT_BOUND_S} s)"
    );
    let (first, _) = best_of_runs(&["srun", "-n", "1", srun_mpi()], &input, &out);
    assert!(
        first <= FIRST_EVENT_BOUND_S,
        "srun -n 1: first batch after {first:.3} s (bound {FIRST_EVENT_BOUND_S} s)"
    );
}
