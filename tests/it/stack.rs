//! The stack: a real sbatch job runs `tpcflow mpi-selftest` on 2 MPI ranks
//! across the emulated nodes; the files are checked by our reader, h5dump and h5py.

use std::process::Command;
use std::time::Duration;

use tpcflow::mpi_selftest::{self, Summary};
use tpcflow::slurm::{self, JobState};

use crate::common::*;

#[test]
fn sbatch_mpi_selftest_two_ranks_across_nodes() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let nodes = cluster_nodes();
    assert!(!nodes.is_empty(), "sinfo lists no nodes");
    let n_nodes = nodes.len().min(2);
    let dir = scratch("selftest");
    let out = dir.path().join("out");
    let script = dir.path().join("selftest.sbatch");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\n#SBATCH --job-name=tpcflow-selftest\n#SBATCH --nodes={n_nodes}\n\
             #SBATCH --ntasks=2\n#SBATCH --time=00:05:00\n#SBATCH --output={log}\n\
             export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n\
             srun {mpi} {bin} mpi-selftest --out {out} --expect-size 2\n",
            mpi = srun_mpi(),
            log = dir.path().join("job.log").display(),
            bin = tpcflow_bin().display(),
            out = out.display(),
        ),
    )
    .unwrap();

    let job_id = slurm::submit(&script, &[]).expect("sbatch accepts the job");
    let info = slurm::wait_for_job(job_id, Duration::from_secs(180)).expect("job finishes");
    let log = std::fs::read_to_string(dir.path().join("job.log")).unwrap_or_default();
    assert_eq!(
        info.state,
        JobState::Completed,
        "job {job_id} ended {:?}; log:\n{log}",
        info
    );
    assert_eq!(
        info.exit_code.as_deref(),
        Some("0:0"),
        "exit code of job {job_id}"
    );
    assert!(log.contains("mpi-selftest ok: 2 ranks"), "log:\n{log}");

    // The job's own summary: world size 2, on the nodes SLURM gave it.
    let summary: Summary =
        serde_json::from_slice(&std::fs::read(out.join("selftest.json")).unwrap()).unwrap();
    assert_eq!(summary.world_size, 2);
    assert_eq!(summary.launcher, "srun");
    assert_eq!(summary.sum, mpi_selftest::expected_sum(2));
    if n_nodes == 2 {
        let mut used = summary.nodes.clone();
        used.sort();
        assert_eq!(used, nodes[..2].to_vec(), "one rank per emulated node");
    }

    for rank in 0..2u32 {
        let path = mpi_selftest::rank_file(&out, rank);
        // Our reader.
        let (values, file_rank, _) = mpi_selftest::read_rank_file(&path).unwrap();
        assert_eq!(file_rank, rank);
        assert_eq!(values.len(), mpi_selftest::VALUES_PER_RANK);
        assert_eq!(
            values[0],
            (rank as usize * mpi_selftest::VALUES_PER_RANK) as f64
        );
        // h5dump sees the same dataset and attribute.
        let dump = h5dump(&["-a", "rank", path.to_str().unwrap()]);
        assert!(
            dump.contains(&format!("(0): {rank}")),
            "h5dump of {}:\n{dump}",
            path.display()
        );
        // h5py reads the same values.
        let py = run_python(
            "import sys, h5py\nf = h5py.File(sys.argv[1], 'r')\nv = f['values'][:]\n\
             print(len(v), int(v.sum()), int(f.attrs['rank']))",
            &[&path],
        );
        let n = mpi_selftest::VALUES_PER_RANK as u64;
        let base = rank as u64 * n;
        let expect_sum = base * n + n * (n - 1) / 2;
        assert_eq!(py.trim(), format!("{n} {expect_sum} {rank}"));
    }
}

