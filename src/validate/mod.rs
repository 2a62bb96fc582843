//! `tpcflow validate`: reconstructed RQ files against simulation truth.
//!
//! Each RQ file is paired with the truth file of its raw input
//! (`{run:06}_{seq:05}.truth.h5`, written by the simulator beside the raw
//! file); events are matched by event id. The metrics reuse the definitions of
//! the accuracy tests (`tests/it/reco_accuracy.rs`) so that the report and the
//! tests agree:
//!
//! ```text
//! S1 found      a pulse starting within [-50, +300] ns of the truth S1, classified S1
//! S2 found      the largest pulse overlapping [t_S2 - 2 sigma_t, t_S2 + EL width + 2 sigma_t],
//!               classified S2          (sigma_t = sqrt(2 D_L t_drift) / v_d)
//! drift pull    (reco - truth) / sqrt(sigma_t^2 / N_e + EL^2 / 12 / S2 + (24 ns)^2 / S1)
//! xy bound      Cramer-Rao bound at the true position for S2 x top fraction phd,
//!               (+) the simulator's sub-position scatter sigma_xy / sqrt(min(N_e, 16))
//! SS / MS       "clear" truth: S1 >= 10 phd, every vertex >= 10 e, every S2 >= 10 % of the largest
//! energy peak   mean and sd of reco energies (single scatters) clipped at 2.5 sd; sigma = sd / 0.9465
//! ```
//!
//! Salted science files hold salt events that are not in the truth and their
//! event ids may be renumbered: only unsalted files are validated (the
//! catalog's `salted` flag), and every RQ event without a truth event is
//! counted and reported, never matched.
//!
//! ```no_run
//! use tpcflow::validate::{self, FilePair, ValidateConfig};
//! let cfg = ValidateConfig {
//!     pairs: vec![FilePair {
//!         rq: "rq/017391_00000.abc.rq.h5".into(),
//!         truth: "SURF/017391/017391_00000.truth.h5".into(),
//!     }],
//!     out_dir: "validation".into(),
//!     notes: Vec::new(),
//!     calibration: None,
//!     baseline: Vec::new(),
//!     conditions: Vec::new(),
//! };
//! let report = validate::run(&cfg)?;
//! for t in &report.targets {
//!     println!("{} {}", t.name, t.status());
//! }
//! # Ok::<(), tpcflow::validate::ValidateError>(())
//! ```

pub mod cli;
mod markdown;
pub mod metrics;
mod plots;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::conditions::{Conditions, ConditionsError};
use crate::raw::RawError;
use crate::rq::{ColumnData, RqError, RqFile};
use crate::truth::EventTruth;
pub use metrics::ValidationReport;

/// One RQ file and the truth of its raw input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilePair {
    /// RQ file.
    pub rq: PathBuf,
    /// Truth file (`*.truth.h5`).
    pub truth: PathBuf,
}

/// What to validate and where to write the report.
#[derive(Debug, Clone)]
pub struct ValidateConfig {
    /// RQ + truth pairs.
    pub pairs: Vec<FilePair>,
    /// Output directory: `report.md`, `report.json`, `*.svg`.
    pub out_dir: PathBuf,
    /// Lines for the report (e.g. which files were skipped and why).
    pub notes: Vec<String>,
    /// Calibration products against the simulated detector truth, reported
    /// in their own section (`calibrate::truth_check::compare_conditions`).
    pub calibration: Option<crate::calibrate::truth_check::CalibrationVsTruth>,
    /// The same inputs reconstructed with other conditions (e.g. the nominal
    /// light response before calibration): their xy figures are shown beside.
    pub baseline: Vec<FilePair>,
    /// Conditions files the RQ files may have been made with (e.g. those
    /// `tpcflow calibrate` wrote), found by the content hash the RQ file's
    /// lineage records; other RQ files' tags are loaded by name.
    pub conditions: Vec<Conditions>,
}

