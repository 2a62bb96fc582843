//! The audit stage: compare a site's storage with the catalog.
//!
//! Like Rucio's consistency checks, it finds
//! - **dark** files: raw files on disk that the catalog has no replica of at
//!   this site (reported only: there is no row to mark, and the audit never
//!   deletes);
//! - **lost** replicas: catalogued as verified but absent from the storage;
//! - **bad** replicas: present with the wrong size or Adler-32.
//!
//! A SURF copy `retired` by the retention stage is absent on purpose: it is
//! counted as retired, never lost (one still on disk, or `retiring`, is an
//! interrupted retirement the next `tpcflow retire` finishes).
//!
//! Lost and bad replicas are marked in the catalog (`verified -> lost|bad`
//! with the reason), unless the discrepancy is implausibly large: when more
//! than `max_missing_fraction` (default 50 %) of the site's verified
//! replicas are lost or bad, the listing itself is suspect (an unmounted file
//! system, a storage outage), so the audit reports and marks nothing.
//!
//! Temporary names (`.x.tmp`) are in-progress copies, listed apart; the
//! sidecars `RUNINFO.toml` and `*.truth.h5` (simulation truth) are not data.

pub mod cli;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::adler::{digest_file, same_checksum};
use crate::catalog::ingest::{
    is_temporary_name, parse_raw_file_name, run_directories, IngestError, RUNINFO_NAME,
};
use crate::catalog::{Catalog, CatalogError, ReplicaRow, ReplicaState, Site};
use crate::transfer::{Sites, TransferError};

/// Default refusal threshold: fraction of a site's verified replicas that may be lost or bad.
pub const DEFAULT_MAX_MISSING_FRACTION: f64 = 0.5;

/// What to audit.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Site to audit.
    pub site: Site,
    /// Site locations.
    pub sites: Sites,
    /// Mark nothing when more than this fraction of verified replicas are lost or bad (0-1).
    pub max_missing_fraction: f64,
    /// Read every file to compare Adler-32 (otherwise sizes only).
    pub verify_checksums: bool,
}

/// One lost or bad replica.
#[derive(Debug, Clone, Serialize)]
pub struct Discrepancy {
    /// Raw file name.
    pub file: String,
    /// Path relative to the site root.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// What the audit found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// Site audited.
    pub site: Option<Site>,
    /// Its root directory.
    pub root: PathBuf,
    /// Raw files found on disk.
    pub files_on_disk: usize,
    /// Verified replicas checked.
    pub replicas_checked: usize,
    /// Replicas found as catalogued.
    pub ok: usize,
    /// Files on disk unknown to the catalog at this site (paths relative to the root).
    pub dark: Vec<String>,
    /// Catalogued verified replicas missing from disk.
    pub lost: Vec<Discrepancy>,
    /// Catalogued verified replicas with the wrong size or checksum.
    pub bad: Vec<Discrepancy>,
    /// Temporary (in-progress) files seen.
    pub temporary: Vec<String>,
    /// Replicas retired (or retiring) by the retention stage: absent on purpose.
    pub retired: usize,
    /// Replicas marked lost or bad in the catalog.
    pub marked: usize,
    /// Why nothing was marked, when the audit refused.
    pub refused: Option<String>,
    /// Wall time [s].
    pub seconds: f64,
}

impl AuditReport {
    /// True when storage and catalog agree.
    pub fn is_clean(&self) -> bool {
        self.dark.is_empty() && self.lost.is_empty() && self.bad.is_empty()
    }
}

/// Errors that stop an audit. Each names the site, directory or file.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The site has no location.
    #[error(transparent)]
    Site(#[from] TransferError),
    /// The storage could not be listed.
    #[error("audit of {site}: {source}")]
    Listing {
        /// Site.
        site: Site,
        /// Cause (names the directory).
        source: IngestError,
    },
    /// The catalog refused.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Compare one replica with the file on disk; `None` when it matches.
fn check_replica(
    root: &std::path::Path,
    r: &ReplicaRow,
    verify: bool,
) -> Option<(ReplicaState, String)> {
    let path = root.join(&r.path);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some((
                ReplicaState::Lost,
                format!("audit: {} missing", path.display()),
            ));
        }
        Err(e) => return Some((ReplicaState::Bad, format!("audit: {}: {e}", path.display()))),
    };
    let expected_size = r.size_bytes.unwrap_or(0);
    if meta.len() != expected_size {
        return Some((
            ReplicaState::Bad,
            format!(
                "audit: {}: size {} bytes, catalog {expected_size}",
                path.display(),
                meta.len()
            ),
        ));
    }
    if verify {
        let expected = r.adler32.as_deref().unwrap_or("");
        match digest_file(&path) {
            Ok(d) if same_checksum(&d.adler32, expected) => {}
            Ok(d) => {
                return Some((
                    ReplicaState::Bad,
                    format!(
                        "audit: {}: adler32 {}, catalog {expected}",
                        path.display(),
                        d.adler32
                    ),
                ))
            }
            Err(e) => return Some((ReplicaState::Bad, format!("audit: {e}"))),
        }
    }
    None
}

