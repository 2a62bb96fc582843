//! The dispatcher: the thin, crash-only workflow manager that turns the
//! catalog into SLURM jobs (LZ runs one called psquared).
//!
//! ```text
//! one pass (the SLURM stages once per processing site, each on its own
//! cluster: see `sites`):
//!   reconcile  every pending/submitted/running job against one squeue call and
//!              one sacct call (the jobcomp file where the cluster keeps no
//!              accounting); finished (or vanished) jobs: result records decide
//!              each task: ok -> output catalogued, else the retry policy of the
//!              final state (`accounting`): more time, more memory, a free retry
//!              (SLURM stage: skipped while SLURM does not answer, see `health`)
//!   ingest     new complete raw files at SURF
//!   salt       (with a salt key) new science files, the salt made with the
//!              conditions in force for their run (`salt`)
//!   transfer   to USDC, UKDC, ARCHIVE with verified checksums (a blinded catalog
//!              holds unsalted science files at SURF; the pass says why)
//!   retire     SURF copies verified everywhere, when `[retention] enabled`
//!   queue      a task per transferred file for each active campaign (prompt processing
//!              is the campaign `prompt-{conditions}`)
//!   submit     within each site's throttle, at a site holding verified replicas
//!              (`submit`): intent first (job `pending`, tasks `submitting`),
//!              then `sbatch --parsable`, then `submitted` with the SLURM id
//!              (SLURM stage, as reconcile)
//! ```
//!
//! Ingest, salting, transfer and queueing never wait for SLURM: every SLURM
//! client command has a deadline (`slurm_timeout_s`), and a controller that
//! does not answer only skips the SLURM stages, with a growing interval
//! between tries, recorded in the catalog for `tpcflow status` ([`health`]).
//!
//! A crash anywhere leaves a state the next pass reconciles: a `pending` job is
//! looked up in SLURM by its name (`tpcflow-{catalog id}-c{campaign}-j{job}`) before anything
//! is resubmitted, so no file is lost and none runs twice. A lock file refuses
//! a second dispatcher on the same catalog. The dispatcher is the catalog's only
//! writer for processing; compute jobs only write result records.
//!
//! [`Dispatcher::pass`] (`pass`) is the table of stages; each stage is a module:
//! `reconcile` (with `health`, `track`, `accounting`, `sites`, `calibration`),
//! `data_movement` (ingest, salting, transfer, retention), `campaigns` (queue,
//! completion), `simulation` and `submit`. `settings` holds the TOML settings,
//! `lock` the one-dispatcher-per-catalog lock, `cli` the commands.

pub mod accounting;
pub mod calibration;
mod campaigns;
pub mod cli;
mod data_movement;
pub mod health;
mod lock;
mod pass;
pub mod prompt_conditions;
mod reconcile;
mod settings;
pub mod simulation;
pub mod sites;
mod submit;
pub mod track;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::catalog::Catalog;
use crate::sbatch::Template;
use crate::transfer::Sites;
pub use campaigns::{create_campaign, prompt_campaign_name};
pub use lock::DispatchLock;
pub use pass::PassReport;
pub use settings::Settings;
use submit::template_values;

/// Everything a dispatcher needs, resolved once.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Catalog file.
    pub catalog: PathBuf,
    /// Site locations.
    pub sites: Sites,
    /// Where RQ outputs go: `{rq_root}/{campaign}/`.
    pub rq_root: PathBuf,
    /// Where job scripts, input lists and logs go: `{work_dir}/{job name}/`.
    pub work_dir: PathBuf,
    /// The `tpcflow` binary jobs run.
    pub tpcflow_bin: PathBuf,
    /// Settings.
    pub settings: Settings,
    /// The sbatch template (checked at start: a malformed one fails before any submission).
    pub template: Template,
}

/// One dispatcher over one catalog.
#[derive(Debug)]
pub struct Dispatcher {
    cfg: DispatchConfig,
    catalog: Catalog,
    /// The processing sites, USDC first (each with its own SLURM).
    sites: Vec<sites::ProcSite>,
    instance: String,
    _lock: DispatchLock,
}

impl Dispatcher {
    /// Lock the catalog, check the template and settings. SLURM is not asked
    /// here: a dispatcher starts (and moves data) while the controller is down.
    ///
    /// # Errors
    /// A second dispatcher, a malformed template or settings.
    pub fn new(cfg: DispatchConfig) -> Result<Self> {
        cfg.settings.validate()?;
        // Render once with every value: a template error shows before any submission.
        cfg.template.render(&template_values(
            &cfg,
            "check",
            Path::new("/dev/null"),
            "--check",
        )?)?;
        let lock = DispatchLock::acquire(&cfg.catalog)?;
        let catalog = Catalog::init(&cfg.catalog)?;
        if !cfg.settings.prompt_conditions.is_empty() {
            prompt_conditions::seed(&catalog, &cfg.settings.prompt_conditions)?;
            prompt_conditions::sync_prompt_campaigns(&catalog)?;
        }
        // A dispatcher that salts blinds a catalog no one has decided about
        // yet: from then on no configuration (a dispatcher without the key,
        // a hand-run transfer) places a science file unsalted. An explicit
        // `catalog unblind` is never overridden.
        if !cfg.settings.salt_key.is_empty() && catalog.blinding()?.history.is_empty() {
            catalog.set_blinding(
                true,
                "tpcflow dispatch",
                &format!("salt key {} configured", cfg.settings.salt_key),
            )?;
            tracing::info!(key = %cfg.settings.salt_key, "catalog blinded: salting is configured");
        }
        let instance = catalog.instance_id()?;
        let sites = sites::processing_sites(&cfg.settings, &cfg.sites, &cfg.rq_root)?;
        Ok(Self {
            cfg,
            catalog,
            sites,
            instance,
            _lock: lock,
        })
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}
