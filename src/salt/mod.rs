//! Salting: the bias-mitigation stage between ingest and transfer.
//!
//! `tpcflow salt` takes every science raw file that is registered at SURF and
//! not yet salted, adds salt events, rewrites it atomically, and records the
//! new size and Adler-32 together with the salted flag in one catalog
//! transaction, so the transfer stage copies and verifies the salted bytes.
//! Calibration files bypass (their run type says they need no salt). The
//! dispatcher runs `ingest -> salt -> transfer`; a file whose destination
//! copy has already begun is never salted (reported as skipped).
//!
//! ```text
//! n_salt      ~ Poisson(~ rate * n_real)     rate: only in the vault (config.vault)
//! salt event  = simulate_event(Source::Wimp, same conditions tag as the file,
//!               secret per-file seed)        WIMP-like NR, same physics and DAQ model
//! salt time   : a Poisson process on the live time with the DAQ's dead time (placement.rs)
//! event ids   : renumbered contiguously in trigger-time order over the whole run:
//!               new_id = original_first_id_of_file + S + k
//!               S = salt events of the run's earlier files (vault ledger), k = row
//! ```
//!
//! Nothing outside the vault tells salt from real: ids are gap-free and
//! follow trigger time across the run, salt gaps follow the real spacing
//! distribution, salt events are made by the same simulator (same pod and
//! sample structure, so the same bytes per event), the catalog holds only
//! the flag, and the stage's report and logs give no salt counts.
//!
//! Choices and limits, stated plainly:
//! - The real events' original ids are kept in the vault record (`new ->
//!   original`); unsalted RQ files carry them as `/events/original_event_id`.
//! - Files of a run are salted in sequence order (the renumbering carries
//!   over). A file that arrives after a later file of its run was salted
//!   gets no salt (so ids cannot collide); that is a normal Poisson outcome.
//! - The last event of a file is always real (the gap after it belongs to
//!   the next file); the first may be salt when the previous file is salted.
//! - Event counts per file must vary for the salt count to stay hidden: a
//!   real DAQ closes files on time or size, and so does `tpcflow sim
//!   --close-on-time` (the demo uses it). With a fixed count per file
//!   (`sim` without it, as tests use), a file's count minus that number is
//!   its salt count; the salting cannot hide that.
//! - Truth files (`*.truth.h5`, simulation only) are left untouched: they
//!   describe the real events under their original ids; salt truth lives
//!   only in the vault. A blind simulation challenge must keep truth files
//!   away from analysts.
//!
//! Crash safety: salted file written under `.{name}.salting` (temp, fsync,
//! rename), then the vault record and run ledger, then the rename over the
//! original, then the catalog. A file whose bytes already match its vault
//! record's salted checksum only gets its catalog update (recovery); one
//! still matching the catalog is salted afresh.

pub mod cli;
pub mod inject;
pub mod ledger;
pub mod placement;
pub mod unsalt;
pub mod vault;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::adler::{digest_file, same_checksum, ChecksumError};
use crate::catalog::{Catalog, CatalogError, RunType, SaltCandidate};
use crate::conditions::{Conditions, ConditionsError};
use crate::raw::RawError;
pub use ledger::{LedgerEntry, RunLedger};
pub use vault::{Vault, VaultError, VaultKey};

/// Configuration of a salting pass.
#[derive(Debug, Clone)]
pub struct SaltConfig {
    /// SURF site root (catalogued SURF paths are relative to it).
    pub surf_root: PathBuf,
    /// Key file (mode 0600).
    pub key_file: PathBuf,
    /// Vault directory.
    pub vault_dir: PathBuf,
    /// Conditions (tag or TOML path) for the salt events; default: each
    /// file's own `conditions_tag`. Must carry the file's tag.
    pub conditions: Option<String>,
}

