//! The ingest stage: register new complete raw files found at SURF.
//!
//! A raw file is complete once it has its final name
//! `{run:06}/{run:06}_{seq:05}.raw.h5`: the DAQ writes `.{name}.tmp` and
//! renames. Temporary names (leading `.` or trailing `.tmp`) are counted as in
//! progress and left alone; any other name is ignored. Each new file is
//! registered once, with size and Adler-32, together with its SURF replica
//! (state `verified`). Ingest is idempotent: a second pass registers nothing.
//!
//! Run type is a site convention: the DAQ may write a `RUNINFO.toml` sidecar
//! in the run directory; without it a run is `science`.
//!
//! ```toml
//! # SURF/017400/RUNINFO.toml
//! run_type = "calibration"            # or "science" (the default)
//! start_time = "2026-11-28T12:00:00Z" # ISO 8601 UTC (default: first file's mtime)
//! conditions = "v1"                   # default: the first raw file's conditions_tag
//! ```
//!
//! The sidecar is re-read on every pass, so one written late still takes effect.

use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use rayon::prelude::*;
use serde::Serialize;

use super::{now_unix_s, utc_string, Catalog, CatalogError, NewRawFile, RunInfo, RunType};
use crate::adler::{digest_file, ChecksumError};

/// Name of the per-run sidecar the DAQ may write.
pub const RUNINFO_NAME: &str = "RUNINFO.toml";

/// Where to look.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// SURF site root: runs are its `{run:06}` subdirectories.
    pub surf_root: PathBuf,
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Run directories seen.
    pub runs_seen: usize,
    /// Files registered by this pass.
    pub files_registered: usize,
    /// Complete files already in the catalog.
    pub files_known: usize,
    /// Files still being written (temporary names), skipped.
    pub files_in_progress: usize,
    /// Other names, ignored (truth files, sidecars, strays).
    pub files_ignored: usize,
    /// Bytes registered [bytes].
    pub bytes_registered: u64,
    /// Wall time [s].
    pub seconds: f64,
    /// Checksumming throughput of the new files [MB/s].
    pub mb_per_s: f64,
    /// Mean time from the file's mtime to its registration [s].
    pub latency_mean_s: Option<f64>,
    /// Largest such time [s].
    pub latency_max_s: Option<f64>,
    /// Names of the files registered.
    pub registered: Vec<String>,
}

