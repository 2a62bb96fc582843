//! `tpcflow reco` refusing what it must not do and never hanging: a rank
//! that cannot continue ends the whole SLURM job at once, the plan is made by
//! rank 0 alone, inputs that would share outputs are refused, inputs are
//! checked against their catalogued adler32 and their DAQ header against the
//! conditions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tpcflow::reco_job::{read_result, FileResult};
use tpcflow::rq::read_rq_file;
use tpcflow::shell::quote_path;
use tpcflow::slurm::{self, JobState};

use crate::common::*;

/// `tpcflow reco` on one rank (no launcher).
fn reco1(args: &[&str], out: &Path, inputs: &[&Path]) -> Output {
    let mut cmd = Command::new(tpcflow_bin());
    mpi_env(&mut cmd)
        .args(["reco", "--threads", "1", "--out-dir"])
        .arg(out)
        .args(args)
        .arg("--inputs")
        .args(inputs);
    cmd.output().expect("reco runs")
}

/// `tpcflow reco --log tpcflow=debug --threads THREADS --inputs @LIST`,
/// pinned to core 0 (`taskset`) when `pinned`; its debug log says how each
/// input's checksum was taken.
fn reco_logged(out: &Path, list: &Path, threads: &str, pinned: bool) -> Output {
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(tpcflow_bin());
        c
    } else {
        Command::new(tpcflow_bin())
    };
    mpi_env(&mut cmd)
        .args(["reco", "--log", "tpcflow=debug", "--threads", threads])
        .arg("--out-dir")
        .arg(out)
        .arg("--inputs")
        .arg(format!("@{}", list.display()));
    cmd.output().expect("tpcflow runs")
}

/// A copy of `src` at `dst` with the byte at `at(len)` changed, synced to
/// disk (so that it can be dropped from the page cache: dirty pages stay);
/// its adler32.
fn changed_copy(src: &Path, dst: &Path, at: impl FnOnce(usize) -> usize) -> String {
    let mut bytes = std::fs::read(src).unwrap();
    let at = at(bytes.len());
    bytes[at] ^= 0x01;
    std::fs::write(dst, &bytes).unwrap();
    std::fs::File::open(dst).unwrap().sync_all().unwrap();
    tpcflow::adler::digest_file(dst).unwrap().adler32
}

/// `mpirun -n 2 tpcflow reco ...` (the linked MPI's launcher)
fn reco2(args: &[&str], out: &Path, inputs: &[&Path]) -> Output {
    let mut cmd = mpirun(2);
    cmd.arg(tpcflow_bin());
    mpi_env(&mut cmd)
        .args(["reco", "--threads", "1", "--out-dir"])
        .arg(out)
        .args(args)
        .arg("--inputs")
        .args(inputs);
    cmd.output().expect("mpirun runs")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Result records in `dir`, by input file name.
fn records(dir: &Path) -> BTreeMap<String, FileResult> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".result.json"))
                .map(|e| read_result(&e.path()).unwrap())
                .map(|r| (r.input.file_name().unwrap().to_string_lossy().into(), r))
                .collect()
        })
        .unwrap_or_default()
}

/// Every file name in `dir`.
fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every `ok` record's RQ file is complete: it reads back with the
/// record's event count and checksum.
fn assert_ok_outputs_intact(recs: &BTreeMap<String, FileResult>, events: u64) {
    for (name, r) in recs.iter().filter(|(_, r)| r.status == "ok") {
        let out = r.output.as_ref().unwrap();
        let rq = read_rq_file(out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rq.events[0].data.len() as u64, events, "{name}");
        assert_eq!(r.events, events, "{name}");
        let digest = tpcflow::adler::digest_file(out).unwrap();
        assert_eq!(Some(digest.adler32), r.output_adler32, "{name}");
    }
}

