//! Unsalting: the explicit, logged unblinding step.
//!
//! For each RQ file made from a salted raw file, the vault record of that raw
//! file (found by the RQ file's `input_file`, checked against its
//! `input_adler32`) lists the salt events. A new RQ file
//! `{stem}.unsalted.rq.h5` is written without them; the original is kept.
//!
//! ```text
//! /events   rows of salt events dropped; first_pulse re-based;
//!           new column original_event_id (the DAQ's id before salting)
//! /pulses   rows of dropped events dropped; first_channel re-based
//! /channels rows of dropped pulses dropped
//! lineage   {"stage": "unsalt", "inputs": [the RQ file's lineage]}, new hash
//! ```
//!
//! Every call appends to `unsalt.log` in the vault directory (who, when,
//! which files, how many events removed) before and after writing, and logs
//! a warning through tracing. Salt ids are never written to the log.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{SaltRecord, Vault, VaultError, VaultKey};
use crate::catalog::{Catalog, CatalogError};
use crate::lineage::Lineage;
use crate::rq::{read_rq_file, write_rq_file_with_channels, Column, ColumnData, RqError, RqHeader};

/// Which RQ files to unsalt.
#[derive(Debug, Clone)]
pub enum UnsaltInputs {
    /// These RQ files.
    Files(Vec<PathBuf>),
    /// Every catalogued output of a campaign made from a salted file.
    Campaign {
        /// Catalog file.
        catalog: PathBuf,
        /// Campaign name.
        name: String,
        /// Root for relative RQ paths in the catalog (default: the catalog's directory).
        rq_root: Option<PathBuf>,
    },
}

/// Configuration of an unsalting.
#[derive(Debug, Clone)]
pub struct UnsaltConfig {
    /// Key file (mode 0600).
    pub key_file: PathBuf,
    /// Vault directory.
    pub vault_dir: PathBuf,
    /// Inputs.
    pub inputs: UnsaltInputs,
    /// Output directory (default: beside each input).
    pub out_dir: Option<PathBuf>,
}

/// One unsalted RQ file.
#[derive(Debug, Clone, Serialize)]
pub struct UnsaltedFile {
    /// Input RQ file.
    pub input: PathBuf,
    /// Output RQ file.
    pub output: PathBuf,
    /// Raw file it was made from.
    pub raw_file: String,
    /// Salt events of the raw file, with truth.
    pub salt_events: Vec<super::SaltEvent>,
    /// Event rows in the input.
    pub events_in: u64,
    /// Event rows in the output.
    pub events_out: u64,
}

/// Errors of unsalting. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum UnsaltError {
    /// Key or vault.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Reading or writing an RQ file.
    #[error(transparent)]
    Rq(#[from] RqError),
    /// Catalog.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The raw file has no vault record.
    #[error("{file}: made from {raw_file}, which the vault does not know as salted")]
    NotSalted {
        /// RQ file.
        file: PathBuf,
        /// Raw file.
        raw_file: String,
    },
    /// The RQ file was made from other bytes than the salted raw file.
    #[error("{file}: made from {raw_file} with adler32 {found}, but the salted file has {salted}")]
    OtherInput {
        /// RQ file.
        file: PathBuf,
        /// Raw file.
        raw_file: String,
        /// `input_adler32` of the RQ file.
        found: String,
        /// Salted checksum in the vault.
        salted: String,
    },
    /// A column the filter needs is missing or of the wrong type.
    #[error("{file}: {column} missing or not of type {expected}")]
    Column {
        /// RQ file.
        file: PathBuf,
        /// Column, e.g. `/events/first_pulse`.
        column: &'static str,
        /// Expected type.
        expected: &'static str,
    },
    /// Bad input name, lineage or campaign.
    #[error("{what}")]
    Input {
        /// What is wrong.
        what: String,
    },
}

/// Unsalt the inputs; returns what was written.
///
/// # Errors
/// Key, vault and authentication errors before anything is written; then the
/// first file that cannot be unsalted (earlier outputs stay).
pub fn run(cfg: &UnsaltConfig) -> Result<Vec<UnsaltedFile>, UnsaltError> {
    let vault = Vault::open(&cfg.vault_dir, VaultKey::load(&cfg.key_file)?)?;
    vault.config()?; // authenticates the key before any log line or output
    let inputs = match &cfg.inputs {
        UnsaltInputs::Files(f) => f.clone(),
        UnsaltInputs::Campaign {
            catalog,
            name,
            rq_root,
        } => campaign_outputs(catalog, name, rq_root.as_deref())?,
    };
    let who = identity();
    let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    tracing::warn!(user = %who, files = inputs.len(), "UNBLINDING: unsalting RQ files");
    let line = serde_json::json!({"event": "unsalt-start", "time": now(), "user": who,
        "key_file": cfg.key_file, "inputs": names});
    vault.append_log(&line.to_string())?;
    let mut done = Vec::new();
    for input in &inputs {
        let out = unsalt_file(&vault, input, cfg.out_dir.as_deref())?;
        let line = serde_json::json!({"event": "unsalt-file", "time": now(), "user": who,
            "input": out.input, "output": out.output, "raw_file": out.raw_file,
            "events_removed": out.events_in - out.events_out});
        vault.append_log(&line.to_string())?;
        done.push(out);
    }
    let line = serde_json::json!({"event": "unsalt-done", "time": now(), "user": who,
        "files": done.len()});
    vault.append_log(&line.to_string())?;
    Ok(done)
}

