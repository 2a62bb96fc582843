//! `tpcflow catalog init|ingest|runs|files|show|blind|unblind|blinding`, and
//! the arguments every data-management command shares: the catalog path and
//! the site locations ([`CatalogPathArg`], [`SiteArgs`]). The commands of the
//! stages (`tpcflow transfer`, `audit`, `retire`, `conditions`, `site`) are
//! in each stage's `cli` module.
//!
//! The argument structs are flattened into the `tpcflow` binary's command
//! line; each `run_*` function resolves them into a stage config once, runs
//! the stage and prints its report (text, or JSON with `--json`).
//!
//! Sites default to directories under a data root (`--data-root DIR`, env
//! `TPCFLOW_DATA_ROOT`: `DIR/SURF`, `DIR/USDC`, `DIR/UKDC`, `DIR/ARCHIVE`);
//! `--site USDC=/path` moves one, `--copy-command 'UKDC=rsync -a {src} {dst}'`
//! makes the mover run a command for it. The catalog is `--catalog PATH`
//! (env `TPCFLOW_CATALOG`).

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{utc_string, Catalog, Site};
use crate::catalog::ingest::IngestConfig;
use crate::exit::{self, ExitError};
use crate::transfer::{parse_site_assignment, Sites};

/// The catalog file.
#[derive(Debug, Clone, clap::Args)]
pub struct CatalogPathArg {
    /// Catalog SQLite file.
    #[arg(long, env = "TPCFLOW_CATALOG")]
    pub catalog: PathBuf,
}

/// Where the sites are.
#[derive(Debug, Clone, clap::Args)]
pub struct SiteArgs {
    /// Data root holding one directory per site (SURF, USDC, UKDC, ARCHIVE).
    #[arg(long, env = "TPCFLOW_DATA_ROOT")]
    pub data_root: Option<PathBuf>,
    /// A site's root directory, SITE=DIR (repeatable; overrides --data-root).
    #[arg(long = "site-root", value_name = "SITE=DIR")]
    pub site_roots: Vec<String>,
    /// A copy-command template for a site, 'SITE=cmd {src} {dst}' (repeatable).
    #[arg(long = "copy-command", value_name = "SITE=TEMPLATE")]
    pub copy_commands: Vec<String>,
}

impl SiteArgs {
    /// Resolve into site locations.
    ///
    /// # Errors
    /// When a SITE=VALUE does not parse or a command names an unplaced site.
    pub fn resolve(&self) -> Result<Sites> {
        let mut sites = self
            .data_root
            .as_deref()
            .map(Sites::under)
            .unwrap_or_default();
        for spec in &self.site_roots {
            let (site, dir) = parse_site_assignment(spec).context("--site-root")?;
            sites.set_root(site, PathBuf::from(dir));
        }
        for spec in &self.copy_commands {
            let (site, template) = parse_site_assignment(spec).context("--copy-command")?;
            sites
                .set_copy_command(site, &template)
                .context("--copy-command")?;
        }
        Ok(sites)
    }
}

