//! What the process knows about its MPI launcher before and after `MPI_Init`.

use serde::Serialize;

/// How this process was started, read from the environment the launchers set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LaunchInfo {
    /// `mpirun` (Open MPI), `srun` (SLURM step), or `none` (a lone process).
    pub launcher: &'static str,
    /// Rank announced by the launcher, if any.
    pub rank: Option<u32>,
    /// World size announced by the launcher, if any.
    pub size: Option<u32>,
}

fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Read the launcher from the environment (no MPI call).
pub fn launch_info() -> LaunchInfo {
    if let Some(size) = env_u32("OMPI_COMM_WORLD_SIZE") {
        return LaunchInfo {
            launcher: "mpirun",
            rank: env_u32("OMPI_COMM_WORLD_RANK"),
            size: Some(size),
        };
    }
    if std::env::var_os("SLURM_STEP_ID").is_some() {
        if let Some(size) = env_u32("SLURM_STEP_NUM_TASKS").or_else(|| env_u32("SLURM_NTASKS")) {
            return LaunchInfo {
                launcher: "srun",
                rank: env_u32("SLURM_PROCID"),
                size: Some(size),
            };
        }
    }
    if let Some(size) = env_u32("PMIX_SIZE") {
        return LaunchInfo {
            launcher: "pmix",
            rank: env_u32("PMIX_RANK"),
            size: Some(size),
        };
    }
    LaunchInfo {
        launcher: "none",
        rank: None,
        size: None,
    }
}

/// The MPI library's own description (first line), e.g. `Open MPI v4.1.4, ...`.
pub fn library_version() -> String {
    mpi::environment::library_version()
        .map(|v| v.lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|_| "unknown (non-UTF-8 version string)".to_string())
}

/// Check that the world MPI gave us is the one the launcher announced.
///
/// A misconfigured launcher (e.g. MPICH under `srun --mpi=pmix`) starts N lone
/// rank-0 processes that all exit 0; this catches it.
///
/// # Errors
/// When the launcher announced a size and MPI reports another.
pub fn check_world_size(mpi_size: u32, launch: &LaunchInfo) -> anyhow::Result<()> {
    if let Some(announced) = launch.size {
        anyhow::ensure!(
            announced == mpi_size,
            "MPI world size is {mpi_size} but the launcher ({}) started {announced} tasks: \
             the MPI library and the launcher do not talk to each other \
             (with Open MPI under SLURM use `srun --mpi=pmix`)",
            launch.launcher
        );
    }
    Ok(())
}
