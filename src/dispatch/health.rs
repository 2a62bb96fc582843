//! The gate of the SLURM stages: whether this pass asks SLURM at all, and
//! what it records when SLURM does not answer; per processing site, each with
//! its own cluster and outage record ([`super::sites`]).
//!
//! ```text
//! no outage recorded, or its next try is due:
//!     scontrol show config (once per process: jobcomp file, accounting), squeue,
//!     sacct for the open jobs when the cluster keeps accounting
//!       answers       -> reconcile and submit run; a recorded outage is cleared
//!       no answer     -> outage recorded (or extended) with the next try at
//!                        now + min(slurm_retry_s * 2^(attempts-1), slurm_retry_max_s)
//! outage recorded, next try not due:
//!     the SLURM stages are skipped without a call; the pass is counted
//! ```
//!
//! Data movement (ingest, salting, transfer) and queueing run in every pass
//! whatever the gate says. A client command that timed out or could not reach
//! the controller is never a job or task failure: it leaves every job as it
//! is. An sbatch that ended so leaves its job `pending` (the intent), and the
//! reconciliation looks it up by name once SLURM answers; in the first pass
//! that SLURM answers again, a pending job not found is left for one more pass,
//! because a submission sent to a stalled controller may be processed only as
//! it resumes.

use anyhow::Result;

use super::sites::ProcSite;
use super::track::Snapshot;
use super::{Dispatcher, PassReport, Settings};
use crate::catalog::{now_unix_s, utc_string, SlurmHealth};
use crate::slurm::{ClusterConfig, SlurmError};

/// What the SLURM stages of one pass work from.
#[derive(Debug)]
pub(super) struct SlurmView {
    /// SLURM's view of our jobs.
    pub snapshot: Snapshot,
    /// SLURM did not answer before this pass (see the module doc).
    pub recovering: bool,
}

/// The outage after SLURM failed to answer at `now`: a new one, or `prev` extended,
/// with the next try after a doubling interval capped at `slurm_retry_max_s`.
pub fn after_failure(
    prev: Option<&SlurmHealth>,
    now: f64,
    error: &str,
    settings: &Settings,
) -> SlurmHealth {
    let attempts = prev.map_or(0, |h| h.attempts) + 1;
    let interval = (settings.slurm_retry_s * 2f64.powi(attempts.min(60) as i32 - 1))
        .min(settings.slurm_retry_max_s);
    SlurmHealth {
        unavailable_since: prev.map_or(now, |h| h.unavailable_since),
        passes: prev.map_or(0, |h| h.passes) + 1,
        attempts,
        last_attempt_at: now,
        next_try_at: now + interval,
        last_error: error.to_string(),
    }
}

/// One line for operators: `SLURM unavailable since T (N passes), next try at T2; last error: ...`.
pub fn outage_line(h: &SlurmHealth) -> String {
    format!(
        "SLURM unavailable since {} ({} pass{}), next try at {}; last error: {}",
        utc_string(h.unavailable_since),
        h.passes,
        if h.passes == 1 { "" } else { "es" },
        utc_string(h.next_try_at),
        h.last_error
    )
}

/// The `slurm` object of `tpcflow status --json`.
pub fn status_json(h: Option<&SlurmHealth>) -> serde_json::Value {
    match h {
        None => serde_json::json!({ "available": true }),
        Some(h) => serde_json::json!({
            "available": false,
            "unavailable_since": utc_string(h.unavailable_since),
            "passes": h.passes,
            "attempts": h.attempts,
            "last_attempt_at": utc_string(h.last_attempt_at),
            "next_try_at": utc_string(h.next_try_at),
            "last_error": h.last_error,
            "message": outage_line(h),
        }),
    }
}

