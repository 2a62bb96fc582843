//! The reconcile stage: each processing site's open jobs looked up in one
//! SLURM snapshot (by id, and by name for jobs recorded `pending`); a
//! finished or vanished job's tasks are decided by their result records: an
//! `ok` record with the campaign's lineage and the RQ file's checksum
//! catalogues the output (with its replicas queued at the other processing
//! sites), anything else goes to the retry policy of the job's final state
//! ([`super::accounting`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::accounting::{self, Retry};
use super::track::{self, Snapshot};
use super::{sites, Dispatcher, PassReport};
use crate::catalog::{CampaignRow, JobKind, JobRow, JobState, NewOutput, Site, TaskRow, TaskState};
use crate::reco_job::{self, read_result};
use crate::slurm::JobState as SlurmState;

impl Dispatcher {
    /// The SLURM stages of each processing site: the health gate
    /// ([`super::health`]), then reconcile, jobs declared lost cancelled and,
    /// at the first site, the calibration stage; a site whose SLURM does not
    /// answer has its work declared lost once it has been silent long enough
    /// ([`super::sites`]). Returns, per site, whether its SLURM answered.
    pub(super) fn reconcile_sites(&self, report: &mut PassReport) -> Result<Vec<bool>> {
        let mut answering = Vec::with_capacity(self.sites.len());
        for ps in &self.sites {
            match self.slurm_view(ps, report)? {
                Some(view) => {
                    self.reconcile(ps, &view.snapshot, view.recovering, report)?;
                    self.cancel_lost(ps, &view.snapshot, report)?;
                    if ps.site == self.sites[0].site {
                        // Calibration jobs run at the first processing site.
                        self.calibration_stage(ps, &view.snapshot, view.recovering, report)?;
                    }
                    answering.push(true);
                }
                None => {
                    self.declare_lost(ps, report)?;
                    answering.push(false);
                }
            }
        }
        Ok(answering)
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
    pub(super) fn out_dir(c: &CampaignRow, rq_root: &Path) -> PathBuf {
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
}

/// A finished (or vanished) job's final state and how to say it in a reason.
pub(super) fn slurm_outcome(job: &JobRow, slurm: Option<&track::SlurmJob>) -> (SlurmState, String) {
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

pub(super) trait AdoptedState {
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
