//! A full disk (ENOSPC) at a transfer destination or in the RQ output
//! directory, on a real size-limited tmpfs: a clear, recorded failure of that
//! copy or output naming the path, no partial file under a final name, and a
//! retry that succeeds once space returns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tpcflow::catalog::{ingest, Catalog, ReplicaState, Site};
use tpcflow::conditions::Conditions;
use tpcflow::reco_job::read_result;
use tpcflow::sim::{SimOptions, Source};

use crate::common::*;

const RUN: u32 = 17410;

/// A tmpfs of `bytes` mounted on `dir`, unmounted on drop (before the
/// scratch directory holding it is removed).
pub(crate) struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    pub(crate) fn mount(dir: &Path, bytes: u64) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "these tests need root to mount a small tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Give the file system `bytes` (space returns).
    pub(crate) fn resize(&self, bytes: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(st.success(), "remount {}", self.dir.display());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn page_round(bytes: u64) -> u64 {
    bytes.div_ceil(4096).max(1) * 4096
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn simulate(out: &Path, files: u32, events: u32) -> Vec<PathBuf> {
    let opts = SimOptions {
        run: RUN,
        files,
        events_per_file: events,
        seed: 23,
        out: out.to_path_buf(),
        source: Source::Mixed,
        first_sequence: 0,
        live_rate_hz: None,
    };
    tpcflow::sim::run(&opts, &Conditions::load("v1").unwrap())
        .unwrap()
        .files
}

fn tpcflow(dir: &Path, data: &Path, args: &[&str]) -> Output {
    Command::new(tpcflow_bin())
        .args(args)
        .env("TPCFLOW_CATALOG", dir.join("catalog.sqlite"))
        .env("TPCFLOW_DATA_ROOT", data)
        .env("TPCFLOW_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn a_full_transfer_destination_is_recorded_and_retried_once_space_returns() {
    let dir = scratch("full-transfer");
    let data = dir.path().join("data");
    simulate(&data.join("SURF"), 6, 8);
    let surf_run = data.join("SURF").join(format!("{RUN:06}"));
    let sizes: Vec<u64> = names_in(&surf_run)
        .iter()
        .filter(|n| n.ends_with(".raw.h5"))
        .map(|n| std::fs::metadata(surf_run.join(n)).unwrap().len())
        .collect();
    assert_eq!(sizes.len(), 6);
    let total: u64 = sizes.iter().sum();
    // Room for about half of the files.
    let usdc = SmallFs::mount(&data.join("USDC"), page_round(total / 2));

    let out = tpcflow(dir.path(), &data, &["catalog", "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tpcflow(dir.path(), &data, &["catalog", "ingest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tpcflow(
        dir.path(),
        &data,
        &[
            "transfer",
            "--to",
            "USDC",
            "--parallel",
            "1",
            "--max-attempts",
            "3",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(3),
        "a full destination is a partial failure: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("NO SPACE"), "{stdout}");

    let catalog = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
    let usdc_run = data.join("USDC").join(format!("{RUN:06}"));
    let (mut verified, mut full) = (0, 0);
    for f in catalog.files_of_run(RUN).unwrap() {
        let r = catalog
            .replicas_of(f.id)
            .unwrap()
            .into_iter()
            .find(|r| r.site == Site::Usdc)
            .unwrap();
        let final_name = usdc_run.join(&f.name);
        match r.state {
            ReplicaState::Verified => {
                verified += 1;
                assert_eq!(std::fs::metadata(&final_name).unwrap().len(), f.size_bytes);
            }
            ReplicaState::Queued => {
                full += 1;
                let why = r.last_error.clone().unwrap_or_default();
                assert!(
                    why.contains("No space left on device")
                        && why.contains(&*usdc_run.to_string_lossy()),
                    "{}: {why}",
                    f.name
                );
                // A full disk is not the file's fault: no attempt spent.
                assert_eq!(r.attempts, 0, "{}: {why}", f.name);
                assert!(
                    !final_name.exists(),
                    "partial {} under its final name",
                    f.name
                );
            }
            other => panic!("{} at USDC is {other}: {:?}", f.name, r.last_error),
        }
    }
    assert!(
        verified >= 1 && full >= 1,
        "{verified} verified, {full} full"
    );
    for name in names_in(&usdc_run) {
        assert!(
            !ingest::is_temporary_name(&name),
            "leftover temporary {name}"
        );
    }

    // Space returns: the next plain pass copies the rest.
    usdc.resize(page_round(total * 4));
    let out = tpcflow(dir.path(), &data, &["transfer", "--to", "USDC", "--json"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"].as_u64(), Some(full), "{report}");
    assert_eq!(
        catalog
            .count_replicas(Site::Usdc, ReplicaState::Verified)
            .unwrap(),
        6
    );
    drop(usdc);
}

fn reco(inputs: &[PathBuf], out: &Path) -> Output {
    Command::new(tpcflow_bin())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("SLURM_CPUS_PER_TASK")
        .args(["reco", "--threads", "1", "--out-dir"])
        .arg(out)
        .arg("--inputs")
        .args(inputs)
        .output()
        .expect("reco runs")
}

fn result_records(dir: &Path) -> Vec<PathBuf> {
    names_in(dir)
        .iter()
        .filter(|n| n.ends_with(".result.json") && !n.starts_with('.'))
        .map(|n| dir.join(n))
        .collect()
}

#[test]
fn reco_into_a_full_output_directory_fails_the_input_and_succeeds_once_space_returns() {
    let dir = scratch("full-rq");
    let inputs = simulate(&dir.path().join("raw"), 1, 40);
    // The output's size, measured on an ordinary directory.
    let reference = dir.path().join("reference");
    let out = reco(&inputs, &reference);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rq_name: Vec<String> = names_in(&reference)
        .into_iter()
        .filter(|n| n.ends_with(".rq.h5"))
        .collect();
    assert_eq!(rq_name.len(), 1, "{:?}", names_in(&reference));
    let rq_bytes = std::fs::metadata(reference.join(&rq_name[0]))
        .unwrap()
        .len();
    let ok = read_result(&result_records(&reference)[0]).unwrap();

    let full_dir = dir.path().join("rq");
    let fs = SmallFs::mount(&full_dir, page_round(rq_bytes / 3));
    let out = reco(&inputs, &full_dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the only input failed: {stderr}"
    );
    let names = names_in(&full_dir);
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".rq.h5") && !n.contains(".tmp")),
        "no RQ file nor temporary: {names:?}"
    );
    let records = result_records(&full_dir);
    assert_eq!(records.len(), 1, "{names:?}");
    let failed = read_result(&records[0]).unwrap();
    let why = failed.error.clone().unwrap_or_default();
    assert_eq!(failed.status, "failed", "{why}");
    // Names the output (the file, or the part of it that did not fit) in the full directory.
    assert!(
        why.starts_with(&format!(
            "no space left on device for {}/",
            full_dir.display()
        )),
        "{why}"
    );
    assert!(failed.output.is_none());

    // Space returns: a re-run writes the output (the reference's events and pulses).
    fs.resize(page_round(rq_bytes * 4));
    let out = reco(&inputs, &full_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = read_result(&records[0]).unwrap();
    assert_eq!(done.status, "ok");
    assert_eq!(done.events, ok.events);
    assert_eq!(done.pulses, ok.pulses);
    let rq = tpcflow::rq::read_rq_file(&full_dir.join(&rq_name[0])).unwrap();
    let event_ids = rq.event_column("event_id").expect("/events/event_id");
    assert_eq!(event_ids.len() as u64, ok.events);
    drop(fs);
}
