//! A rank that cannot continue ends the whole job.
//!
//! An input's own fault (a corrupt file, a checksum or DAQ header that does
//! not match) is recorded in its result record and the job goes on: the job
//! then ends with the partial-failure code. A fault of the rank itself (its
//! outputs cannot be written, a panic, a failed MPI exchange, the injected
//! fault below) is different: the other ranks would wait for it in a receive
//! or a barrier until the time limit. Such a rank records the failure of the
//! unit it held in that input's result record, lets the outputs it finished
//! become durable, then calls `MPI_Abort` with [`ABORT_CODE`], which ends
//! every rank of the job. A rank that dies without aborting (a signal, an
//! out-of-memory kill) is covered by `srun --kill-on-bad-exit=1` in the
//! sbatch templates.
//!
//! Outputs with an `ok` record are complete (every output is renamed into
//! place when complete); inputs without one are redone by the next job.

use std::any::Any;

use anyhow::{bail, Context, Result};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::exit;

/// The exit code of a job a rank aborted: some inputs may be done (their
/// records say `ok`), the others are not.
pub const ABORT_CODE: u8 = exit::PARTIAL_FAILURE;

/// How long an aborting rank waits after printing its reason, so the
/// launcher forwards it before the step is killed (see [`abort_job`]).
pub const ABORT_OUTPUT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Test-only hook: `RANK:UNITS` makes rank RANK fail as if it could not
/// continue when it is about to start its unit number UNITS + 1 (after
/// UNITS units of its own). Read once by `tpcflow reco`; for the tests of
/// this module's behaviour on a real cluster, never set in production.
pub const FAULT_ENV: &str = "TPCFLOW_FAULT_RANK_AFTER_UNITS";

/// A fault injected through [`FAULT_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault {
    /// The rank that fails.
    pub rank: i32,
    /// Units it completes first.
    pub after_units: u64,
}

impl InjectedFault {
    /// The fault [`FAULT_ENV`] asks for, if it is set.
    ///
    /// # Errors
    /// When it is set but not `RANK:UNITS`.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(FAULT_ENV) {
            Ok(v) => Self::parse(&v).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => bail!("{FAULT_ENV}: {e}"),
        }
    }

    /// Parse `RANK:UNITS`.
    ///
    /// # Errors
    /// When `text` is not two non-negative integers separated by `:`.
    pub fn parse(text: &str) -> Result<Self> {
        let (rank, units) = text
            .trim()
            .split_once(':')
            .with_context(|| format!("{FAULT_ENV}={text:?}: expected RANK:UNITS"))?;
        Ok(Self {
            rank: rank
                .parse()
                .with_context(|| format!("{FAULT_ENV}={text:?}: rank {rank:?}"))?,
            after_units: units
                .parse()
                .with_context(|| format!("{FAULT_ENV}={text:?}: units {units:?}"))?,
        })
    }

    /// True when rank `rank`, having completed `units_done` units, must fail
    /// instead of starting the next one.
    pub fn fires(&self, rank: i32, units_done: u64) -> bool {
        self.rank == rank && units_done >= self.after_units
    }
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// End every rank of the job: this rank cannot continue (`error` says why;
/// its failure is recorded already).
pub(crate) fn abort_job(world: &SimpleCommunicator, error: &anyhow::Error) -> ! {
    let (rank, size) = (world.rank(), world.size());
    tracing::error!(rank, error = %format!("{error:#}"), "rank cannot continue: aborting the job");
    crate::exit::eprint_line(&format!(
        "error: rank {rank} cannot continue: {error:#}; aborting all {size} ranks (exit code {ABORT_CODE})"
    ));
    // The launcher forwards a task's output asynchronously: under `srun`, the
    // step is torn down as soon as MPI_Abort reaches slurmstepd and the last
    // lines still in the pipe (this one) are dropped. A short grace lets them
    // reach the job log, where the operator looks for the reason.
    let _ = std::io::Write::flush(&mut std::io::stderr());
    std::thread::sleep(ABORT_OUTPUT_GRACE);
    world.abort(i32::from(ABORT_CODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_hook_parses_rank_and_units_and_fires_on_that_rank_only() {
        let f = InjectedFault::parse("1:2").unwrap();
        assert_eq!(
            f,
            InjectedFault {
                rank: 1,
                after_units: 2
            }
        );
        assert!(!f.fires(1, 1) && f.fires(1, 2) && !f.fires(0, 2));
        for bad in ["", "1", "a:2", "1:-1", "1:2:3"] {
            let e = InjectedFault::parse(bad).unwrap_err();
            assert!(format!("{e:#}").contains(FAULT_ENV), "{bad}: {e:#}");
        }
    }

    #[test]
    fn panic_messages_are_kept() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(&*p), "boom 7");
    }
}
