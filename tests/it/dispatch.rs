//! The dispatcher against the real local SLURM: live processing, crashes at
//! random points, job faults, the lock and bad configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use tpcflow::catalog::{Catalog, TaskState};
use tpcflow::dispatch::prompt_campaign_name;

use crate::common::*;

struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    catalog: PathBuf,
    config: PathBuf,
}

fn site(name: &str, settings: &str) -> Site {
    let dir = scratch(name);
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("SURF")).unwrap();
    let config = dir.path().join("dispatch.toml");
    std::fs::write(&config, settings).unwrap();
    Site {
        catalog: dir.path().join("catalog.db"),
        root,
        config,
        _dir: dir,
    }
}

fn sim(root: &Path, run: u32, files: u32, events: u32, extra: &[&str]) -> Output {
    let o = tpcflow_cmd()
        .args([
            "sim",
            "--run",
            &run.to_string(),
            "--files",
            &files.to_string(),
            "--events-per-file",
            &events.to_string(),
        ])
        .args(["--seed", &run.to_string(), "--out"])
        .arg(root.join("SURF"))
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
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

fn dispatch_once(s: &Site) -> Output {
    dispatch_cmd(s).arg("--once").output().unwrap()
}

/// Passes until `done(catalog)` or the time limit; panics with the last report.
fn dispatch_until(s: &Site, limit: Duration, done: impl Fn(&Catalog) -> bool) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        let o = dispatch_once(s);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "dispatch failed: {last}");
        if done(&Catalog::open(&s.catalog).unwrap()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    panic!("not done after {limit:?}; last pass: {last}");
}

fn prompt_done(c: &Catalog) -> (u64, u64) {
    let p = c.campaign_progress().unwrap();
    let prompt = p.iter().find(|p| p.prompt).expect("prompt campaign");
    (prompt.done, prompt.failed)
}

