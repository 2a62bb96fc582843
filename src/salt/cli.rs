//! The `tpcflow salt` and `tpcflow unsalt` command lines.
//!
//! ```text
//! tpcflow salt keygen --key KEY --vault DIR --rate 0.05   # once, by the blinding coordinator
//! tpcflow salt --catalog C --data-root D --key KEY --vault DIR   # one pass (the dispatcher's stage)
//! tpcflow unsalt --key KEY --vault DIR --files A.rq.h5 ...       # explicit, logged unblinding
//! tpcflow unsalt --key KEY --vault DIR --campaign NAME --catalog C
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::unsalt::{UnsaltConfig, UnsaltInputs};
use super::SaltConfig;
use crate::catalog::Catalog;
use crate::exit::{self, ExitError};

/// Arguments of `tpcflow salt`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SaltArgs {
    /// `keygen`; without a subcommand, one salting pass.
    #[command(subcommand)]
    pub command: Option<SaltCommand>,
    /// Catalog SQLite file.
    #[arg(long, env = "TPCFLOW_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Data root holding one directory per site (salting rewrites files under SURF).
    #[arg(long, env = "TPCFLOW_DATA_ROOT")]
    pub data_root: Option<PathBuf>,
    /// SURF root (overrides DATA_ROOT/SURF).
    #[arg(long)]
    pub surf_root: Option<PathBuf>,
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Conditions for the salt events of every file (a catalog tag, a built-in
    /// tag or a TOML file); default: the tag in force for each file's run in
    /// the catalog, or the file's own conditions_tag when none is.
    #[arg(long)]
    pub conditions: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Key file and vault directory.
#[derive(Debug, Clone, clap::Args)]
pub struct VaultArgs {
    /// Key file (64 hex digits, mode 0600).
    #[arg(long, env = "TPCFLOW_SALT_KEY")]
    pub key: Option<PathBuf>,
    /// Vault directory (salt identities, encrypted; mode 0700).
    #[arg(long, env = "TPCFLOW_VAULT")]
    pub vault: Option<PathBuf>,
}

impl VaultArgs {
    fn resolve(&self) -> Result<(PathBuf, PathBuf)> {
        let key = self.key.clone().context("--key is required")?;
        let vault = self.vault.clone().context("--vault is required")?;
        Ok((key, vault))
    }
}

/// Subcommands of `tpcflow salt`.
#[derive(Debug, clap::Subcommand)]
pub enum SaltCommand {
    /// Create a key file (mode 0600) and the vault with its hidden salt rate.
    Keygen {
        #[command(flatten)]
        vault: VaultArgs,
        /// Mean salt events per real event, 0-1 (kept only in the encrypted vault).
        #[arg(long, value_parser = crate::cli_bounds::float_in(0.0, 1.0))]
        rate: f64,
    },
}

/// Arguments of `tpcflow unsalt`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["files", "campaign"])))]
pub struct UnsaltArgs {
    #[command(flatten)]
    pub vault: VaultArgs,
    /// RQ files made from salted raw files.
    #[arg(long, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Every catalogued RQ output of this campaign (needs --catalog).
    #[arg(long, requires = "catalog")]
    pub campaign: Option<String>,
    /// Catalog SQLite file (with --campaign).
    #[arg(long, env = "TPCFLOW_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Root of relative RQ paths in the catalog (default: the catalog's directory).
    #[arg(long)]
    pub rq_root: Option<PathBuf>,
    /// Directory for the unsalted RQ files (default: beside each input).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `tpcflow salt`.
///
/// # Errors
/// Missing arguments, key, vault, catalog and file errors.
pub fn run_salt(a: SaltArgs) -> Result<()> {
    if let Some(SaltCommand::Keygen { vault, rate }) = a.command {
        let (key, dir) = vault.resolve()?;
        super::vault::keygen(&key, &dir, rate)?;
        println!(
            "salt keygen: key {} (mode 0600), vault {} (mode 0700); the rate is stored only in the vault",
            key.display(),
            dir.display()
        );
        return Ok(());
    }
    let (key_file, vault_dir) = a.vault.resolve()?;
    let catalog_path = a.catalog.context("--catalog is required")?;
    let surf_root = match (a.surf_root, a.data_root) {
        (Some(s), _) => s,
        (None, Some(d)) => d.join("SURF"),
        (None, None) => anyhow::bail!("--data-root or --surf-root is required"),
    };
    let catalog = Catalog::open(&catalog_path)?;
    let cfg = SaltConfig {
        surf_root,
        key_file,
        vault_dir,
        conditions: a
            .conditions
            .map_or(super::SaltConditions::InForce, super::SaltConditions::Fixed),
    };
    let report = super::run(&cfg, &catalog)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "salt: {} science file(s) salted ({} events, {:.1} MB), {} recovered, {} calibration file(s) bypassed, {} skipped in {:.2} s",
            report.files_salted,
            report.events,
            report.bytes as f64 / 1e6,
            report.files_recovered,
            report.calibration_bypassed,
            report.skipped.len(),
            report.seconds
        );
        for s in &report.skipped {
            println!("  skipped {}: {}", s.file, s.reason);
        }
    }
    if report.skipped.is_empty() {
        Ok(())
    } else {
        Err(ExitError::new(
            exit::PARTIAL_FAILURE,
            format!("{} file(s) not salted", report.skipped.len()),
        )
        .into())
    }
}

/// Run `tpcflow unsalt`.
///
/// # Errors
/// Key, vault, RQ and catalog errors.
pub fn run_unsalt(a: UnsaltArgs) -> Result<()> {
    let (key_file, vault_dir) = a.vault.resolve()?;
    let inputs = match a.campaign {
        Some(name) => UnsaltInputs::Campaign {
            catalog: a.catalog.context("--campaign needs --catalog")?,
            name,
            rq_root: a.rq_root,
        },
        None => UnsaltInputs::Files(a.files),
    };
    let cfg = UnsaltConfig {
        key_file,
        vault_dir: vault_dir.clone(),
        inputs,
        out_dir: a.out_dir,
    };
    let done = super::unsalt::run(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(());
    }
    println!(
        "unsalt: UNBLINDING of {} RQ file(s), logged in {}",
        done.len(),
        vault_dir.join(super::vault::UNSALT_LOG_NAME).display()
    );
    for f in &done {
        println!(
            "{} -> {}: {} -> {} events; salt events of {}:",
            f.input.display(),
            f.output.display(),
            f.events_in,
            f.events_out,
            f.raw_file
        );
        println!(
            "  {:>9} {:>16} {:>9} {:>8} {:>8} {:>8} {:>3}",
            "event_id", "trigger_time_ns", "E_keV", "x_mm", "y_mm", "z_mm", "nv"
        );
        for s in &f.salt_events {
            println!(
                "  {:>9} {:>16} {:>9.2} {:>8.1} {:>8.1} {:>8.1} {:>3}",
                s.event_id, s.trigger_time_ns, s.energy_kev, s.x_mm, s.y_mm, s.z_mm, s.n_vertices
            );
        }
    }
    Ok(())
}
