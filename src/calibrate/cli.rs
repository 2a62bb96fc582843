//! `tpcflow calibrate` arguments.
//!
//! ```text
//! tpcflow calibrate --rq FILES... --out DIR --tag TAG [--runs 17390] [--truth FILE] [--json]
//! tpcflow calibrate --runs 17390-17392 --catalog CATALOG [--campaign prompt-v1] --out DIR --tag TAG
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Measure detector-health products from reconstructed Kr83m calibration runs.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// RQ files of the calibration run(s).
    #[arg(long, num_args = 1.., required_unless_present = "catalog", conflicts_with = "catalog")]
    pub rq: Vec<PathBuf>,
    /// Catalog in which to find the RQ files of --runs (those of --campaign).
    #[arg(long, requires = "runs")]
    pub catalog: Option<PathBuf>,
    /// Campaign whose RQ files are used with --catalog.
    #[arg(long, default_value = "prompt-v1")]
    pub campaign: String,
    /// Output directory: conditions.toml, report.md and SVG figures.
    #[arg(long)]
    pub out: PathBuf,
    /// Conditions the RQ files were reconstructed with (tag or file).
    #[arg(long, default_value = "v1")]
    pub base_conditions: String,
    /// Tag of the new conditions.
    #[arg(long)]
    pub tag: String,
    /// Runs of the files (provenance; with --catalog, the runs whose RQ files
    /// are used): numbers or inclusive ranges, e.g. `17390 17392-17395`.
    #[arg(long, num_args = 1..)]
    pub runs: Vec<String>,
    /// Simulated runs: the conditions file the simulator ran with; the report
    /// then compares each product with it.
    #[arg(long)]
    pub truth: Option<String>,
    /// Print the products as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `tpcflow calibrate`.
///
/// # Errors
/// When a product cannot be measured or the outputs cannot be written.
pub fn run_calibrate(a: CalibrateArgs) -> Result<()> {
    let runs = super::rq_lookup::parse_runs(&a.runs)?;
    let rq_files = match &a.catalog {
        Some(catalog) => super::rq_lookup::rq_files_of_runs(catalog, &a.campaign, &runs)?,
        None => a.rq,
    };
    let opts = super::Options {
        rq_files,
        out: a.out.clone(),
        base_conditions: a.base_conditions,
        tag: a.tag,
        runs,
        truth: a.truth,
    };
    let p = super::run(&opts).with_context(|| format!("calibrating into {}", a.out.display()))?;
    if a.json {
        let v = serde_json::json!({
            "lifetime": p.lifetime,
            "se": p.se,
            "dead_channels": p.gains.dead,
            "noisy_channels": p.gains.noisy,
            "spe_threshold": p.gains.threshold,
            "spe_area_noise_phe": p.gains.area_noise_phe,
            "liquid_level": p.liquid.as_ref().ok(),
            "uniformity_base": p.uniformity_base,
            "uniformity_measured": p.uniformity_measured,
            "energy_scale": p.energy_scale,
            "kr83m_peak_kev": p.kr_peak,
            "rates": p.rates,
            "light_response": p.lrf.as_ref().ok(),
            "seconds": p.seconds,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "calibrate: {} events, lifetime {:.0} us (1/tau +- {:.1} %), SE {:.2} phd, {} dead, {} noisy, in {:.1} s -> {}",
            p.inputs.n_events,
            p.lifetime.lifetime_us,
            100.0 * p.lifetime.sigma_inverse_lifetime_per_ms / p.lifetime.inverse_lifetime_per_ms,
            p.se.gain_phd,
            p.gains.dead.len(),
            p.gains.noisy.len(),
            p.seconds,
            a.out.display()
        );
    }
    Ok(())
}
