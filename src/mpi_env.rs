//! What the process knows about its MPI launcher before and after `MPI_Init`.

use serde::Serialize;

/// How this process was started, read from the environment the launchers set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LaunchInfo {
    /// `mpirun` (Open MPI), `srun` (SLURM step), `pmix` or `pmi` (another
    /// launcher of those interfaces, e.g. MPICH's `mpiexec`), or `none` (a
    /// lone process).
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
    // MPICH's Hydra `mpiexec` (and other PMI-1/PMI-2 launchers).
    if let Some(size) = env_u32("PMI_SIZE") {
        return LaunchInfo {
            launcher: "pmi",
            rank: env_u32("PMI_RANK"),
            size: Some(size),
        };
    }
    LaunchInfo {
        launcher: "none",
        rank: None,
        size: None,
    }
}

/// Before `MPI_Init` in a process no launcher started: Open MPI then forks a
/// singleton `orted` whose PMIx tries munge authentication first and, when
/// no munge daemon runs (a laptop, a login node without it), retries for
/// ~2.5 s before falling back. Authentication between a process and the
/// daemon it forked itself needs no munge: ask PMIx for its native
/// (uid-checking) security unless the user chose one (`PMIX_MCA_psec`).
/// Nothing changes under `mpirun`, `srun` or any other launcher.
pub fn prepare_singleton(launch: &LaunchInfo) {
    if let Some((key, value)) = singleton_env(launch, std::env::var_os(PSEC).as_deref()) {
        // Called before MPI (and the work threads) start: no other thread
        // reads the environment yet.
        std::env::set_var(key, value);
    }
}

const PSEC: &str = "PMIX_MCA_psec";

/// The variable [`prepare_singleton`] sets, given the launcher and the
/// user's own `PMIX_MCA_psec`.
fn singleton_env(
    launch: &LaunchInfo,
    user: Option<&std::ffi::OsStr>,
) -> Option<(&'static str, &'static str)> {
    (launch.launcher == "none" && user.is_none()).then_some((PSEC, "native"))
}

/// The MPI library's own description (first line), e.g. `Open MPI v4.1.4, ...`.
pub fn library_version() -> String {
    mpi::environment::library_version()
        .map(|v| v.lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|_| "unknown (non-UTF-8 version string)".to_string())
}

/// Which SLURM launch the MPI library named by `version` needs.
fn launcher_hint(version: &str) -> &'static str {
    if version.contains("MPICH") {
        "this tpcflow is built with MPICH: under SLURM use `srun --mpi=pmi2`, \
         or the site's own plugin (Cray MPICH: plain `srun`)"
    } else {
        "this tpcflow is built with Open MPI: under SLURM use `srun --mpi=pmix`"
    }
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
             ({})",
            launch.launcher,
            launcher_hint(&library_version())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singleton_security_only_for_lone_processes_and_never_over_the_user() {
        let lone = LaunchInfo {
            launcher: "none",
            rank: None,
            size: None,
        };
        let srun = LaunchInfo {
            launcher: "srun",
            rank: Some(0),
            size: Some(2),
        };
        assert_eq!(
            singleton_env(&lone, None),
            Some(("PMIX_MCA_psec", "native"))
        );
        assert_eq!(singleton_env(&lone, Some("munge".as_ref())), None);
        assert_eq!(singleton_env(&srun, None), None);
    }

    #[test]
    fn the_launcher_hint_follows_the_linked_library() {
        assert!(launcher_hint("MPICH Version:      4.0.2").contains("--mpi=pmi2"));
        assert!(launcher_hint("Open MPI v4.1.4, package: Debian").contains("--mpi=pmix"));
    }
}
