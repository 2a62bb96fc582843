//! `tpcflow audit`: compare a site's storage with the catalog from the
//! command line; exit 3 on discrepancies, 1 when it refused to mark.

use anyhow::Result;

use super::{AuditConfig, DEFAULT_MAX_MISSING_FRACTION};
use crate::catalog::cli::{print_json, CatalogPathArg, SiteArgs};
use crate::catalog::{Catalog, Site};
use crate::exit::{self, ExitError};

/// `tpcflow audit`: compare a site's storage with the catalog.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    db: CatalogPathArg,
    #[command(flatten)]
    sites: SiteArgs,
    /// Site to audit.
    #[arg(long)]
    site: Site,
    /// Mark nothing when more than this fraction (0-1) of verified replicas are lost or bad.
    #[arg(long, default_value_t = DEFAULT_MAX_MISSING_FRACTION,
          value_parser = crate::cli_bounds::float_in(0.0, 1.0))]
    max_missing_fraction: f64,
    /// Compare sizes only (skip reading files for Adler-32).
    #[arg(long)]
    size_only: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Run `tpcflow audit`: exit 3 when discrepancies were found, 1 when it refused to mark.
///
/// # Errors
/// Configuration, listing and catalog errors; [`ExitError`] as above.
pub fn run_audit(a: AuditArgs) -> Result<()> {
    let catalog = Catalog::open(&a.db.catalog)?;
    let cfg = AuditConfig {
        site: a.site,
        sites: a.sites.resolve()?,
        max_missing_fraction: a.max_missing_fraction,
        verify_checksums: !a.size_only,
    };
    let report = crate::audit::run(&cfg, &catalog)?;
    if a.json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    if let Some(why) = report.refused {
        return Err(ExitError::new(exit::FAILURE, why).into());
    }
    if !report.is_clean() {
        let msg = format!(
            "{} dark, {} lost, {} bad at {}",
            report.dark.len(),
            report.lost.len(),
            report.bad.len(),
            a.site
        );
        return Err(ExitError::new(exit::PARTIAL_FAILURE, msg).into());
    }
    Ok(())
}
