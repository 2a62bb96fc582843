//! The retention stage: free the SURF (DAQ) buffer of files that are safe
//! elsewhere.
//!
//! A SURF copy is removed only when
//! - the file arrived (was registered) at least `grace_s` ago;
//! - its replicas at USDC, UKDC and ARCHIVE are all `verified` with the
//!   catalogued size and Adler-32, each re-read within `max_checksum_age_s`
//!   (an older one is re-read here: adler32 of the destination file must
//!   equal the catalog's, or the replica is marked `bad` / `lost` and SURF kept);
//! - none of its replicas is `bad` or `lost`, and no salting pass holds it.
//!
//! Salted files: salting rewrites the SURF file in place (the original bytes
//! exist nowhere; the vault keeps only their size, checksum and the salt
//! identities), so the SURF copy is one of four copies of the same salted
//! bytes, and the catalogued checksum every destination is checked against is
//! the salted one. An unsalted science file of a blinded catalog has no
//! destination replica, so it is never a candidate.
//!
//! Crash safety, per file: mark the SURF replica `retiring` (one
//! transaction), delete the file and fsync its directory, mark it `retired`.
//! A crash leaves either the file or its record, never a file no row knows;
//! the next pass finishes `retiring` rows first (deleting the file if it is
//! still there and the destinations are still verified, otherwise putting the
//! row back to `verified`). The pass holds the mover's lock
//! ([`crate::exclusive_lock::transfer_lock_path`]): no copy reads a file
//! while it is deleted.
//!
//! ```text
//! tpcflow retire --catalog C --data-root D --site SURF --dry-run   # what would go
//! tpcflow retire --catalog C --data-root D --site SURF --grace-s 86400
//! ```

pub mod cli;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::adler::{digest_file, same_checksum};
use crate::catalog::{now_unix_s, Catalog, CatalogError, ReplicaState, Site};
use crate::exclusive_lock::{transfer_lock_path, ExclusiveLock, LockError};
use crate::transfer::{Sites, TransferError};

/// Default grace period after a file arrived [s].
pub const DEFAULT_GRACE_S: f64 = 86_400.0;
/// Default oldest acceptable destination checksum read [s].
pub const DEFAULT_MAX_CHECKSUM_AGE_S: f64 = 7.0 * 86_400.0;

/// The dispatcher's retention settings (`[retention]` in its TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Run the stage in each pass.
    pub enabled: bool,
    /// Grace period after a file arrived at SURF [s].
    pub grace_s: f64,
    /// Destination checksums read longer ago than this are read again [s].
    pub max_checksum_age_s: f64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            grace_s: DEFAULT_GRACE_S,
            max_checksum_age_s: DEFAULT_MAX_CHECKSUM_AGE_S,
        }
    }
}