#[test]
fn live_run_is_moved_reconstructed_and_catalogued_without_an_operator() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let dir = scratch("dispatch-live-keys");
    let (key, vault) = (dir.path().join("salt.key"), dir.path().join("vault"));
    let o = tpcflow_cmd()
        .args(["salt", "keygen", "--rate", "0.2", "--key"])
        .arg(&key)
        .arg("--vault")
        .arg(&vault)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = site(
        "dispatch-live",
        &format!(
            "files_per_job = 3\nmax_queued_jobs = 4\nbackoff_s = 1.0\nnodes = 1\nntasks = 1\n\
             salt_key = \"{}\"\nsalt_vault = \"{}\"\n",
            key.display(),
            vault.display()
        ),
    );
    // The DAQ writes 20 files over ~5 s while the dispatcher runs as a daemon.
    let mut daq = tpcflow_cmd()
        .args([
            "sim",
            "--run",
            "17390",
            "--files",
            "20",
            "--events-per-file",
            "5",
            "--seed",
            "1",
            "--live",
            "--rate",
            "20",
            "--out",
        ])
        .arg(s.root.join("SURF"))
        .spawn()
        .unwrap();
    let mut daemon: Child = dispatch_cmd(&s)
        .args(["--daemon", "--interval", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut done = 0;
    while start.elapsed() < Duration::from_secs(240) {
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(c) = Catalog::open(&s.catalog) {
            if let Ok(p) = c.campaign_progress() {
                done = p.iter().find(|p| p.prompt).map_or(0, |p| p.done);
                if done == 20 {
                    break;
                }
            }
        }
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(daq.wait().unwrap().success());
    assert_eq!(done, 20, "prompt processing finished {done} of 20 files");
    let c = Catalog::open(&s.catalog).unwrap();
    let runs = c.run_status(Some(17390), false).unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(
        (
            r.files,
            r.usdc,
            r.ukdc,
            r.archive,
            r.salted,
            r.reconstructed,
            r.failed
        ),
        (20, 20, 20, 20, 20, 20, 0),
        "{r:?}"
    );
    // What was placed is the salted file: the USDC copy carries the catalogued checksum.
    for f in c.files_of_run(17390).unwrap() {
        assert!(f.salted);
        let usdc = s.root.join("USDC/017390").join(&f.name);
        assert_eq!(
            tpcflow::adler::digest_file(&usdc).unwrap().adler32,
            f.adler32
        );
    }
    let mut lat = c.prompt_latencies().unwrap();
    lat.sort_by(f64::total_cmp);
    assert_eq!(lat.len(), 20);
    let median = lat[lat.len() / 2];
    eprintln!(
        "live run: median latency SURF write -> RQ catalogued {median:.1} s (min {:.1}, max {:.1})",
        lat[0], lat[19]
    );
    assert!(lat[0] > 0.0 && median < 120.0);
    // `tpcflow status` shows the same.
    let o = tpcflow_cmd()
        .args(["status", "--json", "--catalog"])
        .arg(&s.catalog)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["runs"][0]["reconstructed"], 20);
    assert_eq!(v["latency"]["files"], 20);
}

/// Every SLURM job (or array element) the dispatcher ran, from the jobcomp
/// file, with its state and the files it read.
fn jobs_that_ran(work_dir: &Path) -> Vec<(String, String, Vec<String>)> {
    let jobcomp = std::fs::read_to_string("/var/log/slurm/jobcomp.log").unwrap_or_default();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(work_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        for line in jobcomp
            .lines()
            .filter(|l| l.contains(&format!(" Name={name} ")))
        {
            let rec = tpcflow::slurm::parse_record(line);
            // A plain job reads inputs.txt, array element i inputs-{i}.txt.
            let (label, list) = match rec.get("ArrayTaskId") {
                Some(i) => (format!("{name}_{i}"), format!("inputs-{i}.txt")),
                None => (name.clone(), "inputs.txt".to_string()),
            };
            let inputs = std::fs::read_to_string(entry.path().join(list)).unwrap_or_default();
            out.push((
                label,
                rec["JobState"].clone(),
                inputs
                    .lines()
                    .map(|l| l.split('\t').next().unwrap_or(l).to_string())
                    .collect(),
            ));
        }
    }
    out
}

/// Create a campaign over `runs` with the default conditions.
fn create_campaign(s: &Site, name: &str, runs: &str) {
    let o = tpcflow_cmd()
        .args(["campaign", "create", "--name", name, "--runs", runs])
        .args(["--conditions", "v1", "--catalog"])
        .arg(&s.catalog)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn large_campaign_runs_as_one_throttled_job_array() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let s = site(
        "dispatch-array",
        "prompt_conditions = \"\"\nfiles_per_job = 1\narray_min_jobs = 4\narray_throttle = 2\n\
         max_queued_jobs = 1\nnodes = 1\nntasks = 1\n",
    );
    sim(&s.root, 17410, 10, 3, &[]);
    create_campaign(&s, "SR3_array", "17410");
    // One pass: ten jobs' worth of files go to SLURM as one array: one squeue, one sbatch.
    let o = dispatch_cmd(&s)
        .args(["--once", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["jobs_submitted"], 10, "{r}");
    assert_eq!(r["arrays_submitted"], 1, "{r}");
    assert_eq!(r["slurm_calls"], 2, "{r}");
    let c = Catalog::open(&s.catalog).unwrap();
    let jobs = c
        .jobs_in_state(tpcflow::catalog::JobState::Submitted)
        .unwrap();
    assert_eq!(jobs.len(), 10);
    let array_id = jobs[0].slurm_id.expect("submitted with an id");
    let mut indices: Vec<u32> = jobs.iter().filter_map(|j| j.array_index).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..10).collect::<Vec<_>>());
    assert!(jobs
        .iter()
        .all(|j| j.slurm_id == Some(array_id) && j.slurm_name == jobs[0].slurm_name));
    let show = Command::new("scontrol")
        .args(["show", "job", &array_id.to_string()])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("ArrayTaskThrottle=2"), "{show}");
    // SLURM runs at most two elements at a time; the queue is full with one
    // array (max_queued_jobs = 1), so a pass in the meantime submits nothing.
    let o = dispatch_cmd(&s)
        .args(["--once", "--json"])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["jobs_submitted"], 0, "{r}");
    let start = Instant::now();
    let mut most_running = 0;
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-r", "-j", &array_id.to_string(), "-o", "%i|%T"])
            .output()
            .unwrap();
        let q = String::from_utf8_lossy(&q.stdout).into_owned();
        let running = q.lines().filter(|l| l.ends_with("|RUNNING")).count();
        most_running = most_running.max(running);
        let live = q
            .lines()
            .filter(|l| l.ends_with("|RUNNING") || l.ends_with("|PENDING"))
            .count();
        if live == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "array still running: {q}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        (1..=2).contains(&most_running),
        "{most_running} elements ran at once"
    );
    dispatch_until(&s, Duration::from_secs(60), |c| {
        let p = c.campaign_progress().unwrap();
        p.iter()
            .any(|p| p.campaign.name == "SR3_array" && p.done == 10)
    });
    for f in c.files_of_run(17410).unwrap() {
        let outs = c.outputs_of(f.id).unwrap();
        assert_eq!(outs.len(), 1, "{}: {outs:?}", f.name);
        assert_eq!(outs[0].events, 3);
    }
    let ran = jobs_that_ran(&s.root.join("jobs"));
    assert_eq!(ran.len(), 10, "{ran:?}");
    assert!(ran
        .iter()
        .all(|(_, state, inputs)| state == "COMPLETED" && inputs.len() == 1));
}

