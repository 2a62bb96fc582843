//! Replication of RQ outputs between the processing sites: the dispatcher
//! catalogues an output with the site that made it and queues a replica at
//! every other processing site ([`Catalog::task_done_at`]); this pass copies
//! them exactly as raw files are copied ([`super::copy_and_verify`]: a
//! temporary name, size and Adler-32 against the catalog, fsync, rename,
//! the site's copy command), under the same transfer lock.
//!
//! Each site keeps its outputs under its own RQ root, at the same relative
//! path (`{campaign}/{file}`). A copy whose source no longer matches the
//! catalog marks that replica `bad` too and stops: nothing is replicated
//! from corrupt bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::{copy_and_verify, CopyError, CopySpec, Sites, TransferError, TransferFailure};
use crate::catalog::{Catalog, OutputTransferItem, ReplicaState, Site};
use crate::exclusive_lock::{transfer_lock_path, ExclusiveLock};

/// What an output replication pass does.
#[derive(Debug, Clone)]
pub struct OutputTransferConfig {
    /// Each processing site's RQ root: outputs live at `{root}/{path}`.
    pub rq_roots: BTreeMap<Site, PathBuf>,
    /// Site access (the destination's copy command).
    pub sites: Sites,
    /// Retry cap per replica.
    pub max_attempts: u32,
    /// Concurrent copies.
    pub parallel: usize,
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutputTransferReport {
    /// Output replicas left `transferring` by a dead mover, re-queued.
    pub resumed: usize,
    /// Copy attempts made.
    pub attempts: u64,
    /// Output replicas verified.
    pub verified: u64,
    /// Bytes verified [bytes].
    pub bytes: u64,
    /// Failed attempts re-queued for another try.
    pub retries: u64,
    /// Replicas that became `bad` in this pass.
    pub failures: Vec<TransferFailure>,
    /// Wall time [s].
    pub seconds: f64,
}

enum Outcome {
    Verified(u64),
    Requeued,
    Bad(TransferFailure),
    Skipped,
}

fn spec<'a>(
    item: &'a OutputTransferItem,
    cfg: &'a OutputTransferConfig,
) -> Result<CopySpec<'a>, TransferError> {
    let root = |site: Site| {
        cfg.rq_roots
            .get(&site)
            .ok_or(TransferError::SiteNotConfigured { site })
    };
    let command = match cfg.sites.get(item.site) {
        Ok(access) => access.copy_command.as_deref(),
        Err(_) => None,
    };
    Ok(CopySpec {
        name: &item.name,
        site: item.site,
        source: item.source,
        src: root(item.source)?.join(&item.path),
        dst: root(item.site)?.join(&item.path),
        size_bytes: item.size_bytes,
        adler32: &item.adler32,
        command,
    })
}

fn attempt(
    item: &OutputTransferItem,
    cfg: &OutputTransferConfig,
    catalog: &Catalog,
) -> Result<Outcome, TransferError> {
    let spec = spec(item, cfg)?;
    if !catalog.begin_output_copy(item)? {
        return Ok(Outcome::Skipped);
    }
    let failure = |reason: String, attempts| TransferFailure {
        file: item.name.clone(),
        site: item.site,
        attempts,
        reason,
    };
    match copy_and_verify(&spec) {
        Ok(bytes) => {
            catalog.output_replica_transition(
                item.output_id,
                item.site,
                ReplicaState::Transferring,
                ReplicaState::Verified,
                None,
            )?;
            tracing::info!(output = %item.name, site = %item.site, source = %item.source, "output replica verified");
            Ok(Outcome::Verified(bytes))
        }
        // A full destination is not the output's fault: no attempt spent.
        Err(e) if e.is_no_space() => {
            catalog.output_replica_transition(
                item.output_id,
                item.site,
                ReplicaState::Transferring,
                ReplicaState::Queued,
                Some(&e.to_string()),
            )?;
            tracing::error!(output = %item.name, site = %item.site, reason = %e, "destination full: left queued");
            Ok(Outcome::Skipped)
        }
        Err(
            e @ CopyError::Mismatch {
                source_matches: false,
                ..
            },
        ) => {
            let reason = e.to_string();
            catalog.output_replica_transition(
                item.output_id,
                item.source,
                ReplicaState::Verified,
                ReplicaState::Bad,
                Some(&format!(
                    "found corrupt while copying it to {}: {reason}",
                    item.site
                )),
            )?;
            let why = format!("copy from {} failed: {reason}", item.source);
            catalog.output_replica_transition(
                item.output_id,
                item.site,
                ReplicaState::Transferring,
                ReplicaState::Bad,
                Some(&why),
            )?;
            tracing::error!(output = %item.name, site = %item.site, source = %item.source, %reason, "output corrupt at its source: both marked bad");
            Ok(Outcome::Bad(failure(why, item.attempts + 1)))
        }
        Err(e) => {
            let reason = e.to_string();
            let state = catalog.output_replica_failed(
                item.output_id,
                item.site,
                &reason,
                cfg.max_attempts,
            )?;
            tracing::warn!(output = %item.name, site = %item.site, attempt = item.attempts + 1, %reason, "output copy attempt failed");
            Ok(if state == ReplicaState::Bad {
                Outcome::Bad(failure(reason, item.attempts + 1))
            } else {
                Outcome::Requeued
            })
        }
    }
}

/// Run one output replication pass: copy every queued output replica, in
/// rounds, until the queue is empty or every failure has hit the retry cap.
///
/// # Errors
/// [`TransferError::Locked`] when another mover runs on this catalog;
/// [`TransferError::SiteNotConfigured`] for a replica at a site without an
/// RQ root; [`TransferError::Catalog`]; [`TransferError::Pool`].
pub fn run(
    cfg: &OutputTransferConfig,
    catalog: &Catalog,
) -> Result<OutputTransferReport, TransferError> {
    let start = Instant::now();
    let _lock = ExclusiveLock::try_acquire(
        &transfer_lock_path(catalog.path()),
        &format!("a mover on {}", catalog.path().display()),
    )?;
    let threads = cfg.parallel.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("rq-transfer-{i}"))
        .build()
        .map_err(|e| TransferError::Pool {
            threads,
            message: e.to_string(),
        })?;
    let mut report = OutputTransferReport {
        resumed: catalog.requeue_interrupted_outputs()?,
        ..Default::default()
    };
    for _round in 0..cfg.max_attempts.max(1) {
        let items = catalog.queued_output_replicas(cfg.max_attempts)?;
        if items.is_empty() {
            break;
        }
        let outcomes: Vec<Result<Outcome, TransferError>> =
            pool.install(|| items.par_iter().map(|i| attempt(i, cfg, catalog)).collect());
        for outcome in outcomes {
            match outcome? {
                Outcome::Verified(bytes) => {
                    report.attempts += 1;
                    report.verified += 1;
                    report.bytes += bytes;
                }
                Outcome::Requeued => {
                    report.attempts += 1;
                    report.retries += 1;
                }
                Outcome::Bad(f) => {
                    report.attempts += 1;
                    report.failures.push(f);
                }
                Outcome::Skipped => {}
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