/// Errors of the validation. Each names the files involved.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// A run's detector truth beside its truth files is unreadable.
    #[error(transparent)]
    DetectorTruth(#[from] crate::sim::detector_truth::TruthError),
    /// Nothing to validate.
    #[error("no RQ files to validate{0}")]
    NoInput(String),
    /// An RQ file could not be read.
    #[error(transparent)]
    Rq(#[from] RqError),
    /// A truth file could not be read.
    #[error("truth file: {0}")]
    Truth(#[from] RawError),
    /// The RQ file lacks a column the validation needs.
    #[error("{path}: no column /{group}/{column}")]
    MissingColumn {
        /// RQ file.
        path: PathBuf,
        /// `events` or `pulses`.
        group: &'static str,
        /// Column name.
        column: &'static str,
    },
    /// The truth file is not the truth of the RQ file's raw input.
    #[error("{truth} is not the truth of {rq}: the RQ file was made from {input} (expected truth {expected})")]
    TruthMismatch {
        /// RQ file.
        rq: PathBuf,
        /// Truth file given.
        truth: PathBuf,
        /// Raw input named in the RQ file.
        input: String,
        /// Truth file name that would match.
        expected: String,
    },
    /// Too few RQ events have a truth event: salted or renumbered.
    #[error("{rq}: only {matched} of {events} events have an event id in {truth} (a salted file, or renumbered events?); validate unsalted files only")]
    FewMatches {
        /// RQ file.
        rq: PathBuf,
        /// Truth file.
        truth: PathBuf,
        /// Events matched.
        matched: usize,
        /// Events in the RQ file.
        events: usize,
    },
    /// Files made with different detector conditions.
    #[error("{path}: conditions `{found}` differ from `{expected}` of the other files; validate them separately")]
    MixedConditions {
        /// RQ file.
        path: PathBuf,
        /// Its tag.
        found: String,
        /// Tag of the first file.
        expected: String,
    },
    /// The conditions named in an RQ file cannot be loaded.
    #[error("{path}: {source} (conditions made by `tpcflow calibrate`: give their file with --conditions)")]
    Conditions {
        /// RQ file.
        path: PathBuf,
        /// Cause.
        source: Box<ConditionsError>,
    },
    /// Writing the report.
    #[error("{path}: {message}")]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        message: String,
    },
}

/// One reconstructed pulse (the columns the validation uses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecoPulse {
    /// 0 other, 1 S1, 2 S2, 3 SE, 4 SPE.
    pub kind: u8,
    /// Area [phd].
    pub area_phd: f64,
    /// Start in the event window [ns].
    pub start_ns: f64,
    /// End in the event window [ns].
    pub end_ns: f64,
}

/// One reconstructed event (the columns the validation uses).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecoEvent {
    /// 0 none, 1 SS, 2 MS, 3 S2 only, 4 S1 only, 5 other.
    pub interaction: u8,
    /// Main S1 pulse index in the event (-1 none).
    pub main_s1: i64,
    /// Main S2 pulse index in the event (-1 none).
    pub main_s2: i64,
    /// Drift time [ns].
    pub drift_time_ns: f64,
    /// x [mm].
    pub x_mm: f64,
    /// y [mm].
    pub y_mm: f64,
    /// z [mm].
    pub z_mm: f64,
    /// Uncertainty of x [mm].
    pub sigma_x_mm: f64,
    /// Uncertainty of y [mm].
    pub sigma_y_mm: f64,
    /// Energy [keV].
    pub energy_kev: f64,
    /// Pulses of the event.
    pub pulses: Vec<RecoPulse>,
}

/// A reconstructed event with its truth.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedEvent {
    /// Index of the file pair.
    pub file: usize,
    /// Truth.
    pub truth: EventTruth,
    /// Reconstruction.
    pub reco: RecoEvent,
}

/// How one file pair matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileMatch {
    /// RQ file.
    pub rq: PathBuf,
    /// Truth file.
    pub truth: PathBuf,
    /// Raw input named in the RQ file.
    pub input_file: String,
    /// Events in the RQ file.
    pub rq_events: usize,
    /// Events in the truth file.
    pub truth_events: usize,
    /// RQ events matched to truth by event id.
    pub matched: usize,
    /// RQ events without truth (salt, or renumbered): skipped.
    pub rq_without_truth: usize,
    /// Truth events without an RQ event.
    pub truth_without_rq: usize,
}

