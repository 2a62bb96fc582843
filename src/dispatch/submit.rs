//! The submit stage: runnable tasks grouped into jobs (or job arrays) at the
//! processing site that holds verified replicas of their files and has room
//! in its queue; each job's resources (time limit, memory) are the most any
//! of its tasks needs after the retry policy of [`super::accounting`].
//!
//! Intent first: a job is recorded `pending` before `sbatch`, so a crash
//! between the two is reconciled by name (see the dispatcher's module doc).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tpcflow_reco::RecoConfig;

use super::accounting::{self, Limits, Resources};
use super::{sites, DispatchConfig, Dispatcher, PassReport};
use crate::catalog::{CampaignRow, Site, TaskRow};
use crate::shell::{quote, quote_path};
use crate::slurm::SlurmError;

impl Dispatcher {
    /// Resources of a first attempt, from the settings.
    pub(super) fn default_resources(&self) -> Resources {
        let s = &self.cfg.settings;
        Resources {
            time_limit_min: accounting::parse_minutes(&s.time_limit).unwrap_or(30),
            mem_mb: Some(s.mem_mb).filter(|&m| m > 0),
        }
    }

    pub(super) fn limits(&self) -> Limits {
        let s = &self.cfg.settings;
        Limits {
            max_time_limit_min: accounting::parse_minutes(&s.max_time_limit).unwrap_or(240),
            max_mem_mb: s.max_mem_mb,
        }
    }

    /// What a job was submitted with (the settings' defaults where not recorded).
    pub(super) fn job_resources(&self, job_id: i64) -> Result<Resources> {
        let d = self.default_resources();
        let (time, mem) = self.catalog.job_resources(job_id)?;
        Ok(Resources {
            time_limit_min: time.unwrap_or(d.time_limit_min),
            mem_mb: mem.or(d.mem_mb),
        })
    }

    /// The resources a batch asks for: the most any of its tasks needs.
    fn batch_resources(&self, batches: &[Batch]) -> Result<Resources> {
        let d = self.default_resources();
        let ids: Vec<i64> = batches.iter().flat_map(Batch::task_ids).collect();
        let mut r = d;
        for (time, mem) in self.catalog.task_resources(&ids)?.into_values() {
            r.time_limit_min = r.time_limit_min.max(time.unwrap_or(d.time_limit_min));
            r.mem_mb = r.mem_mb.max(mem.or(d.mem_mb));
        }
        Ok(r)
    }