fn now() -> String {
    crate::catalog::utc_string(crate::catalog::now_unix_s())
}

/// `user (uid N) on host`, from the environment and /proc.
fn identity() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "?".into());
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_else(|| "?".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("{user} (uid {uid}) on {host}")
}

fn campaign_outputs(
    catalog: &Path,
    name: &str,
    rq_root: Option<&Path>,
) -> Result<Vec<PathBuf>, UnsaltError> {
    let cat = Catalog::open(catalog)?;
    let c = cat
        .campaigns()?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| UnsaltError::Input {
            what: format!("{}: no campaign `{name}`", catalog.display()),
        })?;
    let root = rq_root
        .map(Path::to_path_buf)
        .or_else(|| catalog.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut out = Vec::new();
    for run in c.first_run..=c.last_run {
        for f in cat.files_of_run(run)?.into_iter().filter(|f| f.salted) {
            for o in cat.outputs_of(f.id)? {
                if o.lineage_hash == c.lineage_hash {
                    out.push(root.join(o.rq_path));
                }
            }
        }
    }
    Ok(out)
}

/// Output name of an unsalted RQ file: `X.rq.h5` -> `X.unsalted.rq.h5`.
pub fn unsalted_name(input: &Path, out_dir: Option<&Path>) -> Result<PathBuf, UnsaltError> {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".rq.h5")
        .filter(|s| !s.ends_with(".unsalted"))
        .ok_or_else(|| UnsaltError::Input {
            what: format!("{}: not a salted RQ file name (*.rq.h5)", input.display()),
        })?;
    let dir = out_dir
        .map(Path::to_path_buf)
        .or_else(|| input.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    Ok(dir.join(format!("{stem}.unsalted.rq.h5")))
}

fn unsalt_file(
    vault: &Vault,
    input: &Path,
    out_dir: Option<&Path>,
) -> Result<UnsaltedFile, UnsaltError> {
    let output = unsalted_name(input, out_dir)?;
    let rq = read_rq_file(input)?;
    let raw_file = rq.header.input_file.clone();
    let (run, seq) = crate::catalog::ingest::parse_raw_file_name(&raw_file).ok_or_else(|| {
        UnsaltError::Input {
            what: format!(
                "{}: input_file `{raw_file}` is not a raw file name",
                input.display()
            ),
        }
    })?;
    let record: SaltRecord = vault
        .read(&SaltRecord::vault_name(run, seq))?
        .ok_or_else(|| UnsaltError::NotSalted {
            file: input.to_path_buf(),
            raw_file: raw_file.clone(),
        })?;
    if !crate::adler::same_checksum(&rq.header.input_adler32, &record.salted_adler32) {
        return Err(UnsaltError::OtherInput {
            file: input.to_path_buf(),
            raw_file,
            found: rq.header.input_adler32.clone(),
            salted: record.salted_adler32.clone(),
        });
    }
    let salt: HashSet<u64> = record.salt_ids().into_iter().collect();
    let original: HashMap<u64, u64> = record.real_event_ids.iter().copied().collect();
    let filtered = filter(&rq, &salt, &original, input)?;
    let parent: Lineage =
        serde_json::from_str(&rq.header.lineage_json).map_err(|e| UnsaltError::Input {
            what: format!("{}: lineage_json: {e}", input.display()),
        })?;
    let lineage = Lineage::new("unsalt", "1", serde_json::json!({})).with_input(parent);
    let header = RqHeader {
        lineage_json: lineage.canonical_json(),
        lineage_hash: lineage.hash(),
        ..rq.header.clone()
    };
    write_rq_file_with_channels(
        &output,
        &header,
        &filtered.events,
        &filtered.pulses,
        &filtered.channels,
    )?;
    tracing::warn!(input = %input.display(), output = %output.display(),
        removed = filtered.events_in - filtered.events_out, "UNBLINDING: unsalted RQ file written");
    Ok(UnsaltedFile {
        input: input.to_path_buf(),
        output,
        raw_file,
        salt_events: record.salt_events,
        events_in: filtered.events_in,
        events_out: filtered.events_out,
    })
}

/// RQ columns without the salt events.
#[derive(Debug)]
pub struct Filtered {
    /// `/events` columns (plus `original_event_id`).
    pub events: Vec<Column>,
    /// `/pulses` columns.
    pub pulses: Vec<Column>,
    /// `/channels` columns.
    pub channels: Vec<Column>,
    /// Event rows before.
    pub events_in: u64,
    /// Event rows after.
    pub events_out: u64,
}

