//! Shared helpers for the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `tpcflow` binary built for these tests.
pub fn tpcflow_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tpcflow"))
}

/// A scratch directory under /tmp that SLURM jobs on every emulated node can reach.
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tpcflow-it-{name}-"))
        .tempdir_in("/tmp")
        .expect("tempdir")
}

/// True when the cluster tests may run; panics with what is missing otherwise.
///
/// Returns false (a skip) only when `TPCFLOW_SKIP_CLUSTER_TESTS=1` is set.
pub fn require_cluster() -> bool {
    if std::env::var("TPCFLOW_SKIP_CLUSTER_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: TPCFLOW_SKIP_CLUSTER_TESTS=1 (never set in CI)");
        return false;
    }
    // The SLURM outage test stops slurmctld while it holds `CLUSTER` for
    // writing: wait until no such test runs before asking whether the
    // cluster is up. Every test calls this before taking its own guard.
    drop(CLUSTER.read().unwrap_or_else(|e| e.into_inner()));
    let ping = Command::new("scontrol").arg("ping").output();
    match ping {
        Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("UP") => {}
        Ok(out) => panic!(
            "the local SLURM cluster is not up (scontrol ping: {} {}); run scripts/setup.sh \
             or set TPCFLOW_SKIP_CLUSTER_TESTS=1 on a laptop without SLURM",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "SLURM client commands are missing (scontrol: {e}); run scripts/setup.sh \
             or set TPCFLOW_SKIP_CLUSTER_TESTS=1 on a laptop without SLURM"
        ),
    }
    true
}