#[test]
fn killed_dispatcher_loses_nothing_and_runs_nothing_twice() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let s = site(
        "dispatch-crash",
        // 10 jobs of 2 files: arrays of 3 elements (3 + 3 + 3) and a plain job
        // for the last one, so kills land around both kinds of submission.
        "prompt_conditions = \"\"\nfiles_per_job = 2\nmax_queued_jobs = 3\nmax_submissions_per_pass = 2\n\
         array_min_jobs = 2\narray_max_jobs = 3\narray_throttle = 2\nnodes = 1\nntasks = 1\n",
    );
    sim(&s.root, 17400, 20, 4, &[]);
    create_campaign(&s, "SR3_reprocess_PROD-2", "17400-17400");
    // kill -9 at random points of a running daemon, at least 5 times.
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    for _ in 0..6 {
        let mut d = dispatch_cmd(&s)
            .args(["--daemon", "--interval", "0.2"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        std::thread::sleep(Duration::from_millis(100 + rng_state % 1200));
        if d.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = d.kill();
        let _ = d.wait();
    }
    assert!(kills >= 5, "only {kills} kills hit a running dispatcher");
    let c = Catalog::open(&s.catalog).unwrap();
    let campaign = c.campaign_by_name("SR3_reprocess_PROD-2").unwrap().unwrap();
    dispatch_until(&s, Duration::from_secs(240), |c| {
        let p = c.campaign_progress().unwrap();
        let p = p.iter().find(|p| p.campaign.id == campaign.id).unwrap();
        p.done == 20
    });
    // Exactly one output per file, complete.
    let files = c.files_of_run(17400).unwrap();
    assert_eq!(files.len(), 20);
    for f in &files {
        let outs = c.outputs_of(f.id).unwrap();
        assert_eq!(outs.len(), 1, "{}: {outs:?}", f.name);
        let rq = tpcflow::rq::read_rq_file(Path::new(&outs[0].rq_path)).unwrap();
        assert_eq!(rq.header.lineage_hash, campaign.lineage_hash);
        assert_eq!(outs[0].events, 4);
    }
    // No file was processed by two jobs that ran.
    let ran = jobs_that_ran(&s.root.join("jobs"));
    let mut per_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, state, inputs) in &ran {
        if state == "COMPLETED" {
            for i in inputs {
                per_file.entry(i.clone()).or_default().push(name.clone());
            }
        }
    }
    assert_eq!(per_file.len(), 20, "jobs that ran: {ran:?}");
    for (file, jobs) in &per_file {
        assert_eq!(jobs.len(), 1, "{file} ran in {jobs:?}");
    }
    assert!(
        ran.iter().any(|(label, _, _)| label.contains('_')),
        "the campaign ran as job arrays: {ran:?}"
    );
    eprintln!("crash test: {kills} kills, {} SLURM jobs ran", ran.len());
    // A campaign over the same runs with other settings makes new outputs beside the old ones.
    let cfg = s.root.join("reco-alt.toml");
    std::fs::write(&cfg, "hit_threshold_rms = 5.0\n").unwrap();
    let o = tpcflow_cmd()
        .args([
            "campaign",
            "create",
            "--name",
            "SR3_reprocess_PROD-3",
            "--runs",
            "17400",
            "--reco-config",
        ])
        .arg(&cfg)
        .arg("--catalog")
        .arg(&s.catalog)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dispatch_until(&s, Duration::from_secs(240), |c| {
        c.campaign_progress()
            .unwrap()
            .iter()
            .any(|p| p.campaign.name == "SR3_reprocess_PROD-3" && p.done == 20)
    });
    for f in &files {
        let outs = c.outputs_of(f.id).unwrap();
        assert_eq!(outs.len(), 2);
        assert_ne!(outs[0].lineage_hash, outs[1].lineage_hash);
        assert!(outs.iter().all(|o| Path::new(&o.rq_path).exists()));
    }
}

