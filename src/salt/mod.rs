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
//! salt event  = simulate_event(Source::Wimp, the detector of the conditions in force
//!               for the run, secret per-file seed)   WIMP-like NR, same physics and DAQ
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
//! Salt follows the detector: its events are simulated on the detector the
//! conditions in force for the run describe ([`crate::sim::told_detector`]:
//! measured gains, dead and noisy channels, electron lifetime, Kr83m light
//! maps, gas-gap map, SE gain, the learned light response), found with the
//! lookup prompt processing uses (the catalog's published tag whose interval
//! of validity holds the run). With no tag in force, the file's own
//! `conditions_tag` (the nominal model). The vault record names the tag and
//! its content's SHA-256. A file salted before its run's calibration tag is
//! published keeps the salt of the tag in force when it was salted.
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
use crate::raw::{RawError, RawHeader};
use crate::sim::told_detector::ToldDetector;
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
    /// Which conditions the salt events are made with.
    pub conditions: SaltConditions,
}

/// Which conditions salt events are made with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SaltConditions {
    /// The published tag in force for the file's run in the catalog (the
    /// lookup prompt processing uses); the file's own `conditions_tag` when
    /// no tag is in force.
    #[default]
    InForce,
    /// These conditions for every file: a tag in the catalog, a built-in tag
    /// or a TOML file.
    Fixed(String),
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
    /// Tag of the conditions the salt events were made with.
    #[serde(default)]
    pub conditions_tag: String,
    /// SHA-256 of those conditions' text (hex).
    #[serde(default)]
    pub conditions_sha256: String,
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
    /// The salt conditions' DAQ does not make events of the file's shape.
    #[error("{file}: salt conditions `{tag}` do not fit the file: {what}")]
    Incompatible {
        /// Raw file.
        file: String,
        /// Tag of the salt conditions.
        tag: String,
        /// What differs.
        what: String,
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
    let mut conditions: BTreeMap<String, ToldDetector> = BTreeMap::new();
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
    conditions: &mut BTreeMap<String, ToldDetector>,
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
    let digest = match rewrite(
        cfg, catalog, vault, rate, ledger, conditions, f, &path, &found,
    ) {
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
    catalog: &Catalog,
    vault: &Vault,
    rate: f64,
    ledger: &mut RunLedger,
    conditions: &mut BTreeMap<String, ToldDetector>,
    f: &crate::catalog::RawFileRow,
    path: &Path,
    found: &crate::adler::FileDigest,
) -> Result<Rewritten, (SaltError, bool)> {
    let before = |e: SaltError| (e, false);
    let record_name = SaltRecord::vault_name(f.run, f.sequence);
    let salted = inject::salt_file(path, f, rate, ledger, |header| {
        salt_detector(cfg, catalog, conditions, f, header)
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
        conditions_tag: salted.conditions_tag,
        conditions_sha256: salted.conditions_sha256,
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

/// The detector the salt of a file is made on (see [`SaltConditions`]),
/// built once per conditions and checked against the file's DAQ shape.
fn salt_detector<'a>(
    cfg: &SaltConfig,
    catalog: &Catalog,
    cache: &'a mut BTreeMap<String, ToldDetector>,
    f: &crate::catalog::RawFileRow,
    header: &RawHeader,
) -> Result<&'a ToldDetector, SaltError> {
    let file = f.name.as_str();
    let (key, source) = match &cfg.conditions {
        SaltConditions::Fixed(spec) => match catalog.conditions_tag(spec)? {
            Some(row) => (format!("{}@{}", row.tag, row.content_sha256), Some(row.tag)),
            None => (format!("spec:{spec}"), None),
        },
        SaltConditions::InForce => match catalog.conditions_for_run(f.run)? {
            Some(row) => (format!("{}@{}", row.tag, row.content_sha256), Some(row.tag)),
            None => (format!("spec:{}", header.conditions_tag), None),
        },
    };
    if !cache.contains_key(&key) {
        let spec = match (&cfg.conditions, &source) {
            (_, Some(tag)) => format!("catalog:{tag}"),
            (SaltConditions::Fixed(spec), None) => spec.clone(),
            (SaltConditions::InForce, None) => header.conditions_tag.clone(),
        };
        let failed = |source: ConditionsError| SaltError::Conditions {
            file: file.to_string(),
            spec: spec.clone(),
            source: Box::new(source),
        };
        let cond = match &source {
            Some(tag) => {
                let text = catalog.conditions_content(tag)?;
                Conditions::parse(&text, Path::new(&spec)).map_err(failed)?
            }
            None => Conditions::load(&spec).map_err(failed)?,
        };
        tracing::info!(conditions = %cond.tag, sha256 = %cond.sha256, "salt made with these conditions");
        cache.insert(key.clone(), ToldDetector::new(cond));
    }
    let told = &cache[&key];
    check_daq(told, file, header)?;
    Ok(told)
}

/// The salt conditions must make events of the file's shape.
fn check_daq(told: &ToldDetector, file: &str, header: &RawHeader) -> Result<(), SaltError> {
    let m = &told.conditions.detector;
    let d = &m.params.daq;
    let window = ((d.window_before_ns + d.window_after_ns) / d.sample_ns).round() as u32;
    let what = if m.n_channels() as u32 != header.n_channels {
        format!(
            "{} channels, the file {}",
            m.n_channels(),
            header.n_channels
        )
    } else if d.sample_ns != header.sample_period_ns {
        format!(
            "{} ns samples, the file {} ns",
            d.sample_ns, header.sample_period_ns
        )
    } else if window != header.window_samples {
        format!(
            "an event window of {window} samples, the file {}",
            header.window_samples
        )
    } else {
        return Ok(());
    };
    Err(SaltError::Incompatible {
        file: file.to_string(),
        tag: told.tag().to_string(),
        what,
    })
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