/// Errors of the ingest stage. Each names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A directory or file could not be listed or inspected.
    #[error("{path}: {source}")]
    Io {
        /// Directory or file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A `RUNINFO.toml` that does not parse.
    #[error("{path}: {field}: {message}")]
    RunInfo {
        /// Sidecar file.
        path: PathBuf,
        /// Field (or `toml` for a syntax error).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A file could not be checksummed.
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    /// The catalog refused.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Run and sequence of a final raw-file name `{run:06}_{seq:05}.raw.h5`;
/// `None` for anything else (temporary names included).
pub fn parse_raw_file_name(name: &str) -> Option<(u32, u32)> {
    let stem = name.strip_suffix(".raw.h5")?;
    let (run_s, seq_s) = stem.split_once('_')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(run_s) || !all_digits(seq_s) {
        return None;
    }
    let run: u32 = run_s.parse().ok()?;
    let seq: u32 = seq_s.parse().ok()?;
    (format!("{run:06}") == run_s && format!("{seq:05}") == seq_s).then_some((run, seq))
}

/// True for names writers use while a file is incomplete (`.x.tmp`, `x.tmp`, `.x`).
pub fn is_temporary_name(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp")
}

/// Run directories under a site root: `(run, path)` for each `{run:06}` directory.
///
/// # Errors
/// [`IngestError::Io`] naming the root when it cannot be listed.
pub fn run_directories(root: &Path) -> Result<Vec<(u32, PathBuf)>, IngestError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IngestError::Io { path, source }
    };
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io(root))? {
        let entry = entry.map_err(io(root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(run) = name.parse::<u32>() else {
            continue;
        };
        if format!("{run:06}") == name && entry.file_type().map_err(io(&entry.path()))?.is_dir() {
            runs.push((run, entry.path()));
        }
    }
    runs.sort();
    Ok(runs)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunInfoFile {
    run_type: Option<String>,
    start_time: Option<String>,
    conditions: Option<String>,
}

/// Read a run's `RUNINFO.toml`, if there is one.
///
/// # Errors
/// [`IngestError::RunInfo`] naming the file and field when it does not parse.
pub fn read_run_info(run: u32, run_dir: &Path) -> Result<Option<RunInfo>, IngestError> {
    let path = run_dir.join(RUNINFO_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IngestError::Io { path, source }),
    };
    let bad = |field, message: String| IngestError::RunInfo {
        path: path.clone(),
        field,
        message,
    };
    let file: RunInfoFile = toml::from_str(&text).map_err(|e| bad("toml", e.to_string()))?;
    let run_type = match file.run_type {
        Some(t) => t
            .parse()
            .map_err(|e: super::UnknownName| bad("run_type", e.to_string()))?,
        None => RunType::Science,
    };
    Ok(Some(RunInfo {
        number: run,
        run_type,
        start_time: file.start_time,
        conditions: file.conditions,
    }))
}

/// A complete file found at SURF and not yet catalogued.
struct Candidate {
    run: u32,
    sequence: u32,
    name: String,
    path: PathBuf,
}

/// Register the new complete raw files under the SURF root.
///
/// Checksums are computed in the current rayon pool.
///
/// # Errors
/// An [`IngestError`] naming the directory, file or sidecar; files found
/// before the error in the same run are not registered.
pub fn run(cfg: &IngestConfig, catalog: &Catalog) -> Result<IngestReport, IngestError> {
    let start = Instant::now();
    let mut report = IngestReport::default();
    let mut latencies = Vec::new();
    let runs = run_directories(&cfg.surf_root)?;
    report.runs_seen = runs.len();
    for (run, dir) in runs {
        let known = catalog.file_names_of_run(run)?;
        let mut candidates = Vec::new();
        let io = |source| IngestError::Io {
            path: dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let name = entry
                .map_err(io)?
                .file_name()
                .to_string_lossy()
                .into_owned();
            match parse_raw_file_name(&name) {
                Some((r, sequence)) if r == run => {
                    if known.contains(&name) {
                        report.files_known += 1;
                    } else {
                        let path = dir.join(&name);
                        candidates.push(Candidate {
                            run,
                            sequence,
                            name,
                            path,
                        });
                    }
                }
                _ if is_temporary_name(&name) => report.files_in_progress += 1,
                _ => report.files_ignored += 1,
            }
        }
        let sidecar = read_run_info(run, &dir)?;
        if candidates.is_empty() {
            if let Some(info) = &sidecar {
                catalog.upsert_run(info, true)?;
            }
            continue;
        }
        candidates.sort_by_key(|c| c.sequence);
        let new_files: Vec<NewRawFile> = candidates
            .par_iter()
            .map(|c| {
                let digest = digest_file(&c.path)?;
                let written_at = std::fs::metadata(&c.path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64());
                Ok(NewRawFile {
                    run: c.run,
                    sequence: c.sequence,
                    name: c.name.clone(),
                    rel_path: format!("{:06}/{}", c.run, c.name),
                    size_bytes: digest.size_bytes,
                    adler32: digest.adler32,
                    written_at,
                })
            })
            .collect::<Result<_, IngestError>>()?;
        let info = match sidecar {
            Some(info) => {
                catalog.upsert_run(&info, true)?;
                info
            }
            None => RunInfo {
                number: run,
                run_type: RunType::Science,
                start_time: None,
                conditions: None,
            },
        };
        // Fill what the sidecar did not say from the files themselves.
        let defaults = RunInfo {
            start_time: info.start_time.clone().or_else(|| {
                new_files
                    .iter()
                    .filter_map(|f| f.written_at)
                    .min_by(f64::total_cmp)
                    .map(utc_string)
            }),
            conditions: info
                .conditions
                .clone()
                .or_else(|| conditions_tag_of(&candidates[0].path)),
            ..info
        };
        catalog.upsert_run(&defaults, false)?;
        let n = catalog.register_files(&new_files)?;
        let now = now_unix_s();
        let registered = catalog.file_names_of_run(run)?;
        for f in &new_files {
            if registered.contains(&f.name) && !known.contains(&f.name) {
                report.bytes_registered += f.size_bytes;
                report.registered.push(f.name.clone());
                if let Some(w) = f.written_at {
                    latencies.push((now - w).max(0.0));
                }
            }
        }
        report.files_registered += n;
        tracing::info!(run, registered = n, "ingested run directory");
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.mb_per_s = report.bytes_registered as f64 / 1e6 / report.seconds.max(1e-9);
    if !latencies.is_empty() {
        report.latency_mean_s = Some(latencies.iter().sum::<f64>() / latencies.len() as f64);
        report.latency_max_s = latencies.iter().copied().max_by(f64::total_cmp);
    }
    Ok(report)
}

/// The `conditions_tag` root attribute of a raw file, if readable.
fn conditions_tag_of(path: &Path) -> Option<String> {
    let file = crate::h5::open(path).ok()?;
    let tag = file
        .attr("conditions_tag")
        .and_then(|a| a.read_scalar::<hdf5::types::VarLenUnicode>())
        .map(|s| s.as_str().to_string());
    tag.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_names_parse_and_everything_else_does_not() {
        let table = [
            ("017400_00003.raw.h5", Some((17400, 3))),
            ("1234567_00003.raw.h5", Some((1_234_567, 3))),
            (".017400_00003.raw.h5.tmp", None),
            ("017400_00003.raw.h5.tmp", None),
            ("017400_00003.truth.h5", None),
            ("17400_00003.raw.h5", None),
            ("017400_3.raw.h5", None),
            ("017400_0000a.raw.h5", None),
            ("RUNINFO.toml", None),
        ];
        for (name, want) in table {
            assert_eq!(parse_raw_file_name(name), want, "{name}");
        }
        assert!(is_temporary_name(".017400_00003.raw.h5.tmp"));
        assert!(!is_temporary_name("017400_00003.raw.h5"));
    }

    #[test]
    fn run_info_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_run_info(1, dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join(RUNINFO_NAME), "run_type = \"calib\"\n").unwrap();
        let e = read_run_info(1, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("RUNINFO.toml") && e.contains("run_type") && e.contains("calib"),
            "{e}"
        );
        std::fs::write(
            dir.path().join(RUNINFO_NAME),
            "run_type = \"Calibration\"\n",
        )
        .unwrap();
        let info = read_run_info(1, dir.path()).unwrap().unwrap();
        assert_eq!(info.run_type, RunType::Calibration);
    }
}
