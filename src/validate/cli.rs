//! `tpcflow validate`: by run from the catalog, or explicit RQ + truth pairs.
//!
//! ```text
//! tpcflow validate --runs 17391 17390 --catalog cat.sqlite --data-root /data [--campaign prompt-v1] [--out DIR]
//! tpcflow validate --rq a.rq.h5 b.rq.h5 --truth a.truth.h5 b.truth.h5 [--out DIR]
//!     [--calibration CAL/conditions.toml [--detector-truth SURF/017390/017390.detector-truth.json]]
//! ```
//! With `--calibration`, the report adds a section comparing each product of
//! `tpcflow calibrate` with the simulated run's detector truth.
//!
//! By run: the campaign's outputs (same lineage hash) of each raw file of the
//! runs; the truth file beside the raw file's SURF replica. Salted files are
//! skipped (their salt events have no truth and ids may be renumbered).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{FilePair, ValidateConfig};
use crate::catalog::cli::SiteArgs;
use crate::catalog::{Catalog, Site};
use crate::exit::{self, ExitError};

/// Arguments of `tpcflow validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Runs to validate (their RQ outputs from the catalog).
    #[arg(long, num_args = 1.., conflicts_with_all = ["rq", "truth"])]
    pub runs: Vec<u32>,
    /// Catalog SQLite file (with --runs).
    #[arg(long, env = "TPCFLOW_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Campaign whose outputs are validated (with --runs).
    #[arg(long, default_value = "prompt-v1")]
    pub campaign: String,
    #[command(flatten)]
    pub sites: SiteArgs,
    /// RQ files (explicit pairs, with --truth in the same order).
    #[arg(long, num_args = 1..)]
    pub rq: Vec<PathBuf>,
    /// Truth files, one per --rq.
    #[arg(long, num_args = 1..)]
    pub truth: Vec<PathBuf>,
    /// Output directory for report.md, report.json and the SVG figures.
    #[arg(long, default_value = "validation")]
    pub out: PathBuf,
    /// Print report.json to stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Conditions written by `tpcflow calibrate`: the report then compares
    /// each product with the simulated detector truth.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// The simulated run's detector truth (`{run:06}.detector-truth.json`);
    /// with --runs, by default the one beside the first run's raw files.
    #[arg(long, requires = "calibration")]
    pub detector_truth: Option<PathBuf>,
    /// RQ files of the same raw inputs reconstructed with other conditions
    /// (e.g. the nominal light response, before calibration): their xy
    /// resolution is reported and drawn beside. Each is paired with the
    /// truth of its raw input by file name (`{run:06}_{seq:05}.*`).
    #[arg(long, num_args = 1..)]
    pub baseline_rq: Vec<PathBuf>,
    /// Conditions files the RQ files were made with when their tag is not a
    /// built-in one (e.g. `conditions.toml` written by `tpcflow calibrate`);
    /// matched to each RQ file by the content hash in its lineage.
    #[arg(long, num_args = 1..)]
    pub conditions: Vec<PathBuf>,
}

/// `017391_00000.abc.rq.h5` or `017391_00000.truth.h5` -> `017391_00000`.
fn run_seq(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    Some(name.split('.').next()?.to_string())
}

/// Pair each baseline RQ file with the truth of the same raw input.
fn baseline_pairs(rq: &[PathBuf], pairs: &[FilePair]) -> Result<Vec<FilePair>> {
    rq.iter()
        .map(|b| {
            let key = run_seq(b);
            pairs
                .iter()
                .find(|p| key.is_some() && run_seq(&p.truth) == key)
                .map(|p| FilePair {
                    rq: b.clone(),
                    truth: p.truth.clone(),
                })
                .ok_or_else(|| {
                    usage(format!(
                        "--baseline-rq {}: no validated input has its run and sequence number",
                        b.display()
                    ))
                })
        })
        .collect()
}

/// The calibration products against the truth, for `--calibration`.
///
/// # Errors
/// Unreadable conditions or truth (naming the file).
fn calibration_vs_truth(
    calibration: &Path,
    truth: &Path,
) -> Result<crate::calibrate::truth_check::CalibrationVsTruth> {
    let spec = calibration
        .to_str()
        .with_context(|| format!("{}: not a UTF-8 path", calibration.display()))?;
    let measured = crate::conditions::Conditions::load(spec)
        .with_context(|| format!("--calibration {}", calibration.display()))?;
    let text = std::fs::read_to_string(truth)
        .with_context(|| format!("--detector-truth {}", truth.display()))?;
    let truth_run: crate::sim::detector_truth::EffectiveTruth = serde_json::from_str(&text)
        .with_context(|| {
            format!(
                "--detector-truth {}: not a detector-truth JSON",
                truth.display()
            )
        })?;
    crate::calibrate::truth_check::compare_conditions(&measured, &truth_run)
        .with_context(|| format!("--calibration {}: base conditions", calibration.display()))
}

fn usage(message: String) -> anyhow::Error {
    ExitError::new(exit::USAGE, message).into()
}

