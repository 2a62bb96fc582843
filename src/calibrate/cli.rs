//! `tpcflow calibrate` arguments.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Measure detector-health products from reconstructed Kr83m calibration runs.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// RQ files of the calibration run(s).
    #[arg(long, num_args = 1.., required = true)]
    pub rq: Vec<PathBuf>,
    /// Output directory: conditions.toml, report.md and SVG figures.
    #[arg(long)]
    pub out: PathBuf,
    /// Conditions the RQ files were reconstructed with (tag or file).
    #[arg(long, default_value = "v1")]
    pub base_conditions: String,
    /// Tag of the new conditions.
    #[arg(long)]
    pub tag: String,
    /// Run numbers of the files (provenance).
    #[arg(long, num_args = 1..)]
    pub runs: Vec<u32>,
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
    let opts = super::Options {
        rq_files: a.rq,
        out: a.out.clone(),
        base_conditions: a.base_conditions,
        tag: a.tag,
        runs: a.runs,
        truth: a.truth,
    };
    let p = super::run(&opts).with_context(|| format!("calibrating into {}", a.out.display()))?;
    if a.json {
        let v = serde_json::json!({
            "lifetime": p.lifetime,
            "se": p.se,
            "dead_channels": p.gains.dead,
            "noisy_channels": p.gains.noisy,
            "liquid_level": p.liquid.as_ref().ok(),
            "uniformity_base": p.uniformity_base,
            "uniformity_measured": p.uniformity_measured,
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
