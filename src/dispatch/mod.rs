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

pub mod accounting;
pub mod calibration;
pub mod cli;
pub mod health;
pub mod prompt_conditions;
pub mod simulation;
pub mod sites;
mod submit;
pub mod track;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tpcflow_reco::RecoConfig;

use crate::catalog::ingest::{self, IngestConfig};
use crate::catalog::Site;
use crate::catalog::{
    CampaignRow, CampaignState, Catalog, JobKind, JobRow, JobState, NewCampaign, NewOutput,
    TaskRow, TaskState,
};
use crate::reco_job::{self, read_result};
use crate::sbatch::Template;
use crate::shell::quote_path;
use crate::slurm::JobState as SlurmState;
use crate::transfer::{self, Sites, TransferConfig};
use accounting::Retry;
use track::Snapshot;

/// Tunable settings (a TOML file, `--config`; every key optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// sbatch template: `local`, `perlmutter`, or a file path.
    pub profile: String,
    /// Conditions of prompt processing; empty disables the prompt campaign.
    pub prompt_conditions: String,
    /// Raw files per job at most.
    pub files_per_job: usize,
    /// Raw bytes per job at most [bytes].
    pub max_job_bytes: u64,
    /// SLURM jobs pending/running at once at most (a job array counts as one:
    /// SLURM keeps its pending elements as one record; `array_throttle` bounds
    /// how many of its elements run).
    pub max_queued_jobs: usize,
    /// Submissions (sbatch calls) per pass at most (the submission rate).
    pub max_submissions_per_pass: usize,
    /// A campaign (not prompt processing) with at least this many jobs' worth
    /// of runnable files is submitted as one SLURM job array; 0 never uses arrays.
    pub array_min_jobs: usize,
    /// Elements per job array at most (SLURM's `MaxArraySize` bounds it, 1001 by default).
    pub array_max_jobs: usize,
    /// Elements of one array running at once at most: sbatch `--array=0-N%{array_throttle}`.
    pub array_throttle: u32,
    /// Attempts per file before it is FAILED.
    pub max_attempts: u32,
    /// First retry delay [s]; doubles with each attempt.
    pub backoff_s: f64,
    /// sbatch `--time` of a first attempt.
    pub time_limit: String,
    /// Longest time limit the retry policy gives a job that hit its limit
    /// (TIMEOUT); a TIMEOUT at this limit fails the file.
    pub max_time_limit: String,
    /// sbatch `--mem` of a first attempt [MB]; 0: not asked (the cluster's default).
    pub mem_mb: u32,
    /// Largest memory the retry policy gives a job killed for its memory
    /// (OUT_OF_MEMORY) [MB]; the same failure at this limit fails the file.
    pub max_mem_mb: u32,
    /// `slurm.conf` of the cluster to submit to (`SLURM_CONF` of every SLURM
    /// command); empty: the one the environment names.
    pub slurm_conf: String,
    /// sbatch `--nodes`.
    pub nodes: u32,
    /// sbatch `--ntasks` (MPI ranks).
    pub ntasks: u32,
    /// sbatch `--ntasks-per-node` (Perlmutter profile).
    pub ntasks_per_node: u32,
    /// sbatch `--cpus-per-task` (rayon threads per rank).
    pub cpus_per_task: u32,
    /// sbatch `--account` (Perlmutter profile).
    pub account: String,
    /// sbatch `--qos` (Perlmutter profile).
    pub qos: String,
    /// Science files must be salted before processing (implied by `salt_key`).
    pub require_salted: bool,
    /// Salt key file (mode 0600): when set, each pass salts new science files
    /// before placement, and nothing moves or runs unsalted.
    pub salt_key: String,
    /// Salt vault directory (with `salt_key`).
    pub salt_vault: String,
    /// Concurrent copies of the mover.
    pub transfer_parallel: usize,
    /// Attempts per replica before it is marked bad.
    pub transfer_max_attempts: u32,
    /// Deadline of one SLURM client command (squeue, sbatch, scontrol) [s]:
    /// past it the command is killed and SLURM counts as unavailable.
    pub slurm_timeout_s: f64,
    /// First wait before asking SLURM again after it did not answer [s];
    /// doubles with each failed try.
    pub slurm_retry_s: f64,
    /// Longest wait between tries while SLURM does not answer [s].
    pub slurm_retry_max_s: f64,
    /// The retention stage at SURF (`[retention]`: enabled, grace_s, max_checksum_age_s).
    pub retention: crate::retire::RetentionSettings,
    /// Conditions made from calibration runs (`[conditions]`: calibrate,
    /// auto_publish, max_lifetime_change, max_se_gain_change, settle_s,
    /// max_attempts, time_limit; see [`calibration`]).
    pub conditions: calibration::ConditionsPolicy,
    /// Processing sites with their own batch systems (`[sites.USDC]`,
    /// `[sites.UKDC]`, see [`sites`]); none: USDC alone on `slurm_conf`.
    pub sites: BTreeMap<String, sites::SiteSettings>,
    /// A site whose SLURM has not answered for this long has its jobs in
    /// flight declared lost and their files run at another site [s].
    pub lost_after_s: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            profile: "local".into(),
            prompt_conditions: "v1".into(),
            files_per_job: 4,
            max_job_bytes: 4_000_000_000,
            max_queued_jobs: 8,
            max_submissions_per_pass: 4,
            array_min_jobs: 8,
            array_max_jobs: 1000,
            array_throttle: 4,
            max_attempts: 3,
            backoff_s: 30.0,
            time_limit: "00:30:00".into(),
            max_time_limit: "04:00:00".into(),
            mem_mb: 0,
            max_mem_mb: 16_000,
            slurm_conf: String::new(),
            nodes: 1,
            ntasks: 1,
            ntasks_per_node: 1,
            cpus_per_task: 1,
            account: String::new(),
            qos: "regular".into(),
            require_salted: false,
            salt_key: String::new(),
            salt_vault: String::new(),
            transfer_parallel: 4,
            transfer_max_attempts: 3,
            slurm_timeout_s: crate::slurm::DEFAULT_TIMEOUT.as_secs_f64(),
            slurm_retry_s: 15.0,
            slurm_retry_max_s: 300.0,
            retention: crate::retire::RetentionSettings::default(),
            conditions: calibration::ConditionsPolicy::default(),
            sites: BTreeMap::new(),
            lost_after_s: 900.0,
        }
    }
}

