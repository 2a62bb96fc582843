//! The dispatcher while slurmctld does not answer: data keeps moving, no task
//! fails, `tpcflow status` shows the outage, and once SLURM answers again
//! every file is processed exactly once.
//!
//! `slurmctld_stalled_at_submission_...` SIGSTOPs the real controller: run it
//! only while holding `flock -x /tmp/tpcflow-cluster.lock` (other users of the
//! cluster wait on that lock); it takes `cluster_exclusive()` against the other
//! tests of this binary and resumes slurmctld in a Drop guard, also on panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tpcflow::catalog::{Catalog, ReplicaState, Site as CatalogSite, TaskState};

use crate::common::*;

/// A data root with SURF, a dispatch.toml and a salt key.
struct Site {
    dir: tempfile::TempDir,
    root: PathBuf,
    catalog: PathBuf,
    config: PathBuf,
}

fn site(name: &str, settings: &str) -> Site {
    let dir = scratch(name);
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("SURF")).unwrap();
    let (key, vault) = (dir.path().join("salt.key"), dir.path().join("vault"));
    let o = tpcflow_cmd()
        .args(["salt", "keygen", "--rate", "0.2", "--key"])
        .arg(&key)
        .arg("--vault")
        .arg(&vault)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config = dir.path().join("dispatch.toml");
    std::fs::write(
        &config,
        format!(
            "{settings}salt_key = \"{}\"\nsalt_vault = \"{}\"\n",
            key.display(),
            vault.display()
        ),
    )
    .unwrap();
    Site {
        catalog: dir.path().join("catalog.db"),
        root,
        config,
        dir,
    }
}