/// What a pass did. Deliberately without salt counts: it may be logged
/// where analysts read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SaltReport {
    /// Science files salted, rewritten and re-checksummed.
    pub files_salted: usize,
    /// Files whose earlier pass crashed after the rewrite: catalog updated.
    pub files_recovered: usize,
    /// Registered calibration files, which bypass salting.
    pub calibration_bypassed: usize,
    /// Files left alone, with the reason.
    pub skipped: Vec<SkippedFile>,
    /// Events in the salted files.
    pub events: u64,
    /// Bytes of the salted files [bytes].
    pub bytes: u64,
    /// Wall time [s].
    pub seconds: f64,
}

/// A file the pass did not salt.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedFile {
    /// File name.
    pub file: String,
    /// Why.
    pub reason: String,
}

/// One salt event in the vault (new numbering) with its truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaltEvent {
    /// Event id in the salted file.
    pub event_id: u64,
    /// Trigger time [ns since the run start].
    pub trigger_time_ns: i64,
    /// Total deposited energy [keV].
    pub energy_kev: f64,
    /// Energy-weighted position [mm].
    pub x_mm: f64,
    /// Energy-weighted position [mm].
    pub y_mm: f64,
    /// Energy-weighted position [mm] (cathode at 0).
    pub z_mm: f64,
    /// Vertices (1 single scatter, 2-3 multiple scatter).
    pub n_vertices: u32,
    /// Detected S1 photons [phd].
    pub s1_phd: u64,
    /// Detected S2 photons [phd].
    pub s2_phd: u64,
}

/// The vault record of one salted raw file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaltRecord {
    /// Raw file name.
    pub file: String,
    /// Run number.
    pub run: u32,
    /// Sequence.
    pub sequence: u32,
    /// Size before salting [bytes].
    pub original_size: u64,
    /// Adler-32 before salting.
    pub original_adler32: String,
    /// Size after salting [bytes].
    pub salted_size: u64,
    /// Adler-32 after salting.
    pub salted_adler32: String,
    /// Salt rate used [salt events per real event].
    pub rate_per_event: f64,
    /// Seed of the salt events' random streams.
    pub salt_seed: u64,
    /// Salt events, by event id.
    pub salt_events: Vec<SaltEvent>,
    /// Real events: (new id, original id), by new id.
    pub real_event_ids: Vec<(u64, u64)>,
    /// When [s since the Unix epoch].
    pub salted_at: f64,
    /// tpcflow version.
    pub software_version: String,
}

impl SaltRecord {
    /// Vault name of the record of raw file `run`/`sequence`.
    pub fn vault_name(run: u32, sequence: u32) -> String {
        format!("{run:06}/{run:06}_{sequence:05}.vault")
    }

    /// Ids of the salt events.
    pub fn salt_ids(&self) -> Vec<u64> {
        self.salt_events.iter().map(|s| s.event_id).collect()
    }
}