impl Settings {
    /// Read settings from a TOML file.
    ///
    /// # Errors
    /// A parse error naming the file, line and key.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s: Settings = toml::from_str(&text)
            .with_context(|| format!("dispatcher config {}", path.display()))?;
        s.validate()
            .with_context(|| format!("dispatcher config {}", path.display()))?;
        Ok(s)
    }

    /// Reject settings that cannot work.
    ///
    /// # Errors
    /// Naming the key.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("files_per_job", self.files_per_job as u64),
            ("max_queued_jobs", self.max_queued_jobs as u64),
            ("max_attempts", u64::from(self.max_attempts)),
            ("nodes", u64::from(self.nodes)),
            ("ntasks", u64::from(self.ntasks)),
            ("cpus_per_task", u64::from(self.cpus_per_task)),
            ("array_max_jobs", self.array_max_jobs as u64),
            ("array_throttle", u64::from(self.array_throttle)),
        ] {
            if v == 0 {
                bail!("`{key}` must be at least 1");
            }
        }
        if self.array_max_jobs > 1000 {
            bail!("`array_max_jobs` must be at most 1000 (SLURM's default MaxArraySize is 1001)");
        }
        self.conditions.validate()?;
        if self.salt_key.is_empty() != self.salt_vault.is_empty() {
            bail!("`salt_key` and `salt_vault` go together");
        }
        if self.backoff_s.is_nan() || self.backoff_s < 0.0 {
            bail!("`backoff_s` must be >= 0");
        }
        for (key, v) in [
            ("slurm_timeout_s", self.slurm_timeout_s),
            ("slurm_retry_s", self.slurm_retry_s),
            ("slurm_retry_max_s", self.slurm_retry_max_s),
        ] {
            // Upper bound: a day, far beyond any sensible wait, and a valid Duration.
            if !(v > 0.0 && v <= 86_400.0) {
                bail!("`{key}` must be > 0 and at most 86400 s, not {v}");
            }
        }
        let time = accounting::parse_minutes(&self.time_limit)
            .with_context(|| format!("`time_limit` {:?} is not a SLURM time", self.time_limit))?;
        let max_time = accounting::parse_minutes(&self.max_time_limit).with_context(|| {
            format!(
                "`max_time_limit` {:?} is not a SLURM time",
                self.max_time_limit
            )
        })?;
        if time == 0 || max_time < time {
            bail!("`time_limit` must be at least a minute and at most `max_time_limit`");
        }
        if self.mem_mb > 0 && self.max_mem_mb < self.mem_mb {
            bail!("`max_mem_mb` must be at least `mem_mb`");
        }
        if self.slurm_retry_max_s < self.slurm_retry_s {
            bail!("`slurm_retry_max_s` must be at least `slurm_retry_s`");
        }
        self.retention.validate()?;
        sites::validate(&self.sites)?;
        if !(self.lost_after_s > 0.0 && self.lost_after_s <= 86_400.0 * 30.0) {
            bail!("`lost_after_s` must be > 0 and at most 30 days");
        }
        Ok(())
    }
}

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

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    /// New raw files registered.
    pub ingested: usize,
    /// Science files salted.
    pub salted: usize,
    /// Replicas verified by the mover.
    pub replicas_verified: u64,
    /// Replicas given up on.
    pub replicas_failed: usize,
    /// Unsalted science files held at SURF (blinded catalog or salting required).
    pub held_unsalted: u64,
    /// SURF copies retired by the retention stage.
    pub surf_retired: usize,
    /// Tasks queued.
    pub tasks_queued: usize,
    /// Jobs submitted (an array counts each element).
    pub jobs_submitted: usize,
    /// Of the submissions, SLURM job arrays.
    pub arrays_submitted: usize,
    /// Jobs found finished (or vanished) and ingested.
    pub jobs_finished: usize,
    /// Pending jobs found never submitted (a crash before sbatch).
    pub jobs_never_submitted: usize,
    /// Pending jobs found in SLURM (a crash after sbatch).
    pub jobs_adopted: usize,
    /// Tasks whose output was catalogued.
    pub tasks_done: usize,
    /// Tasks that failed an attempt (retried or failed for good).
    pub tasks_failed: usize,
    /// SLURM client calls made (squeue, sacct, sbatch, scancel).
    pub slurm_calls: u32,
    /// Jobs declared lost at a site whose SLURM stopped answering (their
    /// files went back to the queue for another site).
    pub jobs_lost: usize,
    /// Jobs declared lost earlier that their site still ran, cancelled.
    pub lost_jobs_cancelled: usize,
    /// Replicas at a processing site queued to be copied in from the other
    /// site's verified one (their own was bad or lost, and a campaign needs
    /// the file there).
    pub copy_ins_queued: usize,
    /// Of the replicas the transfer stage verified, those copied from a
    /// processing site rather than SURF (copy-ins and simulated files).
    pub copied_in: u64,
    /// RQ output replicas verified at another processing site.
    pub outputs_replicated: u64,
    /// RQ output replicas given up on (the warnings say why).
    pub output_replicas_failed: usize,
    /// Files of simulation campaigns submitted (elements of job arrays).
    pub sim_files_submitted: usize,
    /// Simulated files found complete and catalogued.
    pub sim_files_made: usize,
    /// Jobs submitted per site.
    pub submitted_at: BTreeMap<String, usize>,
    /// The SLURM stages did not run (or stopped) because SLURM did not answer
    /// or its next try is not due; the warnings say why.
    pub slurm_skipped: bool,
    /// Wall time [s].
    pub seconds: f64,
    /// Wall time of each stage [s].
    pub stage_seconds: BTreeMap<&'static str, f64>,
    /// Problems that did not stop the pass.
    pub warnings: Vec<String>,
}