/// The file pairs of runs from the catalog, with notes of what was skipped.
///
/// # Errors
/// Unknown campaign, unreadable catalog, or no SURF location.
pub fn pairs_from_catalog(
    catalog: &Catalog,
    campaign: &str,
    surf_root: &Path,
    runs: &[u32],
) -> Result<(Vec<FilePair>, Vec<String>)> {
    let c = catalog
        .campaign_by_name(campaign)?
        .with_context(|| format!("{}: no campaign `{campaign}`", catalog.path().display()))?;
    let rq_root = catalog
        .path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut pairs = Vec::new();
    let mut notes = vec![format!(
        "RQ files of campaign `{campaign}` (lineage {}) for run(s) {runs:?}",
        c.lineage_hash
    )];
    for &run in runs {
        let files = catalog.files_of_run(run)?;
        if files.is_empty() {
            notes.push(format!("run {run}: no raw files in the catalog"));
        }
        let (mut salted, mut no_output, mut no_truth) = (0, 0, Vec::new());
        for f in files {
            if f.salted {
                salted += 1;
                continue;
            }
            let Some(out) = catalog
                .outputs_of(f.id)?
                .into_iter()
                .find(|o| o.lineage_hash == c.lineage_hash)
            else {
                no_output += 1;
                continue;
            };
            let rel = catalog
                .replicas_of(f.id)?
                .into_iter()
                .find(|r| r.site == Site::Surf)
                .map_or_else(|| format!("{run:06}/{}", f.name), |r| r.path);
            let truth = crate::raw::truth_path_for(&surf_root.join(rel));
            if !truth.exists() {
                no_truth.push(truth.display().to_string());
                continue;
            }
            pairs.push(FilePair {
                rq: rq_root.join(out.rq_path),
                truth,
            });
        }
        if salted > 0 {
            notes.push(format!(
                "run {run}: {salted} salted file(s) skipped (salt events have no truth; ids may be renumbered)"
            ));
        }
        if no_output > 0 {
            notes.push(format!(
                "run {run}: {no_output} file(s) without an output of `{campaign}` skipped"
            ));
        }
        if !no_truth.is_empty() {
            notes.push(format!(
                "run {run}: {} file(s) without truth skipped (e.g. {})",
                no_truth.len(),
                no_truth[0]
            ));
        }
    }
    Ok((pairs, notes))
}

/// Run `tpcflow validate`.
///
/// # Errors
/// Bad arguments (exit code `USAGE`), unreadable inputs or a mismatched truth file.
pub fn run_validate(a: ValidateArgs) -> Result<()> {
    let mut default_truth = None;
    let (pairs, notes) = if !a.runs.is_empty() {
        let Some(path) = &a.catalog else {
            return Err(usage("--runs needs --catalog (or TPCFLOW_CATALOG)".into()));
        };
        let sites = a.sites.resolve()?;
        let surf = sites
            .get(Site::Surf)
            .map_err(|e| {
                usage(format!(
                    "--runs needs the SURF site (--data-root or --site-root SURF=DIR): {e}"
                ))
            })?
            .root
            .clone();
        let catalog = Catalog::open(path)?;
        default_truth = Some(crate::sim::detector_truth::path_for_run(&surf, a.runs[0]));
        pairs_from_catalog(&catalog, &a.campaign, &surf, &a.runs)?
    } else if !a.rq.is_empty() {
        if a.rq.len() != a.truth.len() {
            return Err(usage(format!(
                "{} --rq file(s) but {} --truth file(s): give one truth file per RQ file, in the same order",
                a.rq.len(),
                a.truth.len()
            )));
        }
        let pairs =
            a.rq.iter()
                .zip(&a.truth)
                .map(|(rq, truth)| FilePair {
                    rq: rq.clone(),
                    truth: truth.clone(),
                })
                .collect();
        (pairs, vec!["explicit RQ + truth pairs".to_string()])
    } else {
        return Err(usage(
            "give --runs (with --catalog) or --rq with --truth".into(),
        ));
    };
    let calibration = match (&a.calibration, a.detector_truth.as_ref().or(default_truth.as_ref())) {
        (Some(c), Some(t)) => Some(calibration_vs_truth(c, t)?),
        (Some(_), None) => {
            return Err(usage(
                "--calibration needs --detector-truth (or --runs, whose truth lies beside the raw files)"
                    .into(),
            ))
        }
        (None, _) => None,
    };
    let baseline = baseline_pairs(&a.baseline_rq, &pairs)?;
    let conditions = a
        .conditions
        .iter()
        .map(|p| {
            let spec = p.to_str().context("--conditions: a UTF-8 path")?;
            crate::conditions::Conditions::load(spec)
                .with_context(|| format!("--conditions {}", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let cfg = ValidateConfig {
        pairs,
        out_dir: a.out.clone(),
        notes,
        calibration,
        baseline,
        conditions,
    };
    let report = super::run(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "validate: {} events matched in {} file(s); report {}",
        report.matched_events,
        report.files.len(),
        a.out.join("report.md").display()
    );
    for t in &report.targets {
        println!("  {:<18} {:<22} {}", t.name, t.status(), t.measured);
    }
    Ok(())
}