#[test]
fn a_rank_that_cannot_continue_ends_the_sbatch_job_within_seconds() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let nodes = cluster_nodes();
    let dir = scratch("reco-abort");
    // Twelve one-unit files: rank 1 must be handed a third unit for the
    // fault to fire, and with six a fast rank 0 sometimes took four of them
    // while rank 1's requests waited for the server's polls (seen under load).
    let inputs = simulate_mixed(32, &dir.path().join("SURF"), 12, 20);
    let out = dir.path().join("rq");
    let time_limit = Duration::from_secs(600);
    let (script, log) = two_rank_reco_script(
        dir.path(),
        "tpcflow-reco-abort-it",
        &inputs,
        &out,
        "--events-per-unit 20",
    );
    // Rank 1 finishes two units (a whole file each), then cannot continue.
    let fault = format!("--export=ALL,{}=1:2", tpcflow::reco_job::abort::FAULT_ENV);
    let t = Instant::now();
    let job = slurm::submit(&script, &[&fault]).unwrap();
    let info = slurm::wait_for_job(job, Duration::from_secs(300)).unwrap();
    let elapsed = t.elapsed();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let what = format!("{info:?} after {elapsed:?}\n{log_text}");
    // Ended by the abort, long before the time limit (queueing included).
    assert!(
        elapsed < Duration::from_secs(90) && elapsed < time_limit / 6,
        "{what}"
    );
    assert_eq!(info.state, JobState::Failed, "{what}");
    match test_mpi() {
        // Open MPI's abort reaches srun through PMIx with its code.
        TestMpi::OpenMpi => assert_eq!(
            info.exit_code.as_deref(),
            Some(format!("{}:0", tpcflow::exit::PARTIAL_FAILURE).as_str()),
            "{what}"
        ),
        // MPICH's reaches SLURM's PMI-2 plugin, which kills the step
        // (SIGKILL: srun exits 128 + 9); MPICH logs the code it was given.
        TestMpi::Mpich => {
            assert_eq!(info.exit_code.as_deref(), Some("137:0"), "{what}");
            assert!(
                log_text.contains(&format!(
                    "application called MPI_Abort(MPI_COMM_WORLD, {})",
                    tpcflow::exit::PARTIAL_FAILURE
                )),
                "{what}"
            );
        }
    }
    // Two MPI ranks (the world size is in the abort message), on both nodes.
    assert!(
        log_text.contains("error: rank 1 cannot continue")
            && log_text.contains("aborting all 2 ranks"),
        "{what}"
    );
    if nodes.len() >= 2 {
        assert_eq!(info.node_list.as_deref(), Some("n[1-2]"), "{what}");
    }
    // Rank 1 recorded the failure of the unit it held before aborting.
    let recs = records(&out);
    let failed: Vec<&FileResult> = recs.values().filter(|r| r.status == "failed").collect();
    assert_eq!(failed.len(), 1, "{recs:#?}");
    let error = failed[0].error.as_deref().unwrap();
    assert!(
        error.contains("rank 1 could not finish") && error.contains("injected fault"),
        "{error}"
    );
    // Rank 1 finished exactly two files: a third `ok` is rank 0's, and every
    // finished output is intact.
    let ok = recs.values().filter(|r| r.status == "ok").count();
    assert!(ok >= 3, "{ok} ok: {recs:#?}\n{what}");
    assert_ok_outputs_intact(&recs, 20);
    // Nothing incomplete under a final name.
    for name in names_in(&out).iter().filter(|n| n.ends_with(".rq.h5")) {
        let stem = name.split('.').next().unwrap();
        assert!(
            recs.get(&format!("{stem}.raw.h5"))
                .is_some_and(|r| r.status == "ok"),
            "{name} has no ok record"
        );
    }
}