fn sim(root: &Path, run: u32, files: u32) {
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
            "4",
            "--seed",
            &run.to_string(),
            "--out",
        ])
        .arg(root.join("SURF"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn dispatch_cmd(s: &Site) -> Command {
    let mut c = tpcflow_cmd();
    c.arg("dispatch")
        .arg("--catalog")
        .arg(&s.catalog)
        .arg("--data-root")
        .arg(&s.root)
        .arg("--config")
        .arg(&s.config);
    c
}

fn status_json(s: &Site) -> serde_json::Value {
    let o = tpcflow_cmd()
        .args(["status", "--json", "--catalog"])
        .arg(&s.catalog)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn status_text(s: &Site) -> String {
    let o = tpcflow_cmd()
        .args(["status", "--catalog"])
        .arg(&s.catalog)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Verified replicas of `run` at USDC, UKDC, ARCHIVE, and its salted files.
fn moved(c: &Catalog, run: u32) -> (u64, u64, u64, u64) {
    let r = c.run_status(Some(run), false).unwrap();
    r.first()
        .map_or((0, 0, 0, 0), |r| (r.usdc, r.ukdc, r.archive, r.salted))
}

fn prompt(c: &Catalog) -> (u64, u64, u64) {
    let p = c.campaign_progress().unwrap();
    let p = p.iter().find(|p| p.prompt).expect("prompt campaign");
    (p.tasks, p.done, p.failed)
}

/// Poll the catalog until `done` or `limit`; panics with `what`.
fn wait_for(s: &Site, limit: Duration, what: &str, done: impl Fn(&Catalog) -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(c) = Catalog::open(&s.catalog) {
            if done(&c) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let c = Catalog::open(&s.catalog).unwrap();
    panic!(
        "{what}: not after {limit:?}; prompt (tasks, done, failed) {:?}; status {}",
        prompt(&c),
        status_text(s)
    );
}

/// Every file processed exactly once: one done task with no failed attempt,
/// one catalogued output, and one SLURM job that read it (the jobcomp file
/// with the input lists the dispatcher wrote).
fn assert_exactly_once(s: &Site, runs: &[u32], files: usize) {
    let c = Catalog::open(&s.catalog).unwrap();
    let jobcomp = std::fs::read_to_string("/var/log/slurm/jobcomp.log").unwrap_or_default();
    let mut reads: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for entry in std::fs::read_dir(s.root.join("jobs")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        for line in jobcomp
            .lines()
            .filter(|l| l.contains(&format!(" Name={name} ")))
        {
            let rec = tpcflow::slurm::parse_record(line);
            let list = match rec.get("ArrayTaskId") {
                Some(i) => format!("inputs-{i}.txt"),
                None => "inputs.txt".to_string(),
            };
            let inputs = std::fs::read_to_string(entry.path().join(list)).unwrap();
            for l in inputs.lines() {
                let file = Path::new(l.split('\t').next().unwrap());
                let file = file.file_name().unwrap().to_string_lossy().into_owned();
                reads
                    .entry(file)
                    .or_default()
                    .push(format!("{name} {}", rec["JobState"]));
            }
        }
    }
    let mut n = 0;
    for run in runs {
        for f in c.files_of_run(*run).unwrap() {
            n += 1;
            let task = c
                .task_of_file(f.id, prompt_campaign_id(&c))
                .unwrap()
                .expect("a prompt task");
            assert_eq!(
                (task.state, task.attempts),
                (TaskState::Done, 0),
                "{}: {task:?}",
                f.name
            );
            assert_eq!(c.outputs_of(f.id).unwrap().len(), 1, "{}", f.name);
            let jobs = reads.get(&f.name).cloned().unwrap_or_default();
            assert_eq!(jobs.len(), 1, "{} was read by {jobs:?}", f.name);
            assert!(jobs[0].ends_with("COMPLETED"), "{jobs:?}");
        }
    }
    assert_eq!(n, files);
}

fn prompt_campaign_id(c: &Catalog) -> i64 {
    c.campaign_progress()
        .unwrap()
        .into_iter()
        .find(|p| p.prompt)
        .unwrap()
        .campaign
        .id
}

/// slurmctld by its pid file, checked to be slurmctld (a stale file names another process).
fn slurmctld_pid() -> i32 {
    let pid: i32 = std::fs::read_to_string("/run/slurmctld.pid")
        .expect("/run/slurmctld.pid (scripts/setup.sh)")
        .trim()
        .parse()
        .unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "slurmctld", "pid {pid} is not slurmctld");
    pid
}

/// Resumes slurmctld when dropped, whatever happened (SIGCONT to a running
/// process does nothing).
struct ResumeSlurmctld(i32);

impl Drop for ResumeSlurmctld {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// Kills the dispatcher daemon when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sbatch` for the dispatcher only: when the `arm` file exists it is removed,
/// slurmctld is SIGSTOPped, and the real sbatch submits to the stalled
/// controller: the submission waits in its socket queue, the dispatcher's
/// deadline kills sbatch, and the controller accepts the job as it resumes.
fn stalling_sbatch(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = Command::new("sh")
        .args(["-c", "command -v sbatch"])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    assert!(!real.is_empty(), "sbatch is not installed");
    let arm = dir.join("arm");
    let script = format!(
        "#!/bin/sh\n\
         if rm {arm} 2>/dev/null; then\n  \
           pid=$(cat /run/slurmctld.pid)\n  \
           [ \"$(cat /proc/$pid/comm)\" = slurmctld ] && kill -STOP \"$pid\"\n\
         fi\n\
         exec {real} \"$@\"\n",
        arm = arm.display()
    );
    let path = bin.join("sbatch");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn is_stopped(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('T'))
}

fn pass_reports(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn slurmctld_stalled_at_submission_data_keeps_moving_and_each_file_is_processed_once() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_exclusive();
    let pid = slurmctld_pid();
    let _resume = ResumeSlurmctld(pid);
    let s = site(
        "outage-stop",
        "files_per_job = 4\nmax_queued_jobs = 4\nbackoff_s = 1.0\nnodes = 1\nntasks = 1\n\
         slurm_timeout_s = 3.0\nslurm_retry_s = 2.0\nslurm_retry_max_s = 6.0\n",
    );
    let bin = stalling_sbatch(s.dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let reports = s.dir.path().join("passes.jsonl");
    let daemon = Daemon(
        dispatch_cmd(&s)
            .env("PATH", &path)
            .args(["--daemon", "--interval", "0.5", "--json"])
            .stdout(std::fs::File::create(&reports).unwrap())
            .stderr(std::fs::File::create(s.dir.path().join("daemon.err")).unwrap())
            .spawn()
            .unwrap(),
    );

    // Run 17601 is processed while SLURM answers.
    sim(&s.root, 17601, 4);
    wait_for(&s, Duration::from_secs(180), "run 17601 processed", |c| {
        prompt(c) == (4, 4, 0) && c.active_jobs().unwrap().is_empty()
    });

    // Run 17602: its submission stalls the controller.
    std::fs::write(s.dir.path().join("arm"), "").unwrap();
    sim(&s.root, 17602, 4);
    let start = Instant::now();
    while !is_stopped(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the dispatcher never submitted run 17602"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped_at = Instant::now();
    let hung = Command::new("timeout")
        .args(["2", "squeue"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        hung.code(),
        Some(124),
        "squeue hangs on a stopped slurmctld"
    );

    // Run 17603 arrives during the outage and is moved, salted and queued.
    sim(&s.root, 17603, 4);
    wait_for(
        &s,
        Duration::from_secs(30),
        "run 17603 reaches USDC, UKDC and ARCHIVE while slurmctld is stopped",
        |c| moved(c, 17603) == (4, 4, 4, 4),
    );
    wait_for(
        &s,
        Duration::from_secs(20),
        "two passes without SLURM",
        |c| c.slurm_health().unwrap().is_some_and(|h| h.passes >= 2),
    );
    assert!(is_stopped(pid), "slurmctld stayed stopped");
    let c = Catalog::open(&s.catalog).unwrap();
    assert_eq!(moved(&c, 17602), (4, 4, 4, 4));
    assert_eq!(
        c.count_replicas(CatalogSite::Archive, ReplicaState::Verified)
            .unwrap(),
        12
    );
    let (tasks, done, failed) = prompt(&c);
    assert_eq!((tasks, done, failed), (12, 4, 0), "no task failed");
    let pending = c
        .jobs_in_state(tpcflow::catalog::JobState::Pending)
        .unwrap();
    assert_eq!(
        pending.len(),
        1,
        "the timed-out submission keeps its intent: {pending:?}"
    );
    assert!(
        c.jobs_in_state(tpcflow::catalog::JobState::Failed)
            .unwrap()
            .is_empty(),
        "no job marked failed"
    );
    let v = status_json(&s);
    assert_eq!(v["slurm"]["available"], false, "{v}");
    assert!(v["slurm"]["passes"].as_u64().unwrap() >= 2, "{v}");
    let text = status_text(&s);
    assert!(
        text.contains("SLURM unavailable since") && text.contains("next try at"),
        "{text}"
    );
    assert!(
        text.contains("no answer within 3s"),
        "the deadline is the error: {text}"
    );

    // Resume after ~20 s: the stalled submission is adopted, not repeated.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(stopped_at.elapsed()));
    let outage = stopped_at.elapsed();
    drop(_resume);
    assert!(!is_stopped(pid));
    wait_for(
        &s,
        Duration::from_secs(240),
        "all 12 files processed",
        |c| prompt(c) == (12, 12, 0) && c.active_jobs().unwrap().is_empty(),
    );
    drop(daemon);
    let passes = pass_reports(&reports);
    let adopted: u64 = passes
        .iter()
        .map(|p| p["jobs_adopted"].as_u64().unwrap())
        .sum();
    let skipped = passes.iter().filter(|p| p["slurm_skipped"] == true).count();
    let slowest = passes
        .iter()
        .map(|p| p["seconds"].as_f64().unwrap())
        .fold(0.0, f64::max);
    eprintln!(
        "outage {outage:?}: {} passes, {skipped} without SLURM, slowest {slowest:.1} s, {adopted} job(s) adopted",
        passes.len()
    );
    assert_eq!(
        adopted, 1,
        "the submission sent to the stalled controller is adopted"
    );
    assert!(skipped >= 2);
    assert!(
        slowest < 10.0,
        "a pass waits for SLURM at most its timeout (3 s) per call: {slowest} s"
    );
    assert_eq!(status_json(&s)["slurm"]["available"], true);
    assert!(!status_text(&s).contains("SLURM unavailable"));
    let errors = std::fs::read_to_string(s.dir.path().join("daemon.err")).unwrap();
    assert!(!errors.contains("pass failed"), "{errors}");
    assert_exactly_once(&s, &[17601, 17602, 17603], 12);
}

/// A cluster config whose controller port has nobody listening: what the
/// client commands meet when slurmctld is stopped (connection refused),
/// without touching the cluster other tests use.
fn refused_conf(dir: &Path) -> PathBuf {
    let conf = std::fs::read_to_string("/etc/slurm/slurm.conf")
        .expect("scripts/setup.sh wrote slurm.conf");
    let mut down: String = conf
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("SlurmctldPort") && !l.starts_with("MessageTimeout")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    down.push_str("SlurmctldPort=6999\nMessageTimeout=2\n");
    let path = dir.join("slurm-refused.conf");
    std::fs::write(&path, down).unwrap();
    path
}

fn once(s: &Site, slurm_conf: Option<&Path>) -> (serde_json::Value, Duration) {
    let mut c = dispatch_cmd(s);
    c.args(["--once", "--json"]);
    if let Some(conf) = slurm_conf {
        c.env("SLURM_CONF", conf);
    }
    let start = Instant::now();
    let o: Output = c.output().unwrap();
    assert!(
        o.status.success(),
        "a pass succeeds whatever SLURM does: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (serde_json::from_slice(&o.stdout).unwrap(), start.elapsed())
}

#[test]
fn refused_controller_passes_move_data_back_off_and_resume() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let s = site(
        "outage-refused",
        "files_per_job = 4\nbackoff_s = 1.0\nnodes = 1\nntasks = 1\n\
         slurm_timeout_s = 8.0\nslurm_retry_s = 4.0\nslurm_retry_max_s = 60.0\n",
    );
    let refused = refused_conf(s.dir.path());
    sim(&s.root, 17611, 3);

    // A dispatcher starts, ingests, salts and transfers with the controller refusing.
    let (r, took) = once(&s, Some(&refused));
    assert_eq!(r["ingested"], 3, "{r}");
    assert_eq!(r["salted"], 3, "{r}");
    assert_eq!(r["replicas_verified"], 9, "{r}");
    assert_eq!(r["slurm_skipped"], true, "{r}");
    assert_eq!(r["jobs_submitted"], 0, "{r}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    let v = status_json(&s);
    assert_eq!(v["slurm"]["available"], false, "{v}");
    assert_eq!(v["slurm"]["passes"], 1, "{v}");
    let error = v["slurm"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("Unable to contact slurm controller"),
        "the client's own message: {error}"
    );

    // The next pass within the back-off does not ask SLURM at all.
    let (r, _) = once(&s, Some(&refused));
    assert_eq!(
        (r["slurm_calls"].as_u64(), r["slurm_skipped"].as_bool()),
        (Some(0), Some(true)),
        "{r}"
    );
    let c = Catalog::open(&s.catalog).unwrap();
    assert_eq!(prompt(&c), (3, 0, 0), "queued, none failed");
    let h = c.slurm_health().unwrap().expect("the outage is recorded");
    assert_eq!((h.passes, h.attempts), (2, 1));

    // SLURM answers again: after the next try is due, everything runs once.
    let wait = h.next_try_at - tpcflow::catalog::now_unix_s();
    std::thread::sleep(Duration::from_secs_f64(wait.max(0.0) + 0.1));
    let start = Instant::now();
    loop {
        let (r, _) = once(&s, None);
        assert_eq!(r["slurm_skipped"], false, "{r}");
        if prompt(&Catalog::open(&s.catalog).unwrap()) == (3, 3, 0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(180), "not done: {r}");
        std::thread::sleep(Duration::from_millis(700));
    }
    assert_eq!(status_json(&s)["slurm"]["available"], true);
    assert_exactly_once(&s, &[17611], 3);
}
