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

#[test]
fn files_closed_on_daq_time_vary_in_event_count_and_tile_the_run() {
    let dir = scratch("close-on-time");
    let out = dir.path().join("SURF");
    let o = Command::new(tpcflow_bin())
        .args([
            "sim",
            "--run",
            "18",
            "--files",
            "8",
            "--events-per-file",
            "12",
        ])
        .args(["--seed", "4", "--close-on-time", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut counts = Vec::new();
    let mut next_id = 0u64;
    let mut last_time = i64::MIN;
    for seq in 0..8u32 {
        let f = RawFile::open(&out.join(format!("000018/000018_{seq:05}.raw.h5"))).unwrap();
        counts.push(f.n_events());
        for e in f.events() {
            // Ids continue across files in trigger-time order: the files tile the run.
            assert_eq!(e.event_id, next_id, "file {seq}");
            assert!(e.trigger_time_ns > last_time, "file {seq}");
            next_id += 1;
            last_time = e.trigger_time_ns;
        }
    }
    assert_eq!(next_id, report["events"].as_u64().unwrap());
    let mean = next_id as f64 / 8.0;
    // Poisson-like counts around the requested mean, not a constant.
    assert!((6.0..=18.0).contains(&mean), "mean {mean} events per file");
    assert!(
        counts.iter().any(|&c| c != counts[0]),
        "every file has {} events: {counts:?}",
        counts[0]
    );
}
