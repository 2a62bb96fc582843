//! The calibration stage of a pass: conditions made by the pipeline.
//!
//! ```text
//! ready     a calibration run whose every raw file prompt processing has
//!           reconstructed, and whose newest file is `settle_s` old
//! submit    intent first (`calibrations` row `pending`, SLURM name
//!           tpcflow-{instance}-cal{run}-a{attempt}), then sbatch of
//!           slurm/calibrate-local.sbatch running `tpcflow calibrate` on the run's
//!           RQ files, then `submitted` with the SLURM id
//! track     by the pass's SLURM snapshot, like reco jobs: a `pending` row found
//!           by name is adopted, one SLURM never saw is submitted
//! finish    COMPLETED and {rq_root}/calibration/{run:06}/conditions.toml loads:
//!           candidate tag `cal-{run:06}` (source run = the run); else another
//!           attempt up to `max_attempts`
//! decide    `[conditions] auto_publish = false`: the candidate waits for
//!           `tpcflow conditions publish`. true: published from the run onward
//!           when |tau_new / tau_in_force - 1| <= max_lifetime_change and
//!           |g_SE,new / g_SE,in_force - 1| <= max_se_gain_change, else held
//!           for a person (the reason names the jump)
//! ```
//!
//! Crash-only: each step is idempotent (adding the same tag again, publishing
//! it again from the same run, holding it again record nothing), and the row
//! becomes `done` only after the decision, so a dispatcher killed anywhere
//! repeats the unfinished step and never publishes twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::prompt_conditions::{job_conditions, DISPATCHER};
use super::sites::ProcSite;
use super::track::Snapshot;
use super::{Dispatcher, PassReport};
use crate::catalog::{CalibrationRow, CalibrationState, ConditionsState, NewConditions};
use crate::conditions::Conditions;
use crate::sbatch::Template;
use crate::shell::{quote, quote_path};
use crate::slurm::JobState as SlurmState;

/// The sbatch template of calibration jobs.
const TEMPLATE: &str = include_str!("../../slurm/calibrate-local.sbatch");

/// The `[conditions]` table of the dispatcher settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConditionsPolicy {
    /// Submit a calibration job for each reconstructed calibration run.
    pub calibrate: bool,
    /// Publish candidates within the limits for prompt processing (false:
    /// every candidate waits for `tpcflow conditions publish`).
    pub auto_publish: bool,
    /// Largest relative change of the electron lifetime from the tag in
    /// force that is published automatically.
    pub max_lifetime_change: f64,
    /// Largest relative change of the single-electron gain published automatically.
    pub max_se_gain_change: f64,
    /// A calibration run is complete once its newest file is this old [s].
    pub settle_s: f64,
    /// Attempts per calibration job.
    pub max_attempts: u32,
    /// sbatch `--time` of a calibration job.
    pub time_limit: String,
}

impl Default for ConditionsPolicy {
    fn default() -> Self {
        Self {
            calibrate: false,
            auto_publish: false,
            max_lifetime_change: 0.25,
            max_se_gain_change: 0.10,
            settle_s: 300.0,
            max_attempts: 2,
            time_limit: "00:20:00".into(),
        }
    }
}

impl ConditionsPolicy {
    /// Reject limits that cannot work.
    ///
    /// # Errors
    /// Naming the key.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("conditions.max_lifetime_change", self.max_lifetime_change),
            ("conditions.max_se_gain_change", self.max_se_gain_change),
            ("conditions.settle_s", self.settle_s),
        ] {
            if v.is_nan() || v < 0.0 {
                anyhow::bail!("`{key}` must be >= 0");
            }
        }
        if self.max_attempts == 0 {
            anyhow::bail!("`conditions.max_attempts` must be at least 1");
        }
        Ok(())
    }

    /// Publish (`Ok`) or hold (`Err(why)`) a candidate against the tag in force.
    ///
    /// # Errors
    /// `Err(reason)` naming the quantity, its change and the limit.
    pub fn decide(&self, new: &Conditions, in_force: &Conditions) -> Result<String, String> {
        let p = &new.detector.params;
        let q = &in_force.detector.params;
        let checks = [
            (
                "electron lifetime",
                p.tpc.electron_lifetime_us,
                q.tpc.electron_lifetime_us,
                self.max_lifetime_change,
            ),
            (
                "SE gain",
                p.light.se_gain_phd,
                q.light.se_gain_phd,
                self.max_se_gain_change,
            ),
        ];
        let mut lines = Vec::new();
        for (what, a, b, limit) in checks {
            let change = a / b - 1.0;
            let line = format!(
                "{what} {b:.4} -> {a:.4} ({:+.1} %, limit {:.1} %)",
                100.0 * change,
                100.0 * limit
            );
            if !change.is_finite() || change.abs() > limit {
                return Err(format!("{line} vs {}", in_force.tag));
            }
            lines.push(line);
        }
        Ok(format!("{} vs {}", lines.join(", "), in_force.tag))
    }
}

