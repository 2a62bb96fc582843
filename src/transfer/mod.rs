//! The transfer stage (the data mover): copy raw files from SURF to USDC,
//! UKDC and ARCHIVE with verified checksums; between the processing sites,
//! copy-ins of files whose replica there went bad, simulated files from the
//! site that made them, and RQ outputs ([`outputs`]).
//!
//! One pass ([`run`]):
//! 1. replicas left `transferring` by a mover that died are re-queued;
//! 2. a `queued` replica is created at each destination for every file with
//!    a verified SURF replica and none there yet (a replica queued with
//!    another `source`, a copy-in or a simulated file, was queued by the
//!    dispatcher and is copied from that site);
//! 3. queued replicas are copied by a pool of `parallel` threads, in rounds,
//!    until the queue is empty or every failure has hit the retry cap;
//! 4. files verified at every destination become `transferred`.
//!
//! Each copy goes to `.{name}.tmp` beside the destination, its size and
//! Adler-32 are compared with the catalog ([`crate::adler::same_checksum`]),
//! and only then is it fsynced and renamed to its final name, and the
//! directory fsynced ([`crate::atomic_file::commit`]).
//! So a final name at a destination is always a complete, verified copy: a
//! mover killed at any point leaves at most a temporary file, which the next
//! pass overwrites. A mismatch re-queues the replica with `attempts + 1`; at
//! `max_attempts` it becomes `bad` with the reason (which says whether the
//! source copy itself no longer matches the catalog). A copy from a
//! processing site whose own replica no longer matches the catalog marks
//! that replica `bad` and ends at once: the file waits for a verified
//! replica, nothing reads the corrupt bytes. A full destination
//! (ENOSPC, EDQUOT) is not the file's fault: the replica goes back to
//! `queued` with the reason and no attempt spent, its temporary is removed,
//! and the pass stops copying to that site; the next pass retries it.
//!
//! A site is a directory, or a directory reached through a copy-command
//! template (`rsync -a {src} {dst}`, `xrdcp -f {src} {dst}`, `cp {src} {dst}`)
//! run with `sh -c`; `{src}` and `{dst}` are replaced by shell-quoted paths
//! and `{dst}` is the temporary name. Verification reads the destination
//! through the file system, so the site root must be mounted here.
//!
//! Only one mover runs per catalog at a time: a pass holds the flock
//! `{catalog}.transfer.lock` ([`crate::exclusive_lock`]) throughout, whether
//! it is `tpcflow transfer` or the dispatcher's stage, so two movers never
//! write the same temporary file and step 1 never re-queues a live copy. The
//! retention stage takes the same lock (it deletes SURF copies).
//!
//! Blinding: while the catalog is blinded ([`Catalog::blinded`]) a pass
//! places science files only once salted, whatever `require_salted` says;
//! the report counts the files it holds back. A copy starts only through
//! [`Catalog::begin_copy`], which refuses a file a salting pass has claimed
//! or whose checksum changed since it was listed; a destination mismatch on
//! a file whose catalogued checksum changed meanwhile is re-queued without
//! counting an attempt.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::adler::{digest_file, same_checksum};
use crate::catalog::{Catalog, CatalogError, CopyStart, ReplicaState, Site, TransferItem};
use crate::exclusive_lock::{transfer_lock_path, ExclusiveLock, LockError};

pub mod cli;
pub mod outputs;

/// Default retry cap: a replica is `bad` after this many failed attempts.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// How to reach one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAccess {
    /// Site root: files live at `{root}/{run:06}/{name}`.
    pub root: PathBuf,
    /// Copy-command template with `{src}` and `{dst}`; `None` copies in-process.
    pub copy_command: Option<String>,
}

/// Where every site is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sites {
    map: BTreeMap<Site, SiteAccess>,
}

impl Sites {
    /// Every site as a directory under a data root: `{root}/SURF`, `{root}/USDC`, ...
    pub fn under(data_root: &Path) -> Self {
        let map = Site::ALL
            .iter()
            .map(|&s| {
                let access = SiteAccess {
                    root: data_root.join(s.as_str()),
                    copy_command: None,
                };
                (s, access)
            })
            .collect();
        Self { map }
    }