    pub(super) fn submit(
        &self,
        campaigns: &[(CampaignRow, bool)],
        answering: &[bool],
        report: &mut PassReport,
    ) -> Result<()> {
        let s = &self.cfg.settings;
        let single = s.sites.is_empty();
        let drained: HashSet<String> = self
            .catalog
            .site_drains()?
            .into_iter()
            .map(|d| d.site)
            .collect();
        // Each site's queue: SLURM job records in flight there (an array is one).
        let mut budgets = Vec::with_capacity(self.sites.len());
        for (ps, &up) in self.sites.iter().zip(answering) {
            if !up || drained.contains(ps.site.as_str()) {
                budgets.push(0);
                continue;
            }
            let queued: HashSet<String> = self
                .jobs_at(ps.site)?
                .into_iter()
                .map(|j| j.slurm_name)
                .collect();
            budgets.push(
                s.max_queued_jobs
                    .saturating_sub(queued.len())
                    .min(s.max_submissions_per_pass),
            );
        }
        let sites: Vec<Site> = self.sites.iter().map(|p| p.site).collect();
        for (c, prompt) in campaigns {
            let at = self.catalog.campaign_site(c.id)?;
            let arrays = !prompt && s.array_min_jobs > 0;
            let fetch = s.files_per_job * if arrays { s.array_max_jobs } else { 1 };
            'more: loop {
                // The campaign's sites with room, the roomiest first.
                let mut open: Vec<usize> = (0..self.sites.len())
                    .filter(|&i| budgets[i] > 0 && (at == "any" || at == sites[i].as_str()))
                    .collect();
                open.sort_by_key(|&i| std::cmp::Reverse(budgets[i]));
                if open.is_empty() {
                    break;
                }
                // With several sites, only files some open site can read now:
                // one waiting for a replica must not hold back the rest.
                let tasks = if single {
                    self.catalog.runnable_tasks(c.id, fetch)?
                } else {
                    let at: Vec<Site> = open.iter().map(|&i| sites[i]).collect();
                    self.catalog.runnable_tasks_at(c.id, &at, fetch)?
                };
                if tasks.is_empty() {
                    break;
                }
                let file_ids: Vec<i64> = tasks.iter().map(|t| t.file_id).collect();
                let paths = self.catalog.verified_paths(&file_ids, &sites)?;
                for &i in &open {
                    let ps = &self.sites[i];
                    let batches = self.batches(ps.site, &tasks, &paths, single, report)?;
                    if batches.is_empty() {
                        continue;
                    }
                    let submitted = if arrays && batches.len() >= s.array_min_jobs {
                        self.submit_array(ps, c, &batches, report)?
                    } else {
                        self.submit_job(ps, c, &batches[0], report)?
                    };
                    if !submitted {
                        budgets[i] = 0;
                    } else {
                        budgets[i] -= 1;
                    }
                    continue 'more;
                }
                // No open site took these files (with several sites only if a
                // replica changed since the query): they wait for the next
                // pass. With one site, `batches` failed their attempts instead.
                if !single {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Group runnable tasks with a verified replica at `site` into jobs of at
    /// most `files_per_job` files and `max_job_bytes`. With one processing
    /// site (`fail_missing`), a task without a verified replica there fails
    /// its attempt; with several, it is left for another site.
    fn batches(
        &self,
        site: Site,
        tasks: &[TaskRow],
        paths: &HashMap<(i64, Site), String>,
        fail_missing: bool,
        report: &mut PassReport,
    ) -> Result<Vec<Batch>> {
        let s = &self.cfg.settings;
        let root = self.cfg.sites.get(site)?.root.clone();
        let mut out: Vec<Batch> = Vec::new();
        let mut bytes = 0u64;
        for t in tasks {
            let Some(rel) = paths.get(&(t.file_id, site)) else {
                if fail_missing {
                    self.catalog.task_failed(
                        t.id,
                        &format!("no verified {site} replica"),
                        s.max_attempts,
                        s.backoff_s,
                    )?;
                    report.tasks_failed += 1;
                }
                continue;
            };
            let full = out.last().is_none_or(|b| {
                b.files.len() >= s.files_per_job || bytes + t.size_bytes > s.max_job_bytes
            });
            if full {
                out.push(Batch::default());
                bytes = 0;
            }
            let b = out.last_mut().context("batch just pushed")?;
            bytes += t.size_bytes;
            b.attempt = b.attempt.max(t.attempts + 1);
            b.files.push((t.id, root.join(rel), t.adler32.clone()));
        }
        Ok(out)
    }

    /// One plain job: intent first (if we crash after it, reconcile finds the
    /// name), then sbatch. False when sbatch failed (the pass stops submitting).
    fn submit_job(
        &self,
        ps: &sites::ProcSite,
        c: &CampaignRow,
        batch: &Batch,
        report: &mut PassReport,
    ) -> Result<bool> {
        let ids = batch.task_ids();
        let (job_id, name) = self.catalog.begin_job(
            c.id,
            &format!("tpcflow-{}-c{}", self.instance, c.id),
            &ids,
            batch.attempt,
        )?;
        self.catalog.set_jobs_site(&[job_id], ps.site)?;
        let dir = self.job_dir(&name)?;
        let list = dir.join("inputs.txt");
        write_input_list(&list, batch)?;
        let inputs = format!("@{}", quote_path(&list)?);
        let res = self.batch_resources(std::slice::from_ref(batch))?;
        self.catalog
            .set_jobs_resources(&[job_id], res.time_limit_min, res.mem_mb)?;
        let res_args = resource_args(res);
        let res_args: Vec<&str> = res_args.iter().map(String::as_str).collect();
        let result = self.sbatch(ps, c, &name, &dir, &inputs, &dir.join("job.log"), &res_args);
        report.slurm_calls += 1;
        tracing::debug!(job = %name, files = ids.len(), "sbatch answered");
        self.settle_submission(ps, &name, &[job_id], false, result, report)
    }

    /// What one `sbatch` of the catalog jobs `job_ids` (one plain job, or
    /// the elements of an array) came to: accepted, the jobs take its SLURM
    /// id and count as submitted at `ps`; SLURM unavailable, the intents stay
    /// for the reconciliation (it may have been accepted); refused, the jobs
    /// never ran and their tasks are queued again, with the reason as a
    /// warning. Returns whether it was accepted.
    ///
    /// # Errors
    /// Catalog errors.
    pub(super) fn settle_submission(
        &self,
        ps: &sites::ProcSite,
        name: &str,
        job_ids: &[i64],
        array: bool,
        result: Result<u64>,
        report: &mut PassReport,
    ) -> Result<bool> {
        match result {
            Ok(slurm_id) => {
                self.catalog.jobs_accepted(job_ids, slurm_id)?;
                tracing::info!(job = %name, slurm_id, site = %ps.site, jobs = job_ids.len(), array, "submitted");
                report.jobs_submitted += job_ids.len();
                if array {
                    report.arrays_submitted += 1;
                }
                *report.submitted_at.entry(ps.site.to_string()).or_default() += job_ids.len();
                Ok(true)
            }
            Err(e) => {
                if let Some(e) = unavailable(&e) {
                    self.slurm_unavailable(ps, e, report)?;
                    return Ok(false);
                }
                let msg = format!("sbatch failed for {name}: {e:#}");
                self.catalog.jobs_never_submitted(job_ids, &msg)?;
                report.warnings.push(msg);
                Ok(false)
            }
        }
    }

    /// One SLURM job array, an element per batch, throttled by `%array_throttle`;
    /// element `i` reads `inputs-{i}.txt`. Intent first for every element.
    fn submit_array(
        &self,
        ps: &sites::ProcSite,
        c: &CampaignRow,
        batches: &[Batch],
        report: &mut PassReport,
    ) -> Result<bool> {
        let elements: Vec<(Vec<i64>, u32)> =
            batches.iter().map(|b| (b.task_ids(), b.attempt)).collect();
        let (name, jobs) = self.catalog.begin_array(
            c.id,
            &format!("tpcflow-{}-c{}", self.instance, c.id),
            &elements,
        )?;
        let dir = self.job_dir(&name)?;
        for (i, b) in batches.iter().enumerate() {
            write_input_list(&dir.join(format!("inputs-{i}.txt")), b)?;
        }
        let inputs = format!(
            "@{}\"${{SLURM_ARRAY_TASK_ID}}\"{}",
            quote(&format!("{}/inputs-", dir.display()))?,
            quote(".txt")?
        );
        let array = format!(
            "--array=0-{}%{}",
            batches.len() - 1,
            self.cfg.settings.array_throttle
        );
        let ids: Vec<i64> = jobs.iter().map(|j| j.0).collect();
        self.catalog.set_jobs_site(&ids, ps.site)?;
        let res = self.batch_resources(batches)?;
        self.catalog
            .set_jobs_resources(&ids, res.time_limit_min, res.mem_mb)?;
        let mut extra = resource_args(res);
        extra.push(array.clone());
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let result = self.sbatch(ps, c, &name, &dir, &inputs, &dir.join("job-%a.log"), &extra);
        report.slurm_calls += 1;
        tracing::debug!(job = %name, %array, "sbatch answered");
        self.settle_submission(ps, &name, &ids, true, result, report)
    }

    pub(super) fn job_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.cfg.work_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Render the site's template for this job (or array) and call sbatch on
    /// the site's cluster.
    #[allow(clippy::too_many_arguments)]
    fn sbatch(
        &self,
        ps: &sites::ProcSite,
        c: &CampaignRow,
        name: &str,
        dir: &Path,
        inputs: &str,
        log: &Path,
        extra: &[&str],
    ) -> Result<u64> {
        let (config_json, _) = self.catalog.campaign_extras(c.id)?;
        let config: RecoConfig =
            serde_json::from_str(&config_json).context("campaign reco config")?;
        let config_path = dir.join("reco.toml");
        std::fs::write(&config_path, toml::to_string(&config)?)?;
        let out_dir = Self::out_dir(c, &ps.rq_root);
        let args = format!(
            "--inputs {inputs} --out-dir {} --conditions {} --config {} --json",
            quote_path(&out_dir)?,
            quote(&super::prompt_conditions::job_conditions(
                &self.catalog,
                &self.cfg.rq_root,
                &c.conditions_tag
            )?)?,
            quote_path(&config_path)?
        );
        let mut values = template_values(&self.cfg, name, log, &args)?;
        if !ps.account.is_empty() {
            values.insert("account".into(), ps.account.clone());
        }
        let text = ps
            .template
            .as_ref()
            .unwrap_or(&self.cfg.template)
            .render(&values)?;
        let script = crate::sbatch::write_script(&dir.join("job.sbatch"), &text)?;
        let partition = format!("--partition={}", ps.partition);
        let mut args: Vec<&str> = extra.to_vec();
        if !ps.partition.is_empty() {
            args.push(&partition);
        }
        Ok(ps.client.submit(&script, &args)?)
    }
}

/// The files of one job (one array element): (task id, USDC path, adler32).
#[derive(Debug, Default)]
struct Batch {
    files: Vec<(i64, PathBuf, String)>,
    attempt: u32,
}

impl Batch {
    fn task_ids(&self) -> Vec<i64> {
        self.files.iter().map(|f| f.0).collect()
    }
}

/// sbatch options of the resources: `--time=MIN` always (it overrides the
/// template's `#SBATCH --time`), `--mem=MBM` when asked.
pub(super) fn resource_args(r: Resources) -> Vec<String> {
    let mut out = vec![format!("--time={}", r.time_limit_min)];
    if let Some(mem) = r.mem_mb {
        out.push(format!("--mem={mem}M"));
    }
    out
}

/// The SLURM error of a failed sbatch when it means SLURM did not answer.
pub(super) fn unavailable(e: &anyhow::Error) -> Option<&SlurmError> {
    e.downcast_ref::<SlurmError>()
        .filter(|e| e.is_unavailable())
}

/// The job's input list: `path<TAB>adler32` per line, the catalogued checksum
/// the reco job verifies its input against.
fn write_input_list(path: &Path, batch: &Batch) -> Result<()> {
    let text: String = batch
        .files
        .iter()
        .map(|(_, p, adler)| format!("{}\t{adler}\n", p.display()))
        .collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Values for the sbatch template.
pub(super) fn template_values(
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
