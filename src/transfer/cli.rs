//! `tpcflow transfer`: one pass of the data mover from the command line;
//! exit 3 when a replica went bad or a destination was full.

use anyhow::Result;

use super::{TransferConfig, DEFAULT_MAX_ATTEMPTS};
use crate::catalog::cli::{print_json, CatalogPathArg, SiteArgs};
use crate::catalog::{Catalog, Site};
use crate::exit::{self, ExitError};

/// `tpcflow transfer`: one pass of the data mover.
#[derive(Debug, clap::Args)]
pub struct TransferArgs {
    #[command(flatten)]
    db: CatalogPathArg,
    #[command(flatten)]
    sites: SiteArgs,
    /// Destination sites, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "USDC,UKDC,ARCHIVE")]
    to: Vec<Site>,
    /// Concurrent copies (1-256).
    #[arg(long, default_value_t = 4, value_parser = crate::cli_bounds::usize_in(1, 256))]
    parallel: usize,
    /// A replica is marked bad after this many failed attempts (1-1000).
    #[arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_attempts: u32,
    /// Re-queue bad and lost replicas with a fresh retry budget first.
    #[arg(long)]
    retry_failed: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Run `tpcflow transfer`: exit 3 (partial failure) when a replica went bad
/// or a destination was full.
///
/// # Errors
/// Configuration and catalog errors; [`ExitError`] for bad replicas.
pub fn run_transfer(a: TransferArgs) -> Result<()> {
    let catalog = Catalog::open(&a.db.catalog)?;
    let cfg = TransferConfig {
        sites: a.sites.resolve()?,
        destinations: a.to,
        max_attempts: a.max_attempts.max(1),
        parallel: a.parallel.max(1),
        retry_failed: a.retry_failed,
        require_salted: false,
    };
    let report = crate::transfer::run(&cfg, &catalog)?;
    if a.json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    if report.failures.is_empty() && report.out_of_space.is_empty() {
        Ok(())
    } else {
        Err(ExitError::new(
            exit::PARTIAL_FAILURE,
            format!(
                "{} replicas marked bad, {} left queued on a full destination",
                report.failures.len(),
                report.out_of_space.len()
            ),
        )
        .into())
    }
}
