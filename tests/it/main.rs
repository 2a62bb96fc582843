//! Integration tests on the real components: the local SLURM cluster started
//! by `scripts/setup.sh`, Open MPI, HDF5 files read back with h5dump and h5py.
//!
//! Tests that need the cluster or MPI FAIL with a message naming what is
//! missing. Only an explicit `TPCFLOW_SKIP_CLUSTER_TESTS=1` (a laptop without
//! SLURM) turns them into skips; scripts/test.sh and CI never set it.

mod bad_input;
mod blinding;
mod calibration;
mod calibration_truth;
mod catalog_transfer;
mod common;
mod conditions_loop;
mod crash_safety;
mod dispatch;
mod full_disk;
mod fuzz;
mod locks;
mod lrf;
mod raw_format;
mod reco_accuracy;
mod reco_hardening;
mod reco_mpi;
mod reco_startup;
mod retention;
mod rq_format;
mod salting;
mod salting_detector;
mod sim_live;
mod sim_physics;
mod sim_truth;
mod sim_truth_liquid;
mod sites;
mod slurm_outage;
mod stack;
mod two_sample;
mod validate;
mod web;
mod web_hardening;