/// Errors of the salting stage. Each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum SaltError {
    /// Key or vault.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Catalog.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Reading or writing a raw file.
    #[error(transparent)]
    Raw(#[from] RawError),
    /// Checksumming a raw file.
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    /// Conditions for the salt events could not be loaded.
    #[error("{file}: conditions `{spec}`: {source}")]
    Conditions {
        /// Raw file.
        file: String,
        /// Tag or path.
        spec: String,
        /// Cause.
        source: Box<ConditionsError>,
    },
    /// Conditions given do not carry the file's tag.
    #[error("{file}: written with conditions `{file_tag}`, but the salt conditions are `{given}`")]
    ConditionsMismatch {
        /// Raw file.
        file: String,
        /// Tag in the raw file.
        file_tag: String,
        /// Tag of the conditions given.
        given: String,
    },
    /// The file at SURF is not what the catalog registered.
    #[error("{file}: adler32 at SURF is {found}, the catalog has {catalogued} and the vault knows no salted version")]
    Changed {
        /// Raw file.
        file: String,
        /// Catalogued checksum.
        catalogued: String,
        /// Checksum found.
        found: String,
    },
    /// Another pass holds the vault lock.
    #[error(transparent)]
    Locked(#[from] crate::exclusive_lock::LockError),
    /// The file cannot be salted (empty, ids overlapping another file).
    #[error("{file}: {what}")]
    Unsaltable {
        /// Raw file.
        file: String,
        /// Why.
        what: String,
    },
}

/// Run one salting pass.
///
/// # Errors
/// Key, vault, lock and catalog-listing errors abort the pass; a failure on
/// one file stops its run (later files depend on its numbering) and is
/// returned after the other runs were processed.
pub fn run(cfg: &SaltConfig, catalog: &Catalog) -> Result<SaltReport, SaltError> {
    let start = Instant::now();
    let vault = Vault::open(&cfg.vault_dir, VaultKey::load(&cfg.key_file)?)?;
    let rate = vault.config()?.rate_per_event;
    let _lock = ledger::PassLock::acquire(vault.dir())?;
    let mut report = SaltReport::default();
    let mut by_run: BTreeMap<u32, Vec<SaltCandidate>> = BTreeMap::new();
    for c in catalog.files_awaiting_salting()? {
        if c.run_type == RunType::Calibration {
            report.calibration_bypassed += 1;
        } else {
            by_run.entry(c.file.run).or_default().push(c);
        }
    }
    let mut conditions: BTreeMap<String, Conditions> = BTreeMap::new();
    let mut first_error = None;
    for (run, files) in by_run {
        let mut ledger = RunLedger::load(&vault, run)?;
        for c in files {
            match salt_one(cfg, catalog, &vault, rate, &mut ledger, &mut conditions, &c) {
                Ok(Outcome::Salted { events, bytes }) => {
                    report.files_salted += 1;
                    report.events += events;
                    report.bytes += bytes;
                }
                Ok(Outcome::Recovered) => report.files_recovered += 1,
                Ok(Outcome::Skipped(reason)) => report.skipped.push(SkippedFile {
                    file: c.file.name.clone(),
                    reason,
                }),
                Err(e) => {
                    tracing::error!(file = %c.file.name, error = %e, "salting failed; later files of the run wait");
                    first_error.get_or_insert(e);
                    break;
                }
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

enum Outcome {
    Salted { events: u64, bytes: u64 },
    Recovered,
    Skipped(String),
}

fn salt_one(
    cfg: &SaltConfig,
    catalog: &Catalog,
    vault: &Vault,
    rate: f64,
    ledger: &mut RunLedger,
    conditions: &mut BTreeMap<String, Conditions>,
    c: &SaltCandidate,
) -> Result<Outcome, SaltError> {
    let f = &c.file;
    let path = cfg.surf_root.join(&c.surf_path);
    let found = digest_file(&path)?;
    let record_name = SaltRecord::vault_name(f.run, f.sequence);
    if !same_checksum(&found.adler32, &f.adler32) {
        let record: Option<SaltRecord> = vault.read(&record_name)?;
        return match record {
            Some(r) if same_checksum(&r.salted_adler32, &found.adler32) => {
                catalog.record_salted(f.id, &f.adler32, found.size_bytes, &found.adler32)?;
                tracing::warn!(file = %f.name, "salted earlier, catalog updated now (recovery)");
                Ok(Outcome::Recovered)
            }
            _ => Err(SaltError::Changed {
                file: f.name.clone(),
                catalogued: f.adler32.clone(),
                found: found.adler32,
            }),
        };
    }
    let begun: Vec<String> = catalog
        .replicas_of(f.id)?
        .into_iter()
        .filter(|r| {
            r.site != crate::catalog::Site::Surf && r.state != crate::catalog::ReplicaState::Queued
        })
        .map(|r| format!("{} {}", r.site, r.state))
        .collect();
    if !begun.is_empty() {
        let reason = format!("placed before salting ({}): not salted", begun.join(", "));
        tracing::error!(file = %f.name, %reason);
        return Ok(Outcome::Skipped(reason));
    }
    if !catalog.begin_salting(f.id, &f.adler32)? {
        let reason = "a destination copy began before salting: not salted".to_string();
        tracing::error!(file = %f.name, %reason);
        return Ok(Outcome::Skipped(reason));
    }
    let digest = match rewrite(cfg, vault, rate, ledger, conditions, f, &path, &found) {
        Ok(d) => d,
        Err((e, renamed)) => {
            if !renamed {
                catalog.abandon_salting(f.id)?;
            }
            return Err(e);
        }
    };
    catalog.record_salted(f.id, &found.adler32, digest.size_bytes, &digest.adler32)?;
    tracing::info!(file = %f.name, events = digest.events, bytes = digest.size_bytes,
        adler32 = %digest.adler32, "salted and re-checksummed");
    Ok(Outcome::Salted {
        events: digest.events,
        bytes: digest.size_bytes,
    })
}

/// The salted file's size, checksum and event count.
struct Rewritten {
    size_bytes: u64,
    adler32: String,
    events: u64,
}

/// Salt a claimed file: staging file, vault record and ledger, then the
/// rename over the original. On error, says whether the rename happened
/// (then the claim stays: the next pass recovers the catalog record).
#[allow(clippy::too_many_arguments)]
fn rewrite(
    cfg: &SaltConfig,
    vault: &Vault,
    rate: f64,
    ledger: &mut RunLedger,
    conditions: &mut BTreeMap<String, Conditions>,
    f: &crate::catalog::RawFileRow,
    path: &Path,
    found: &crate::adler::FileDigest,
) -> Result<Rewritten, (SaltError, bool)> {
    let before = |e: SaltError| (e, false);
    let record_name = SaltRecord::vault_name(f.run, f.sequence);
    let salted = inject::salt_file(path, f, rate, ledger, |tag| {
        load_conditions(cfg, conditions, &f.name, tag)
    })
    .map_err(before)?;
    // Vault first: once the rename makes the salted file visible, its record exists.
    let staging = salted.staging.clone();
    let digest = digest_file(&staging).map_err(|e| before(e.into()))?;
    let record = SaltRecord {
        file: f.name.clone(),
        run: f.run,
        sequence: f.sequence,
        original_size: found.size_bytes,
        original_adler32: found.adler32.clone(),
        salted_size: digest.size_bytes,
        salted_adler32: digest.adler32.clone(),
        rate_per_event: rate,
        salt_seed: salted.seed,
        salt_events: salted.salt_events,
        real_event_ids: salted.real_event_ids,
        salted_at: crate::catalog::now_unix_s(),
        software_version: crate::SOFTWARE_VERSION.to_string(),
    };
    vault
        .write(&record_name, &record)
        .map_err(|e| before(e.into()))?;
    ledger.upsert(salted.ledger_entry);
    ledger.save(vault).map_err(|e| before(e.into()))?;
    // The staging file was fsynced when written; this makes the rename durable
    // too. Only a failed directory fsync comes after the rename.
    crate::atomic_file::commit(&staging, path).map_err(|e| {
        let renamed = e.op == "fsync directory";
        (SaltError::from(RawError::from(e)), renamed)
    })?;
    Ok(Rewritten {
        size_bytes: digest.size_bytes,
        adler32: digest.adler32,
        events: salted.n_events,
    })
}

fn load_conditions<'a>(
    cfg: &SaltConfig,
    cache: &'a mut BTreeMap<String, Conditions>,
    file: &str,
    tag: &str,
) -> Result<&'a Conditions, SaltError> {
    let spec = cfg.conditions.clone().unwrap_or_else(|| tag.to_string());
    if !cache.contains_key(&spec) {
        let c = Conditions::load(&spec).map_err(|source| SaltError::Conditions {
            file: file.to_string(),
            spec: spec.clone(),
            source: Box::new(source),
        })?;
        cache.insert(spec.clone(), c);
    }
    let c = &cache[&spec];
    if c.tag != tag {
        return Err(SaltError::ConditionsMismatch {
            file: file.to_string(),
            file_tag: tag.to_string(),
            given: c.tag.clone(),
        });
    }
    Ok(c)
}

/// Path of a raw file's salting staging name (`.{name}.salting`), which
/// ingest treats as in progress.
pub fn staging_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.salting"))
}