#[test]
fn a_rank_that_cannot_write_its_outputs_ends_the_mpirun_job_at_once() {
    let dir = scratch("reco-rofs");
    let inputs = simulate_mixed(32, &dir.path().join("SURF"), 4, 20);
    let out = dir.path().join("rq");
    std::fs::create_dir_all(&out).unwrap();
    // Rank 1 sees the output directory read-only (a bind mount in a mount
    // namespace of its own): its first output cannot be created.
    let wrapper = format!(
        "if [ \"${}\" = 1 ]; then \
         exec unshare -m bash -c 'mount --bind -o ro \"$0\" \"$0\" && exec \"$@\"' \"$OUT\" \"$@\"; \
         fi; exec \"$@\"",
        launcher_rank_var()
    );
    let mut cmd = mpirun(2);
    if test_mpi() == TestMpi::OpenMpi {
        // Hydra passes the whole environment; Open MPI only what it is told.
        cmd.args(["-x", "OUT"]);
    }
    cmd.args(["bash", "-c", &wrapper, "rank"])
        .arg(tpcflow_bin())
        .env("OUT", &out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    mpi_env(&mut cmd)
        .args([
            "reco",
            "--threads",
            "1",
            "--events-per-unit",
            "20",
            "--out-dir",
        ])
        .arg(&out)
        .arg("--inputs")
        .args(&inputs);
    let t = Instant::now();
    let mut child = cmd.spawn().unwrap();
    // Without the abort, rank 0 waits for rank 1 for ever: give up after 60 s.
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let hung = child.try_wait().unwrap().is_none();
    if hung {
        let _ = child.kill();
    }
    let o = child.wait_with_output().unwrap();
    assert!(!hung, "the job hung: {}", show(&o));
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(
        o.status.code(),
        Some(tpcflow::exit::PARTIAL_FAILURE as i32),
        "{}",
        show(&o)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("error: rank 1 cannot continue")
            && stderr.contains("Read-only file system")
            && stderr.contains("aborting all 2 ranks"),
        "{stderr}"
    );
    // Whatever rank 0 finished before the abort is complete.
    assert_ok_outputs_intact(&records(&out), 20);
}

#[test]
fn the_plan_is_made_by_rank_0_alone() {
    let dir = scratch("reco-plan");
    let inputs = simulate_mixed(32, &dir.path().join("SURF"), 1, 12);
    let input = &inputs[0];
    let out = dir.path().join("rq");
    let trace = dir.path().join("rank1.strace");
    // One input of one unit: rank 1 gets no work, so any look it takes at
    // the input would be for planning. Its file system calls are traced.
    let wrapper = format!(
        "if [ \"${}\" = 1 ]; then exec strace -f -qq -e trace=file,desc -o {} \"$@\"; else exec \"$@\"; fi",
        launcher_rank_var(),
        quote_path(&trace).unwrap()
    );
    let mut cmd = mpirun(2);
    cmd.args(["bash", "-c", &wrapper, "rank"])
        .arg(tpcflow_bin());
    let o = mpi_env(&mut cmd)
        .args(["reco", "--threads", "1", "--json", "--out-dir"])
        .arg(&out)
        .arg("--inputs")
        .arg(input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON summary");
    assert_eq!(summary["ranks"], 2, "{}", show(&o));
    assert_eq!(summary["files_ok"], 1);
    let per_rank = summary["per_rank"].as_array().unwrap();
    assert_eq!(per_rank[1]["units"], 0, "rank 1 had no unit: {summary}");
    let traced = std::fs::read_to_string(&trace).expect("rank 1 was traced");
    assert!(traced.lines().count() > 10, "{traced}");
    let stem = "000032_00000";
    let looks: Vec<&str> = traced
        .lines()
        .filter(|l| l.contains(stem) && !l.contains("execve("))
        .collect();
    assert!(
        looks.is_empty(),
        "rank 1 looked at the input or its outputs:\n{}",
        looks.join("\n")
    );
}

#[test]
fn inputs_that_would_write_the_same_outputs_are_refused_naming_both() {
    let dir = scratch("reco-dup");
    let inputs = simulate_mixed(32, &dir.path().join("SURF"), 1, 4);
    let a = &inputs[0];
    let other = dir.path().join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    let b = other.join(a.file_name().unwrap());
    std::fs::copy(a, &b).unwrap();
    let out = dir.path().join("rq");
    let o = reco1(&[], &out, &[a, a]);
    assert_eq!(
        o.status.code(),
        Some(tpcflow::exit::FAILURE as i32),
        "{}",
        show(&o)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("input {} is listed twice", a.display())),
        "{stderr}"
    );
    let o = reco2(&[], &out, &[a, &b]);
    assert_eq!(
        o.status.code(),
        Some(tpcflow::exit::FAILURE as i32),
        "{}",
        show(&o)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("inputs {} and {}", a.display(), b.display()))
            && stderr.contains("same file name"),
        "{stderr}"
    );
    assert!(
        names_in(&out).iter().all(|n| !n.ends_with(".rq.h5")),
        "{:?}",
        names_in(&out)
    );
}