/// The candidate tag of a calibration run.
pub fn candidate_tag(run: u32) -> String {
    format!("cal-{run:06}")
}

impl Dispatcher {
    /// Track calibration jobs, turn finished ones into tags, submit new ones.
    pub(super) fn calibration_stage(
        &self,
        ps: &ProcSite,
        snap: &Snapshot,
        recovering: bool,
        report: &mut PassReport,
    ) -> Result<()> {
        for k in self.catalog.calibrations()? {
            let job = match (k.state, k.slurm_id) {
                (CalibrationState::Pending, _) => match snap.id_by_name(&k.slurm_name) {
                    Some(id) => {
                        self.catalog.calibration_submitted(k.run, id)?;
                        snap.job(id, None, &k.slurm_name).cloned()
                    }
                    None if recovering => continue,
                    None => {
                        self.submit_calibration(ps, &k, report)?;
                        continue;
                    }
                },
                (CalibrationState::Submitted, Some(id)) => {
                    snap.job(id, None, &k.slurm_name).cloned()
                }
                _ => continue,
            };
            let state = job.as_ref().map_or(SlurmState::Unknown, |j| j.state);
            if matches!(
                state,
                SlurmState::Pending
                    | SlurmState::Running
                    | SlurmState::Suspended
                    | SlurmState::Requeued
            ) {
                continue;
            }
            self.finish_calibration(&k, state, report)?;
        }
        let policy = &self.cfg.settings.conditions;
        if !policy.calibrate {
            return Ok(());
        }
        let settled = crate::catalog::now_unix_s() - policy.settle_s;
        for (run, last_file_at) in self.catalog.calibration_runs_ready(settled)? {
            let name = self.calibration_job_name(run, 1);
            if self.catalog.begin_calibration(run, &name, last_file_at)? {
                if let Some(k) = self.catalog.calibration(run)? {
                    self.submit_calibration(ps, &k, report)?;
                }
            }
        }
        Ok(())
    }

    fn calibration_job_name(&self, run: u32, attempt: u32) -> String {
        format!("tpcflow-{}-cal{run}-a{attempt}", self.instance)
    }

    fn calibration_dir(&self, run: u32) -> PathBuf {
        self.cfg
            .rq_root
            .join("calibration")
            .join(format!("{run:06}"))
    }

