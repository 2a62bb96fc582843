//! Sites that process: each processing site (USDC, UKDC) is a storage root
//! plus its own SLURM cluster (its `slurm.conf`, sbatch profile, account,
//! partition), and the dispatcher runs the SLURM stages once per site.
//!
//! ```text
//! per site, every pass:
//!   answers        reconcile its jobs (one squeue + one sacct on its cluster);
//!                  jobs declared lost earlier that it still runs are scancelled
//!   no answer      outage recorded for that site (`health`); once it lasts
//!                  `lost_after_s`, its jobs in flight are declared lost: their
//!                  files go back to the queue without spending an attempt and
//!                  run at another site (only when there is another)
//! submit:          a campaign at `any` goes to the answering, undrained site
//!                  with the most room in its queue that holds a verified
//!                  replica of the file; a campaign pinned to a site waits for
//!                  it; jobs read the replicas of the site they run at
//! ```
//!
//! The catalog keeps one output per file and lineage and records the site
//! that made it. `tpcflow site drain|resume SITE` closes a site to new work
//! (work in flight there runs to its end).
//!
//! ```text
//! replicas:  a file whose replica at the site that must run it is bad or
//!            lost, while the other processing site holds a verified one, is
//!            copied in from there (the transfer stage verifies its Adler-32
//!            before the final name appears; a corrupt source is marked bad
//!            and the file waits): `copy_in`
//! outputs:   each site writes under its RQ root (`[sites.X] rq_root`); an
//!            output is catalogued with its site and replicated to the other
//!            processing site by the transfer machinery (`transfer::outputs`)
//! ```
//!
//! Settings: without `[sites.*]` tables the dispatcher has one processing
//! site, USDC, on the cluster of `slurm_conf` (the single-site default).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::catalog::{now_unix_s, utc_string, Catalog, JobState, Site, SlurmHealth};
use crate::sbatch::Template;
use crate::slurm::{Client, ClusterConfig};

/// One processing site's batch system (`[sites.USDC]`, `[sites.UKDC]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteSettings {
    /// `slurm.conf` of the site's cluster; empty: the environment's.
    pub slurm_conf: String,
    /// sbatch template (`local`, `perlmutter`, a file); empty: `profile`.
    pub profile: String,
    /// sbatch `--account`; empty: `account`.
    pub account: String,
    /// sbatch `--partition`; empty: the cluster's default.
    pub partition: String,
    /// Where the site's jobs write RQ outputs (`{rq_root}/{campaign}/`);
    /// empty: the dispatcher's RQ root for the first processing site,
    /// `{site root}/RQ` for the others.
    pub rq_root: String,
}

/// The processing sites a dispatcher may submit to, in order of preference.
pub const PROCESSING: [Site; 2] = [Site::Usdc, Site::Ukdc];

/// One processing site at run time.
#[derive(Debug)]
pub struct ProcSite {
    /// Which site.
    pub site: Site,
    /// Its cluster's client commands.
    pub client: Client,
    /// Its cluster's configuration, asked once.
    pub cluster: OnceLock<ClusterConfig>,
    /// Its sbatch template (None: the dispatcher's).
    pub template: Option<Template>,
    /// sbatch `--account` (empty: the settings' `account`).
    pub account: String,
    /// sbatch `--partition` (empty: not given).
    pub partition: String,
    /// Its RQ root: its outputs, and the replicas of the others' outputs.
    pub rq_root: PathBuf,
}

/// Check the `[sites.*]` tables: processing sites only.
///
/// # Errors
/// Naming the table.
pub fn validate(sites: &BTreeMap<String, SiteSettings>) -> Result<()> {
    for name in sites.keys() {
        let site: Site = name.parse().with_context(|| format!("`[sites.{name}]`"))?;
        if !PROCESSING.contains(&site) {
            bail!("`[sites.{name}]`: only USDC and UKDC process");
        }
    }
    Ok(())
}

/// The processing sites of these settings (USDC first): the `[sites.*]`
/// tables, or USDC alone on `slurm_conf` when there are none. `storage`
/// locates each site's storage and `rq_root` is the dispatcher's RQ root
/// (the first site's, unless its table says otherwise).
///
/// # Errors
/// A site's template that does not load, or a site without storage.
pub fn processing_sites(
    settings: &super::Settings,
    storage: &crate::transfer::Sites,
    rq_root: &std::path::Path,
) -> Result<Vec<ProcSite>> {
    let timeout = Duration::from_secs_f64(settings.slurm_timeout_s);
    let conf = |c: &str| Some(PathBuf::from(c)).filter(|p| !p.as_os_str().is_empty());
    if settings.sites.is_empty() {
        return Ok(vec![ProcSite {
            site: Site::Usdc,
            client: Client {
                timeout,
                conf: conf(&settings.slurm_conf),
            },
            cluster: OnceLock::new(),
            template: None,
            account: String::new(),
            partition: String::new(),
            rq_root: rq_root.to_path_buf(),
        }]);
    }
    let mut out = Vec::new();
    for site in PROCESSING {
        let Some(s) = settings.sites.get(site.as_str()) else {
            continue;
        };
        let template = if s.profile.is_empty() {
            None
        } else {
            Some(
                Template::load(&s.profile)
                    .with_context(|| format!("`[sites.{site}]` profile {}", s.profile))?,
            )
        };
        let site_rq = if !s.rq_root.is_empty() {
            PathBuf::from(&s.rq_root)
        } else if out.is_empty() {
            rq_root.to_path_buf()
        } else {
            storage
                .get(site)
                .with_context(|| format!("`[sites.{site}]`"))?
                .root
                .join("RQ")
        };
        out.push(ProcSite {
            site,
            client: Client {
                timeout,
                conf: conf(&s.slurm_conf),
            },
            cluster: OnceLock::new(),
            template,
            account: s.account.clone(),
            partition: s.partition.clone(),
            rq_root: site_rq,
        });
    }
    Ok(out)
}