fn column<'a>(
    rq: &'a RqFile,
    path: &Path,
    group: &'static str,
    name: &'static str,
) -> Result<&'a ColumnData, ValidateError> {
    let col = if group == "events" {
        rq.event_column(name)
    } else {
        rq.pulse_column(name)
    };
    col.ok_or_else(|| ValidateError::MissingColumn {
        path: path.to_path_buf(),
        group,
        column: name,
    })
}

fn as_f64(c: &ColumnData) -> Vec<f64> {
    match c {
        ColumnData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        ColumnData::F64(v) => v.clone(),
        ColumnData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        ColumnData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        ColumnData::U64(v) => v.iter().map(|&x| x as f64).collect(),
        ColumnData::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        ColumnData::U16(v) => v.iter().map(|&x| f64::from(x)).collect(),
        ColumnData::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
    }
}

fn as_i64(c: &ColumnData) -> Vec<i64> {
    match c {
        ColumnData::F32(v) => v.iter().map(|&x| x as i64).collect(),
        ColumnData::F64(v) => v.iter().map(|&x| x as i64).collect(),
        ColumnData::I64(v) => v.clone(),
        ColumnData::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
        ColumnData::U64(v) => v.iter().map(|&x| x as i64).collect(),
        ColumnData::U32(v) => v.iter().map(|&x| i64::from(x)).collect(),
        ColumnData::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
        ColumnData::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
    }
}

/// The reconstructed events of an RQ file, keyed by event id, in file order.
///
/// # Errors
/// [`ValidateError::MissingColumn`] naming the file and column.
pub fn reco_events(rq: &RqFile, path: &Path) -> Result<Vec<(u64, RecoEvent)>, ValidateError> {
    let ev = |name| column(rq, path, "events", name);
    let pu = |name| column(rq, path, "pulses", name);
    let ids = as_i64(ev("event_id")?);
    let kind = as_i64(ev("interaction")?);
    let main_s1 = as_i64(ev("main_s1")?);
    let main_s2 = as_i64(ev("main_s2")?);
    let first = as_i64(ev("first_pulse")?);
    let n = as_i64(ev("n_pulses")?);
    let [drift, x, y, z, sx, sy, energy] = [
        "drift_time_ns",
        "x_mm",
        "y_mm",
        "z_mm",
        "sigma_x_mm",
        "sigma_y_mm",
        "energy_kev",
    ]
    .map(|c| ev(c).map(as_f64));
    let (drift, x, y, z, sx, sy, energy) = (drift?, x?, y?, z?, sx?, sy?, energy?);
    let p_kind = as_i64(pu("kind")?);
    let p_area = as_f64(pu("area_phd")?);
    let p_start = as_f64(pu("start_ns")?);
    let p_end = as_f64(pu("end_ns")?);
    let mut out = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        let a = first[i].max(0) as usize;
        let b = (a + n[i].max(0) as usize).min(p_kind.len());
        let pulses = (a.min(b)..b)
            .map(|k| RecoPulse {
                kind: p_kind[k] as u8,
                area_phd: p_area[k],
                start_ns: p_start[k],
                end_ns: p_end[k],
            })
            .collect();
        out.push((
            ids[i] as u64,
            RecoEvent {
                interaction: kind[i] as u8,
                main_s1: main_s1[i],
                main_s2: main_s2[i],
                drift_time_ns: drift[i],
                x_mm: x[i],
                y_mm: y[i],
                z_mm: z[i],
                sigma_x_mm: sx[i],
                sigma_y_mm: sy[i],
                energy_kev: energy[i],
                pulses,
            },
        ));
    }
    Ok(out)
}

/// `017391_00000.raw.h5` or `017391_00000.truth.h5` -> `017391_00000`.
fn file_stem(name: &str) -> &str {
    name.strip_suffix(".raw.h5")
        .or_else(|| name.strip_suffix(".truth.h5"))
        .unwrap_or(name)
}

