//! `tpcflow retire`: one pass of the retention stage at SURF from the
//! command line; exit 3 when a candidate was kept because a replica failed
//! its re-read.

use anyhow::Result;

use crate::catalog::cli::{print_json, CatalogPathArg, SiteArgs};
use crate::catalog::{Catalog, Site};
use crate::exit::{self, ExitError};

/// `tpcflow retire`: one pass of the retention stage.
#[derive(Debug, clap::Args)]
pub struct RetireArgs {
    #[command(flatten)]
    db: CatalogPathArg,
    #[command(flatten)]
    sites: SiteArgs,
    /// Site whose copies are retired (only SURF, the DAQ buffer).
    #[arg(long)]
    site: Site,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Grace period after a file arrived [s].
    #[arg(long, default_value_t = crate::retire::DEFAULT_GRACE_S)]
    grace_s: f64,
    /// Destination checksums read longer ago than this are read again [s].
    #[arg(long, default_value_t = crate::retire::DEFAULT_MAX_CHECKSUM_AGE_S)]
    max_checksum_age_s: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Run `tpcflow retire`: exit 3 when a candidate was kept because a replica
/// failed its re-read.
///
/// # Errors
/// Configuration, lock, catalog and file errors; [`ExitError`] as above.
pub fn run_retire(a: RetireArgs) -> Result<()> {
    if a.site != Site::Surf {
        return Err(ExitError::new(
            exit::USAGE,
            format!(
                "--site {}: only SURF copies are retired (the DAQ buffer)",
                a.site
            ),
        )
        .into());
    }
    let catalog = Catalog::open(&a.db.catalog)?;
    let cfg = crate::retire::RetireConfig {
        sites: a.sites.resolve()?,
        settings: crate::retire::RetentionSettings {
            enabled: true,
            grace_s: a.grace_s,
            max_checksum_age_s: a.max_checksum_age_s,
        },
        dry_run: a.dry_run,
    };
    let report = crate::retire::run(&cfg, &catalog)?;
    if a.json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    if report.kept.is_empty() {
        Ok(())
    } else {
        Err(ExitError::new(
            exit::PARTIAL_FAILURE,
            format!("{} SURF copies kept (see KEPT)", report.kept.len()),
        )
        .into())
    }
}