/// `tpcflow catalog ...`
#[derive(Debug, clap::Subcommand)]
pub enum CatalogCommand {
    /// Create the catalog (or migrate it to the current schema).
    Init {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register new complete raw files found at SURF (idempotent).
    Ingest {
        #[command(flatten)]
        db: CatalogPathArg,
        #[command(flatten)]
        sites: SiteArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List runs with file counts.
    Runs {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the raw files of a run.
    Files {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Run number.
        #[arg(long)]
        run: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Blind the catalog: from now on no science file is placed unsalted (logged).
    Blind {
        #[command(flatten)]
        db: CatalogPathArg,
        #[command(flatten)]
        decision: BlindingDecisionArgs,
    },
    /// Unblind the catalog (refused without --confirm-unblind; logged with who and why).
    Unblind {
        #[command(flatten)]
        db: CatalogPathArg,
        #[command(flatten)]
        decision: BlindingDecisionArgs,
        /// Required: unblinding lets unsalted science files leave SURF.
        #[arg(long)]
        confirm_unblind: bool,
    },
    /// Show whether the catalog is blinded and every blinding decision.
    Blinding {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one raw file (name, path or id) with its replicas and outputs.
    Show {
        #[command(flatten)]
        db: CatalogPathArg,
        /// File name (`017400_00003.raw.h5`), a path ending in it, or a catalog id.
        file: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Who decides about blinding, and why.
#[derive(Debug, Clone, clap::Args)]
pub struct BlindingDecisionArgs {
    /// Who decides (default: $USER).
    #[arg(long, env = "USER")]
    pub by: Option<String>,
    /// Why (recorded in the catalog).
    #[arg(long)]
    pub reason: String,
}

/// Print `value` as pretty JSON on stdout (the commands' `--json`).
///
/// # Errors
/// When it does not serialize.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Run a `tpcflow catalog` subcommand.
///
/// # Errors
/// Catalog, listing or checksum errors, with the file named.
pub fn run_catalog(cmd: CatalogCommand) -> Result<()> {
    match cmd {
        CatalogCommand::Init { db, json } => {
            let c = Catalog::init(&db.catalog)?;
            let version = c.schema_version()?;
            if json {
                print_json(&serde_json::json!({"catalog": db.catalog, "schema_version": version}))?;
            } else {
                println!(
                    "catalog {} ready (schema version {version})",
                    db.catalog.display()
                );
            }
        }
        CatalogCommand::Ingest { db, sites, json } => {
            let catalog = Catalog::open(&db.catalog)?;
            let surf_root = sites.resolve()?.get(Site::Surf)?.root.clone();
            let report = super::ingest::run(&IngestConfig { surf_root }, &catalog)?;
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "ingest: {} new files ({:.1} MB, {:.1} MB/s checksummed), {} already known, \
                     {} in progress, {} ignored, {} runs, {:.2} s; latency mean {} max {}",
                    report.files_registered,
                    report.bytes_registered as f64 / 1e6,
                    report.mb_per_s,
                    report.files_known,
                    report.files_in_progress,
                    report.files_ignored,
                    report.runs_seen,
                    report.seconds,
                    report
                        .latency_mean_s
                        .map_or("-".into(), |s| format!("{s:.1} s")),
                    report
                        .latency_max_s
                        .map_or("-".into(), |s| format!("{s:.1} s")),
                );
            }
        }
        CatalogCommand::Runs { db, json } => {
            let runs = Catalog::open(&db.catalog)?.runs()?;
            if json {
                return print_json(&runs);
            }
            println!(
                "{:>7} {:<11} {:<20} {:<10} {:>6} {:>10} {:>11} {:>8}",
                "run", "type", "start", "conditions", "files", "MB", "transferred", "bad/lost"
            );
            for r in runs {
                println!(
                    "{:>7} {:<11} {:<20} {:<10} {:>6} {:>10.1} {:>11} {:>8}",
                    r.number,
                    r.run_type.as_str(),
                    r.start_time.as_deref().unwrap_or("-"),
                    r.conditions.as_deref().unwrap_or("-"),
                    r.files,
                    r.bytes as f64 / 1e6,
                    r.files_transferred,
                    r.replicas_bad_or_lost
                );
            }
        }
        CatalogCommand::Files { db, run, json } => {
            let files = Catalog::open(&db.catalog)?.files_of_run(run)?;
            if json {
                return print_json(&files);
            }
            println!(
                "{:>6} {:<22} {:>10} {:<8} {:<11} {:>8} {:<6}",
                "id", "name", "bytes", "adler32", "state", "attempts", "salted"
            );
            for f in files {
                println!(
                    "{:>6} {:<22} {:>10} {:<8} {:<11} {:>8} {:<6}",
                    f.id,
                    f.name,
                    f.size_bytes,
                    f.adler32,
                    f.state.as_str(),
                    f.attempts,
                    f.salted
                );
            }
        }
        CatalogCommand::Blind { db, decision } => {
            let catalog = Catalog::open(&db.catalog)?;
            let by = decision.by.context("say who decides with --by")?;
            if catalog.set_blinding(true, &by, &decision.reason)? {
                println!(
                    "catalog {} BLINDED by {by} at {}: {} (science files are placed only once salted)",
                    db.catalog.display(),
                    utc_string(super::now_unix_s()),
                    decision.reason
                );
            } else {
                println!("catalog {} is already blinded", db.catalog.display());
            }
        }
        CatalogCommand::Unblind {
            db,
            decision,
            confirm_unblind,
        } => {
            let catalog = Catalog::open(&db.catalog)?;
            if !confirm_unblind {
                return Err(ExitError::new(
                    exit::USAGE,
                    format!(
                        "refusing to unblind {}: unsalted science files would leave SURF; \
                         say --confirm-unblind (the decision is logged with --by and --reason)",
                        db.catalog.display()
                    ),
                )
                .into());
            }
            let by = decision.by.context("say who decides with --by")?;
            if catalog.set_blinding(false, &by, &decision.reason)? {
                tracing::warn!(catalog = %db.catalog.display(), %by, reason = %decision.reason, "catalog UNBLINDED");
                println!(
                    "catalog {} UNBLINDED by {by} at {}: {}",
                    db.catalog.display(),
                    utc_string(super::now_unix_s()),
                    decision.reason
                );
            } else {
                println!("catalog {} is not blinded", db.catalog.display());
            }
        }
        CatalogCommand::Blinding { db, json } => {
            let status = Catalog::open(&db.catalog)?.blinding()?;
            if json {
                return print_json(&status);
            }
            println!(
                "catalog {}: {}",
                db.catalog.display(),
                if status.blinded {
                    "BLINDED"
                } else {
                    "not blinded"
                }
            );
            for d in &status.history {
                println!(
                    "  {} {} by {}: {}",
                    utc_string(d.at),
                    if d.blinded { "blind  " } else { "UNBLIND" },
                    d.by,
                    d.reason
                );
            }
        }
        CatalogCommand::Show { db, file, json } => {
            let catalog = Catalog::open(&db.catalog)?;
            let f = catalog.file(&file)?;
            let replicas = catalog.replicas_of(f.id)?;
            let outputs = catalog.outputs_of(f.id)?;
            let mut output_replicas = Vec::with_capacity(outputs.len());
            for o in &outputs {
                output_replicas.push(catalog.output_replicas_of(o.id)?);
            }
            if json {
                let outputs: Vec<serde_json::Value> = outputs
                    .iter()
                    .zip(&output_replicas)
                    .map(|(o, r)| {
                        let mut v = serde_json::json!(o);
                        v["replicas"] = serde_json::json!(r);
                        v
                    })
                    .collect();
                return print_json(
                    &serde_json::json!({"file": f, "replicas": replicas, "outputs": outputs}),
                );
            }
            println!(
                "{} (id {}): run {} sequence {}",
                f.name, f.id, f.run, f.sequence
            );
            println!(
                "  size {} bytes, adler32 {}, state {}, attempts {}, salted {}",
                f.size_bytes, f.adler32, f.state, f.attempts, f.salted
            );
            println!(
                "  registered {}{}",
                utc_string(f.registered_at),
                f.written_at.map_or(String::new(), |w| format!(
                    " ({:.1} s after it was written)",
                    f.registered_at - w
                ))
            );
            if let Some(e) = &f.last_error {
                println!("  last error: {e}");
            }
            for r in replicas {
                println!(
                    "  {:<8} {:<12} {} attempts {}{}{}{}",
                    r.site.as_str(),
                    r.state.as_str(),
                    r.path,
                    r.attempts,
                    if r.source == crate::catalog::Site::Surf || r.site == r.source {
                        String::new()
                    } else {
                        format!(", from {}", r.source)
                    },
                    r.verified_at
                        .map_or(String::new(), |t| format!(", verified {}", utc_string(t))),
                    r.last_error
                        .map_or(String::new(), |e| format!(", last error: {e}"))
                );
            }
            for (o, reps) in outputs.iter().zip(output_replicas) {
                println!(
                    "  output {} lineage {} events {} checksum {}{}",
                    o.rq_path,
                    o.lineage_hash,
                    o.events,
                    o.checksum,
                    o.site.map_or(String::new(), |s| format!(", made at {s}"))
                );
                for r in reps {
                    println!(
                        "    {:<6} {:<12} {} adler32 {}{}{}",
                        r.site.as_str(),
                        r.state.as_str(),
                        r.path,
                        r.adler32,
                        r.source.map_or(String::new(), |s| format!(", from {s}")),
                        r.last_error
                            .map_or(String::new(), |e| format!(", last error: {e}"))
                    );
                }
            }
        }
    }
    Ok(())
}