/// Match the events of one pair. Refuses a truth file of another raw file,
/// and a file where fewer than half of the events have truth.
///
/// # Errors
/// [`ValidateError`] naming both files.
pub fn match_pair(
    index: usize,
    pair: &FilePair,
    rq: &RqFile,
    truth: Vec<EventTruth>,
) -> Result<(FileMatch, Vec<MatchedEvent>), ValidateError> {
    let input = rq.header.input_file.clone();
    let truth_name = pair
        .truth
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if file_stem(&input) != file_stem(&truth_name) {
        return Err(ValidateError::TruthMismatch {
            rq: pair.rq.clone(),
            truth: pair.truth.clone(),
            expected: format!("{}.truth.h5", file_stem(&input)),
            input,
        });
    }
    let events = reco_events(rq, &pair.rq)?;
    let truth_events = truth.len();
    let mut by_id: HashMap<u64, EventTruth> = truth.into_iter().map(|t| (t.event_id, t)).collect();
    let mut matched = Vec::with_capacity(events.len());
    for (id, reco) in events.iter().cloned() {
        if let Some(t) = by_id.remove(&id) {
            matched.push(MatchedEvent {
                file: index,
                truth: t,
                reco,
            });
        }
    }
    if events.is_empty() || 2 * matched.len() < events.len() {
        return Err(ValidateError::FewMatches {
            rq: pair.rq.clone(),
            truth: pair.truth.clone(),
            matched: matched.len(),
            events: events.len(),
        });
    }
    let summary = FileMatch {
        rq: pair.rq.clone(),
        truth: pair.truth.clone(),
        input_file: input,
        rq_events: events.len(),
        truth_events,
        matched: matched.len(),
        rq_without_truth: events.len() - matched.len(),
        truth_without_rq: by_id.len(),
    };
    Ok((summary, matched))
}

/// Run the validation: match, compute, write `report.json`, `report.md` and the SVGs.
///
/// # Errors
/// [`ValidateError`] naming the file at fault.
pub fn run(cfg: &ValidateConfig) -> Result<ValidationReport, ValidateError> {
    if cfg.pairs.is_empty() {
        let why = if cfg.notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", cfg.notes.join("; "))
        };
        return Err(ValidateError::NoInput(why));
    }
    let (files, events, cond) = read_pairs(&cfg.pairs, &cfg.conditions)?;
    let truths = TrueDetectors::beside(&cfg.pairs)?;
    let mut report = metrics::compute(&events, &cond);
    report.files = files;
    report.conditions_tag = cond.tag.clone();
    report.notes.clone_from(&cfg.notes);
    report.calibration.clone_from(&cfg.calibration);
    report.xy_truth = metrics::xy_truth(&events, &cond, &truths.name, &|i| truths.of(i));
    if !cfg.baseline.is_empty() {
        let (_, b_events, b_cond) = read_pairs(&cfg.baseline, &cfg.conditions)?;
        let b_truths = TrueDetectors::beside(&cfg.baseline)?;
        report.xy_baseline = Some(metrics::XyBaseline {
            conditions_tag: b_cond.tag.clone(),
            xy: metrics::xy_report(&b_events, &b_cond),
            truth: metrics::xy_truth(&b_events, &b_cond, &b_truths.name, &|i| b_truths.of(i)),
        });
    }
    write_outputs(cfg, &mut report, &events, &cond)?;
    Ok(report)
}