/// The process-wide lock: one dispatcher per catalog.
#[derive(Debug)]
pub struct DispatchLock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

impl DispatchLock {
    /// Take the lock `{catalog}.dispatch.lock` or fail naming the holder.
    ///
    /// # Errors
    /// When another dispatcher holds it.
    pub fn acquire(catalog: &Path) -> Result<Self> {
        use std::io::Write;
        let path = PathBuf::from(format!("{}.dispatch.lock", catalog.display()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if file.try_lock().is_err() {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another dispatcher is running on {} (lock {} held by pid {})",
                catalog.display(),
                path.display(),
                holder.trim()
            );
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file, path })
    }
}

/// The prompt campaign's name for a conditions tag.
pub fn prompt_campaign_name(tag: &str) -> String {
    format!("prompt-{tag}")
}

/// Define a campaign: its lineage is computed from the conditions and reco
/// configuration exactly as the reco job computes it.
///
/// # Errors
/// Unknown conditions, a bad config, or a name already taken.
pub fn create_campaign(
    catalog: &Catalog,
    name: &str,
    runs: (u32, u32),
    conditions: &str,
    config: &RecoConfig,
    prompt: bool,
) -> Result<CampaignRow> {
    config.validate().context("reco config")?;
    if catalog.campaign_by_name(name)?.is_some() {
        bail!("campaign `{name}` already exists");
    }
    let cond = prompt_conditions::resolve(
        catalog,
        conditions,
        &format!("conditions of campaign {name}"),
    )?;
    let lineage = reco_job::lineage(&cond, config);
    catalog.create_configured_campaign(
        &NewCampaign {
            name: name.into(),
            first_run: runs.0,
            last_run: runs.1,
            conditions_tag: cond.tag.clone(),
            lineage_hash: lineage.hash(),
        },
        &serde_json::to_string(config)?,
        prompt,
    )?;
    catalog
        .campaign_by_name(name)?
        .context("campaign just created")
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

    /// One pass: reconcile, ingest, transfer, queue, submit; reconcile and
    /// submit only when SLURM answers (see [`health`]).
    ///
    /// # Errors
    /// When the catalog or a data-movement stage fails; SLURM not answering is
    /// not an error (the report says the SLURM stages were skipped).
    pub fn pass(&self) -> Result<PassReport> {
        let start = Instant::now();
        let mut report = PassReport::default();
        let mut lap = Instant::now();
        let mut stage = |name: &'static str, report: &mut PassReport| {
            report
                .stage_seconds
                .insert(name, lap.elapsed().as_secs_f64());
            lap = Instant::now();
        };
        let mut answering = Vec::with_capacity(self.sites.len());
        for ps in &self.sites {
            match self.slurm_view(ps, &mut report)? {
                Some(view) => {
                    self.reconcile(ps, &view.snapshot, view.recovering, &mut report)?;
                    self.cancel_lost(ps, &view.snapshot, &mut report)?;
                    if ps.site == self.sites[0].site {
                        // Calibration jobs run at the first processing site.
                        self.calibration_stage(ps, &view.snapshot, view.recovering, &mut report)?;
                    }
                    answering.push(true);
                }
                None => {
                    self.declare_lost(ps, &mut report)?;
                    answering.push(false);
                }
            }
        }
        stage("reconcile", &mut report);

        let surf = self.cfg.sites.get(crate::catalog::Site::Surf)?.root.clone();
        let ing = ingest::run(&IngestConfig { surf_root: surf }, &self.catalog)?;
        stage("ingest", &mut report);
        report.ingested = ing.files_registered;
        let salting = !self.cfg.settings.salt_key.is_empty();
        if salting {
            let sr = crate::salt::run(
                &crate::salt::SaltConfig {
                    surf_root: self.cfg.sites.get(crate::catalog::Site::Surf)?.root.clone(),
                    key_file: PathBuf::from(&self.cfg.settings.salt_key),
                    vault_dir: PathBuf::from(&self.cfg.settings.salt_vault),
                    // The conditions in force for each run, as prompt processing.
                    conditions: crate::salt::SaltConditions::InForce,
                },
                &self.catalog,
            )?;
            report.salted = sr.files_salted + sr.files_recovered;
        }
        self.queue_copy_ins(&answering, &mut report)?;
        stage("copy-in", &mut report);
        let tr = match transfer::run(
            &TransferConfig {
                sites: self.cfg.sites.clone(),
                destinations: crate::catalog::Site::DESTINATIONS.to_vec(),
                max_attempts: self.cfg.settings.transfer_max_attempts,
                parallel: self.cfg.settings.transfer_parallel,
                retry_failed: false,
                require_salted: salting,
            },
            &self.catalog,
        ) {
            Ok(tr) => tr,
            Err(transfer::TransferError::Locked(e)) => {
                report.warnings.push(format!("transfer stage skipped: {e}"));
                transfer::TransferReport::default()
            }
            Err(e) => return Err(e.into()),
        };
        stage("transfer", &mut report);
        report.replicas_verified = tr.verified;
        report.replicas_failed = tr.failures.len();
        for x in &tr.out_of_space {
            report.warnings.push(format!(
                "{} at {}: destination full, queued for the next pass: {}",
                x.file, x.site, x.reason
            ));
        }
        report.held_unsalted = tr.held_unsalted;
        report.copied_in = tr.copied_in;
        if self.sites.len() > 1 {
            self.replicate_outputs(&mut report)?;
            stage("rq-transfer", &mut report);
        }
        if tr.blinded && !salting && tr.held_unsalted > 0 {
            report.warnings.push(format!(
                "the catalog is blinded and no salt key is configured (`salt_key`): \
                 {} science file(s) held unsalted at SURF",
                tr.held_unsalted
            ));
        }
        if self.cfg.settings.retention.enabled {
            self.retire(&mut report)?;
            stage("retire", &mut report);
        }
        let blinded = tr.blinded;

        if !self.cfg.settings.prompt_conditions.is_empty() {
            prompt_conditions::sync_prompt_campaigns(&self.catalog)?;
        }
        let mut campaigns: Vec<(CampaignRow, bool)> = Vec::new();
        for c in self.catalog.campaigns()? {
            if matches!(c.state, CampaignState::Defined | CampaignState::Active) {
                let (_, prompt) = self.catalog.campaign_extras(c.id)?;
                campaigns.push((c, prompt));
            }
        }
        campaigns.sort_by_key(|(c, prompt)| (!prompt, c.id));
        for (c, _) in &campaigns {
            report.tasks_queued += self
                .catalog
                .queue_campaign_tasks(c, salting || blinded || self.cfg.settings.require_salted)?;
            if c.state == CampaignState::Defined {
                self.catalog.campaign_transition(
                    c.id,
                    CampaignState::Defined,
                    CampaignState::Active,
                )?;
            }
        }
        stage("queue", &mut report);
        if answering.iter().any(|&a| a) {
            self.submit_simulations(&answering, &mut report)?;
            self.submit(&campaigns, &answering, &mut report)?;
        }
        stage("submit", &mut report);
        self.complete_campaigns()?;
        stage("campaigns", &mut report);
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The retention stage; a pass held off by the lock only warns.
    fn retire(&self, report: &mut PassReport) -> Result<()> {
        let cfg = crate::retire::RetireConfig {
            sites: self.cfg.sites.clone(),
            settings: self.cfg.settings.retention.clone(),
            dry_run: false,
        };
        match crate::retire::run(&cfg, &self.catalog) {
            Ok(r) => {
                report.surf_retired = r.retired.len() + r.finished;
                for k in r.kept {
                    report
                        .warnings
                        .push(format!("SURF copy of {} kept: {}", k.file, k.reason));
                }
                Ok(())
            }
            Err(crate::retire::RetireError::Locked(e)) => {
                report
                    .warnings
                    .push(format!("retention stage skipped: {e}"));
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn reconcile(
        &self,
        ps: &sites::ProcSite,
        snap: &Snapshot,
        recovering: bool,
        report: &mut PassReport,
    ) -> Result<()> {
        for job in self.jobs_at(ps.site)? {
            let slurm_job = match (job.state, job.slurm_id) {
                (JobState::Pending, _) => match snap.id_by_name(&job.slurm_name) {
                    // sbatch ran but we crashed, or it timed out, before recording it: adopt it.
                    Some(id) => {
                        self.catalog.job_accepted(job.id, id)?;
                        report.jobs_adopted += 1;
                        snap.job(id, job.array_index, &job.slurm_name).cloned()
                    }
                    // A submission to a stalled controller may show up one pass late.
                    None if recovering => continue,
                    None => {
                        self.catalog.job_never_submitted(
                            job.id,
                            "not in SLURM: the dispatcher stopped before sbatch",
                        )?;
                        report.jobs_never_submitted += 1;
                        continue;
                    }
                },
                (_, Some(id)) => snap.job(id, job.array_index, &job.slurm_name).cloned(),
                (_, None) => None,
            };
            let state = slurm_job.as_ref().map_or(SlurmState::Unknown, |j| j.state);
            match state {
                SlurmState::Pending | SlurmState::Suspended | SlurmState::Requeued => {}
                SlurmState::Running => {
                    if job.state == JobState::Submitted {
                        self.catalog.job_transition(
                            job.id,
                            JobState::Submitted,
                            JobState::Running,
                            None,
                        )?;
                    }
                }
                _ => {
                    // Final, or vanished/UNKNOWN: never taken as success by
                    // itself; the result records decide per task.
                    self.finish_job(ps, &job, slurm_job.as_ref(), report)?;
                    report.jobs_finished += 1;
                }
            }
        }
        Ok(())
    }

    fn finish_job(
        &self,
        ps: &sites::ProcSite,
        job: &JobRow,
        slurm: Option<&track::SlurmJob>,
        report: &mut PassReport,
    ) -> Result<()> {
        if job.kind == JobKind::Sim {
            return self.finish_sim_job(ps, job, slurm, report);
        }
        let (state, slurm_text) = slurm_outcome(job, slurm);
        let used = self.job_resources(job.id)?;
        let max_rss = slurm.and_then(|j| j.max_rss_bytes);
        let campaign = self.campaign_of(job)?;
        let mut all_ok = true;
        for task in self.catalog.tasks_of_job(job.id)? {
            if !matches!(task.state, TaskState::Submitted | TaskState::Submitting) {
                continue;
            }
            match self.task_output(&task, &campaign, &ps.rq_root) {
                Ok((output, size_bytes)) => {
                    self.output_done(ps, task.id, &output, size_bytes)?;
                    report.tasks_done += 1;
                }
                Err(why) => {
                    all_ok = false;
                    let reason = format!("{slurm_text}: {why}");
                    let s = match accounting::next_attempt(state, used, max_rss, self.limits()) {
                        Retry::Free => {
                            self.catalog.task_requeued_free(task.id, &reason)?;
                            TaskState::Queued
                        }
                        Retry::Fail(limit) => self
                            .catalog
                            .task_failed_at_limit(task.id, &format!("{reason}; {limit}"))?,
                        Retry::With(next) => {
                            if next != used {
                                self.catalog.set_task_resources(
                                    task.id,
                                    next.time_limit_min,
                                    next.mem_mb,
                                )?;
                            }
                            self.catalog.task_failed(
                                task.id,
                                &reason,
                                self.cfg.settings.max_attempts,
                                self.cfg.settings.backoff_s,
                            )?
                        }
                    };
                    tracing::warn!(file = %task.file_name, state = %s, %reason, "task attempt failed");
                    report.tasks_failed += 1;
                }
            }
        }
        let to = match state {
            SlurmState::Completed if all_ok => JobState::Completed,
            SlurmState::Cancelled => JobState::Cancelled,
            _ => JobState::Failed,
        };
        self.catalog
            .job_transition(job.id, job.state_after_adoption(), to, Some(&slurm_text))?;
        Ok(())
    }

    fn campaign_of(&self, job: &JobRow) -> Result<CampaignRow> {
        let id = job.campaign_id.context("job without campaign")?;
        self.catalog
            .campaigns()?
            .into_iter()
            .find(|c| c.id == id)
            .with_context(|| format!("campaign {id} of job {}", job.name))
    }

    /// Where a campaign's outputs go under a site's RQ root.
    fn out_dir(c: &CampaignRow, rq_root: &Path) -> PathBuf {
        rq_root.join(&c.name)
    }

    /// Catalogue a task's output with the site that made it; with several
    /// processing sites, its replica there and one queued at each other site,
    /// in the same transaction.
    fn output_done(
        &self,
        ps: &sites::ProcSite,
        task_id: i64,
        output: &NewOutput,
        size_bytes: u64,
    ) -> Result<()> {
        let others: Vec<Site> = self
            .sites
            .iter()
            .map(|p| p.site)
            .filter(|&s| s != ps.site)
            .collect();
        let rel = Path::new(&output.rq_path)
            .strip_prefix(&ps.rq_root)
            .ok()
            .and_then(Path::to_str);
        match rel {
            Some(path) if !others.is_empty() => self.catalog.task_done_at(
                task_id,
                output,
                &crate::catalog::OutputPlacement {
                    site: ps.site,
                    path,
                    size_bytes,
                    replicate_to: &others,
                },
            )?,
            _ => {
                if !others.is_empty() {
                    tracing::warn!(output = %output.rq_path, site = %ps.site, rq_root = %ps.rq_root.display(),
                        "output outside its site's RQ root: catalogued without replicas");
                }
                self.catalog.task_done(task_id, output)?;
                self.catalog
                    .set_output_site(output.file_id, &output.lineage_hash, ps.site)?;
            }
        }
        Ok(())
    }

    /// The output of a task (and its size) if its result record under
    /// `rq_root` says ok, with the campaign's lineage, and the RQ file is
    /// there with the recorded checksum.
    fn task_output(
        &self,
        task: &TaskRow,
        c: &CampaignRow,
        rq_root: &Path,
    ) -> std::result::Result<(NewOutput, u64), String> {
        let names = reco_job::plan::OutputNames::new(
            &Self::out_dir(c, rq_root),
            Path::new(&task.file_name),
            &c.lineage_hash,
        );
        let r = read_result(&names.record)
            .map_err(|_| format!("no result record {}", names.record.display()))?;
        if r.status != "ok" {
            return Err(r
                .error
                .unwrap_or_else(|| format!("result record says {}", r.status)));
        }
        if r.lineage_hash != c.lineage_hash {
            return Err(format!(
                "output lineage {} is not the campaign's {}",
                r.lineage_hash, c.lineage_hash
            ));
        }
        let out = r.output.ok_or("result record names no output")?;
        let digest = crate::adler::digest_file(&out).map_err(|e| e.to_string())?;
        if !r
            .output_adler32
            .as_deref()
            .is_some_and(|a| crate::adler::same_checksum(a, &digest.adler32))
        {
            return Err(format!(
                "{} does not match its recorded checksum",
                out.display()
            ));
        }
        Ok((
            NewOutput {
                file_id: task.file_id,
                lineage_hash: c.lineage_hash.clone(),
                rq_path: out.display().to_string(),
                checksum: digest.adler32,
                events: r.events,
            },
            digest.size_bytes,
        ))
    }

    fn complete_campaigns(&self) -> Result<()> {
        for c in self.catalog.campaigns()? {
            if c.state != CampaignState::Active || self.catalog.campaign_extras(c.id)?.1 {
                continue;
            }
            // A simulation campaign: every file made and reconstructed (or failed).
            if self.catalog.sim_spec(c.id)?.is_some() && !self.catalog.sim_family_settled(c.id)? {
                continue;
            }
            let (in_flight, finished) = self.catalog.campaign_in_flight(c.id)?;
            if in_flight == 0 && finished > 0 {
                self.catalog.campaign_transition(
                    c.id,
                    CampaignState::Active,
                    CampaignState::Complete,
                )?;
            }
        }
        Ok(())
    }
}

/// A finished (or vanished) job's final state and how to say it in a reason.
fn slurm_outcome(job: &JobRow, slurm: Option<&track::SlurmJob>) -> (SlurmState, String) {
    let (state, exit) = slurm.map_or((SlurmState::Unknown, None), |j| {
        (j.state, j.exit_code.clone())
    });
    let source = slurm.map_or("none", |j| j.source);
    let text = match (job.slurm_ref(), &exit) {
        (Some(id), Some(e)) => {
            format!("SLURM job {id} {} (exit {e}, {source})", state.name())
        }
        (Some(id), None) => format!("SLURM job {id} {} ({source})", state.name()),
        _ => format!("job {} {}", job.name, state.name()),
    };
    (state, text)
}

/// Values for the sbatch template.
fn template_values(
    cfg: &DispatchConfig,
    name: &str,
    log: &Path,
    reco_args: &str,
) -> Result<BTreeMap<String, String>> {
    let s = &cfg.settings;
    Ok([
        ("job_name", name.to_string()),
        ("nodes", s.nodes.to_string()),
        ("ntasks", s.ntasks.to_string()),
        ("ntasks_per_node", s.ntasks_per_node.to_string()),
        ("cpus_per_task", s.cpus_per_task.to_string()),
        ("time_limit", s.time_limit.clone()),
        ("log", log.display().to_string()),
        ("tpcflow", quote_path(&cfg.tpcflow_bin)?),
        ("reco_args", reco_args.to_string()),
        ("account", s.account.clone()),
        ("qos", s.qos.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect())
}

trait AdoptedState {
    fn state_after_adoption(&self) -> JobState;
}

impl AdoptedState for JobRow {
    /// A job adopted in this pass moved `pending -> submitted` already.
    fn state_after_adoption(&self) -> JobState {
        if self.state == JobState::Pending {
            JobState::Submitted
        } else {
            self.state
        }
    }
}