impl RetentionSettings {
    /// Reject negative or NaN durations.
    ///
    /// # Errors
    /// [`RetireError::BadSetting`] naming the key.
    pub fn validate(&self) -> Result<(), RetireError> {
        for (key, v) in [
            ("grace_s", self.grace_s),
            ("max_checksum_age_s", self.max_checksum_age_s),
        ] {
            if v.is_nan() || v < 0.0 {
                return Err(RetireError::BadSetting {
                    key,
                    value: v.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// One retention pass.
#[derive(Debug, Clone)]
pub struct RetireConfig {
    /// Site locations (SURF and the three destinations).
    pub sites: Sites,
    /// Grace period and checksum age.
    pub settings: RetentionSettings,
    /// Report what would be removed; change nothing.
    pub dry_run: bool,
}

/// A file whose SURF copy was kept, and why.
#[derive(Debug, Clone, Serialize)]
pub struct KeptFile {
    /// Raw file name.
    pub file: String,
    /// Why.
    pub reason: String,
}

/// What a pass did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetireReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// `retiring` rows of an interrupted pass finished.
    pub finished: usize,
    /// Files retired (dry run: that would be).
    pub retired: Vec<String>,
    /// Bytes freed at SURF (dry run: that would be) [bytes].
    pub bytes: u64,
    /// Destination checksums re-read.
    pub rechecked: usize,
    /// Candidates kept, with the reason.
    pub kept: Vec<KeptFile>,
    /// Wall time [s].
    pub seconds: f64,
}

/// Errors that stop a pass. Each names the site, file or setting.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    /// A site has no location.
    #[error(transparent)]
    Site(#[from] TransferError),
    /// A mover or another retention pass holds the catalog's transfer lock.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The catalog refused.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Deleting a SURF copy failed (its row stays `retiring`; the next pass retries).
    #[error("retire {file}: {op} {path}: {source}")]
    Io {
        /// Raw file name.
        file: String,
        /// Operation.
        op: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A setting out of range.
    #[error("retention setting `{key}` = {value}: must be a number >= 0")]
    BadSetting {
        /// Key.
        key: &'static str,
        /// Value given.
        value: String,
    },
}

/// Run one retention pass at SURF.
///
/// # Errors
/// See [`RetireError`]; rows changed before an error stay consistent
/// (`retiring` rows are finished by the next pass).
pub fn run(cfg: &RetireConfig, catalog: &Catalog) -> Result<RetireReport, RetireError> {
    let start = Instant::now();
    cfg.settings.validate()?;
    let surf = cfg.sites.get(Site::Surf)?.root.clone();
    for site in Site::DESTINATIONS {
        cfg.sites.get(site)?;
    }
    let _lock = ExclusiveLock::try_acquire(
        &transfer_lock_path(catalog.path()),
        &format!("a mover or retention pass on {}", catalog.path().display()),
    )?;
    let mut report = RetireReport {
        dry_run: cfg.dry_run,
        ..Default::default()
    };
    if !cfg.dry_run {
        finish_interrupted(&surf, catalog, &mut report)?;
    }
    let now = now_unix_s();
    for c in catalog.retention_candidates(now - cfg.settings.grace_s)? {
        let mut problem = None;
        for d in &c.destinations {
            let fresh = d
                .verified_at
                .is_some_and(|t| now - t <= cfg.settings.max_checksum_age_s);
            if fresh {
                continue;
            }
            report.rechecked += 1;
            let path = cfg.sites.get(d.site)?.root.join(&d.path);
            let finding = match digest_file(&path) {
                Ok(g) if g.size_bytes == c.size_bytes && same_checksum(&g.adler32, &c.adler32) => {
                    None
                }
                Ok(g) => Some((
                    ReplicaState::Bad,
                    format!(
                        "retention re-read: {}: {} bytes, adler32 {}; catalog {} bytes, adler32 {}",
                        path.display(),
                        g.size_bytes,
                        g.adler32,
                        c.size_bytes,
                        c.adler32
                    ),
                )),
                Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => Some((
                    ReplicaState::Lost,
                    format!("retention re-read: {} missing", path.display()),
                )),
                Err(e) => {
                    problem = Some(format!("{} unreadable: {e}", d.site));
                    break;
                }
            };
            match finding {
                None if !cfg.dry_run => catalog.replica_reverified(c.file_id, d.site)?,
                None => {}
                Some((state, reason)) => {
                    if !cfg.dry_run {
                        catalog.replica_transition(
                            c.file_id,
                            d.site,
                            ReplicaState::Verified,
                            state,
                            Some(&reason),
                        )?;
                    }
                    tracing::error!(file = %c.file, site = %d.site, %reason, "replica failed its re-read; SURF copy kept");
                    problem = Some(format!("{} {state}: {reason}", d.site));
                    break;
                }
            }
        }
        if let Some(reason) = problem {
            report.kept.push(KeptFile {
                file: c.file.clone(),
                reason,
            });
            continue;
        }
        if !cfg.dry_run {
            catalog.replica_transition(
                c.file_id,
                Site::Surf,
                ReplicaState::Verified,
                ReplicaState::Retiring,
                None,
            )?;
            remove_surf_copy(&surf, &c.surf_path, &c.file)?;
            catalog.replica_transition(
                c.file_id,
                Site::Surf,
                ReplicaState::Retiring,
                ReplicaState::Retired,
                None,
            )?;
            tracing::info!(file = %c.file, bytes = c.size_bytes, salted = c.salted,
                "SURF copy retired (verified at USDC, UKDC and ARCHIVE)");
        }
        report.retired.push(c.file);
        report.bytes += c.size_bytes;
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Finish the `retiring` rows a crashed pass left.
fn finish_interrupted(
    surf: &Path,
    catalog: &Catalog,
    report: &mut RetireReport,
) -> Result<(), RetireError> {
    for r in catalog.replicas_at(Site::Surf, &[ReplicaState::Retiring])? {
        let present = surf.join(&r.path).exists();
        if present && !catalog.verified_everywhere(r.file_id)? {
            let reason = "retention: a destination is no longer verified; SURF copy kept";
            catalog.replica_transition(
                r.file_id,
                Site::Surf,
                ReplicaState::Retiring,
                ReplicaState::Verified,
                Some(reason),
            )?;
            tracing::warn!(file = %r.file, "{reason}");
            report.kept.push(KeptFile {
                file: r.file,
                reason: reason.to_string(),
            });
            continue;
        }
        if present {
            remove_surf_copy(surf, &r.path, &r.file)?;
        }
        catalog.replica_transition(
            r.file_id,
            Site::Surf,
            ReplicaState::Retiring,
            ReplicaState::Retired,
            None,
        )?;
        tracing::info!(file = %r.file, "interrupted retirement finished");
        report.finished += 1;
    }
    Ok(())
}

/// Delete a SURF copy and fsync its directory; a file already gone is fine.
fn remove_surf_copy(surf: &Path, rel: &str, file: &str) -> Result<(), RetireError> {
    let path = surf.join(rel);
    let io = |op: &'static str, path: &Path| {
        let (file, path) = (file.to_string(), path.to_path_buf());
        move |source| RetireError::Io {
            file,
            op,
            path,
            source,
        }
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("delete", &path)(e)),
    }
    let dir = path.parent().unwrap_or(surf);
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

impl std::fmt::Display for RetireReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would retire"
        } else {
            "retired"
        };
        writeln!(
            f,
            "retire SURF{}: {verb} {} file(s) ({:.1} MB), {} interrupted finished, {} checksum(s) re-read, {} kept, {:.2} s",
            if self.dry_run { " (dry run: nothing changed)" } else { "" },
            self.retired.len(),
            self.bytes as f64 / 1e6,
            self.finished,
            self.rechecked,
            self.kept.len(),
            self.seconds
        )?;
        for name in &self.retired {
            writeln!(
                f,
                "  {} {name}",
                if self.dry_run {
                    "WOULD RETIRE"
                } else {
                    "RETIRED"
                }
            )?;
        }
        for k in &self.kept {
            writeln!(f, "  KEPT {}: {}", k.file, k.reason)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::dispatch::Settings;

    #[test]
    fn the_dispatcher_reads_its_retention_table_and_rejects_bad_values() {
        let s: Settings = toml::from_str("[retention]\nenabled = true\ngrace_s = 60.0\n").unwrap();
        assert!(s.retention.enabled);
        assert_eq!(s.retention.grace_s, 60.0);
        assert_eq!(
            s.retention.max_checksum_age_s,
            super::DEFAULT_MAX_CHECKSUM_AGE_S
        );
        s.validate().unwrap();
        assert!(!Settings::default().retention.enabled, "off unless asked");
        let bad: Settings = toml::from_str("[retention]\ngrace_s = -1.0\n").unwrap();
        let e = format!("{:#}", bad.validate().unwrap_err());
        assert!(e.contains("grace_s"), "{e}");
        assert!(toml::from_str::<Settings>("[retention]\ngrace = 1\n").is_err());
    }
}
