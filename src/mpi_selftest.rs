//! `tpcflow mpi-selftest`: the first proof that MPI and HDF5 work together.
//!
//! Each rank writes a small ndarray dataset to its own HDF5 file and reads it
//! back; an allreduce sums the values, and rank 0 checks the sum against the
//! closed form, then re-reads every rank's file and writes `selftest.json`.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use hdf5::types::VarLenUnicode;
use mpi::collective::SystemOperation;
use mpi::traits::*;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::mpi_env;

/// Values each rank writes.
pub const VALUES_PER_RANK: usize = 1000;

/// What rank 0 writes to `selftest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// World size MPI reported.
    pub world_size: u32,
    /// Launcher seen in the environment.
    pub launcher: String,
    /// Node name of each rank, in rank order.
    pub nodes: Vec<String>,
    /// Sum from the allreduce.
    pub sum: f64,
    /// Sum expected from the closed form.
    pub expected_sum: f64,
    /// The HDF5 file of each rank.
    pub files: Vec<PathBuf>,
}

/// Values of rank `r`: `r * VALUES_PER_RANK + i` for i in 0..VALUES_PER_RANK.
fn rank_values(rank: u32) -> Array1<f64> {
    let base = rank as f64 * VALUES_PER_RANK as f64;
    Array1::from_iter((0..VALUES_PER_RANK).map(|i| base + i as f64))
}

/// Sum over all ranks' values: the integers 0 .. size*N-1.
pub fn expected_sum(size: u32) -> f64 {
    let n = size as f64 * VALUES_PER_RANK as f64;
    n * (n - 1.0) / 2.0
}

/// Path of rank `rank`'s file.
pub fn rank_file(out: &Path, rank: u32) -> PathBuf {
    out.join(format!("selftest_rank{rank:04}.h5"))
}

fn node_name() -> String {
    std::env::var("SLURMD_NODENAME")
        .ok()
        .or_else(|| mpi::environment::processor_name().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Read a rank file back: (values, rank attribute, node attribute).
///
/// # Errors
/// When the file or one of its parts is missing or unreadable.
pub fn read_rank_file(path: &Path) -> Result<(Array1<f64>, u32, String)> {
    let file = crate::h5::open(path).with_context(|| format!("opening {}", path.display()))?;
    let values = file
        .dataset("values")
        .and_then(|d| d.read_1d::<f64>())
        .with_context(|| format!("{}: dataset /values", path.display()))?;
    let rank = file
        .attr("rank")
        .and_then(|a| a.read_scalar::<u32>())
        .with_context(|| format!("{}: attribute rank", path.display()))?;
    let node = file
        .attr("node")
        .and_then(|a| a.read_scalar::<VarLenUnicode>())
        .with_context(|| format!("{}: attribute node", path.display()))?;
    Ok((values, rank, node.as_str().to_string()))
}

/// Run the self-test on this rank.
///
/// `expect_size`, when given, must equal the MPI world size.
///
/// # Errors
/// When MPI cannot start, a file cannot be written or read back, the world
/// size is wrong, or the allreduce sum disagrees.
pub fn run(out: &Path, expect_size: Option<u32>) -> Result<Option<Summary>> {
    let launch = mpi_env::launch_info();
    mpi_env::prepare_singleton(&launch);
    let universe = mpi::initialize().context("MPI_Init failed")?;
    let world = universe.world();
    let rank = world.rank() as u32;
    let size = world.size() as u32;
    mpi_env::check_world_size(size, &launch)?;
    if let Some(expected) = expect_size {
        ensure!(
            size == expected,
            "rank {rank}: MPI world size is {size}, expected {expected}"
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    // Write to a temporary name, then rename: readers never see a partial file.
    let values = rank_values(rank);
    let path = rank_file(out, rank);
    let tmp = crate::atomic_file::temp_path(&path);
    let written = (|| -> Result<()> {
        let file =
            crate::h5::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.new_dataset_builder()
            .with_data(&values)
            .create("values")?;
        file.new_attr::<u32>()
            .shape(())
            .create("rank")?
            .write_scalar(&rank)?;
        let node: VarLenUnicode = node_name().parse().context("node name is not valid text")?;
        file.new_attr::<VarLenUnicode>()
            .shape(())
            .create("node")?
            .write_scalar(&node)?;
        file.flush()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", tmp.display())));
    }
    crate::atomic_file::commit(&tmp, &path)?;

    let (back, back_rank, _) = read_rank_file(&path)?;
    ensure!(
        back == values && back_rank == rank,
        "rank {rank}: {} reads back different data",
        path.display()
    );
    let local: f64 = back.sum();
    let mut total = 0.0f64;
    world.all_reduce_into(&local, &mut total, SystemOperation::sum());
    world.barrier();

    if rank != 0 {
        return Ok(None);
    }
    let expected = expected_sum(size);
    ensure!(
        total == expected,
        "allreduce sum {total} differs from the expected {expected}"
    );
    let mut nodes = Vec::new();
    let mut files = Vec::new();
    for r in 0..size {
        let p = rank_file(out, r);
        let (v, file_rank, node) = read_rank_file(&p)?;
        ensure!(
            file_rank == r && v == rank_values(r),
            "{}: wrong contents",
            p.display()
        );
        nodes.push(node);
        files.push(p);
    }
    let summary = Summary {
        world_size: size,
        launcher: launch.launcher.to_string(),
        nodes,
        sum: total,
        expected_sum: expected,
        files,
    };
    let json = out.join("selftest.json");
    crate::atomic_file::write(&json, &serde_json::to_vec_pretty(&summary)?)?;
    Ok(Some(summary))
}
