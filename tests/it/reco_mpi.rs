//! `tpcflow reco` across ranks and nodes: identical outputs whatever the
//! rank and thread count, a real sbatch job over the two emulated nodes,
//! partial failure, and no incomplete file under a final name after a kill.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tpcflow::reco_job::{read_result, FileResult};
use tpcflow::rq::{read_rq_file, ColumnData, RqFile};
use tpcflow::slurm::{self, JobState};

use crate::common::*;

/// `[mpirun -n ranks] tpcflow reco ...` (the linked MPI's launcher)
fn reco(ranks: u32, threads: u32, inputs: &[PathBuf], out: &Path, extra: &[&str]) -> Output {
    let mut cmd = if ranks > 1 {
        let mut c = mpirun(ranks);
        c.arg(tpcflow_bin());
        c
    } else {
        Command::new(tpcflow_bin())
    };
    mpi_env(&mut cmd)
        .args(["reco", "--threads", &threads.to_string(), "--out-dir"])
        .arg(out)
        .arg("--inputs");
    cmd.args(inputs).args(extra);
    cmd.output().expect("reco runs")
}

fn rq_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".rq.h5"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect()
}

/// Bit patterns of a column (NaN-safe equality).
fn bits(c: &ColumnData) -> Vec<u64> {
    match c {
        ColumnData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        ColumnData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
        ColumnData::I64(v) => v.iter().map(|&x| x as u64).collect(),
        ColumnData::I32(v) => v.iter().map(|&x| x as u32 as u64).collect(),
        ColumnData::U64(v) => v.clone(),
        ColumnData::U32(v) => v.iter().map(|&x| u64::from(x)).collect(),
        ColumnData::U16(v) => v.iter().map(|&x| u64::from(x)).collect(),
        ColumnData::U8(v) => v.iter().map(|&x| u64::from(x)).collect(),
    }
}

fn assert_same_contents(a: &RqFile, b: &RqFile, what: &str) {
    assert_eq!(a.header, b.header, "{what}: header");
    for (ga, gb, g) in [
        (&a.events, &b.events, "events"),
        (&a.pulses, &b.pulses, "pulses"),
        (&a.channels, &b.channels, "channels"),
    ] {
        assert_eq!(ga.len(), gb.len(), "{what}: /{g} column count");
        for (ca, cb) in ga.iter().zip(gb) {
            assert_eq!(ca.name, cb.name);
            assert_eq!(ca.units, cb.units);
            assert!(
                bits(&ca.data) == bits(&cb.data),
                "{what}: /{g}/{} differs",
                ca.name
            );
        }
    }
}

#[test]
fn same_input_gives_identical_datasets_for_any_rank_and_thread_count() {
    let dir = scratch("reco-ident");
    let inputs = simulate_mixed(31, &dir.path().join("SURF"), 3, 24);
    // Small units force files to be split over ranks and merged back.
    let layouts = [(1u32, 1u32), (1, 2), (2, 1)];
    let mut outputs = Vec::new();
    for (ranks, threads) in layouts {
        let out = dir.path().join(format!("rq-{ranks}x{threads}"));
        let o = reco(ranks, threads, &inputs, &out, &["--events-per-unit", "7"]);
        assert!(
            o.status.success(),
            "{ranks}x{threads}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains(&format!("reco: {ranks} rank(s) x {threads} thread(s)")),
            "{stdout}"
        );
        assert!(stdout.contains("files ok 3, failed 0"), "{stdout}");
        if ranks == 2 {
            // Both ranks did work: the distribution is real, not N lone rank-0s.
            let per_rank: Vec<&str> = stdout
                .lines()
                .filter(|l| l.trim_start().starts_with(['0', '1']))
                .collect();
            assert_eq!(per_rank.len(), 2, "{stdout}");
            // Every unit (3 files of 24 events in units of <= 7: 4 parts
            // each) was handed out once, by the server thread or rank 0.
            let units: u64 = per_rank
                .iter()
                .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
                .sum();
            assert_eq!(units, 12, "{stdout}");
        }
        outputs.push(rq_files(&out));
    }
    let reference = &outputs[0];
    assert_eq!(reference.len(), 3);
    for (layout, out) in layouts.iter().zip(&outputs).skip(1) {
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>()
        );
        for (name, path) in out {
            let a = read_rq_file(&reference[name]).unwrap();
            let b = read_rq_file(path).unwrap();
            assert!(a.events[0].data.len() == 24, "all events present");
            assert_same_contents(&a, &b, &format!("{name} {layout:?}"));
        }
    }
    // No part files or temporaries are left behind.
    for (ranks, threads) in layouts {
        let out = dir.path().join(format!("rq-{ranks}x{threads}"));
        let hidden: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "left behind: {hidden:?}");
    }
}

