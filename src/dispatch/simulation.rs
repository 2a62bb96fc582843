//! Simulation production campaigns: `tpcflow campaign create --simulate`
//! defines a family of simulated runs ([`create_simulation_campaign`]); the
//! dispatcher makes its files with SLURM job arrays of `tpcflow sim` and
//! reconstructs them as any run.
//!
//! ```text
//! submit   queued simulation tasks, split evenly between the open sites the
//!          campaign may run at (its site, or `any`), one job array per site
//!          (slurm/sim-local.sbatch): element i reads `element-{i}.txt`
//!          (run, index, run length) and runs `tpcflow sim --file-index`
//!          into the site's storage; jobs are `kind` sim in the catalog, so
//!          reconciliation, sacct, failover and loss work as for reco jobs
//! finish   an element whose raw file is complete under its final name:
//!          the file is registered with a verified replica at that site and
//!          queued replicas, copied from there, at the other destinations;
//!          otherwise the retry policy of the final state (`accounting`)
//! then     once transferred, the files get the campaign's reconstruction
//!          tasks like any run's
//! ```
//!
//! File i of the family is file `i % per_run` of run `first + i / per_run`,
//! written with the campaign's seed: every event's random stream comes from
//! (seed, run, event index), so an element's file is byte for byte the file
//! `tpcflow sim --run R --files N --seed S` writes by hand, whichever
//! element ran first, on which site, and after however many retries.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use tpcflow_reco::RecoConfig;

use super::accounting::{self, Resources, Retry};
use super::submit::resource_args;
use super::{sites::ProcSite, Dispatcher, PassReport};
use crate::catalog::{
    CampaignRow, CampaignState, Catalog, JobKind, JobRow, JobState, NewRawFile, SimSpec,
    SimTaskRow, Site, TaskState,
};
use crate::shell::{quote, quote_path};
use crate::slurm::JobState as SlurmState;

/// The sbatch template of simulation jobs.
const TEMPLATE: &str = include_str!("../../slurm/sim-local.sbatch");

/// Define a simulation campaign: its runs, its production parameters and
/// its reconstruction (conditions `conditions`, `config`), at `site`.
///
/// # Errors
/// A name taken, an unknown source, conditions or detector truth, a bad
/// reco config, run numbers exhausted.
pub fn create_simulation_campaign(
    catalog: &Catalog,
    name: &str,
    spec: &SimSpec,
    config: &RecoConfig,
    site: &str,
) -> Result<CampaignRow> {
    config.validate().context("reco config")?;
    if catalog.campaign_by_name(name)?.is_some() {
        bail!("campaign `{name}` already exists");
    }
    crate::sim::Source::from_str(&spec.source, true)
        .map_err(|e| anyhow::anyhow!("--source {}: {e}", spec.source))?;
    if let Some(t) = &spec.detector_truth {
        let truth = crate::sim::detector_truth::DetectorTruth::load(t)
            .with_context(|| format!("--detector-truth {t}"))?;
        // A truth describes detector runs; simulated runs are numbered apart.
        let run = spec.truth_run.with_context(|| {
            format!(
                "--detector-truth {t} needs --truth-run RUN: the detector run whose state \
                 to simulate (simulated runs are numbered from {})",
                crate::catalog::SIM_FIRST_RUN
            )
        })?;
        truth
            .simulated_detector(run)
            .with_context(|| format!("--detector-truth {t} at --truth-run {run}"))?;
    }
    let cond = super::prompt_conditions::resolve(
        catalog,
        &spec.conditions,
        &format!("conditions of simulation campaign {name}"),
    )?;
    let lineage = crate::reco_job::lineage(&cond, config);
    let spec = SimSpec {
        conditions: cond.tag.clone(),
        ..spec.clone()
    };
    Ok(catalog.create_simulation_campaign(
        name,
        &cond.tag,
        &lineage.hash(),
        &serde_json::to_string(config)?,
        site,
        &spec,
    )?)
}

