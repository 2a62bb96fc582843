//! `tpcflow dispatch`, `tpcflow campaign ...`, `tpcflow status`, `tpcflow site
//! drain|resume|list`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tpcflow_reco::RecoConfig;

use super::{create_campaign, DispatchConfig, Dispatcher, Settings};
use crate::catalog::cli::{CatalogPathArg, SiteArgs};
use crate::catalog::{Catalog, Site, TaskState};
use crate::sbatch::Template;

/// Arguments of `tpcflow dispatch`.
#[derive(Debug, clap::Args)]
pub struct DispatchArgs {
    #[command(flatten)]
    db: CatalogPathArg,
    #[command(flatten)]
    sites: SiteArgs,
    /// Dispatcher settings (TOML; see `dispatch::Settings`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// sbatch template: `local`, `perlmutter` or a file (overrides the config).
    #[arg(long)]
    profile: Option<String>,
    /// Where RQ outputs go (default: DATA_ROOT/RQ).
    #[arg(long)]
    rq_root: Option<PathBuf>,
    /// Where job scripts and logs go (default: DATA_ROOT/jobs).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// One pass, then exit.
    #[arg(long, conflicts_with = "daemon")]
    once: bool,
    /// Pass after pass until killed.
    #[arg(long)]
    daemon: bool,
    /// Seconds between passes (daemon; 0.05-86400).
    #[arg(long, default_value_t = 30.0,
          value_parser = crate::cli_bounds::float_in(0.05, crate::cli_bounds::MAX_SECONDS))]
    interval: f64,
    /// Print each pass report as JSON.
    #[arg(long)]
    json: bool,
}

/// Run `tpcflow dispatch`.
///
/// # Errors
/// Bad configuration, a second dispatcher, or a pass that cannot read SLURM or the catalog.
pub fn run_dispatch(a: DispatchArgs) -> Result<()> {
    if !a.once && !a.daemon {
        bail!("say --once (one pass) or --daemon (pass every --interval seconds)");
    }
    let mut settings = match &a.config {
        Some(p) => Settings::load(p)?,
        None => Settings::default(),
    };
    if let Some(p) = a.profile {
        settings.profile = p;
    }
    let template = Template::load(&settings.profile)?;
    let sites = a.sites.resolve()?;
    let data_root = a.sites.data_root.clone();
    let rq_root = a
        .rq_root
        .or_else(|| data_root.as_ref().map(|d| d.join("RQ")))
        .context("--rq-root or --data-root is needed")?;
    let work_dir = a
        .work_dir
        .or_else(|| data_root.as_ref().map(|d| d.join("jobs")))
        .context("--work-dir or --data-root is needed")?;
    let cfg = DispatchConfig {
        catalog: a.db.catalog,
        sites,
        rq_root,
        work_dir,
        tpcflow_bin: std::env::current_exe().context("locating the tpcflow binary")?,
        settings,
        template,
    };
    let d = Dispatcher::new(cfg)?;
    loop {
        match d.pass() {
            Ok(r) => {
                if a.json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "pass: ingested {}, salted {}, held unsalted {}, replicas verified {} (failed {}), SURF retired {}, tasks queued {}, jobs submitted {} (in {} array(s)), finished {} \
                         (adopted {}, never submitted {}), tasks done {}, failed {}; {} SLURM call(s), {:.3} s",
                        r.ingested, r.salted, r.held_unsalted, r.replicas_verified, r.replicas_failed, r.surf_retired, r.tasks_queued, r.jobs_submitted, r.arrays_submitted, r.jobs_finished,
                        r.jobs_adopted, r.jobs_never_submitted, r.tasks_done, r.tasks_failed, r.slurm_calls, r.seconds
                    );
                    if !r.submitted_at.is_empty()
                        || r.copy_ins_queued + r.sim_files_submitted + r.sim_files_made > 0
                        || r.copied_in + r.outputs_replicated > 0
                        || r.jobs_lost + r.output_replicas_failed > 0
                    {
                        let at: Vec<String> = r
                            .submitted_at
                            .iter()
                            .map(|(s, n)| format!("{s} {n}"))
                            .collect();
                        println!(
                            "  sites: submitted at {}; jobs lost {}; copy-ins queued {}; copies between \
                             sites verified {}; RQ replicas verified {} (failed {}); simulated files \
                             submitted {}, made {}",
                            if at.is_empty() { "none".into() } else { at.join(", ") },
                            r.jobs_lost,
                            r.copy_ins_queued,
                            r.copied_in,
                            r.outputs_replicated,
                            r.output_replicas_failed,
                            r.sim_files_submitted,
                            r.sim_files_made
                        );
                    }
                    for w in &r.warnings {
                        println!("  warning: {w}");
                    }
                }
            }
            Err(e) if a.daemon => tracing::error!("pass failed: {e:#}"),
            Err(e) => return Err(e),
        }
        if a.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(a.interval.max(0.05)));
    }
}