/// Node names of the local cluster (`sinfo -h -N -o %N`).
pub fn cluster_nodes() -> Vec<String> {
    let out = Command::new("sinfo")
        .args(["-h", "-N", "-o", "%N"])
        .output()
        .expect("sinfo runs");
    let mut nodes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// Python with h5py: Debian's python3-h5py lives under /usr/bin/python3.
pub fn python_with_h5py() -> PathBuf {
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(candidate)
            .args(["-c", "import h5py"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return PathBuf::from(candidate);
        }
    }
    panic!("no python3 with h5py found: run scripts/setup.sh (installs python3-h5py)");
}

/// Run a Python snippet with h5py and return its stdout; panics with stderr on failure.
pub fn run_python(code: &str, args: &[&Path]) -> String {
    let out = Command::new(python_with_h5py())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `h5dump args` and return its stdout; panics when h5dump is missing or fails.
pub fn h5dump(args: &[&str]) -> String {
    let out = Command::new("h5dump")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("h5dump is missing ({e}): run scripts/setup.sh (hdf5-tools)"));
    assert!(
        out.status.success(),
        "h5dump {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Tests that change the cluster itself (a node set DOWN) take this
/// exclusively; every other test that runs SLURM jobs takes it shared.
pub static CLUSTER: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Shared use of the cluster (jobs only).
pub fn cluster_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    CLUSTER.read().unwrap_or_else(|p| p.into_inner())
}

/// Exclusive use of the cluster (node states change).
pub fn cluster_exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    CLUSTER.write().unwrap_or_else(|p| p.into_inner())
}

/// Bytes of `path` in the page cache (util-linux `fincore`).
pub fn resident_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(out.status.success(), "fincore: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Drop `path` from the page cache (`dd iflag=nocache count=0`).
pub fn evict(path: &Path) {
    let st = std::process::Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .expect("dd runs");
    assert!(st.success());
}

/// A `tpcflow reco` job on 2 ranks over up to 2 nodes from the local sbatch
/// template, reading the input list `inputs` into `out`: returns the script
/// and its job log, both under `dir`.
pub fn two_rank_reco_script(
    dir: &Path,
    job_name: &str,
    inputs: &[PathBuf],
    out: &Path,
    extra_reco_args: &str,
) -> (PathBuf, PathBuf) {
    use tpcflow::sbatch::Template;
    use tpcflow::shell::quote_path;
    let list = dir.join("inputs.txt");
    let names: String = inputs
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    std::fs::write(&list, names).unwrap();
    let log = dir.join("job.log");
    let values: std::collections::BTreeMap<String, String> = [
        ("job_name", job_name.to_string()),
        ("nodes", cluster_nodes().len().min(2).to_string()),
        ("ntasks", "2".into()),
        ("cpus_per_task", "1".into()),
        ("time_limit", "00:10:00".into()),
        ("log", log.display().to_string()),
        ("tpcflow", quote_path(&tpcflow_bin()).unwrap()),
        (
            "reco_args",
            format!(
                "--inputs @{} --out-dir {} --json {extra_reco_args}",
                quote_path(&list).unwrap(),
                quote_path(out).unwrap()
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let script = dir.join("reco.sbatch");
    // The template launches Open MPI's ranks through PMIx; an MPICH build
    // needs PMI-2.
    let text = Template::load("local")
        .unwrap()
        .render(&values)
        .unwrap()
        .replace("--mpi=pmix", srun_mpi());
    tpcflow::sbatch::write_script(&script, &text).unwrap();
    (script, log)
}

/// Simulated mixed-source raw files of `run` (seed = run) under `dir`,
/// `files` x `events`, with conditions v1.
pub fn simulate_mixed(run: u32, dir: &Path, files: u32, events: u32) -> Vec<PathBuf> {
    let cond = tpcflow::conditions::Conditions::load("v1").unwrap();
    let opts = tpcflow::sim::SimOptions {
        run,
        files,
        events_per_file: events,
        seed: u64::from(run),
        out: dir.to_path_buf(),
        source: tpcflow::sim::Source::Mixed,
        first_sequence: 0,
        live_rate_hz: None,
    };
    tpcflow::sim::run(&opts, &cond).unwrap().files
}

/// The MPI library the tests (and the `tpcflow` binary) are built against:
/// Open MPI by default, MPICH under `scripts/test-mpich.sh`. The launchers
/// the tests start follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestMpi {
    OpenMpi,
    Mpich,
}

/// Which MPI this build links (`MPI_Get_library_version`, callable before
/// `MPI_Init`).
pub fn test_mpi() -> TestMpi {
    if tpcflow::mpi_env::library_version().contains("MPICH") {
        TestMpi::Mpich
    } else {
        TestMpi::OpenMpi
    }
}

/// `mpirun -n ranks` of the linked MPI, oversubscribing the cores and binding
/// nothing: Open MPI's `mpirun`, MPICH's Hydra `mpiexec.mpich` (which passes
/// the whole environment to the ranks by default).
pub fn mpirun(ranks: u32) -> Command {
    let n = ranks.to_string();
    match test_mpi() {
        TestMpi::OpenMpi => {
            let mut c = Command::new("mpirun");
            c.args(["-n", &n, "--oversubscribe", "--bind-to", "none"]);
            c
        }
        TestMpi::Mpich => {
            let mut c = Command::new("mpiexec.mpich");
            c.args(["-n", &n, "-bind-to", "none"]);
            c
        }
    }
}

/// The variable in which the linked MPI's launcher tells a rank its number
/// (for wrapper scripts that treat one rank differently).
pub fn launcher_rank_var() -> &'static str {
    match test_mpi() {
        TestMpi::OpenMpi => "OMPI_COMM_WORLD_RANK",
        TestMpi::Mpich => "PMI_RANK",
    }
}

/// `srun --mpi=` plugin for the linked MPI: PMIx for Open MPI; PMI-2 for
/// MPICH (under PMIx each MPICH rank runs alone as rank 0 of 1).
pub fn srun_mpi() -> &'static str {
    match test_mpi() {
        TestMpi::OpenMpi => "--mpi=pmix",
        TestMpi::Mpich => "--mpi=pmi2",
    }
}

/// Open MPI allowed to run as root, and no inherited SLURM thread count.
pub fn mpi_env(cmd: &mut Command) -> &mut Command {
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("SLURM_CPUS_PER_TASK")
}

/// The `tpcflow` binary with Open MPI allowed as root and quiet logs.
/// Run `tpcflow ARGS` (echoed with its output, for `--nocapture`) and
/// assert that it succeeded.
pub fn tpcflow_ok(args: &[&str]) -> Output {
    let out = tpcflow_cmd()
        .args(args)
        .env_remove("SLURM_CPUS_PER_TASK")
        .output()
        .expect("tpcflow runs");
    eprintln!(
        "$ tpcflow {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tpcflow {} failed", args.join(" "));
    out
}

/// A scratch path as text (they are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub fn tpcflow_cmd() -> Command {
    let mut c = Command::new(tpcflow_bin());
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("TPCFLOW_LOG", "warn");
    c
}