/// Audit one site.
///
/// # Errors
/// [`AuditError::Site`] when the site has no location; [`AuditError::Listing`]
/// when its root cannot be listed; [`AuditError::Catalog`].
pub fn run(cfg: &AuditConfig, catalog: &Catalog) -> Result<AuditReport, AuditError> {
    let start = Instant::now();
    let site = cfg.site;
    let root = cfg.sites.get(site)?.root.clone();
    let listing_err = |source| AuditError::Listing { site, source };
    let mut report = AuditReport {
        site: Some(site),
        root: root.clone(),
        ..Default::default()
    };
    let mut on_disk = BTreeSet::new();
    for (_run, dir) in run_directories(&root).map_err(listing_err)? {
        let entries = std::fs::read_dir(&dir).map_err(|source| {
            listing_err(IngestError::Io {
                path: dir.clone(),
                source,
            })
        })?;
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{dir_name}/{name}");
            if parse_raw_file_name(&name).is_some() {
                on_disk.insert(rel);
            } else if is_temporary_name(&name) {
                report.temporary.push(rel);
            } else if name != RUNINFO_NAME && !name.ends_with(".truth.h5") {
                report.dark.push(rel);
            }
        }
    }
    report.files_on_disk = on_disk.len();
    let known: BTreeMap<String, ReplicaRow> = catalog
        .replicas_at(site, ReplicaState::ALL)?
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();
    report
        .dark
        .extend(on_disk.iter().filter(|p| !known.contains_key(*p)).cloned());
    report.dark.sort();
    let verified: Vec<&ReplicaRow> = known
        .values()
        .filter(|r| r.state == ReplicaState::Verified)
        .collect();
    report.replicas_checked = verified.len();
    report.retired = known
        .values()
        .filter(|r| matches!(r.state, ReplicaState::Retired | ReplicaState::Retiring))
        .count();
    let findings: Vec<(&ReplicaRow, Option<(ReplicaState, String)>)> = verified
        .par_iter()
        .map(|r| (*r, check_replica(&root, r, cfg.verify_checksums)))
        .collect();
    let mut marks = Vec::new();
    for (r, finding) in findings {
        match finding {
            None => report.ok += 1,
            Some((state, reason)) => {
                let d = Discrepancy {
                    file: r.file.clone(),
                    path: r.path.clone(),
                    reason: reason.clone(),
                };
                if state == ReplicaState::Lost {
                    report.lost.push(d);
                } else {
                    report.bad.push(d);
                }
                marks.push((r.file_id, state, reason));
            }
        }
    }
    let problems = report.lost.len() + report.bad.len();
    let limit = cfg.max_missing_fraction * report.replicas_checked as f64;
    if problems > 0 && problems as f64 > limit {
        let msg = format!(
            "{problems} of {} verified replicas at {site} are lost or bad (more than {:.0}%): \
             the storage listing of {} looks broken, so nothing was marked",
            report.replicas_checked,
            cfg.max_missing_fraction * 100.0,
            root.display()
        );
        tracing::error!(%site, problems, "{msg}");
        report.refused = Some(msg);
    } else {
        for (file_id, state, reason) in marks {
            catalog.replica_transition(
                file_id,
                site,
                ReplicaState::Verified,
                state,
                Some(&reason),
            )?;
            report.marked += 1;
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let site = self.site.map_or("?", |s| s.as_str());
        writeln!(
            f,
            "audit {site} ({}): {} files on disk, {} replicas checked, {} ok, {} dark, {} lost, {} bad, \
             {} temporary, {} retired; {} marked in {:.2} s",
            self.root.display(),
            self.files_on_disk,
            self.replicas_checked,
            self.ok,
            self.dark.len(),
            self.lost.len(),
            self.bad.len(),
            self.temporary.len(),
            self.retired,
            self.marked,
            self.seconds
        )?;
        for p in &self.dark {
            writeln!(f, "  DARK {p}")?;
        }
        for d in &self.lost {
            writeln!(f, "  LOST {}: {}", d.path, d.reason)?;
        }
        for d in &self.bad {
            writeln!(f, "  BAD  {}: {}", d.path, d.reason)?;
        }
        if let Some(why) = &self.refused {
            writeln!(f, "  REFUSED: {why}")?;
        }
        Ok(())
    }
}
