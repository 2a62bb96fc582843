//! One dispatcher pass, as a table of stages, and the report it returns.
//! Each stage lives in its own module; the pass only orders them, times
//! them, and skips the SLURM stages at sites whose SLURM does not answer.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::Dispatcher;

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
/// Wall time of each stage, recorded in the report as the pass goes.
struct StageClock(Instant);

impl StageClock {
    /// Record the time since the previous stage ended as stage `name`'s.
    fn lap(&mut self, name: &'static str, report: &mut PassReport) {
        report
            .stage_seconds
            .insert(name, self.0.elapsed().as_secs_f64());
        self.0 = Instant::now();
    }
}

impl Dispatcher {
    /// One pass: reconcile, ingest, salt, transfer, retire, queue, submit;
    /// reconcile and submit only at sites whose SLURM answers (see
    /// [`super::health`]).
    ///
    /// ```text
    /// stage        module                          runs
    /// reconcile    reconcile, health, sites,       per processing site
    ///              calibration
    /// ingest       data_movement                   always
    /// salt         data_movement                   with `salt_key` (timed with copy-in)
    /// copy-in      sites                           always
    /// transfer     data_movement                   always
    /// rq-transfer  sites                           more than one processing site
    /// retire       data_movement                   `[retention] enabled`
    /// queue        campaigns                       always
    /// submit       simulation, submit              sites whose SLURM answers
    /// campaigns    campaigns                       always
    /// ```
    ///
    /// # Errors
    /// When the catalog or a data-movement stage fails; SLURM not answering is
    /// not an error (the report says the SLURM stages were skipped).
    pub fn pass(&self) -> Result<PassReport> {
        let start = Instant::now();
        let mut report = PassReport::default();
        let mut clock = StageClock(Instant::now());
        let answering = self.reconcile_sites(&mut report)?;
        clock.lap("reconcile", &mut report);
        self.ingest(&mut report)?;
        clock.lap("ingest", &mut report);
        let salting = self.salt(&mut report)?;
        self.queue_copy_ins(&answering, &mut report)?;
        clock.lap("copy-in", &mut report);
        let tr = self.transfer(salting, &mut report)?;
        clock.lap("transfer", &mut report);
        if self.sites.len() > 1 {
            self.replicate_outputs(&mut report)?;
            clock.lap("rq-transfer", &mut report);
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
            clock.lap("retire", &mut report);
        }
        let salted_only = salting || tr.blinded || self.cfg.settings.require_salted;
        let campaigns = self.queue(salted_only, &mut report)?;
        clock.lap("queue", &mut report);
        if answering.iter().any(|&a| a) {
            self.submit_simulations(&answering, &mut report)?;
            self.submit(&campaigns, &answering, &mut report)?;
        }
        clock.lap("submit", &mut report);
        self.complete_campaigns()?;
        clock.lap("campaigns", &mut report);
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }
}