/// Whether an outage has lasted long enough for the site's work in flight to
/// count as lost.
pub fn is_lost(health: &SlurmHealth, now: f64, lost_after_s: f64) -> bool {
    now - health.unavailable_since >= lost_after_s
}

/// The reason recorded on a job declared lost (and the prefix by which a
/// lost job still running there is found and cancelled once the site answers).
pub fn lost_reason(site: Site, health: &SlurmHealth) -> String {
    format!(
        "{LOST_PREFIX} {site}: its SLURM controller has not answered since {}; \
         the files run at another site",
        utc_string(health.unavailable_since)
    )
}

/// Prefix of [`lost_reason`].
pub const LOST_PREFIX: &str = "lost at";

/// The `sites` array of `tpcflow status --json`, and one line per site in
/// trouble for the text status.
///
/// # Errors
/// Catalog errors.
pub fn status(catalog: &Catalog) -> Result<(serde_json::Value, Vec<String>)> {
    let drains = catalog.site_drains()?;
    let mut out = Vec::new();
    let mut lines = Vec::new();
    for site in PROCESSING {
        let health = catalog.slurm_health_at(site)?;
        let drain = drains.iter().find(|d| d.site == site.as_str());
        let mut v = super::health::status_json(health.as_ref());
        v["site"] = serde_json::json!(site.as_str());
        v["drained"] = serde_json::json!(drain.is_some());
        if let Some(h) = &health {
            lines.push(format!("{site}: {}", super::health::outage_line(h)));
        }
        if let Some(d) = drain {
            v["drain"] = serde_json::json!(d);
            lines.push(format!(
                "{site}: DRAINED since {} by {}: {}",
                utc_string(d.since),
                d.by,
                d.reason
            ));
        }
        out.push(v);
    }
    Ok((serde_json::Value::Array(out), lines))
}

impl super::Dispatcher {
    /// A site whose outage lasts `lost_after_s`, when another site processes:
    /// declare its jobs in flight lost; their files go back to the queue
    /// without spending an attempt.
    ///
    /// # Errors
    /// Catalog errors.
    pub(super) fn declare_lost(&self, ps: &ProcSite, report: &mut super::PassReport) -> Result<()> {
        if self.sites.len() < 2 {
            return Ok(());
        }
        let Some(health) = self.catalog.slurm_health_at(ps.site)? else {
            return Ok(());
        };
        if !is_lost(&health, now_unix_s(), self.cfg.settings.lost_after_s) {
            return Ok(());
        }
        let reason = lost_reason(ps.site, &health);
        for job in self.jobs_at(ps.site)? {
            for task in self.catalog.tasks_of_job(job.id)? {
                self.catalog.task_requeued_free(task.id, &reason)?;
            }
            for task in self.catalog.sim_tasks_of_job(job.id)? {
                self.catalog.sim_task_requeued_free(task.id, &reason)?;
            }
            self.catalog
                .job_transition(job.id, job.state, JobState::Failed, Some(&reason))?;
            tracing::warn!(job = %job.name, site = %ps.site, "declared lost");
            report.jobs_lost += 1;
        }
        Ok(())
    }