fn take(data: &ColumnData, rows: &[usize]) -> ColumnData {
    macro_rules! pick {
        ($v:expr, $variant:ident) => {
            ColumnData::$variant(rows.iter().map(|&r| $v[r]).collect())
        };
    }
    match data {
        ColumnData::F32(v) => pick!(v, F32),
        ColumnData::F64(v) => pick!(v, F64),
        ColumnData::I64(v) => pick!(v, I64),
        ColumnData::I32(v) => pick!(v, I32),
        ColumnData::U64(v) => pick!(v, U64),
        ColumnData::U32(v) => pick!(v, U32),
        ColumnData::U16(v) => pick!(v, U16),
        ColumnData::U8(v) => pick!(v, U8),
    }
}

fn u64_col<'a>(cols: &'a [Column], name: &str) -> Option<&'a [u64]> {
    match cols.iter().find(|c| c.name == name).map(|c| &c.data) {
        Some(ColumnData::U64(v)) => Some(v),
        _ => None,
    }
}

fn u32_col<'a>(cols: &'a [Column], name: &str) -> Option<&'a [u32]> {
    match cols.iter().find(|c| c.name == name).map(|c| &c.data) {
        Some(ColumnData::U32(v)) => Some(v),
        _ => None,
    }
}

/// Keep the rows of `rows` (an index column `first`/`count` of each kept
/// parent row) and return the kept child rows and the re-based firsts.
fn children(first: &[u64], count: &[u32], parents: &[usize]) -> (Vec<usize>, Vec<u64>) {
    let mut rows = Vec::new();
    let mut new_first = Vec::with_capacity(parents.len());
    for &p in parents {
        new_first.push(rows.len() as u64);
        let a = first[p] as usize;
        rows.extend(a..a + count[p] as usize);
    }
    (rows, new_first)
}

fn replace(cols: &mut [Column], name: &str, data: ColumnData) {
    if let Some(c) = cols.iter_mut().find(|c| c.name == name) {
        c.data = data;
    }
}

/// Drop the salt events (and their pulses and channel areas) from an RQ file.
///
/// # Errors
/// [`UnsaltError::Column`] when an index column is missing or of another
/// type; [`UnsaltError::Rq`] ([`RqError::Ragged`], [`RqError::BadIndex`])
/// when the columns of a group differ in length or an index points past the
/// rows it indexes ([`crate::rq::RqFile::check`]).
pub fn filter(
    rq: &crate::rq::RqFile,
    salt: &HashSet<u64>,
    original: &HashMap<u64, u64>,
    path: &Path,
) -> Result<Filtered, UnsaltError> {
    let missing = |column, expected| UnsaltError::Column {
        file: path.to_path_buf(),
        column,
        expected,
    };
    rq.check(path)?;
    let ids = u64_col(&rq.events, "event_id").ok_or_else(|| missing("/events/event_id", "u64"))?;
    let first_pulse =
        u64_col(&rq.events, "first_pulse").ok_or_else(|| missing("/events/first_pulse", "u64"))?;
    let n_pulses =
        u32_col(&rq.events, "n_pulses").ok_or_else(|| missing("/events/n_pulses", "u32"))?;
    let keep: Vec<usize> = (0..ids.len())
        .filter(|&i| !salt.contains(&ids[i]))
        .collect();
    let (pulse_rows, new_first_pulse) = children(first_pulse, n_pulses, &keep);
    let mut events: Vec<Column> = rq
        .events
        .iter()
        .map(|c| Column {
            data: take(&c.data, &keep),
            ..c.clone()
        })
        .collect();
    replace(&mut events, "first_pulse", ColumnData::U64(new_first_pulse));
    events.push(Column::new(
        "original_event_id",
        "1",
        "event number before salting (the DAQ's)",
        ColumnData::U64(
            keep.iter()
                .map(|&i| original.get(&ids[i]).copied().unwrap_or(ids[i]))
                .collect(),
        ),
    ));
    let mut pulses: Vec<Column> = rq
        .pulses
        .iter()
        .map(|c| Column {
            data: take(&c.data, &pulse_rows),
            ..c.clone()
        })
        .collect();
    let mut channels = Vec::new();
    if !rq.channels.is_empty() {
        let first_channel = u64_col(&rq.pulses, "first_channel")
            .ok_or_else(|| missing("/pulses/first_channel", "u64"))?;
        let n_channels = u32_col(&rq.pulses, "n_channel_areas")
            .ok_or_else(|| missing("/pulses/n_channel_areas", "u32"))?;
        let (channel_rows, new_first_channel) = children(first_channel, n_channels, &pulse_rows);
        replace(
            &mut pulses,
            "first_channel",
            ColumnData::U64(new_first_channel),
        );
        channels = rq
            .channels
            .iter()
            .map(|c| Column {
                data: take(&c.data, &channel_rows),
                ..c.clone()
            })
            .collect();
    }
    Ok(Filtered {
        events,
        pulses,
        channels,
        events_in: ids.len() as u64,
        events_out: keep.len() as u64,
    })
}
