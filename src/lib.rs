//! tpcflow: the real-time and reprocessing data pipeline of a dual-phase
//! liquid-xenon TPC, modelled on the LZ workflow at NERSC.
//!
//! Data flows one way: simulator (the DAQ stand-in) -> raw HDF5 files ->
//! transfer -> salting -> catalog -> dispatcher -> sbatch -> MPI driver ->
//! reconstruction core ([`tpcflow_reco`]) -> RQ files -> catalog -> web.
//!
//! This crate holds everything with I/O; the pure computation lives in the
//! `tpcflow-reco` crate.
//!
//! ```no_run
//! // Check the stack (HDF5, MPI, SQLite, SLURM) the way `tpcflow doctor` does.
//! let report = tpcflow::doctor::run();
//! for check in &report.checks {
//!     println!("{:<6} {:<10} {}", check.status.label(), check.name, check.detail);
//! }
//! ```

pub mod adler;
pub mod atomic_file;
pub mod audit;
pub mod calibrate;
pub mod catalog;
pub mod cli_bounds;
pub mod conditions;
pub mod dispatch;
pub mod doctor;
pub mod exclusive_lock;
pub mod exit;
pub mod h5;
pub mod huge;
pub mod lineage;
pub mod mpi_env;
pub mod mpi_selftest;
pub mod raw;
pub mod reco_job;
pub mod retire;
pub mod rq;
pub mod salt;
pub mod sbatch;
pub mod shell;
pub mod sim;
pub mod slurm;
pub mod transfer;
pub mod truth;
pub mod validate;
pub mod web;

/// Version of this software, recorded in every output file.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