/// `tpcflow campaign ...`
#[derive(Debug, clap::Subcommand)]
pub enum CampaignCommand {
    /// Define a family: a run range with conditions and reco settings.
    Create {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Name, e.g. SR3_reprocess_PROD-2.
        #[arg(long)]
        name: String,
        /// Runs, FIRST-LAST or one run (not with --simulate: a simulation
        /// campaign makes its own runs).
        #[arg(
            long,
            required_unless_present = "simulate",
            conflicts_with = "simulate"
        )]
        runs: Option<String>,
        #[command(flatten)]
        simulate: SimulateArgs,
        /// Detector conditions tag (catalog or built-in) or file.
        #[arg(long, default_value = "v1", conflicts_with = "global_tag")]
        conditions: String,
        /// Pin a global tag (`tpcflow conditions global`): each run is processed
        /// with the global tag's conditions for it (one campaign per interval).
        #[arg(long)]
        global_tag: Option<String>,
        /// Reco settings (TOML with RecoConfig fields).
        #[arg(long)]
        reco_config: Option<PathBuf>,
        /// Where it runs: `any` processing site, or USDC or UKDC.
        #[arg(long, default_value = "any")]
        site: String,
    },
    /// List campaigns with progress.
    List {
        #[command(flatten)]
        db: CatalogPathArg,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// One campaign: progress and its failed files with reasons.
    Status {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Campaign name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Give the failed files of a campaign a fresh retry budget.
    RetryFailed {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Campaign name.
        name: String,
    },
    /// Cancel a campaign: queued files are dropped, its SLURM jobs scancelled.
    Cancel {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Campaign name.
        name: String,
    },
}

/// What a simulation campaign makes (`campaign create --simulate`).
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// A simulation production: SLURM job arrays of `tpcflow sim` make a
    /// family of simulated runs (numbered from 900000), then reconstructed
    /// with --conditions like any run.
    #[arg(long, conflicts_with = "global_tag")]
    simulate: bool,
    /// Physics source of the simulation.
    #[arg(long, value_enum, default_value = "wimp", requires = "simulate")]
    source: crate::sim::Source,
    /// Events per file (1-10000000).
    #[arg(long, default_value_t = 100, requires = "simulate",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    events: u32,
    /// Files to simulate (1-1000000).
    #[arg(long, default_value_t = 1, requires = "simulate",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    files: u32,
    /// Files per simulated run at most (1-100000).
    #[arg(long, default_value_t = 100, requires = "simulate",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    files_per_run: u32,
    /// Seed of every random stream (same seed, same files; 0-2^63).
    #[arg(long, default_value_t = 1, requires = "simulate",
          value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
    seed: u64,
    /// Simulate a detector that differs from --conditions: a truth name or
    /// TOML file (`tpcflow sim --detector-truth`).
    #[arg(long, requires = "simulate")]
    detector_truth: Option<String>,
    /// The detector run whose state --detector-truth gives (required with it).
    #[arg(long, requires = "detector_truth")]
    truth_run: Option<u32>,
}

/// Parse `17390-17408` or `17390`.
///
/// # Errors
/// When it is not a run or an increasing range.
pub fn parse_runs(s: &str) -> Result<(u32, u32)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u32 = a
        .trim()
        .parse()
        .with_context(|| format!("--runs `{s}`: `{a}` is not a run number"))?;
    let b: u32 = b
        .trim()
        .parse()
        .with_context(|| format!("--runs `{s}`: `{b}` is not a run number"))?;
    if b < a {
        bail!("--runs `{s}`: the last run is before the first");
    }
    Ok((a, b))
}