    /// Jobs declared lost at this site that its SLURM still runs: cancel them
    /// (their files run elsewhere).
    ///
    /// # Errors
    /// Catalog errors; a failing scancel only warns.
    pub(super) fn cancel_lost(
        &self,
        ps: &ProcSite,
        snap: &super::track::Snapshot,
        report: &mut super::PassReport,
    ) -> Result<()> {
        let failed = self.catalog.jobs_in_state(JobState::Failed)?;
        let ids: Vec<i64> = failed.iter().map(|j| j.id).collect();
        let here = self.catalog.jobs_at_site(&ids, ps.site, PROCESSING[0])?;
        let mut cancel = Vec::new();
        for j in failed.iter().filter(|j| here.contains(&j.id)) {
            let lost = j
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with(LOST_PREFIX));
            let Some(id) = j.slurm_id.filter(|_| lost) else {
                continue;
            };
            if snap
                .job(id, j.array_index, &j.slurm_name)
                .is_some_and(|s| !s.state.is_final())
            {
                cancel.extend(j.slurm_ref());
            }
        }
        if !cancel.is_empty() {
            report.slurm_calls += 1;
            match ps.client.cancel(&cancel) {
                Ok(()) => {
                    tracing::info!(site = %ps.site, jobs = ?cancel, "lost jobs cancelled");
                    report.lost_jobs_cancelled += cancel.len();
                }
                Err(e) => report
                    .warnings
                    .push(format!("{}: scancel of lost jobs failed: {e}", ps.site)),
            }
        }
        Ok(())
    }

    /// Copy-ins: for each campaign still at work, the files that no site it
    /// may run at can read (their replica there bad or lost) while the other
    /// processing site holds a verified replica get theirs queued from
    /// there; this pass's transfer stage copies and verifies them. A
    /// campaign at `any` looks at the open sites only: a file one of them
    /// can read runs there instead.
    ///
    /// # Errors
    /// Catalog errors.
    pub(super) fn queue_copy_ins(
        &self,
        answering: &[bool],
        report: &mut super::PassReport,
    ) -> Result<()> {
        if self.sites.len() < 2 {
            return Ok(());
        }
        let drained: Vec<String> = self
            .catalog
            .site_drains()?
            .into_iter()
            .map(|d| d.site)
            .collect();
        let all: Vec<Site> = self.sites.iter().map(|p| p.site).collect();
        let open: Vec<Site> = self
            .sites
            .iter()
            .zip(answering)
            .filter(|(p, &up)| up && !drained.iter().any(|d| d == p.site.as_str()))
            .map(|(p, _)| p.site)
            .collect();
        for c in self.catalog.campaigns()? {
            if !matches!(
                c.state,
                crate::catalog::CampaignState::Defined | crate::catalog::CampaignState::Active
            ) {
                continue;
            }
            let at = self.catalog.campaign_site(c.id)?;
            let allowed: Vec<Site> = if at == "any" {
                open.clone()
            } else {
                all.iter().copied().filter(|s| s.as_str() == at).collect()
            };
            for (file, to, from) in self.catalog.copy_in_candidates(c.id, &allowed, &all)? {
                if self.catalog.queue_copy_in(file, to, from)? {
                    tracing::info!(file, site = %to, source = %from, campaign = %c.name, "copy-in queued");
                    report.copy_ins_queued += 1;
                }
            }
        }
        Ok(())
    }

    /// Replicate RQ outputs between the processing sites (the transfer
    /// machinery's [`crate::transfer::outputs`]); a pass held off by the
    /// transfer lock only warns.
    ///
    /// # Errors
    /// Catalog errors.
    pub(super) fn replicate_outputs(&self, report: &mut super::PassReport) -> Result<()> {
        let cfg = crate::transfer::outputs::OutputTransferConfig {
            rq_roots: self
                .sites
                .iter()
                .map(|p| (p.site, p.rq_root.clone()))
                .collect(),
            sites: self.cfg.sites.clone(),
            max_attempts: self.cfg.settings.transfer_max_attempts,
            parallel: self.cfg.settings.transfer_parallel,
        };
        match crate::transfer::outputs::run(&cfg, &self.catalog) {
            Ok(r) => {
                report.outputs_replicated = r.verified;
                report.output_replicas_failed = r.failures.len();
                for f in r.failures {
                    report.warnings.push(format!(
                        "RQ file {} at {}: replica bad after {} attempt(s): {}",
                        f.file, f.site, f.attempts, f.reason
                    ));
                }
                Ok(())
            }
            Err(crate::transfer::TransferError::Locked(e)) => {
                report.warnings.push(format!("RQ replication skipped: {e}"));
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The open jobs of a site.
    pub(super) fn jobs_at(&self, site: Site) -> Result<Vec<crate::catalog::JobRow>> {
        let active = self.catalog.active_jobs()?;
        let ids: Vec<i64> = active.iter().map(|j| j.id).collect();
        let here = self.catalog.jobs_at_site(&ids, site, PROCESSING[0])?;
        Ok(active
            .into_iter()
            .filter(|j| here.contains(&j.id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_processing_sites_have_batch_systems() {
        let mut s = BTreeMap::new();
        s.insert("UKDC".to_string(), SiteSettings::default());
        assert!(validate(&s).is_ok());
        s.insert("ARCHIVE".to_string(), SiteSettings::default());
        assert!(validate(&s).unwrap_err().to_string().contains("ARCHIVE"));
        let mut s = BTreeMap::new();
        s.insert("MARS".to_string(), SiteSettings::default());
        assert!(format!("{:#}", validate(&s).unwrap_err()).contains("MARS"));
    }

    #[test]
    fn work_is_lost_after_the_configured_outage() {
        let h = SlurmHealth {
            unavailable_since: 1000.0,
            passes: 3,
            attempts: 3,
            last_attempt_at: 1010.0,
            next_try_at: 1020.0,
            last_error: "connect failure".into(),
        };
        assert!(!is_lost(&h, 1059.0, 60.0));
        assert!(is_lost(&h, 1060.0, 60.0));
        assert!(lost_reason(Site::Ukdc, &h).starts_with("lost at UKDC"));
    }
}
