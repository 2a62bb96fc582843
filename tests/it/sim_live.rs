//! `tpcflow sim --live`: files appear over time, each atomically, truth first.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use tpcflow::raw::{truth_path_for, RawFile};

use crate::common::*;

#[test]
fn live_daq_writes_files_over_time_and_each_appears_complete() {
    let dir = scratch("live");
    let out = dir.path().join("SURF");
    let start = Instant::now();
    let mut child = Command::new(tpcflow_bin())
        .args([
            "sim",
            "--run",
            "17",
            "--files",
            "4",
            "--events-per-file",
            "10",
            "--seed",
            "3",
        ])
        .args(["--live", "--rate", "40", "--out"])
        .arg(&out)
        .spawn()
        .unwrap();
    let run_dir = out.join("000017");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut first_seen_at = Vec::new();
    loop {
        let done = child.try_wait().unwrap().is_some();
        if let Ok(entries) = std::fs::read_dir(&run_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".raw.h5") && !name.starts_with('.') && seen.insert(name.clone())
                {
                    // The moment a raw file has its final name it is complete,
                    // and its truth is already beside it.
                    let f = RawFile::open(&e.path())
                        .unwrap_or_else(|err| panic!("{name} appeared incomplete: {err}"));
                    assert_eq!(f.n_events(), 10);
                    assert!(
                        truth_path_for(&e.path()).exists(),
                        "{name} appeared before its truth"
                    );
                    first_seen_at.push(start.elapsed());
                }
            }
        }
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(seen.len(), 4, "files: {seen:?}");
    // 10 events per file at 40 Hz: a file every 0.25 s, so the last appears
    // at least ~0.75 s after the first.
    let spread = first_seen_at[3] - first_seen_at[0];
    assert!(
        spread >= Duration::from_millis(700),
        "files appeared over {spread:?}, not like a live DAQ"
    );
}
