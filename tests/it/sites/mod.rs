//! Two sites that process: the default cluster (site USDC) and the second
//! local cluster `ukdc` (scripts/setup-ukdc.sh, accounting in slurmdbd).
//!
//! Every test here starts the second cluster itself (idempotent, ~0.3 s when
//! it already runs) and fails loudly when it cannot.

mod failover;
mod outputs;
mod replicas;
mod retry;
mod simulation;
mod testbed;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `SLURM_CONF` of the second site's cluster.
pub const UKDC_CONF: &str = "/etc/slurm-ukdc/slurm.conf";

/// Tests that stop the second site's controller take this exclusively;
/// every other test that uses the second cluster takes it shared.
pub static UKDC: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Bring up (or check) the second cluster; panics with the script's output
/// when it cannot. False only with `TPCFLOW_SKIP_CLUSTER_TESTS=1`.
///
/// Waits while a test holds [`UKDC`] exclusively (it may have stopped the
/// controller on purpose: starting it again would end that outage early).
/// On a fresh machine the script installs packages; it takes its own lock.
pub fn require_two_sites() -> bool {
    if !super::common::require_cluster() {
        return false;
    }
    let _no_outage = UKDC.read().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(repo().join("scripts/setup-ukdc.sh"))
        .output()
        .expect("scripts/setup-ukdc.sh runs");
    assert!(
        out.status.success(),
        "scripts/setup-ukdc.sh failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    true
}

/// Run a SLURM client command against the second cluster.
pub fn ukdc(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("SLURM_CONF", UKDC_CONF)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} runs: {e}"))
}

/// Stdout of a SLURM client command against the second cluster; panics on failure.
pub fn ukdc_ok(cmd: &str, args: &[&str]) -> String {
    let out = ukdc(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll `sacct` of the second cluster until `job` has a final state; returns
/// its `State|ExitCode|NodeList|Cluster` line.
pub fn ukdc_sacct_final(job: u64, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let out = ukdc_ok(
            "sacct",
            &[
                "-X",
                "-n",
                "-P",
                "-j",
                &job.to_string(),
                "-o",
                "State,ExitCode,NodeList,Cluster",
            ],
        );
        let line = out.lines().next().unwrap_or("").to_string();
        let state = line.split('|').next().unwrap_or("");
        if !state.is_empty() && !matches!(state, "PENDING" | "RUNNING" | "COMPLETING") {
            return line;
        }
        assert!(
            start.elapsed() < limit,
            "ukdc job {job} not final after {limit:?}: {line:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A script file for sbatch.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
    p
}

/// A dispatcher's world: data root with SURF, catalog, settings file.
pub struct World {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub catalog: PathBuf,
    pub config: PathBuf,
}

/// A fresh world with these dispatcher settings (TOML).
pub fn world(name: &str, settings: &str) -> World {
    let dir = super::common::scratch(name);
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("SURF")).unwrap();
    let config = dir.path().join("dispatch.toml");
    std::fs::write(&config, settings).unwrap();
    World {
        catalog: dir.path().join("catalog.db"),
        root,
        config,
        _dir: dir,
    }
}

/// `tpcflow sim` of `files` files of run `run` into SURF.
pub fn sim(w: &World, run: u32, files: u32, events: u32) {
    let o = super::common::tpcflow_cmd()
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
            "--seed",
            &run.to_string(),
        ])
        .arg("--out")
        .arg(w.root.join("SURF"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `tpcflow campaign create` with extra arguments.
pub fn campaign(w: &World, name: &str, runs: &str, extra: &[&str]) {
    let o = super::common::tpcflow_cmd()
        .args(["campaign", "create", "--name", name, "--runs", runs])
        .args(["--conditions", "v1"])
        .args(extra)
        .arg("--catalog")
        .arg(&w.catalog)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// One `tpcflow dispatch --once --json` pass; its report.
pub fn pass(w: &World) -> serde_json::Value {
    let o = super::common::tpcflow_cmd()
        .arg("dispatch")
        .arg("--catalog")
        .arg(&w.catalog)
        .arg("--data-root")
        .arg(&w.root)
        .arg("--config")
        .arg(&w.config)
        .args(["--once", "--json"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "dispatch failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "dispatch --json: {e}: {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// Passes until `done` or `limit`; their reports. Panics with the last report.
pub fn passes_until(
    w: &World,
    limit: Duration,
    done: impl Fn(&tpcflow::catalog::Catalog) -> bool,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    let mut reports = Vec::new();
    while start.elapsed() < limit {
        reports.push(pass(w));
        if done(&tpcflow::catalog::Catalog::open(&w.catalog).unwrap()) {
            return reports;
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    panic!(
        "not done after {limit:?}; last pass: {}",
        reports.last().unwrap_or(&serde_json::Value::Null)
    );
}

/// Sum of a numeric field over pass reports.
pub fn total(reports: &[serde_json::Value], key: &str) -> u64 {
    reports.iter().map(|r| r[key].as_u64().unwrap_or(0)).sum()
}

/// Flip one byte in the middle of a file (silent corruption).
pub fn corrupt(path: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let len = f.metadata().unwrap().len();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
}

/// Input lists (`path<TAB>adler32` lines) of the jobs of campaign `id`.
pub fn input_lines(w: &World, campaign_id: i64) -> Vec<String> {
    let mut lines = Vec::new();
    let tag = format!("-c{campaign_id}-");
    for dir in std::fs::read_dir(w.root.join("jobs")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.file_name().unwrap().to_string_lossy().contains(&tag) {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("inputs") && name.ends_with(".txt") {
                let text = std::fs::read_to_string(&f).unwrap();
                lines.extend(text.lines().map(str::to_string));
            }
        }
    }
    lines
}

/// `tpcflow audit --site SITE` (checksums); its stderr. Exit 3: something found.
pub fn audit(w: &World, site: &str) -> String {
    let o = super::common::tpcflow_cmd()
        .args([
            "audit",
            "--site",
            site,
            "--max-missing-fraction",
            "1",
            "--catalog",
        ])
        .arg(&w.catalog)
        .arg("--data-root")
        .arg(&w.root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(3), "{err}");
    err
}