#[test]
fn inputs_not_in_the_page_cache_are_read_directly_and_give_the_same_outputs() {
    let dir = scratch("reco-direct");
    let inputs = simulate_mixed(31, &dir.path().join("SURF"), 2, 120);
    let per_rank = |o: &Output| -> Vec<(u64, u64)> {
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json summary");
        v["per_rank"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["bytes"].as_u64().unwrap(),
                    r["direct_bytes"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let unit = ["--json", "--events-per-unit", "30"];
    // Inputs in the page cache are mapped. Read them whole first: this VM
    // reclaims idle page-cache pages on its own, even of files just written.
    for p in &inputs {
        let len = std::fs::read(p).unwrap().len() as u64;
        let resident = resident_bytes(p);
        assert!(
            resident >= len,
            "{}: {resident} of {len} bytes cached",
            p.display()
        );
    }
    let cached = dir.path().join("rq-cached");
    let ranks = per_rank(&reco(1, 1, &inputs, &cached, &unit));
    assert_eq!(ranks.len(), 1);
    assert!(ranks[0].0 > 0);
    assert_eq!(ranks[0].1, 0, "nothing read directly from cached inputs");
    // Dropped from it, they are read directly: all but each rank's first
    // window (read through the map while the rank starts on it) and what
    // the kernel's readahead of that window brought into the cache.
    for p in &inputs {
        evict(p);
    }
    let cold = dir.path().join("rq-cold");
    let ranks = per_rank(&reco(1, 1, &inputs, &cold, &unit));
    let (bytes, direct) = ranks.iter().fold((0, 0), |(b, d), r| (b + r.0, d + r.1));
    assert!(
        direct >= bytes / 2 && direct <= bytes,
        "{direct} of {bytes} bytes read directly"
    );
    let (a, b) = (rq_files(&cached), rq_files(&cold));
    assert_eq!(a.len(), 2);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, path) in &a {
        let x = read_rq_file(path).unwrap();
        let y = read_rq_file(&b[name]).unwrap();
        assert_eq!(x.events[0].data.len(), 120, "all events present");
        assert_same_contents(&x, &y, &format!("{name} cold vs cached"));
    }
}

#[test]
fn corrupt_input_among_good_ones_is_a_partial_failure() {
    let dir = scratch("reco-partial");
    let mut inputs = simulate_mixed(31, &dir.path().join("SURF"), 2, 10);
    let bad = dir.path().join("SURF/000031/000031_00009.raw.h5");
    std::fs::write(&bad, b"this is not HDF5").unwrap();
    inputs.push(bad.clone());
    let out = dir.path().join("rq");
    let o = reco(1, 1, &inputs, &out, &[]);
    assert_eq!(
        o.status.code(),
        Some(tpcflow::exit::PARTIAL_FAILURE as i32),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("partial failure"), "{stderr}");
    // The log names the failed input and its error, not only the count.
    let line = stderr
        .lines()
        .find(|l| l.starts_with("failed: "))
        .unwrap_or_else(|| panic!("no `failed:` line in\n{stderr}"));
    assert!(
        line.contains(&format!("{}: ", bad.display())) && line.len() > bad.as_os_str().len() + 12,
        "{line}"
    );
    let records: Vec<FileResult> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".result.json"))
        .map(|e| read_result(&e.path()).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    let failed: Vec<&FileResult> = records.iter().filter(|r| r.status == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].input, bad);
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("000031_00009.raw.h5"),
        "{:?}",
        failed[0].error
    );
    for r in records.iter().filter(|r| r.status == "ok") {
        let rq = read_rq_file(r.output.as_ref().unwrap()).unwrap();
        assert_eq!(rq.events[0].data.len() as u64, r.events);
        assert_eq!(r.events, 10);
        let digest = tpcflow::adler::digest_file(r.output.as_ref().unwrap()).unwrap();
        assert_eq!(Some(digest.adler32), r.output_adler32);
    }
    // All inputs bad: total failure, a third code.
    let o = reco(1, 1, &[bad], &dir.path().join("rq2"), &[]);
    assert_eq!(o.status.code(), Some(tpcflow::exit::FAILURE as i32));
    // A second run skips the complete outputs of the same lineage.
    let o = reco(1, 1, &inputs[..2], &out, &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("skipped 2"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn killing_the_job_mid_write_leaves_no_incomplete_file_under_a_final_name() {
    let dir = scratch("reco-kill");
    let inputs = simulate_mixed(31, &dir.path().join("SURF"), 6, 40);
    let job = |out: &Path| {
        mpi_env(&mut Command::new(tpcflow_bin()))
            .args([
                "reco",
                "--threads",
                "1",
                "--events-per-unit",
                "13",
                "--out-dir",
            ])
            .arg(out)
            .arg("--inputs")
            .args(&inputs)
            .spawn()
            .unwrap()
    };
    // The kills land at fractions of a whole run's duration, measured here:
    // fixed delays stop hitting a running job when start-up gets faster (a
    // one-rank job starts without MPI) or the machine gets quicker.
    let t0 = Instant::now();
    let status = job(&dir.path().join("rq-timing")).wait().unwrap();
    assert!(status.success(), "the untimed run failed: {status}");
    let whole = t0.elapsed();
    let mut interrupted = 0;
    let mut outs = Vec::new();
    for (i, frac) in [0.15, 0.3, 0.45, 0.6, 0.75].into_iter().enumerate() {
        // A fresh directory each time, so every kill meets a whole run.
        let out = dir.path().join(format!("rq-{i}"));
        let mut child = job(&out);
        std::thread::sleep(whole.mul_f64(frac));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // Whatever is under a final name is complete and matches its record.
        for (name, path) in rq_files(&out) {
            let rq = read_rq_file(&path)
                .unwrap_or_else(|e| panic!("{name} under its final name is unreadable: {e}"));
            let n = rq.events[0].data.len();
            let record = PathBuf::from(path.to_string_lossy().replace(".rq.h5", ".result.json"));
            if let Ok(r) = read_result(&record) {
                assert_eq!(r.events as usize, n);
            }
        }
        outs.push(out);
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} of 5 kills hit a running job (a whole run took {whole:?})"
    );
    // A rerun completes everything, skipping what was done.
    for out in &outs {
        let o = reco(1, 2, &inputs, out, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(rq_files(out).len(), 6);
        for path in rq_files(out).values() {
            assert_eq!(read_rq_file(path).unwrap().events[0].data.len(), 40);
        }
    }
}

#[test]
fn sbatch_job_with_two_ranks_on_two_nodes_writes_files_pandas_reads() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let nodes = cluster_nodes();
    let dir = scratch("reco-sbatch");
    let inputs = simulate_mixed(31, &dir.path().join("SURF"), 4, 12);
    let out = dir.path().join("rq");
    let (script, log) = two_rank_reco_script(dir.path(), "tpcflow-reco-it", &inputs, &out, "");
    let job = slurm::submit(&script, &[]).unwrap();
    let info = slurm::wait_for_job(job, Duration::from_secs(240)).unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // On failure, the result records say why each input failed.
    let records: String = std::fs::read_dir(&out)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".result.json"))
                .filter_map(|e| read_result(&e.path()).ok())
                .filter(|r| r.status != "ok")
                .map(|r| format!("{}: {:?}", r.input.display(), r.error))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    assert_eq!(
        info.state,
        JobState::Completed,
        "{info:?}\n{text}\nrecords not ok:\n{records}"
    );
    // The summary rank 0 printed: 2 ranks, both busy.
    let json_start = text.find('{').expect("JSON summary in the log");
    let summary: serde_json::Value =
        serde_json::from_str(&text[json_start..text.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(summary["ranks"], 2);
    assert_eq!(summary["files_ok"], 4);
    // The emulated nodes share the host: each rank was given a core of its own.
    for line in ["rank 0: pinned to cores 0-0", "rank 1: pinned to cores 1-1"] {
        assert!(text.contains(line), "{line:?} not in the job log:\n{text}");
    }
    let per_rank = summary["per_rank"].as_array().unwrap();
    assert!(
        per_rank.iter().all(|r| r["events"].as_u64().unwrap() > 0),
        "every rank worked: {per_rank:?}"
    );
    assert_eq!(
        per_rank
            .iter()
            .map(|r| r["events"].as_u64().unwrap())
            .sum::<u64>(),
        48
    );
    if nodes.len() >= 2 {
        assert_eq!(
            info.node_list.as_deref(),
            Some("n[1-2]"),
            "ran across both emulated nodes"
        );
    }
    // The analysts' snippet (README): /events into a pandas DataFrame.
    let rq = rq_files(&out);
    assert_eq!(rq.len(), 4);
    let first = rq.values().next().unwrap();
    let py = run_python(
        "import sys, h5py, pandas as pd\n\
         with h5py.File(sys.argv[1], 'r') as f:\n    \
             events = pd.DataFrame({k: f['events'][k][:] for k in f['events']})\n    \
             units = f['events/drift_time_ns'].attrs['units']\n    \
             lineage = f.attrs['lineage_hash']\n\
         print(len(events), units, lineage, int(events['event_id'].iloc[0]), events['n_pulses'].sum())",
        &[first],
    );
    let rust = read_rq_file(first).unwrap();
    let n_pulses: u64 = bits(rust.event_column("n_pulses").unwrap()).iter().sum();
    let first_id = bits(rust.event_column("event_id").unwrap())[0];
    assert_eq!(
        py.trim(),
        format!("12 ns {} {first_id} {n_pulses}", rust.header.lineage_hash)
    );
}