/// `srun` with the PMI plugin of the other MPI: Open MPI's ranks fail in
/// `MPI_Init` under PMI-2; MPICH's ranks under PMIx each run alone as rank 0
/// of 1 and would all exit 0 after reconstructing every input once per rank.
/// Either way the job must fail and write no RQ file.
#[test]
fn reco_under_a_launcher_the_mpi_library_does_not_speak_fails() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let wrong = match test_mpi() {
        TestMpi::OpenMpi => "--mpi=pmi2",
        TestMpi::Mpich => "--mpi=pmix",
    };
    let dir = scratch("wrong-launcher");
    let inputs = simulate_mixed(33, &dir.path().join("SURF"), 2, 2);
    let out = dir.path().join("rq");
    let mut cmd = Command::new("srun");
    cmd.args(["-n", "2", wrong, "--kill-on-bad-exit=1"])
        .arg(tpcflow_bin());
    let o = mpi_env(&mut cmd)
        .env("TPCFLOW_LOG", "warn")
        .args(["reco", "--threads", "1", "--out-dir"])
        .arg(&out)
        .arg("--inputs")
        .args(&inputs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "srun {wrong} succeeded:\n{stderr}");
    if test_mpi() == TestMpi::Mpich {
        assert!(
            stderr.contains("MPI world size is 1 but the launcher (srun) started 2 tasks"),
            "{stderr}"
        );
    }
    let written: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        written
            .iter()
            .all(|n| !n.to_string_lossy().ends_with(".rq.h5")),
        "RQ files written: {written:?}"
    );
}

#[test]
fn wrong_world_size_is_an_error_not_a_silent_success() {
    // A lone process asked to be one of 2 ranks must fail loudly.
    let dir = scratch("worldsize");
    let out = Command::new(tpcflow_bin())
        .args(["mpi-selftest", "--out"])
        .arg(dir.path())
        .args(["--expect-size", "2"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("world size is 1, expected 2"));
}

#[test]
fn doctor_reports_all_green_on_the_set_up_machine() {
    if !require_cluster() {
        return;
    }
    // The SLURM outage test stops slurmctld while it holds the cluster alone.
    let _cluster = cluster_shared();
    let out = Command::new(tpcflow_bin())
        .args(["doctor", "--json"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    for name in ["hdf5", "mpi", "sqlite", "sbatch", "slurmctld", "cluster"] {
        let c = checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check"));
        assert_eq!(c["status"], "ok", "{name}: {}", c["detail"]);
    }
    let hdf5 = checks.iter().find(|c| c["name"] == "hdf5").unwrap();
    assert!(
        hdf5["detail"].as_str().unwrap().contains("1.10"),
        "Debian's HDF5 1.10 is linked"
    );
    assert!(!report["nodes"].as_array().unwrap().is_empty());
}

#[test]
fn doctor_names_an_unreachable_controller() {
    if !require_cluster() {
        return;
    }
    // The SLURM outage test stops slurmctld while it holds the cluster alone.
    let _cluster = cluster_shared();
    // Point the client commands at a copy of the cluster's config whose controller
    // port has nobody listening: the same as a stopped slurmctld, without
    // disturbing the real one other tests use.
    let dir = scratch("doctor-down");
    let conf = std::fs::read_to_string("/etc/slurm/slurm.conf")
        .expect("scripts/setup.sh wrote slurm.conf");
    let mut down: String = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with("SlurmctldPort"))
        .map(|l| format!("{l}\n"))
        .collect();
    down.push_str("SlurmctldPort=6999\nMessageTimeout=2\n");
    let conf_path = dir.path().join("slurm.conf");
    std::fs::write(&conf_path, down).unwrap();
    let out = Command::new(tpcflow_bin())
        .arg("doctor")
        .env("SLURM_CONF", &conf_path)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(tpcflow::exit::ENVIRONMENT as i32),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("slurmctld")),
        "{stdout}"
    );
    assert!(
        stderr.contains("slurmctld"),
        "the error names the controller: {stderr}"
    );
}
