//! The retry policy from final states read with `sacct` on a cluster that
//! keeps accounting in slurmdbd (the second local site).

use std::time::Duration;

use tpcflow::catalog::{Catalog, JobState, TaskState};

use super::{campaign, passes_until, require_two_sites, sim, ukdc_ok, world, UKDC, UKDC_CONF};

/// A reco template whose job misbehaves by its input: the file `_00000`
/// needs 600 MB (more than the first attempt's 400 MB), the file `_00001`
/// needs more than the first attempt's one minute.
const TEMPLATE: &str = r#"#!/bin/bash
#SBATCH --job-name={{job_name}}
#SBATCH --nodes={{nodes}}
#SBATCH --ntasks={{ntasks}}
#SBATCH --cpus-per-task={{cpus_per_task}}
#SBATCH --time={{time_limit}}
#SBATCH --output={{log}}
#SBATCH --no-requeue
set -euo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 HDF5_USE_FILE_LOCKING=FALSE
srun --mpi=pmix --kill-on-bad-exit=1 bash -c '
  for a in "$@"; do case $a in @*) list=${a#@} ;; esac; done
  limit=$(scontrol show job -o "$SLURM_JOB_ID" | grep -o "TimeLimit=[^ ]*")
  echo "attempt with $limit mem ${SLURM_MEM_PER_NODE:-?}M"
  if grep -q "_00000.raw.h5" "$list" && (( ${SLURM_MEM_PER_NODE:-0} < 700 )); then
    python3 -c "import time; b = bytearray(600 << 20); time.sleep(6)"
  fi
  if grep -q "_00001.raw.h5" "$list" && [[ $limit == TimeLimit=00:01:00 ]]; then
    sleep 300
  fi
  exec "$@"' job {{tpcflow}} reco --threads 1 {{reco_args}}
"#;

#[test]
fn timeout_gets_more_time_and_a_memory_kill_more_memory_both_read_from_sacct() {
    if !require_two_sites() {
        return;
    }
    let _ukdc = UKDC.read().unwrap_or_else(|p| p.into_inner());
    let w = world("sites-retry", "");
    let template = w.root.join("retry.sbatch");
    std::fs::write(&template, TEMPLATE).unwrap();
    std::fs::write(
        &w.config,
        format!(
            "prompt_conditions = \"\"\nfiles_per_job = 1\narray_min_jobs = 0\nbackoff_s = 0.0\n\
             max_attempts = 3\ntime_limit = \"00:01:00\"\nmax_time_limit = \"00:04:00\"\n\
             mem_mb = 400\nmax_mem_mb = 1600\nslurm_conf = \"{UKDC_CONF}\"\nprofile = \"{}\"\n",
            template.display()
        ),
    )
    .unwrap();
    sim(&w, 17501, 2, 2);
    campaign(&w, "retry", "17501", &[]);
    let done = |c: &Catalog| {
        let p = c.campaign_progress().unwrap();
        p.iter()
            .all(|p| p.done + p.failed == p.tasks && p.tasks == 2)
    };
    passes_until(&w, Duration::from_secs(200), done);

    let c = Catalog::open(&w.catalog).unwrap();
    let camp = c.campaign_by_name("retry").unwrap().unwrap();
    let tasks = c.tasks_in_state(camp.id, TaskState::Done).unwrap();
    assert_eq!(tasks.len(), 2, "both files processed in the end");
    let failed = c.jobs_in_state(JobState::Failed).unwrap();
    let completed = c.jobs_in_state(JobState::Completed).unwrap();
    let job_of = |jobs: &[tpcflow::catalog::JobRow], file: &str| {
        let task = tasks.iter().find(|t| t.file_name.contains(file)).unwrap();
        jobs.iter()
            .filter(|j| j.task_ids.contains(&task.id))
            .cloned()
            .collect::<Vec<_>>()
    };
    // The memory kill: read from sacct as OUT_OF_MEMORY, retried with more memory.
    let oom = job_of(&failed, "_00000");
    assert_eq!(oom.len(), 1, "{oom:?}");
    let reason = oom[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("OUT_OF_MEMORY") && reason.contains("sacct"),
        "{reason}"
    );
    let ok = job_of(&completed, "_00000");
    assert_eq!(ok.len(), 1, "{ok:?}");
    let (_, mem) = c.job_resources(ok[0].id).unwrap();
    assert!(mem.unwrap() > 600, "retried with more memory: {mem:?}");
    // The time limit: TIMEOUT from sacct, retried with twice the time.
    let slow = job_of(&failed, "_00001");
    assert_eq!(slow.len(), 1, "{slow:?}");
    let reason = slow[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("TIMEOUT") && reason.contains("sacct"),
        "{reason}"
    );
    let ok = job_of(&completed, "_00001");
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(c.job_resources(ok[0].id).unwrap().0, Some(2));
    // SLURM's own accounting agrees: the retry ran with a 2-minute limit.
    let id = ok[0].slurm_id.unwrap().to_string();
    let acct = ukdc_ok(
        "sacct",
        &["-X", "-n", "-P", "-j", &id, "-o", "State,Timelimit"],
    );
    assert_eq!(acct.trim(), "COMPLETED|00:02:00");
    // Each file spent one attempt.
    assert!(tasks.iter().all(|t| t.attempts == 1), "{tasks:?}");
}