impl Dispatcher {
    /// Ask SLURM for this pass's snapshot, unless a recorded outage says to
    /// wait; `None` means the SLURM stages are skipped this pass.
    ///
    /// # Errors
    /// Only the catalog's: SLURM not answering is recorded, not returned.
    pub(super) fn slurm_view(
        &self,
        ps: &ProcSite,
        report: &mut PassReport,
    ) -> Result<Option<SlurmView>> {
        let health = self.catalog.slurm_health_at(ps.site)?;
        if let Some(h) = health.as_ref().filter(|h| now_unix_s() < h.next_try_at) {
            let h = SlurmHealth {
                passes: h.passes + 1,
                ..h.clone()
            };
            self.catalog.set_slurm_health_at(ps.site, &h)?;
            report.slurm_skipped = true;
            report.warnings.push(self.site_line(ps, &h));
            return Ok(None);
        }
        let prefix = format!("tpcflow-{}-", self.instance);
        let mut open_ids: Vec<u64> = self
            .jobs_at(ps.site)?
            .iter()
            .filter_map(|j| j.slurm_id)
            .collect();
        open_ids.sort_unstable();
        open_ids.dedup();
        let taken = Self::cluster_config(ps)
            .and_then(|cluster| Snapshot::take(&cluster, &prefix, &ps.client, &open_ids));
        match taken {
            Ok(snapshot) => {
                report.slurm_calls += snapshot.calls;
                if let Some(why) = &snapshot.fallback {
                    report.warnings.push(why.clone());
                }
                if self.catalog.clear_slurm_health_at(ps.site)? {
                    tracing::info!(site = %ps.site, "SLURM answers again");
                }
                Ok(Some(SlurmView {
                    snapshot,
                    recovering: health.is_some(),
                }))
            }
            Err(e) => {
                self.slurm_unavailable(ps, &e, report)?;
                Ok(None)
            }
        }
    }

    /// Record that a SLURM client command got no answer (or failed): the
    /// SLURM stages stop for this pass and wait for the next try.
    ///
    /// # Errors
    /// The catalog's.
    pub(super) fn slurm_unavailable(
        &self,
        ps: &ProcSite,
        error: &SlurmError,
        report: &mut PassReport,
    ) -> Result<()> {
        let prev = self.catalog.slurm_health_at(ps.site)?;
        let h = after_failure(
            prev.as_ref(),
            now_unix_s(),
            &error.to_string(),
            &self.cfg.settings,
        );
        self.catalog.set_slurm_health_at(ps.site, &h)?;
        let line = self.site_line(ps, &h);
        tracing::warn!("{line}");
        report.slurm_skipped = true;
        report.warnings.push(line);
        Ok(())
    }

    /// The outage line, naming the site when several process.
    fn site_line(&self, ps: &ProcSite, h: &SlurmHealth) -> String {
        if self.sites.len() > 1 {
            format!("{}: {}", ps.site, outage_line(h))
        } else {
            outage_line(h)
        }
    }

    /// The cluster's configuration (jobcomp file, accounting), asked once
    /// per process.
    fn cluster_config(ps: &ProcSite) -> Result<ClusterConfig, SlurmError> {
        if let Some(known) = ps.cluster.get() {
            return Ok(known.clone());
        }
        let found = ps.client.cluster_config()?;
        Ok(ps.cluster.get_or_init(|| found).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            slurm_retry_s: 10.0,
            slurm_retry_max_s: 45.0,
            ..Settings::default()
        }
    }

    #[test]
    fn retries_double_up_to_the_cap_and_keep_the_outage_start() {
        let s = settings();
        let first = after_failure(None, 1000.0, "squeue: no answer within 30s", &s);
        assert_eq!(
            (first.unavailable_since, first.attempts, first.passes),
            (1000.0, 1, 1)
        );
        assert_eq!(first.next_try_at, 1010.0);
        let mut h = first;
        let mut intervals = Vec::new();
        for t in [1010.0, 1030.0, 1070.0, 1115.0] {
            h = after_failure(Some(&h), t, "connect failure", &s);
            intervals.push(h.next_try_at - t);
        }
        assert_eq!(intervals, [20.0, 40.0, 45.0, 45.0]);
        assert_eq!(
            h.unavailable_since, 1000.0,
            "the outage began at the first failure"
        );
        assert_eq!((h.attempts, h.passes), (5, 5));
        assert_eq!(h.last_error, "connect failure");
    }

    #[test]
    fn the_status_line_names_start_passes_next_try_and_error() {
        let h = SlurmHealth {
            unavailable_since: 1_795_869_543.0,
            passes: 4,
            attempts: 2,
            last_attempt_at: 1_795_869_560.0,
            next_try_at: 1_795_869_580.0,
            last_error: "SLURM unavailable: `squeue`: no answer within 3s".into(),
        };
        assert_eq!(
            outage_line(&h),
            "SLURM unavailable since 2026-11-28T12:39:03Z (4 passes), next try at \
             2026-11-28T12:39:40Z; last error: SLURM unavailable: `squeue`: no answer within 3s"
        );
        let v = status_json(Some(&h));
        assert_eq!(v["available"], false);
        assert_eq!(v["passes"], 4);
        assert_eq!(status_json(None)["available"], true);
    }
}
