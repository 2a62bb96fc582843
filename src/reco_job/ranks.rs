//! The ranks of a reco job: the MPI world when a launcher started several
//! processes, or this process alone, without MPI, when it runs as one rank.
//!
//! `MPI_Init` of a process that no launcher started forks Open MPI's
//! singleton `orted` and sets up PMIx: ~0.45 s here, against ~10 ms for the
//! rest of a 1-event job. A job of one rank exchanges no message, so it
//! does not initialise MPI at all: without a launcher, and under
//! `mpirun -n 1` or `srun -n 1` (the launcher's own world size is 1). With
//! more than one rank MPI is initialised and the world size it reports is
//! checked against the launcher's ([`crate::mpi_env::check_world_size`]).

use anyhow::{Context, Result};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::mpi_env::LaunchInfo;

/// Whether a job started as `launch` says needs MPI: only when the launcher
/// announced more than one rank.
pub fn needs_mpi(launch: &LaunchInfo) -> bool {
    launch.size.is_some_and(|n| n > 1)
}

/// The job's ranks, as the job sees them.
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)] // SimpleCommunicator has no Debug
pub enum Ranks<'a> {
    /// One process, rank 0 of 1, MPI not initialised.
    Solo,
    /// The MPI world.
    Mpi(&'a SimpleCommunicator),
}

impl<'a> Ranks<'a> {
    /// This process's rank.
    pub fn rank(&self) -> i32 {
        match self {
            Ranks::Solo => 0,
            Ranks::Mpi(w) => w.rank(),
        }
    }

    /// Number of ranks.
    pub fn size(&self) -> i32 {
        match self {
            Ranks::Solo => 1,
            Ranks::Mpi(w) => w.size(),
        }
    }

    /// The MPI world, when MPI is initialised.
    pub fn mpi(&self) -> Option<&'a SimpleCommunicator> {
        match self {
            Ranks::Solo => None,
            Ranks::Mpi(w) => Some(w),
        }
    }

    /// Wait for every rank (nothing to wait for alone).
    pub fn barrier(&self) {
        if let Ranks::Mpi(w) = self {
            w.barrier();
        }
    }
}

/// MPI, initialised only when the launcher started several ranks; MPI is
/// finalised when this is dropped.
#[allow(missing_debug_implementations)] // Universe has no Debug
pub struct JobMpi {
    world: Option<(Universe, SimpleCommunicator)>,
}

impl JobMpi {
    /// Initialise MPI if `launch` needs it ([`needs_mpi`]), with the thread
    /// level the work distribution needs, and check the world size and the
    /// thread level against the launcher.
    ///
    /// # Errors
    /// When `MPI_Init_thread` fails, or MPI's world is not the launcher's.
    pub fn start(launch: &LaunchInfo) -> Result<Self> {
        if !needs_mpi(launch) {
            return Ok(Self { world: None });
        }
        crate::mpi_env::prepare_singleton(launch);
        let (universe, threading) =
            mpi::initialize_with_threading(super::distribute::REQUIRED_THREADING)
                .context("MPI_Init_thread failed")?;
        let world = universe.world();
        crate::mpi_env::check_world_size(world.size() as u32, launch)?;
        super::distribute::check_threading(threading, world.size())?;
        Ok(Self {
            world: Some((universe, world)),
        })
    }

    /// The ranks of the job.
    pub fn ranks(&self) -> Ranks<'_> {
        match &self.world {
            Some((_, w)) => Ranks::Mpi(w),
            None => Ranks::Solo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(launcher: &'static str, size: Option<u32>) -> LaunchInfo {
        LaunchInfo {
            launcher,
            rank: size.map(|_| 0),
            size,
        }
    }

    #[test]
    fn only_launches_of_several_ranks_initialise_mpi() {
        assert!(!needs_mpi(&launch("none", None)));
        assert!(!needs_mpi(&launch("mpirun", Some(1))));
        assert!(!needs_mpi(&launch("srun", Some(1))));
        assert!(needs_mpi(&launch("mpirun", Some(2))));
        assert!(needs_mpi(&launch("srun", Some(4))));
        assert!(needs_mpi(&launch("pmi", Some(2))));
    }

    #[test]
    fn a_solo_job_is_rank_0_of_1() {
        let mpi = JobMpi::start(&launch("none", None)).unwrap();
        let r = mpi.ranks();
        assert_eq!((r.rank(), r.size()), (0, 1));
        assert!(r.mpi().is_none());
        r.barrier();
    }
}