impl Dispatcher {
    /// Submit the queued files of every simulation campaign at work.
    ///
    /// # Errors
    /// Catalog errors; a failing sbatch only warns (or records an outage).
    pub(super) fn submit_simulations(
        &self,
        answering: &[bool],
        report: &mut PassReport,
    ) -> Result<()> {
        let s = &self.cfg.settings;
        let drained: HashSet<String> = self
            .catalog
            .site_drains()?
            .into_iter()
            .map(|d| d.site)
            .collect();
        let mut room = Vec::with_capacity(self.sites.len());
        for (ps, &up) in self.sites.iter().zip(answering) {
            let open = up && !drained.contains(ps.site.as_str());
            let queued: HashSet<String> = self
                .jobs_at(ps.site)?
                .into_iter()
                .map(|j| j.slurm_name)
                .collect();
            room.push(open && queued.len() < s.max_queued_jobs);
        }
        for c in self.catalog.campaigns()? {
            if !matches!(c.state, CampaignState::Defined | CampaignState::Active) {
                continue;
            }
            let Some(spec) = self.catalog.sim_spec(c.id)? else {
                continue;
            };
            let at = self.catalog.campaign_site(c.id)?;
            let open: Vec<usize> = (0..self.sites.len())
                .filter(|&i| room[i] && (at == "any" || at == self.sites[i].site.as_str()))
                .collect();
            if open.is_empty() {
                continue;
            }
            let tasks = self
                .catalog
                .runnable_sim_tasks(c.id, s.array_max_jobs * open.len())?;
            if tasks.is_empty() {
                continue;
            }
            if c.state == CampaignState::Defined {
                self.catalog.campaign_transition(
                    c.id,
                    CampaignState::Defined,
                    CampaignState::Active,
                )?;
            }
            let share = tasks.len().div_ceil(open.len());
            for (chunk, &i) in tasks.chunks(share).zip(&open) {
                if !self.submit_sim_array(&self.sites[i], &c, &spec, chunk, report)? {
                    room[i] = false;
                }
            }
        }
        Ok(())
    }