    /// Set (or add) a site's root directory.
    pub fn set_root(&mut self, site: Site, root: PathBuf) {
        self.map
            .entry(site)
            .and_modify(|a| a.root.clone_from(&root))
            .or_insert(SiteAccess {
                root,
                copy_command: None,
            });
    }

    /// Set a site's copy-command template.
    ///
    /// # Errors
    /// [`TransferError::SiteNotConfigured`] when the site has no root yet;
    /// [`TransferError::BadSiteSpec`] when the template lacks `{src}` or `{dst}`.
    pub fn set_copy_command(&mut self, site: Site, template: &str) -> Result<(), TransferError> {
        if !(template.contains("{src}") && template.contains("{dst}")) {
            return Err(TransferError::BadSiteSpec {
                spec: template.to_string(),
                reason: "a copy command needs both {src} and {dst}".to_string(),
            });
        }
        let access = self
            .map
            .get_mut(&site)
            .ok_or(TransferError::SiteNotConfigured { site })?;
        access.copy_command = Some(template.to_string());
        Ok(())
    }

    /// How to reach a site.
    ///
    /// # Errors
    /// [`TransferError::SiteNotConfigured`] naming the site.
    pub fn get(&self, site: Site) -> Result<&SiteAccess, TransferError> {
        self.map
            .get(&site)
            .ok_or(TransferError::SiteNotConfigured { site })
    }
}

/// Parse `SITE=VALUE` (e.g. `USDC=/global/cfs/lz`), the form of `--site` and `--copy-command`.
///
/// # Errors
/// [`TransferError::BadSiteSpec`] naming the text and what is wrong.
pub fn parse_site_assignment(spec: &str) -> Result<(Site, String), TransferError> {
    let bad = |reason: String| TransferError::BadSiteSpec {
        spec: spec.to_string(),
        reason,
    };
    let (site, value) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected SITE=VALUE".to_string()))?;
    let site: Site = site.trim().parse().map_err(|e| bad(format!("{e}")))?;
    if value.is_empty() {
        return Err(bad("empty value".to_string()));
    }
    Ok((site, value.to_string()))
}

/// What a transfer pass does.
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// Site locations (SURF is the source).
    pub sites: Sites,
    /// Destination sites.
    pub destinations: Vec<Site>,
    /// Retry cap per replica.
    pub max_attempts: u32,
    /// Concurrent copies.
    pub parallel: usize,
    /// Re-queue `bad` and `lost` replicas with a fresh retry budget first.
    pub retry_failed: bool,
    /// Science files move only once salted (calibration files at once);
    /// implied while the catalog is blinded.
    pub require_salted: bool,
}

/// A replica given up on.
#[derive(Debug, Clone, Serialize)]
pub struct TransferFailure {
    /// Raw file name.
    pub file: String,
    /// Destination site.
    pub site: Site,
    /// Failed attempts.
    pub attempts: u32,
    /// Last failure reason.
    pub reason: String,
}

/// Per-site figures of a pass.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SiteFigures {
    /// Replicas verified.
    pub verified: u64,
    /// Bytes verified [bytes].
    pub bytes: u64,
    /// Failed attempts.
    pub failed_attempts: u64,
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransferReport {
    /// Replicas queued by this pass.
    pub queued: usize,
    /// Replicas left `transferring` by a dead mover, re-queued.
    pub resumed: usize,
    /// Copy attempts made.
    pub attempts: u64,
    /// Replicas verified.
    pub verified: u64,
    /// Of them, copied from a processing site (copy-ins, simulated files)
    /// rather than from SURF.
    pub copied_in: u64,
    /// Failed attempts re-queued for another try.
    pub retries: u64,
    /// Files now verified at every destination.
    pub files_completed: usize,
    /// Bytes verified [bytes].
    pub bytes: u64,
    /// Wall time of the pass [s].
    pub seconds: f64,
    /// Verified bytes over wall time [MB/s].
    pub mb_per_s: f64,
    /// Per destination.
    pub sites: BTreeMap<Site, SiteFigures>,
    /// Replicas whose destination ran out of space: left `queued` with the
    /// reason, no attempt spent, no partial file; the next pass retries them
    /// (this pass stops copying to that site).
    pub out_of_space: Vec<TransferFailure>,
    /// Replicas that became `bad` in this pass.
    pub failures: Vec<TransferFailure>,
    /// The catalog was blinded during the pass.
    pub blinded: bool,
    /// Unsalted science files held at SURF (salting required, by the
    /// catalog's blinding or the caller).
    pub held_unsalted: u64,
}

