//! The dispatcher's settings: the TOML file of `tpcflow dispatch --config`
//! (every key optional, unknown keys refused), its defaults, and the checks
//! that refuse settings that cannot work.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{accounting, calibration, sites};

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