    /// sbatch a recorded (`pending`) calibration job; a SLURM that does not
    /// answer leaves it pending for the next pass.
    fn submit_calibration(
        &self,
        ps: &ProcSite,
        k: &CalibrationRow,
        report: &mut PassReport,
    ) -> Result<()> {
        let outputs = self.catalog.prompt_outputs_of_run(k.run)?;
        let mut tags: Vec<&str> = outputs.iter().map(|(_, t)| t.as_str()).collect();
        tags.dedup();
        let base = match tags.as_slice() {
            [one] => *one,
            [] => return self.calibration_failed(k, "no reconstructed RQ files".into()),
            many => {
                return self.calibration_failed(
                    k,
                    format!("RQ files made with several conditions: {}", many.join(", ")),
                )
            }
        };
        let base = job_conditions(&self.catalog, &self.cfg.rq_root, base)?;
        let out = self.calibration_dir(k.run);
        let dir = self.job_dir(&k.slurm_name)?;
        let rq = outputs
            .iter()
            .map(|(p, _)| quote(p))
            .collect::<Result<Vec<_>, _>>()?;
        let args = format!(
            "--rq {} --runs {} --tag {} --base-conditions {} --out {}",
            rq.join(" "),
            k.run,
            candidate_tag(k.run),
            quote(&base)?,
            quote_path(&out)?
        );
        let values: BTreeMap<String, String> = [
            ("job_name", k.slurm_name.clone()),
            (
                "time_limit",
                self.cfg.settings.conditions.time_limit.clone(),
            ),
            ("log", dir.join("job.log").display().to_string()),
            ("tpcflow", quote_path(&self.cfg.tpcflow_bin)?),
            ("calibrate_args", args),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let template = Template {
            name: "slurm/calibrate-local.sbatch".into(),
            text: TEMPLATE.into(),
        };
        let script =
            crate::sbatch::write_script(&dir.join("job.sbatch"), &template.render(&values)?)?;
        match ps.client.submit(&script, &[]) {
            Ok(id) => {
                self.catalog.calibration_submitted(k.run, id)?;
                report.jobs_submitted += 1;
                tracing::info!(run = k.run, slurm_id = id, "calibration job submitted");
                Ok(())
            }
            Err(e) if e.is_unavailable() => {
                report
                    .warnings
                    .push(format!("calibration job of run {} waits: {e}", k.run));
                Ok(())
            }
            Err(e) => self.calibration_failed(k, format!("sbatch: {e}")),
        }
    }

    /// Spend an attempt: pending again under a new name, or failed.
    fn calibration_failed(&self, k: &CalibrationRow, reason: String) -> Result<()> {
        tracing::warn!(run = k.run, %reason, "calibration attempt failed");
        let next = (k.attempts < self.cfg.settings.conditions.max_attempts)
            .then(|| self.calibration_job_name(k.run, k.attempts + 1));
        self.catalog
            .calibration_attempt_failed(k.run, &reason, next.as_deref())?;
        Ok(())
    }

    /// A calibration job ended: its products become a candidate tag, which
    /// the policy publishes, holds, or leaves for a person.
    fn finish_calibration(
        &self,
        k: &CalibrationRow,
        state: SlurmState,
        report: &mut PassReport,
    ) -> Result<()> {
        report.jobs_finished += 1;
        let tag = candidate_tag(k.run);
        let path = self.calibration_dir(k.run).join("conditions.toml");
        let products = if state == SlurmState::Completed {
            load_products(&path, &tag)
        } else {
            Err(format!("SLURM job {} {}", k.slurm_name, state.name()))
        };
        let (text, cond) = match products {
            Ok(p) => p,
            Err(why) => return self.calibration_failed(k, why),
        };
        self.catalog.add_conditions(&NewConditions {
            tag: &tag,
            content: &text,
            source_run: Some(k.run),
            by: DISPATCHER,
            reason: &format!(
                "products of calibration run {} (SLURM job {} {})",
                k.run,
                k.slurm_name,
                k.slurm_id.unwrap_or(0)
            ),
        })?;
        let row = self
            .catalog
            .conditions_tag(&tag)?
            .context("candidate tag just added")?;
        let policy = &self.cfg.settings.conditions;
        let outcome = match row.state {
            ConditionsState::Published => "published".to_string(),
            ConditionsState::Held => format!("held: {}", row.note.unwrap_or_default()),
            ConditionsState::Candidate if !policy.auto_publish => {
                "candidate: waits for `tpcflow conditions publish` (auto_publish = false)".into()
            }
            ConditionsState::Candidate => {
                let in_force = match self.catalog.conditions_for_run(k.run)? {
                    Some(t) => Some(Conditions::parse(
                        &self.catalog.conditions_content(&t.tag)?,
                        Path::new(&format!("catalog:{}", t.tag)),
                    )?),
                    None => None,
                };
                let decision = in_force.as_ref().map_or_else(
                    || Ok("no conditions in force to compare with".to_string()),
                    |f| policy.decide(&cond, f),
                );
                match decision {
                    Ok(why) => {
                        self.catalog.publish_conditions(
                            &tag,
                            k.run,
                            DISPATCHER,
                            &format!("automatic, within limits: {why}"),
                        )?;
                        tracing::info!(%tag, run = k.run, %why, "conditions published");
                        format!("published from run {}: {why}", k.run)
                    }
                    Err(why) => {
                        let why = format!("beyond the automatic limits: {why}");
                        self.catalog.hold_conditions(&tag, DISPATCHER, &why)?;
                        report
                            .warnings
                            .push(format!("conditions {tag} held for a person: {why}"));
                        format!("held: {why}")
                    }
                }
            }
        };
        self.catalog.calibration_done(k.run, &tag, &outcome)?;
        Ok(())
    }
}

/// The calibration job's conditions file, if it is the candidate it should be.
fn load_products(path: &Path, tag: &str) -> Result<(String, Conditions), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("no products: {}: {e}", path.display()))?;
    let cond = Conditions::parse(&text, path).map_err(|e| e.to_string())?;
    if cond.tag != tag {
        return Err(format!(
            "{}: tag {} is not the candidate {tag}",
            path.display(),
            cond.tag
        ));
    }
    Ok((text, cond))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(lifetime_us: f64, se_gain: f64) -> Conditions {
        let text = include_str!("../../conditions/v1.toml")
            .replace(
                "electron_lifetime_us = 9000.0",
                &format!("electron_lifetime_us = {lifetime_us:.1}"),
            )
            .replace("se_gain_phd = 47.0", &format!("se_gain_phd = {se_gain:.2}"));
        Conditions::parse(&text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn a_jump_beyond_the_limits_is_held_and_names_the_quantity() {
        let policy = ConditionsPolicy::default();
        let base = with(9000.0, 47.0);
        let ok = policy.decide(&with(10_000.0, 48.0), &base).unwrap();
        assert!(ok.contains("+11.1 %"), "{ok}");
        let held = policy.decide(&with(12_000.0, 47.0), &base).unwrap_err();
        assert!(
            held.contains("electron lifetime")
                && held.contains("+33.3 %")
                && held.contains("25.0 %"),
            "{held}"
        );
        let held = policy.decide(&with(9000.0, 40.0), &base).unwrap_err();
        assert!(held.contains("SE gain"), "{held}");
    }
}