/// Run `tpcflow campaign ...`.
///
/// # Errors
/// Unknown campaign, bad arguments, catalog errors.
pub fn run_campaign(cmd: CampaignCommand) -> Result<()> {
    match cmd {
        CampaignCommand::Create {
            db,
            name,
            runs,
            simulate,
            conditions,
            global_tag,
            reco_config,
            site,
        } => {
            let site = if site.eq_ignore_ascii_case("any") {
                "any".to_string()
            } else {
                let s: crate::catalog::Site = site.parse()?;
                if !super::sites::PROCESSING.contains(&s) {
                    bail!("{s} does not process: say any, USDC or UKDC");
                }
                s.to_string()
            };
            let config = match reco_config {
                Some(p) => toml::from_str(
                    &std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                )
                .with_context(|| format!("{}: not a reco config", p.display()))?,
                None => RecoConfig::default(),
            };
            let catalog = Catalog::init(&db.catalog)?;
            if simulate.simulate {
                let spec = crate::catalog::SimSpec {
                    source: clap::ValueEnum::to_possible_value(&simulate.source)
                        .map(|v| v.get_name().to_string())
                        .context("source name")?,
                    events_per_file: simulate.events,
                    files: simulate.files,
                    files_per_run: simulate.files_per_run,
                    seed: simulate.seed,
                    conditions: conditions.clone(),
                    detector_truth: simulate.detector_truth.clone(),
                    truth_run: simulate.truth_run,
                };
                let c = super::simulation::create_simulation_campaign(
                    &catalog, &name, &spec, &config, &site,
                )?;
                println!(
                    "simulation campaign {} created: {} {} file(s) of {} event(s), seed {}, runs {}-{}, \
                     conditions {}{}, lineage {}, site {site}",
                    c.name,
                    spec.files,
                    spec.source,
                    spec.events_per_file,
                    spec.seed,
                    c.first_run,
                    c.last_run,
                    c.conditions_tag,
                    spec.detector_truth
                        .as_deref()
                        .map_or(String::new(), |t| format!(
                            ", detector truth {t} at run {}",
                            spec.truth_run.unwrap_or_default()
                        )),
                    c.lineage_hash
                );
                return Ok(());
            }
            let runs = runs.context("--runs is needed (or --simulate)")?;
            let created = match &global_tag {
                Some(g) => super::prompt_conditions::create_pinned_campaigns(
                    &catalog,
                    &name,
                    parse_runs(&runs)?,
                    g,
                    &config,
                )?,
                None => vec![create_campaign(
                    &catalog,
                    &name,
                    parse_runs(&runs)?,
                    &conditions,
                    &config,
                    false,
                )?],
            };
            for c in &created {
                catalog.set_campaign_site(c.id, &site)?;
                println!(
                    "campaign {} created: runs {}-{}, conditions {}{}, lineage {}, site {site}",
                    c.name,
                    c.first_run,
                    c.last_run,
                    c.conditions_tag,
                    global_tag
                        .as_deref()
                        .map_or(String::new(), |g| format!(" (global tag {g})")),
                    c.lineage_hash
                );
            }
            let same: Vec<String> = catalog
                .campaigns()?
                .into_iter()
                .filter(|o| created.iter().all(|c| c.id != o.id))
                .filter(|o| created.iter().any(|c| o.lineage_hash == c.lineage_hash))
                .map(|o| o.name)
                .collect();
            if !same.is_empty() {
                println!(
                    "note: same lineage as {}: this family recomputes identical outputs (the catalog keeps one per file and lineage)",
                    same.join(", ")
                );
            }
        }
        CampaignCommand::List { db, json } => {
            let progress = Catalog::open(&db.catalog)?.campaign_progress()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&progress)?);
            } else {
                println!(
                    "{:<32} {:<20} {:>13} {:<10} {:>6} {:>6} {:>6} {:>8}",
                    "family", "created", "runs", "state", "files", "done", "failed", "lineage"
                );
                for p in progress {
                    let c = &p.campaign;
                    let runs = if p.prompt {
                        "prompt".to_string()
                    } else {
                        format!("{}-{}", c.first_run, c.last_run)
                    };
                    println!(
                        "{:<32} {:<20} {:>13} {:<10} {:>6} {:>6} {:>6} {:>8}",
                        c.name,
                        crate::catalog::utc_string(c.created_at),
                        runs,
                        c.state.to_string(),
                        p.tasks,
                        p.done,
                        p.failed,
                        &c.lineage_hash[..8.min(c.lineage_hash.len())]
                    );
                }
            }
        }
        CampaignCommand::Status { db, name, json } => {
            let catalog = Catalog::open(&db.catalog)?;
            let p = catalog
                .campaign_progress()?
                .into_iter()
                .find(|p| p.campaign.name == name)
                .with_context(|| format!("no campaign `{name}`"))?;
            let failed = catalog.tasks_in_state(p.campaign.id, TaskState::Failed)?;
            if json {
                println!("{}", serde_json::json!({ "progress": p, "failed": failed }));
            } else if let Some(sim) = &p.simulation {
                println!("{}", simulation_line(&p, sim));
                for t in catalog
                    .sim_tasks(p.campaign.id)?
                    .into_iter()
                    .filter(|t| t.state == TaskState::Failed)
                {
                    println!(
                        "  FAILED simulation of run {} file {} after {} attempts: {}",
                        t.run,
                        t.sequence,
                        t.attempts,
                        t.last_error.unwrap_or_default()
                    );
                }
                for t in failed {
                    println!(
                        "  FAILED {} after {} attempts: {}",
                        t.file_name,
                        t.attempts,
                        t.last_error.unwrap_or_default()
                    );
                }
            } else {
                println!(
                    "{}: {} — {} files, {} done, {} failed, {} in flight, {} runs",
                    p.campaign.name,
                    p.campaign.state,
                    p.tasks,
                    p.done,
                    p.failed,
                    p.in_flight,
                    p.runs
                );
                for t in failed {
                    println!(
                        "  FAILED {} after {} attempts: {}",
                        t.file_name,
                        t.attempts,
                        t.last_error.unwrap_or_default()
                    );
                }
            }
        }
        CampaignCommand::RetryFailed { db, name } => {
            let catalog = Catalog::open(&db.catalog)?;
            let c = catalog
                .campaign_by_name(&name)?
                .with_context(|| format!("no campaign `{name}`"))?;
            let n = catalog.retry_failed_tasks(c.id)?;
            println!("{name}: {n} failed file(s) queued again");
        }
        CampaignCommand::Cancel { db, name } => {
            let catalog = Catalog::open(&db.catalog)?;
            let c = catalog
                .campaign_by_name(&name)?
                .with_context(|| format!("no campaign `{name}`"))?;
            let jobs = catalog.cancel_campaign(&c)?;
            let mut ids = Vec::new();
            for j in catalog
                .active_jobs()?
                .into_iter()
                .filter(|j| jobs.contains(&j.id))
            {
                if let Some(s) = j.slurm_ref() {
                    ids.push(s);
                }
            }
            if !ids.is_empty() {
                crate::slurm::Client::default()
                    .cancel(&ids)
                    .with_context(|| format!("{name} is cancelled in the catalog; its jobs"))?;
            }
            println!(
                "{name}: cancelled; {} job(s) scancelled; the dispatcher records them as they end",
                ids.len()
            );
        }
    }
    Ok(())
}