/// Errors that stop a pass. A failed copy is not one: it is recorded on the replica.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A site is used but has no location.
    #[error("site {site} is not configured (give --data-root or --site {site}=DIR)")]
    SiteNotConfigured {
        /// Site.
        site: Site,
    },
    /// A `SITE=VALUE` specification that does not parse.
    #[error("`{spec}`: {reason}")]
    BadSiteSpec {
        /// The text given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// The thread pool could not be built.
    #[error("transfer thread pool of {threads}: {message}")]
    Pool {
        /// Threads asked for.
        threads: usize,
        /// Cause.
        message: String,
    },
    /// Another mover (or the retention stage) holds the catalog's transfer lock.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The catalog refused.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Why one copy attempt failed (stored as the replica's `last_error`).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// Operation.
        op: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A path cannot be given to the site's copy command.
    #[error("copy command: {path}: {source}")]
    Quote {
        /// The source or destination path.
        path: PathBuf,
        /// Cause.
        source: crate::shell::ShellError,
    },
    /// The copy command failed.
    #[error("copy command `{command}` failed ({status}): {stderr}")]
    Command {
        /// Command as run.
        command: String,
        /// Exit status.
        status: String,
        /// End of its standard error.
        stderr: String,
    },
    /// The destination does not match the catalog.
    #[error(
        "{file} at {site}: {field} mismatch: catalog {expected}, destination {found}{source_note}"
    )]
    Mismatch {
        /// Raw file name.
        file: String,
        /// Destination site.
        site: Site,
        /// `size` or `adler32`.
        field: &'static str,
        /// Catalogued value.
        expected: String,
        /// Value at the destination.
        found: String,
        /// Whether the source copy still matches the catalog.
        source_note: String,
        /// The source copy itself matches the catalog (the bytes changed on
        /// the way, not at the source).
        source_matches: bool,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CopyError + 'a {
    move |source| CopyError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Copy `src` to `tmp` in-process or with the site's command.
fn copy_bytes(src: &Path, tmp: &Path, command: Option<&str>) -> Result<(), CopyError> {
    let Some(template) = command else {
        std::fs::copy(src, tmp).map_err(io_err("copy to", tmp))?;
        return Ok(());
    };
    let cmd = crate::shell::fill(template, "{", "}", |key| {
        let path = match key {
            "src" => src,
            "dst" => tmp,
            _ => return Ok(None),
        };
        crate::shell::quote_path(path)
            .map(Some)
            .map_err(|e| CopyError::Quote {
                path: path.to_path_buf(),
                source: e,
            })
    })?;
    let out = Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .output()
        .map_err(io_err("run copy command for", tmp))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .trim()
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(CopyError::Command {
            command: cmd,
            status: out.status.to_string(),
            stderr: tail,
        });
    }
    Ok(())
}

impl CopyError {
    /// True when the destination file system is full (ENOSPC, EDQUOT), from
    /// the error code or, for a copy command, its message.
    pub fn is_no_space(&self) -> bool {
        match self {
            Self::Io { source, .. } => crate::atomic_file::is_no_space(source),
            Self::Command { stderr, .. } => {
                let s = stderr.to_ascii_lowercase();
                s.contains("no space left on device") || s.contains("disk quota exceeded")
            }
            Self::Mismatch { .. } | Self::Quote { .. } => false,
        }
    }
}

/// One copy to make: the bytes at `src` to `dst`, through `.{name}.tmp`
/// beside it, checked against the catalogued size and Adler-32.
#[derive(Debug, Clone)]
pub(crate) struct CopySpec<'a> {
    /// File name (the temporary's name and the messages).
    pub name: &'a str,
    /// Destination site.
    pub site: Site,
    /// Source site.
    pub source: Site,
    /// Source path.
    pub src: PathBuf,
    /// Final destination path.
    pub dst: PathBuf,
    /// Catalogued size [bytes].
    pub size_bytes: u64,
    /// Catalogued Adler-32, hex.
    pub adler32: &'a str,
    /// The destination's copy command (None: in-process).
    pub command: Option<&'a str>,
}