#[test]
fn an_input_that_does_not_match_its_catalogued_adler32_fails_without_an_rq_file() {
    let dir = scratch("reco-adler");
    let inputs = simulate_mixed(32, &dir.path().join("SURF"), 2, 14);
    let good = tpcflow::adler::digest_file(&inputs[0]).unwrap().adler32;
    let actual = tpcflow::adler::digest_file(&inputs[1]).unwrap().adler32;
    let wrong = if actual == "00000001" {
        "00000002"
    } else {
        "00000001"
    };
    // A copy of the good input with one byte of its samples changed, under
    // the good one's catalogued checksum: found only when every byte is
    // hashed (a one-thread rank hashes each event's bytes as it goes).
    let flipped = dir.path().join("SURF").join("000099_00000.raw.h5");
    let flipped_actual = changed_copy(&inputs[0], &flipped, |len| len / 2);
    assert_ne!(flipped_actual, good);
    let list = dir.path().join("inputs.txt");
    std::fs::write(
        &list,
        format!(
            "{}\t{good}\n{}\t{wrong}\n{}\t{good}\n",
            inputs[0].display(),
            inputs[1].display(),
            flipped.display()
        ),
    )
    .unwrap();
    let at_list = format!("@{}", list.display());
    // One rank, whole files: on one core (taskset), where the rank hashes
    // each input as it reconstructs it, and free to use every core, where
    // the finisher hashes it beside the reconstruction when there is a core
    // to spare; two ranks, files split into parts and merged.
    for (how, out) in [
        ("1 rank on one core", dir.path().join("rq0")),
        ("1 rank", dir.path().join("rq1")),
        ("2 ranks", dir.path().join("rq2")),
    ] {
        let o = match how {
            "1 rank on one core" => {
                let o = reco_logged(&out, &list, "1", true);
                let log = String::from_utf8_lossy(&o.stderr);
                assert_eq!(
                    log.matches("input adler32 taken event by event").count(),
                    3,
                    "{}",
                    show(&o)
                );
                o
            }
            "1 rank" => reco1(&[], &out, &[Path::new(&at_list)]),
            _ => reco2(&["--events-per-unit", "5"], &out, &[Path::new(&at_list)]),
        };
        assert_eq!(
            o.status.code(),
            Some(tpcflow::exit::PARTIAL_FAILURE as i32),
            "{how}: {}",
            show(&o)
        );
        let recs = records(&out);
        let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        let bad = &recs[&name(&inputs[1])];
        assert_eq!(bad.status, "failed");
        let error = bad.error.as_deref().unwrap();
        assert!(
            error.contains(&inputs[1].display().to_string())
                && error.contains(&format!("catalogued {wrong}"))
                && error.contains(&format!("file has {actual}")),
            "{error}"
        );
        assert!(bad.output.is_none());
        // No RQ file for it, under its final name or a temporary one.
        let stem = name(&inputs[1]).replace(".raw.h5", "");
        let left: Vec<String> = names_in(&out)
            .into_iter()
            .filter(|n| n.contains(&stem) && !n.ends_with(".result.json"))
            .collect();
        assert!(left.is_empty(), "{how}: {left:?}");
        let changed = &recs[&name(&flipped)];
        assert_eq!(changed.status, "failed", "{how}: {changed:?}");
        let error = changed.error.as_deref().unwrap();
        assert!(
            error.contains(&flipped.display().to_string())
                && error.contains(&format!("catalogued {good}"))
                && error.contains(&format!("file has {flipped_actual}")),
            "{how}: {error}"
        );
        assert!(changed.output.is_none());
        // The good input is done, its checksum in the RQ file.
        let ok = &recs[&name(&inputs[0])];
        assert_eq!(ok.status, "ok", "{ok:?}");
        assert_ok_outputs_intact(&recs, 14);
        let rq = read_rq_file(ok.output.as_ref().unwrap()).unwrap();
        assert_eq!(rq.header.input_adler32, good);
    }
}