/// Read and match every pair; all RQ files must share one conditions tag.
fn read_pairs(
    pairs: &[FilePair],
    given: &[Conditions],
) -> Result<(Vec<FileMatch>, Vec<MatchedEvent>, Conditions), ValidateError> {
    let mut files = Vec::new();
    let mut events = Vec::new();
    let mut conditions: Option<Conditions> = None;
    for (i, pair) in pairs.iter().enumerate() {
        let rq = crate::rq::read_rq_file(&pair.rq)?;
        let tag = &rq.header.conditions_tag;
        match &conditions {
            Some(c) if &c.tag != tag => {
                return Err(ValidateError::MixedConditions {
                    path: pair.rq.clone(),
                    found: tag.clone(),
                    expected: c.tag.clone(),
                })
            }
            Some(_) => {}
            None => {
                let sha = rq.header.conditions_sha256();
                let c = match given
                    .iter()
                    .find(|c| sha.as_deref() == Some(c.sha256.as_str()))
                {
                    Some(c) => c.clone(),
                    None => Conditions::load(tag).map_err(|source| ValidateError::Conditions {
                        path: pair.rq.clone(),
                        source: Box::new(source),
                    })?,
                };
                conditions = Some(c);
            }
        }
        let truth = crate::truth::read_truth_file(&pair.truth)?;
        let (summary, matched) = match_pair(i, pair, &rq, truth)?;
        tracing::info!(rq = %pair.rq.display(), matched = summary.matched, "matched to truth");
        files.push(summary);
        events.extend(matched);
    }
    let cond = conditions.ok_or_else(|| ValidateError::NoInput(String::new()))?;
    Ok((files, events, cond))
}

/// The true detector of each file pair: the run's
/// `{run:06}.detector-truth.json` beside its truth file, written by
/// `tpcflow sim --detector-truth` (None for a run simulated without one).
struct TrueDetectors {
    /// Model index of each pair.
    of_pair: Vec<Option<usize>>,
    models: Vec<tpcflow_reco::DetectorModel>,
    /// `realistic (runs 17390, 17392)`; empty without any.
    name: String,
}

impl TrueDetectors {
    fn beside(pairs: &[FilePair]) -> Result<Self, ValidateError> {
        let mut by_path: HashMap<PathBuf, Option<usize>> = HashMap::new();
        let mut models = Vec::new();
        let mut names: Vec<(String, u32)> = Vec::new();
        let mut of_pair = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let name = pair
                .truth
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let run: Option<u32> = name.get(..6).and_then(|r| r.parse().ok());
            let (Some(run), Some(dir)) = (run, pair.truth.parent()) else {
                of_pair.push(None);
                continue;
            };
            let path = dir.join(format!("{run:06}.detector-truth.json"));
            if let Some(&k) = by_path.get(&path) {
                of_pair.push(k);
                continue;
            }
            let k = if path.is_file() {
                let truth = crate::sim::detector_truth::load_path(&path)?;
                models.push(truth.true_model()?);
                names.push((truth.name.clone(), run));
                Some(models.len() - 1)
            } else {
                None
            };
            by_path.insert(path, k);
            of_pair.push(k);
        }
        let name = match names.first() {
            None => String::new(),
            Some((n, _)) => format!(
                "{n} (runs {})",
                names
                    .iter()
                    .map(|(_, r)| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Ok(Self {
            of_pair,
            models,
            name,
        })
    }

    fn of(&self, pair: usize) -> Option<&tpcflow_reco::DetectorModel> {
        self.of_pair
            .get(pair)
            .copied()
            .flatten()
            .map(|k| &self.models[k])
    }
}

fn write_outputs(
    cfg: &ValidateConfig,
    report: &mut ValidationReport,
    events: &[MatchedEvent],
    cond: &Conditions,
) -> Result<(), ValidateError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| ValidateError::Write {
            path,
            message: e.to_string(),
        }
    };
    std::fs::create_dir_all(&cfg.out_dir).map_err(err(&cfg.out_dir))?;
    report.figures = plots::write_all(&cfg.out_dir, report, events, cond)?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| ValidateError::Write {
        path: cfg.out_dir.join("report.json"),
        message: e.to_string(),
    })?;
    write_atomic(&cfg.out_dir.join("report.json"), json.as_bytes())?;
    let md = markdown::render(report);
    write_atomic(&cfg.out_dir.join("report.md"), md.as_bytes())?;
    Ok(())
}

/// Write a report file atomically ([`crate::atomic_file::write`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ValidateError> {
    crate::atomic_file::write(path, bytes).map_err(|e| ValidateError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_of_raw_and_truth_names() {
        assert_eq!(file_stem("017391_00000.raw.h5"), "017391_00000");
        assert_eq!(file_stem("017391_00000.truth.h5"), "017391_00000");
        assert_ne!(
            file_stem("017391_00000.raw.h5"),
            file_stem("017390_00000.truth.h5")
        );
    }
}