#[test]
fn second_dispatcher_refuses_and_bad_config_fails_before_submitting() {
    if !require_cluster() {
        return;
    }
    // The SLURM outage test stops slurmctld while it holds the cluster alone.
    let _cluster = cluster_shared();
    let s = site("dispatch-lock", "nodes = 1\n");
    let mut first = dispatch_cmd(&s)
        .args(["--daemon", "--interval", "5"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let o = dispatch_once(&s);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("another dispatcher is running"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    std::fs::write(&s.config, "files_per_job = 0\n").unwrap();
    let o = dispatch_once(&s);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("files_per_job") && err.contains("dispatch.toml"),
        "{err}"
    );
    std::fs::write(&s.config, "files_per_jobb = 2\n").unwrap();
    let err = String::from_utf8_lossy(&dispatch_once(&s).stderr).into_owned();
    assert!(err.contains("files_per_jobb"), "{err}");
    let template = s.root.join("bad.sbatch");
    std::fs::write(&template, "#!/bin/bash\n#SBATCH --job-name={{job_name}}\nsrun {{tpcflow}} reco {{reco_args}} {{no_such_key}}\n").unwrap();
    std::fs::write(&s.config, format!("profile = \"{}\"\n", template.display())).unwrap();
    sim(&s.root, 5, 1, 2, &[]);
    let o = dispatch_once(&s);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no_such_key"), "{err}");
    // Nothing was ingested or submitted.
    let c = Catalog::open(&s.catalog);
    assert!(c.is_err() || c.unwrap().files_of_run(5).unwrap().is_empty());
}

/// A template that misbehaves as told by a file in the job directory's parent.
fn fault_template(dir: &Path) -> PathBuf {
    let t = dir.join("faulty.sbatch");
    let text = format!(
        "#!/bin/bash\n#SBATCH --job-name={{{{job_name}}}}\n#SBATCH --nodes={{{{nodes}}}}\n#SBATCH --ntasks={{{{ntasks}}}}\n\
         #SBATCH --cpus-per-task={{{{cpus_per_task}}}}\n#SBATCH --time={{{{time_limit}}}}\n#SBATCH --output={{{{log}}}}\n\
         #SBATCH --no-requeue\nexport OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n\
         fault=$(cat {fault} 2>/dev/null || true)\necho \"fault: $fault\"\n\
         case \"$fault\" in exit) exit 3 ;; hang) sleep 3600 ;; esac\n\
         srun --mpi=pmix {{{{tpcflow}}}} reco --threads 1 {{{{reco_args}}}}\n",
        fault = dir.join("fault").display()
    );
    std::fs::write(&t, text).unwrap();
    t
}

fn set_fault(dir: &Path, fault: &str) {
    std::fs::write(dir.join("fault"), fault).unwrap();
}

fn wait_job_state(
    c: &Catalog,
    s: &Site,
    want: &str,
    limit: Duration,
) -> Vec<tpcflow::catalog::JobRow> {
    let start = Instant::now();
    loop {
        let o = dispatch_once(s);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let jobs: Vec<_> = c.active_jobs().unwrap();
        if want == "running"
            && jobs
                .iter()
                .any(|j| j.state == tpcflow::catalog::JobState::Running)
        {
            return jobs;
        }
        if want == "idle" && jobs.is_empty() {
            return jobs;
        }
        assert!(
            start.elapsed() < limit,
            "no {want} job after {limit:?}: {jobs:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn last_error(c: &Catalog, campaign: i64) -> (TaskState, u32, String) {
    let t = c
        .tasks_in_state(campaign, TaskState::Queued)
        .unwrap()
        .into_iter()
        .chain(c.tasks_in_state(campaign, TaskState::Failed).unwrap())
        .chain(c.tasks_in_state(campaign, TaskState::Submitted).unwrap())
        .next()
        .expect("the task is queued, in a job or failed");
    (t.state, t.attempts, t.last_error.unwrap_or_default())
}

/// Dispatcher passes until the file's task has spent `n` attempts.
fn wait_attempts(s: &Site, n: u32, limit: Duration) -> (TaskState, u32, String) {
    let start = Instant::now();
    loop {
        let o = dispatch_once(s);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let c = Catalog::open(&s.catalog).unwrap();
        let id = c
            .campaign_by_name(&prompt_campaign_name("v1"))
            .unwrap()
            .unwrap()
            .id;
        let got = last_error(&c, id);
        if got.1 >= n {
            return got;
        }
        assert!(
            start.elapsed() < limit,
            "attempt {n} not reached after {limit:?}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(400));
    }
}

/// Passes until the task's last error mentions `what`; (state, attempts, error).
fn wait_error(s: &Site, what: &str, limit: Duration) -> (TaskState, u32, String) {
    let start = Instant::now();
    loop {
        let o = dispatch_once(s);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let c = Catalog::open(&s.catalog).unwrap();
        let id = c
            .campaign_by_name(&prompt_campaign_name("v1"))
            .unwrap()
            .unwrap()
            .id;
        let got = last_error(&c, id);
        if got.2.contains(what) {
            return got;
        }
        assert!(
            start.elapsed() < limit,
            "no {what} after {limit:?}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(400));
    }
}

#[test]
fn job_faults_are_detected_with_their_state_retried_and_failed_after_the_cap() {
    if !require_cluster() {
        return;
    }
    // Node states change here: no other SLURM test runs meanwhile.
    let _cluster = cluster_exclusive();
    let dir = scratch("dispatch-faults");
    let template = fault_template(dir.path());
    let s = site(
        "dispatch-faults-site",
        &format!(
            "profile = \"{}\"\nfiles_per_job = 1\nmax_attempts = 4\nbackoff_s = 2.0\nnodes = 1\nntasks = 1\ntime_limit = \"00:01:00\"\n",
            template.display()
        ),
    );
    sim(&s.root, 600, 1, 3, &[]);
    let c = || Catalog::open(&s.catalog).unwrap();

    // 1. Non-zero exit -> FAILED. The back-off (2 s, doubling) leaves time to
    // change the fault before the next attempt starts.
    set_fault(dir.path(), "exit");
    let (state, attempts, why) = wait_attempts(&s, 1, Duration::from_secs(60));
    assert_eq!((state, attempts), (TaskState::Queued, 1), "{why}");
    assert!(why.contains("FAILED") && why.contains("3:0"), "{why}");
    set_fault(dir.path(), "hang");

    // 2. scancel -> CANCELLED.
    let jobs = wait_job_state(&c(), &s, "running", Duration::from_secs(60));
    let id = jobs[0].slurm_id.unwrap();
    assert!(Command::new("scancel")
        .arg(id.to_string())
        .status()
        .unwrap()
        .success());
    let (_, attempts, why) = wait_attempts(&s, 2, Duration::from_secs(60));
    assert_eq!(attempts, 2);
    assert!(why.contains("CANCELLED"), "{why}");

    // 3. Node set DOWN under a running job -> NODE_FAIL: retried without
    // spending an attempt (not the file's fault).
    let jobs = wait_job_state(&c(), &s, "running", Duration::from_secs(60));
    let node = tpcflow::slurm::job_info(jobs[0].slurm_id.unwrap(), None)
        .unwrap()
        .node_list
        .unwrap();
    let update = |state: &str| {
        Command::new("scontrol")
            .args([
                "update",
                &format!("nodename={node}"),
                &format!("state={state}"),
                "reason=tpcflow-test",
            ])
            .status()
            .unwrap()
    };
    assert!(update("down").success());
    let got = wait_error(&s, "NODE_FAIL", Duration::from_secs(90));
    // ReturnToService=2 may have brought it back already; resume otherwise.
    let _ = update("resume");
    let back = Instant::now();
    loop {
        let o = Command::new("sinfo")
            .args(["-h", "-n", &node, "-o", "%T"])
            .output()
            .unwrap();
        let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if state.starts_with("idle") || state.starts_with("mixed") || state.starts_with("alloc") {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "{node} stays {state}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, attempts, why) = got;
    assert_eq!(attempts, 2);
    assert!(why.contains("NODE_FAIL"), "{why}");

    // 4. Time limit (one minute) -> TIMEOUT.
    let (_, attempts, why) = wait_attempts(&s, 3, Duration::from_secs(180));
    assert_eq!(attempts, 3);
    assert!(why.contains("TIMEOUT"), "{why}");

    // 5. The cap: one more failure and the file is FAILED with the reason.
    set_fault(dir.path(), "exit");
    let (state, attempts, why) = wait_attempts(&s, 4, Duration::from_secs(90));
    assert_eq!((state, attempts), (TaskState::Failed, 4));
    let cat = c();
    let f = &cat.files_of_run(600).unwrap()[0];
    assert_eq!(f.state, tpcflow::catalog::FileState::Failed);
    assert_eq!(f.last_error.as_deref(), Some(why.as_str()));
    // And an operator's retry brings it home.
    set_fault(dir.path(), "");
    let o = tpcflow_cmd()
        .args(["campaign", "retry-failed", "prompt-v1", "--catalog"])
        .arg(&s.catalog)
        .output()
        .unwrap();
    assert!(o.status.success());
    dispatch_until(&s, Duration::from_secs(90), |c| prompt_done(c) == (1, 0));
}