    /// One job array at `ps`, an element per file; intent first. False when
    /// sbatch failed.
    fn submit_sim_array(
        &self,
        ps: &ProcSite,
        c: &CampaignRow,
        spec: &SimSpec,
        tasks: &[SimTaskRow],
        report: &mut PassReport,
    ) -> Result<bool> {
        let elements: Vec<(Vec<i64>, u32)> =
            tasks.iter().map(|t| (vec![t.id], t.attempts + 1)).collect();
        let (name, jobs) = self.catalog.begin_array_of(
            JobKind::Sim,
            c.id,
            &format!("tpcflow-{}-c{}", self.instance, c.id),
            &elements,
        )?;
        let ids: Vec<i64> = jobs.iter().map(|j| j.0).collect();
        self.catalog.set_jobs_site(&ids, ps.site)?;
        let dir = self.job_dir(&name)?;
        for (i, t) in tasks.iter().enumerate() {
            crate::atomic_file::write(
                &dir.join(format!("element-{i}.txt")),
                format!("{} {} {}\n", t.run, t.sequence, t.run_files).as_bytes(),
            )?;
        }
        let ids_of_tasks: Vec<i64> = tasks.iter().map(|t| t.id).collect();
        let res = self.sim_resources(&ids_of_tasks)?;
        self.catalog
            .set_jobs_resources(&ids, res.time_limit_min, res.mem_mb)?;
        let storage = &self.cfg.sites.get(ps.site)?.root;
        let conditions = super::prompt_conditions::job_conditions(
            &self.catalog,
            &self.cfg.rq_root,
            &spec.conditions,
        )?;
        let mut sim_args = format!(
            "--events-per-file {} --seed {} --source {} --conditions {} --out {} --json",
            spec.events_per_file,
            spec.seed,
            quote(&spec.source)?,
            quote(&conditions)?,
            quote_path(storage)?
        );
        if let Some(t) = &spec.detector_truth {
            sim_args.push_str(&format!(" --detector-truth {}", quote(t)?));
            if let Some(r) = spec.truth_run {
                sim_args.push_str(&format!(" --truth-run {r}"));
            }
        }
        let values: BTreeMap<String, String> = [
            ("job_name", name.clone()),
            ("cpus_per_task", self.cfg.settings.cpus_per_task.to_string()),
            ("time_limit", self.cfg.settings.time_limit.clone()),
            ("log", dir.join("job-%a.log").display().to_string()),
            ("tpcflow", quote_path(&self.cfg.tpcflow_bin)?),
            ("elements", quote(&format!("{}/element-", dir.display()))?),
            ("sim_args", sim_args),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let template = crate::sbatch::Template {
            name: "slurm/sim-local.sbatch".into(),
            text: TEMPLATE.into(),
        };
        let script =
            crate::sbatch::write_script(&dir.join("job.sbatch"), &template.render(&values)?)?;
        let mut args = resource_args(res);
        args.push(format!(
            "--array=0-{}%{}",
            tasks.len() - 1,
            self.cfg.settings.array_throttle
        ));
        let account = if ps.account.is_empty() {
            &self.cfg.settings.account
        } else {
            &ps.account
        };
        if !account.is_empty() {
            args.push(format!("--account={account}"));
        }
        if !ps.partition.is_empty() {
            args.push(format!("--partition={}", ps.partition));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        report.slurm_calls += 1;
        let result = ps
            .client
            .submit(&script, &args)
            .map_err(anyhow::Error::from);
        let accepted = self.settle_submission(ps, &name, &ids, true, result, report)?;
        if accepted {
            report.sim_files_submitted += ids.len();
        }
        Ok(accepted)
    }

    /// The resources an array of these simulation tasks asks for: the most any needs.
    fn sim_resources(&self, task_ids: &[i64]) -> Result<Resources> {
        let d = self.default_resources();
        let mut r = d;
        for (time, mem) in self.catalog.sim_task_resources(task_ids)? {
            r.time_limit_min = r.time_limit_min.max(time.unwrap_or(d.time_limit_min));
            r.mem_mb = r.mem_mb.max(mem.or(d.mem_mb));
        }
        Ok(r)
    }

    /// A simulation job (array element) ended: its file, complete at the
    /// site's storage, is catalogued there; otherwise the retry policy.
    ///
    /// # Errors
    /// Catalog errors.
    pub(super) fn finish_sim_job(
        &self,
        ps: &ProcSite,
        job: &JobRow,
        slurm: Option<&super::track::SlurmJob>,
        report: &mut PassReport,
    ) -> Result<()> {
        let (state, slurm_text) = super::reconcile::slurm_outcome(job, slurm);
        let used = self.job_resources(job.id)?;
        let max_rss = slurm.and_then(|j| j.max_rss_bytes);
        let storage = &self.cfg.sites.get(ps.site)?.root;
        let mut all_ok = true;
        for task in self.catalog.sim_tasks_of_job(job.id)? {
            if !matches!(task.state, TaskState::Submitted | TaskState::Submitting) {
                continue;
            }
            match simulated_file(storage, &task) {
                Ok(file) => {
                    self.catalog
                        .sim_task_done(task.id, &file, ps.site, &Site::DESTINATIONS)?;
                    tracing::info!(file = %file.name, site = %ps.site, adler32 = %file.adler32, "simulated file catalogued");
                    report.sim_files_made += 1;
                }
                Err(why) => {
                    all_ok = false;
                    let reason = format!("{slurm_text}: {why}");
                    let s = match accounting::next_attempt(state, used, max_rss, self.limits()) {
                        Retry::Free => {
                            self.catalog.sim_task_requeued_free(task.id, &reason)?;
                            TaskState::Queued
                        }
                        Retry::Fail(limit) => self
                            .catalog
                            .sim_task_failed_at_limit(task.id, &format!("{reason}; {limit}"))?,
                        Retry::With(next) => {
                            if next != used {
                                self.catalog.set_sim_task_resources(
                                    task.id,
                                    next.time_limit_min,
                                    next.mem_mb,
                                )?;
                            }
                            self.catalog.sim_task_failed(
                                task.id,
                                &reason,
                                self.cfg.settings.max_attempts,
                                self.cfg.settings.backoff_s,
                            )?
                        }
                    };
                    tracing::warn!(run = task.run, index = task.sequence, state = %s, %reason, "simulation attempt failed");
                    report.tasks_failed += 1;
                }
            }
        }
        let to = match state {
            SlurmState::Completed if all_ok => JobState::Completed,
            SlurmState::Cancelled => JobState::Cancelled,
            _ => JobState::Failed,
        };
        self.catalog.job_transition(
            job.id,
            super::reconcile::AdoptedState::state_after_adoption(job),
            to,
            Some(&slurm_text),
        )?;
        Ok(())
    }
}

/// The raw file a simulation task makes, if it is complete at `storage`
/// (the simulator writes a temporary name and renames).
fn simulated_file(storage: &Path, task: &SimTaskRow) -> std::result::Result<NewRawFile, String> {
    let path = crate::raw::raw_file_path(storage, task.run, task.sequence);
    let digest = crate::adler::digest_file(&path)
        .map_err(|e| format!("no complete file {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let written_at = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    Ok(NewRawFile {
        run: task.run,
        sequence: task.sequence,
        rel_path: format!("{:06}/{name}", task.run),
        name,
        size_bytes: digest.size_bytes,
        adler32: digest.adler32,
        written_at,
    })
}