/// The copy of a raw-file replica.
fn raw_copy<'a>(
    item: &'a TransferItem,
    cfg: &'a TransferConfig,
) -> Result<CopySpec<'a>, TransferError> {
    let source = cfg.sites.get(item.source)?;
    let dest = cfg.sites.get(item.site)?;
    Ok(CopySpec {
        name: &item.file,
        site: item.site,
        source: item.source,
        src: source.root.join(&item.path),
        dst: dest.root.join(&item.path),
        size_bytes: item.size_bytes,
        adler32: &item.adler32,
        command: dest.copy_command.as_deref(),
    })
}

/// One attempt: copy to a temporary name, verify, then fsync, rename and
/// fsync the directory ([`crate::atomic_file::commit`]); any failure removes
/// the temporary (on a full disk: gives its space back). Returns the bytes copied.
pub(crate) fn copy_and_verify(spec: &CopySpec<'_>) -> Result<u64, CopyError> {
    let (src, dst) = (&spec.src, &spec.dst);
    let dir = dst
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let tmp = dir.join(format!(".{}.tmp", spec.name));
    std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err("remove stale", &tmp)(e));
        }
        _ => {}
    }
    let result = (|| {
        copy_bytes(src, &tmp, spec.command)?;
        let got = digest_file(&tmp).map_err(|e| CopyError::Io {
            op: "checksum",
            path: e.path,
            source: e.source,
        })?;
        let mismatch = |field, expected: String, found: String| {
            let from = spec.source;
            let (source_note, source_matches) = match digest_file(src) {
                Ok(d)
                    if same_checksum(&d.adler32, spec.adler32)
                        && d.size_bytes == spec.size_bytes =>
                {
                    (format!(" ({from} copy matches the catalog)"), true)
                }
                Ok(d) => (
                    format!(
                        " ({from} copy no longer matches the catalog: {} bytes, adler32 {})",
                        d.size_bytes, d.adler32
                    ),
                    false,
                ),
                Err(e) => (format!(" ({from} copy unreadable: {e})"), false),
            };
            CopyError::Mismatch {
                file: spec.name.to_string(),
                site: spec.site,
                field,
                expected,
                found,
                source_note,
                source_matches,
            }
        };
        if got.size_bytes != spec.size_bytes {
            return Err(mismatch(
                "size",
                spec.size_bytes.to_string(),
                got.size_bytes.to_string(),
            ));
        }
        if !same_checksum(&got.adler32, spec.adler32) {
            return Err(mismatch("adler32", spec.adler32.to_string(), got.adler32));
        }
        crate::atomic_file::commit(&tmp, dst).map_err(|e| CopyError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        })?;
        Ok(got.size_bytes)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Outcome of one attempt, for the report.
enum Outcome {
    Verified(u64),
    Requeued,
    /// The destination is full: re-queued without spending an attempt.
    OutOfSpace(TransferFailure),
    Bad(TransferFailure),
    Skipped,
}

fn attempt(
    item: &TransferItem,
    cfg: &TransferConfig,
    catalog: &Catalog,
) -> Result<Outcome, TransferError> {
    let spec = raw_copy(item, cfg)?;
    match catalog.begin_copy(item)? {
        CopyStart::Started => {}
        CopyStart::NotQueued
        | CopyStart::BeingSalted
        | CopyStart::ChecksumChanged
        | CopyStart::SourceNotVerified => return Ok(Outcome::Skipped),
    }
    match copy_and_verify(&spec) {
        Ok(bytes) => {
            catalog.replica_verified(item.file_id, item.site, bytes, &item.adler32)?;
            if item.source != Site::Surf {
                tracing::info!(file = %item.file, site = %item.site, source = %item.source, "copied in and verified");
            }
            Ok(Outcome::Verified(bytes))
        }
        Err(e) if e.is_no_space() => {
            let reason = e.to_string();
            catalog.replica_transition(
                item.file_id,
                item.site,
                ReplicaState::Transferring,
                ReplicaState::Queued,
                Some(&reason),
            )?;
            tracing::error!(file = %item.file, site = %item.site, %reason, "destination full: left queued for the next pass");
            Ok(Outcome::OutOfSpace(TransferFailure {
                file: item.file.clone(),
                site: item.site,
                attempts: item.attempts,
                reason,
            }))
        }
        Err(e @ CopyError::Mismatch { .. }) if checksum_changed(item, catalog)? => {
            let reason = format!("{e} (the catalogued checksum changed during the copy: retried)");
            catalog.replica_retry_unchanged(item.file_id, item.site, &reason)?;
            tracing::info!(file = %item.file, site = %item.site, "source changed during the copy; re-queued");
            Ok(Outcome::Skipped)
        }
        // A processing site's replica that does not match the catalog is
        // bad: it is marked so, and the copy from it ends at once (the file
        // waits for a verified replica; retrying the same bytes cannot help).
        Err(
            e @ CopyError::Mismatch {
                source_matches: false,
                ..
            },
        ) if item.source != Site::Surf => {
            let reason = e.to_string();
            catalog.replica_transition(
                item.file_id,
                item.source,
                ReplicaState::Verified,
                ReplicaState::Bad,
                Some(&format!(
                    "found corrupt while copying it to {}: {reason}",
                    item.site
                )),
            )?;
            let why = format!("copy from {} failed: {reason}", item.source);
            catalog.replica_transition(
                item.file_id,
                item.site,
                ReplicaState::Transferring,
                ReplicaState::Bad,
                Some(&why),
            )?;
            tracing::error!(file = %item.file, site = %item.site, source = %item.source, %reason, "source replica corrupt: both marked bad");
            Ok(Outcome::Bad(TransferFailure {
                file: item.file.clone(),
                site: item.site,
                attempts: item.attempts + 1,
                reason: why,
            }))
        }
        Err(e) => {
            let reason = e.to_string();
            let state =
                catalog.replica_failed(item.file_id, item.site, &reason, cfg.max_attempts)?;
            tracing::warn!(file = %item.file, site = %item.site, attempt = item.attempts + 1, %reason, "transfer attempt failed");
            Ok(if state == ReplicaState::Bad {
                Outcome::Bad(TransferFailure {
                    file: item.file.clone(),
                    site: item.site,
                    attempts: item.attempts + 1,
                    reason,
                })
            } else {
                Outcome::Requeued
            })
        }
    }
}

/// True when the catalog's checksum of the item's file is no longer the one
/// listed with the item.
fn checksum_changed(item: &TransferItem, catalog: &Catalog) -> Result<bool, CatalogError> {
    let now = catalog.file(&item.file_id.to_string())?;
    Ok(!same_checksum(&now.adler32, &item.adler32))
}

/// Run one transfer pass.
///
/// # Errors
/// [`TransferError::SiteNotConfigured`] for SURF or a destination without a
/// location; [`TransferError::Locked`] naming the holder when another mover
/// runs on this catalog; [`TransferError::Catalog`] when the catalog refuses
/// (copies verified before that are recorded); [`TransferError::Pool`].
pub fn run(cfg: &TransferConfig, catalog: &Catalog) -> Result<TransferReport, TransferError> {
    let start = Instant::now();
    cfg.sites.get(Site::Surf)?;
    for &site in &cfg.destinations {
        cfg.sites.get(site)?;
    }
    let _lock = ExclusiveLock::try_acquire(
        &transfer_lock_path(catalog.path()),
        &format!("a mover on {}", catalog.path().display()),
    )?;
    let blinded = catalog.blinded()?;
    let require_salted = cfg.require_salted || blinded;
    let threads = cfg.parallel.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("transfer-{i}"))
        .build()
        .map_err(|e| TransferError::Pool {
            threads,
            message: e.to_string(),
        })?;
    let mut report = TransferReport {
        resumed: catalog.requeue_interrupted()?,
        blinded,
        ..Default::default()
    };
    for &site in &cfg.destinations {
        if cfg.retry_failed {
            report.queued += catalog.requeue_failed(site)?;
        }
        report.queued += catalog.queue_replicas_when(site, require_salted)?;
        report.sites.entry(site).or_default();
    }
    // Sites found full in this pass get no more copies until the next one.
    let mut full = std::collections::BTreeSet::new();
    for _round in 0..cfg.max_attempts.max(1) {
        let mut items = Vec::new();
        for &site in cfg.destinations.iter().filter(|s| !full.contains(*s)) {
            items.extend(catalog.queued_replicas_when(site, cfg.max_attempts, require_salted)?);
        }
        if items.is_empty() {
            break;
        }
        let outcomes: Vec<(Site, Site, Result<Outcome, TransferError>)> = pool.install(|| {
            items
                .par_iter()
                .map(|item| (item.site, item.source, attempt(item, cfg, catalog)))
                .collect()
        });
        for (site, source, outcome) in outcomes {
            let figures = report.sites.entry(site).or_default();
            match outcome? {
                Outcome::Verified(bytes) => {
                    report.attempts += 1;
                    report.verified += 1;
                    if source != Site::Surf {
                        report.copied_in += 1;
                    }
                    report.bytes += bytes;
                    figures.verified += 1;
                    figures.bytes += bytes;
                }
                Outcome::Requeued => {
                    report.attempts += 1;
                    report.retries += 1;
                    figures.failed_attempts += 1;
                }
                Outcome::OutOfSpace(failure) => {
                    report.attempts += 1;
                    figures.failed_attempts += 1;
                    full.insert(site);
                    report.out_of_space.push(failure);
                }
                Outcome::Bad(failure) => {
                    report.attempts += 1;
                    figures.failed_attempts += 1;
                    report.failures.push(failure);
                }
                Outcome::Skipped => {}
            }
        }
    }
    report.files_completed = catalog.mark_transferred_files(&cfg.destinations)?;
    if require_salted {
        report.held_unsalted = catalog.unsalted_science_files_at_surf()?;
        if report.held_unsalted > 0 {
            tracing::warn!(
                files = report.held_unsalted,
                blinded,
                "unsalted science files held at SURF until salted"
            );
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.mb_per_s = report.bytes as f64 / 1e6 / report.seconds.max(1e-9);
    report
        .failures
        .sort_by(|a, b| (&a.file, a.site).cmp(&(&b.file, b.site)));
    report
        .out_of_space
        .sort_by(|a, b| (&a.file, a.site).cmp(&(&b.file, b.site)));
    Ok(report)
}

impl fmt::Display for TransferReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "transfer: {} replicas verified, {} files complete, {:.1} MB in {:.2} s ({:.1} MB/s); \
             {} attempts, {} retries, {} failed; {} queued, {} resumed",
            self.verified,
            self.files_completed,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.mb_per_s,
            self.attempts,
            self.retries,
            self.failures.len(),
            self.queued,
            self.resumed
        )?;
        for (site, s) in &self.sites {
            writeln!(
                f,
                "  {:<8} {:>6} verified {:>10.1} MB {:>4} failed attempts",
                site.as_str(),
                s.verified,
                s.bytes as f64 / 1e6,
                s.failed_attempts
            )?;
        }
        if self.held_unsalted > 0 {
            let why = if self.blinded {
                "the catalog is blinded"
            } else {
                "salting is required"
            };
            writeln!(
                f,
                "  HELD {} unsalted science file(s) at SURF: {why}, they move once salted",
                self.held_unsalted
            )?;
        }
        for x in &self.failures {
            writeln!(
                f,
                "  BAD {} at {} after {} attempts: {}",
                x.file, x.site, x.attempts, x.reason
            )?;
        }
        for x in &self.out_of_space {
            writeln!(
                f,
                "  NO SPACE {} at {} (queued for the next pass): {}",
                x.file, x.site, x.reason
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_assignments_parse_and_errors_name_the_text() {
        let (site, dir) = parse_site_assignment("usdc=/global/cfs/lz").unwrap();
        assert_eq!((site, dir.as_str()), (Site::Usdc, "/global/cfs/lz"));
        let (_, cmd) = parse_site_assignment("UKDC=rsync -a {src} {dst}").unwrap();
        assert_eq!(cmd, "rsync -a {src} {dst}");
        for bad in ["USDC", "CERN=/x", "ARCHIVE="] {
            let e = parse_site_assignment(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        let mut sites = Sites::under(Path::new("/data"));
        assert_eq!(sites.get(Site::Ukdc).unwrap().root, Path::new("/data/UKDC"));
        assert!(sites.set_copy_command(Site::Ukdc, "cp {src}").is_err());
        sites
            .set_copy_command(Site::Ukdc, "cp {src} {dst}")
            .unwrap();
        let e = Sites::default().get(Site::Usdc).unwrap_err().to_string();
        assert!(e.contains("USDC"), "{e}");
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        let q = crate::shell::quote_path(Path::new("/a b/it's.h5")).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {q}"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "/a b/it's.h5");
    }
}