/// Arguments of `tpcflow status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    db: CatalogPathArg,
    /// Only this run.
    #[arg(long)]
    run: Option<u32>,
    /// Runs with files missing somewhere (or failed) first.
    #[arg(long)]
    missing_first: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// One line of a simulation family's progress: its production, then its
/// reconstruction (out of every file it makes).
fn simulation_line(
    p: &crate::catalog::CampaignProgress,
    sim: &crate::catalog::SimProgress,
) -> String {
    let what = sim.spec.as_ref().map_or(String::new(), |s| {
        format!(
            " ({} x {} {} events, seed {})",
            s.files, s.events_per_file, s.source, s.seed
        )
    });
    format!(
        "simulation family {}: {} — runs {}-{}{what}: simulated {} / failed {} of {} ({} in flight; \
         made at USDC {}, UKDC {}); reconstructed {} / failed {} of {}",
        p.campaign.name,
        p.campaign.state,
        sim.first_run,
        sim.last_run,
        sim.simulated,
        sim.failed,
        sim.files,
        sim.in_flight,
        sim.made_at_usdc,
        sim.made_at_ukdc,
        p.done,
        p.failed,
        sim.files
    )
}

/// Run `tpcflow status`.
///
/// # Errors
/// Catalog errors.
pub fn run_status(a: StatusArgs) -> Result<()> {
    let catalog = Catalog::open(&a.db.catalog)?;
    let blinding = catalog.blinding()?;
    let runs = catalog.run_status(a.run, a.missing_first)?;
    let campaigns = catalog.campaign_progress()?;
    let mut lat = catalog.prompt_latencies()?;
    lat.sort_by(f64::total_cmp);
    let latency = serde_json::json!({
        "files": lat.len(), "median_s": quantile(&lat, 0.5), "p90_s": quantile(&lat, 0.9), "max_s": lat.last().copied().unwrap_or(f64::NAN)
    });
    let outage = catalog.slurm_health()?;
    let (sites, site_lines) = super::sites::status(&catalog)?;
    if a.json {
        let slurm = super::health::status_json(outage.as_ref());
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "blinding": blinding, "runs": runs, "campaigns": campaigns,
                "latency": latency, "slurm": slurm, "sites": sites
            }))?
        );
        return Ok(());
    }
    if let Some(h) = &outage {
        println!("{}", super::health::outage_line(h));
    }
    for line in site_lines.iter().filter(|l| !l.starts_with("USDC: SLURM")) {
        println!("{line}");
    }
    match blinding.history.last() {
        Some(d) => println!(
            "blinding: {} (since {} by {}: {})",
            if blinding.blinded {
                "BLINDED"
            } else {
                "unblinded"
            },
            crate::catalog::utc_string(d.at),
            d.by,
            d.reason
        ),
        None => println!("blinding: not blinded"),
    }
    println!(
        "{:>6} {:<11} {:<20} {:>5} {:>7} {:>5} {:>5} {:>7} {:>6} {:>7} {:>6}",
        "run",
        "type",
        "start",
        "SURF",
        "retired",
        "USDC",
        "UKDC",
        "ARCHIVE",
        "salted",
        "reco'd",
        "failed"
    );
    for r in &runs {
        println!(
            "{:>6} {:<11} {:<20} {:>5} {:>7} {:>5} {:>5} {:>7} {:>6} {:>7} {:>6}",
            r.run,
            r.run_type,
            r.start_time.as_deref().unwrap_or("-"),
            r.files,
            r.surf_retired,
            r.usdc,
            r.ukdc,
            r.archive,
            r.salted,
            r.reconstructed,
            r.failed
        );
    }
    for p in &campaigns {
        match &p.simulation {
            None => println!(
                "family {}: {} — {} done / {} failed of {} ({} in flight)",
                p.campaign.name, p.campaign.state, p.done, p.failed, p.tasks, p.in_flight
            ),
            Some(sim) => println!("{}", simulation_line(p, sim)),
        }
    }
    if !lat.is_empty() {
        println!(
            "prompt latency (SURF write -> RQ catalogued) over {} files: median {:.1} s, p90 {:.1} s, max {:.1} s",
            lat.len(),
            quantile(&lat, 0.5),
            quantile(&lat, 0.9),
            lat.last().copied().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// `tpcflow site ...`
#[derive(Debug, clap::Subcommand)]
pub enum SiteCommand {
    /// Close a processing site to new work (work in flight there runs on).
    Drain {
        #[command(flatten)]
        db: CatalogPathArg,
        /// USDC or UKDC.
        site: String,
        /// Why (shown by `tpcflow status`).
        #[arg(long, default_value = "drained by the operator")]
        reason: String,
    },
    /// Open a drained site to new work again.
    Resume {
        #[command(flatten)]
        db: CatalogPathArg,
        /// USDC or UKDC.
        site: String,
    },
    /// Processing sites: SLURM outages and drains.
    List {
        #[command(flatten)]
        db: CatalogPathArg,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn processing_site(name: &str) -> Result<Site> {
    let site: Site = name.parse()?;
    if !super::sites::PROCESSING.contains(&site) {
        bail!("{site} does not process: say USDC or UKDC");
    }
    Ok(site)
}

/// Run `tpcflow site`.
///
/// # Errors
/// An unknown site or a catalog error.
pub fn run_site(cmd: SiteCommand) -> Result<()> {
    match cmd {
        SiteCommand::Drain { db, site, reason } => {
            let site = processing_site(&site)?;
            let catalog = Catalog::open(&db.catalog)?;
            let by = std::env::var("USER").unwrap_or_else(|_| "operator".into());
            catalog.drain_site(site, &reason, &by)?;
            tracing::info!(%site, %reason, "site drained");
            println!("{site} drained: no new work goes there ({reason})");
        }
        SiteCommand::Resume { db, site } => {
            let site = processing_site(&site)?;
            let catalog = Catalog::open(&db.catalog)?;
            if catalog.resume_site(site)? {
                println!("{site} resumed: it takes new work again");
            } else {
                println!("{site} was not drained");
            }
        }
        SiteCommand::List { db, json } => {
            let catalog = Catalog::open(&db.catalog)?;
            let (v, lines) = super::sites::status(&catalog)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if lines.is_empty() {
                println!("USDC, UKDC: open, SLURM answering");
            } else {
                for l in lines {
                    println!("{l}");
                }
            }
        }
    }
    Ok(())
}