#[test]
fn a_cold_input_is_read_from_disk_once_and_checked_from_what_was_read() {
    // A file of a few cold windows (64 events each): after the first, read
    // through the map, its windows are read directly from disk, and the
    // check against the catalogued adler32 hashes them from the buffers
    // they were read into. Checked through the map instead, the file would
    // be read from disk a second time and sit whole in the page cache after.
    let dir = scratch("reco-cold-adler");
    let good = simulate_mixed(33, &dir.path().join("SURF"), 1, 200).remove(0);
    let adler = tpcflow::adler::digest_file(&good).unwrap().adler32;
    // A copy with one byte changed three quarters in (in a direct window),
    // under the good one's checksum.
    let flipped = dir.path().join("SURF").join("000099_00000.raw.h5");
    let flipped_actual = changed_copy(&good, &flipped, |len| len * 3 / 4);
    let list = dir.path().join("inputs.txt");
    std::fs::write(
        &list,
        format!(
            "{}\t{adler}\n{}\t{adler}\n",
            good.display(),
            flipped.display()
        ),
    )
    .unwrap();
    let size = std::fs::metadata(&good).unwrap().len();
    for (how, threads, pin) in [("one core", "1", true), ("2 threads", "2", false)] {
        for p in [&good, &flipped] {
            evict(p);
        }
        let out = dir.path().join(format!("rq-{threads}"));
        let o = reco_logged(&out, &list, threads, pin);
        let log = String::from_utf8_lossy(&o.stderr);
        let taken = log
            .lines()
            .filter(|l| l.contains("input adler32 taken event by event") && l.contains("cold=true"))
            .count();
        assert_eq!(taken, 2, "{how}: {}", show(&o));
        assert_eq!(
            o.status.code(),
            Some(tpcflow::exit::PARTIAL_FAILURE as i32),
            "{how}: {}",
            show(&o)
        );
        // Most of each file was read directly, around the page cache.
        for p in [&good, &flipped] {
            let resident = resident_bytes(p);
            assert!(
                resident < size * 3 / 4,
                "{how}: {} has {resident} of {size} bytes in the page cache",
                p.display()
            );
        }
        let recs = records(&out);
        let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        let ok = &recs[&name(&good)];
        assert_eq!(ok.status, "ok", "{how}: {ok:?}");
        assert_eq!(
            read_rq_file(ok.output.as_ref().unwrap())
                .unwrap()
                .header
                .input_adler32,
            adler
        );
        let changed = &recs[&name(&flipped)];
        let error = changed.error.as_deref().unwrap_or_default();
        assert!(
            changed.status == "failed"
                && changed.output.is_none()
                && error.contains(&format!("catalogued {adler}"))
                && error.contains(&format!("file has {flipped_actual}")),
            "{how}: {changed:?}"
        );
    }
}

#[test]
fn a_daq_header_that_disagrees_with_the_conditions_is_a_typed_error_naming_both() {
    let dir = scratch("reco-daq");
    let inputs = simulate_mixed(32, &dir.path().join("SURF"), 1, 4);
    let v1 =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conditions/v1.toml"))
            .unwrap();
    let retag =
        |text: &str, tag: &str| text.replacen("tag = \"v1\"", &format!("tag = \"{tag}\""), 1);
    // A newer tag with the same DAQ: accepted (the tag itself is not compared).
    let same_daq = dir.path().join("v2.toml");
    std::fs::write(&same_daq, retag(&v1, "v2")).unwrap();
    // A longer window after the trigger: 2.6 ms instead of 2.5 ms.
    let longer = dir.path().join("v3.toml");
    let text = retag(&v1, "v3").replacen("window_after_ns = 2.5e6", "window_after_ns = 2.6e6", 1);
    assert_ne!(text, retag(&v1, "v3"));
    std::fs::write(&longer, text).unwrap();
    // Another sample period.
    let slower = dir.path().join("v4.toml");
    let text = retag(&v1, "v4").replacen("sample_ns = 10.0", "sample_ns = 20.0", 1);
    assert_ne!(text, retag(&v1, "v4"));
    std::fs::write(&slower, text).unwrap();

    let o = reco1(
        &["--conditions", &same_daq.display().to_string()],
        &dir.path().join("rq-v2"),
        &[&inputs[0]],
    );
    assert!(o.status.success(), "{}", show(&o));
    for (cond, field, in_file, in_cond) in [
        (
            &longer,
            "window_samples",
            "450000 samples",
            "460000 samples",
        ),
        (&slower, "sample_period_ns", "10 ns", "20 ns"),
    ] {
        let out = dir.path().join(format!("rq-{field}"));
        let o = reco1(
            &["--conditions", &cond.display().to_string()],
            &out,
            &[&inputs[0]],
        );
        assert_eq!(
            o.status.code(),
            Some(tpcflow::exit::FAILURE as i32),
            "{}",
            show(&o)
        );
        let recs = records(&out);
        let r = recs.values().next().expect("a result record");
        assert_eq!(r.status, "failed");
        let error = r.error.as_deref().unwrap();
        assert!(
            error.contains(&inputs[0].display().to_string())
                && error.contains(&format!("DAQ header {field} is {in_file}"))
                && error.contains(&format!("say {in_cond}")),
            "{error}"
        );
        assert!(names_in(&out).iter().all(|n| !n.ends_with(".rq.h5")));
    }
}
