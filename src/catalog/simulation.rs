//! Simulation campaigns: a family of simulated runs made at the processing
//! sites by SLURM job arrays of `tpcflow sim`, then reconstructed as any run.
//!
//! ```text
//! create   runs numbered from SIM_FIRST_RUN on (the next free ones), run
//!          type `simulation`; the campaign over them (conditions, lineage,
//!          site) with its production parameters; one simulation task per
//!          file: file i is file i % per_run of run first + i / per_run,
//!          written exactly as `tpcflow sim --run R --files N --seed S`
//!          writes it (every event's random stream is derived from the seed,
//!          the run and the event's index, so no element depends on another)
//! a task   queued -> submitting -> submitted (an element of a job array)
//!          -> done: the raw file, complete under its final name at the
//!             site's storage, is registered with a verified replica there
//!             and queued replicas at the other destinations, copied from
//!             that site (a simulated file is never at SURF, never salted)
//!          -> queued again by the retry policy, or failed at the cap
//! ```
//!
//! The campaign's reconstruction tasks are queued as its files are
//! transferred; it is complete once every file is simulated (or failed) and
//! every simulated file reconstructed (or failed).

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{now_unix_s, CampaignRow, Catalog, CatalogError, NewRawFile, Site, TaskState};

/// Simulated runs are numbered from here (real runs stay below).
pub const SIM_FIRST_RUN: u32 = 900_000;
/// Largest run number a raw file name holds (six digits).
pub const MAX_RUN: u32 = 999_999;

/// What a simulation campaign makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimSpec {
    /// Physics source (`tpcflow sim --source`).
    pub source: String,
    /// Events per file.
    pub events_per_file: u32,
    /// Files in the family.
    pub files: u32,
    /// Files per run at most.
    pub files_per_run: u32,
    /// Seed of every random stream.
    pub seed: u64,
    /// Conditions the files declare (`tpcflow sim --conditions`).
    pub conditions: String,
    /// Detector truth simulated (`tpcflow sim --detector-truth`), if any.
    pub detector_truth: Option<String>,
    /// The detector run whose state the truth gives (`tpcflow sim --truth-run`).
    pub truth_run: Option<u32>,
}

impl SimSpec {
    /// Runs the family needs.
    pub fn runs(&self) -> u32 {
        self.files.div_ceil(self.files_per_run.max(1))
    }

    /// Files of the `k`-th run of the family (from 0).
    pub fn files_of_run(&self, k: u32) -> u32 {
        self.files_per_run
            .min(self.files.saturating_sub(k * self.files_per_run))
    }
}

/// One file to simulate.
#[derive(Debug, Clone, Serialize)]
pub struct SimTaskRow {
    /// Catalog id.
    pub id: i64,
    /// Campaign id.
    pub campaign_id: i64,
    /// Index of the file in the family.
    pub file_index: u32,
    /// Run.
    pub run: u32,
    /// Sequence in the run (its index in the run).
    pub sequence: u32,
    /// Files of its run.
    pub run_files: u32,
    /// State.
    pub state: TaskState,
    /// Failed attempts.
    pub attempts: u32,
    /// Job holding it.
    pub job_id: Option<i64>,
    /// Last failure.
    pub last_error: Option<String>,
    /// Site that made the file.
    pub site: Option<String>,
    /// The raw file, once made.
    pub file_id: Option<i64>,
}

/// Progress of a simulation campaign's production.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimProgress {
    /// What it makes.
    pub spec: Option<SimSpec>,
    /// First simulated run.
    pub first_run: u32,
    /// Last simulated run.
    pub last_run: u32,
    /// Files to simulate.
    pub files: u64,
    /// Files simulated and catalogued.
    pub simulated: u64,
    /// Files failed after the retry cap.
    pub failed: u64,
    /// Files queued or in jobs.
    pub in_flight: u64,
    /// Files made at USDC.
    pub made_at_usdc: u64,
    /// Files made at UKDC.
    pub made_at_ukdc: u64,
}

const SIM_TASK_SELECT: &str = "SELECT t.id, t.campaign_id, t.file_index, t.run, t.sequence,
       (SELECT count(*) FROM sim_tasks u WHERE u.campaign_id = t.campaign_id AND u.run = t.run),
       t.state, t.attempts, t.job_id, t.last_error, t.site, t.file_id
     FROM sim_tasks t";

fn sim_task_row(r: &Row<'_>) -> rusqlite::Result<SimTaskRow> {
    Ok(SimTaskRow {
        id: r.get(0)?,
        campaign_id: r.get(1)?,
        file_index: r.get(2)?,
        run: r.get(3)?,
        sequence: r.get(4)?,
        run_files: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        job_id: r.get(8)?,
        last_error: r.get(9)?,
        site: r.get(10)?,
        file_id: r.get(11)?,
    })
}

impl Catalog {
    /// Define a simulation campaign in one transaction: its runs (the next
    /// free numbers from [`SIM_FIRST_RUN`]), the campaign over them with its
    /// reconstruction `config_json` and `site`, its production parameters and
    /// one simulation task per file. Returns the campaign.
    ///
    /// # Errors
    /// [`CatalogError::SimRuns`] when the run numbers run out;
    /// [`CatalogError::Sqlite`], e.g. for a name already taken.
    pub fn create_simulation_campaign(
        &self,
        name: &str,
        conditions_tag: &str,
        lineage_hash: &str,
        config_json: &str,
        site: &str,
        spec: &SimSpec,
    ) -> Result<CampaignRow, CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin simulation campaign"))?;
        let last: Option<u32> = tx
            .query_row(
                "SELECT max(number) FROM runs WHERE number >= ?1",
                [SIM_FIRST_RUN],
                |r| r.get(0),
            )
            .map_err(self.sql("read simulated runs"))?;
        let first = last.map_or(SIM_FIRST_RUN, |l| l + 1);
        let runs = spec.runs();
        if runs == 0 || u64::from(first) + u64::from(runs) - 1 > u64::from(MAX_RUN) {
            return Err(CatalogError::SimRuns {
                first,
                runs,
                max: MAX_RUN,
            });
        }
        let last_run = first + runs - 1;
        let now = now_unix_s();
        for run in first..=last_run {
            tx.execute(
                "INSERT INTO runs (number, run_type, start_time, conditions, registered_at)
                 VALUES (?1, 'simulation', ?2, ?3, ?4)",
                params![run, super::utc_string(now), spec.conditions, now],
            )
            .map_err(self.sql("register simulated run"))?;
        }
        tx.execute(
            "INSERT INTO campaigns (name, first_run, last_run, conditions_tag, lineage_hash,
               created_at, config_json, prompt, site)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
            params![
                name,
                first,
                last_run,
                conditions_tag,
                lineage_hash,
                now,
                config_json,
                site
            ],
        )
        .map_err(self.sql("create campaign"))?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO sim_productions (campaign_id, source, events_per_file, files,
               files_per_run, seed, conditions, detector_truth, truth_run)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                id,
                spec.source,
                spec.events_per_file,
                spec.files,
                spec.files_per_run,
                spec.seed as i64,
                spec.conditions,
                spec.detector_truth,
                spec.truth_run
            ],
        )
        .map_err(self.sql("record simulation production"))?;
        {
            let mut st = tx
                .prepare(
                    "INSERT INTO sim_tasks (campaign_id, file_index, run, sequence, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                )
                .map_err(self.sql("queue simulation tasks"))?;
            for i in 0..spec.files {
                let (k, seq) = (i / spec.files_per_run, i % spec.files_per_run);
                st.execute(params![id, i, first + k, seq, now])
                    .map_err(self.sql("queue simulation tasks"))?;
            }
        }
        tx.commit()
            .map_err(self.sql("commit simulation campaign"))?;
        drop(conn);
        self.campaign_by_name(name)?
            .ok_or_else(|| CatalogError::StateConflict {
                what: format!("campaign {name}"),
                expected: "created".into(),
                found: "absent".into(),
            })
    }

    /// A campaign's production parameters (None: not a simulation campaign).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn sim_spec(&self, campaign_id: i64) -> Result<Option<SimSpec>, CatalogError> {
        self.conn()
            .query_row(
                "SELECT source, events_per_file, files, files_per_run, seed, conditions, detector_truth,
                   truth_run FROM sim_productions WHERE campaign_id = ?1",
                [campaign_id],
                |r| {
                    Ok(SimSpec {
                        source: r.get(0)?,
                        events_per_file: r.get(1)?,
                        files: r.get(2)?,
                        files_per_run: r.get(3)?,
                        seed: r.get::<_, i64>(4)? as u64,
                        conditions: r.get(5)?,
                        detector_truth: r.get(6)?,
                        truth_run: r.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(self.sql("read simulation production"))
    }

    /// Queued simulation tasks of a campaign whose back-off has passed, by file index.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn runnable_sim_tasks(
        &self,
        campaign_id: i64,
        limit: usize,
    ) -> Result<Vec<SimTaskRow>, CatalogError> {
        let conn = self.conn();
        let sql = format!(
            "{SIM_TASK_SELECT} INDEXED BY sim_tasks_state WHERE t.state = 'queued' AND t.campaign_id = ?1
               AND (t.not_before IS NULL OR t.not_before <= ?2) ORDER BY t.file_index LIMIT ?3"
        );
        // The clock is read with the connection held.
        self.query_rows_on(
            &conn,
            &sql,
            params![campaign_id, now_unix_s(), limit as i64],
            "list runnable simulation tasks",
            sim_task_row,
        )
    }

    /// Simulation tasks of a job.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn sim_tasks_of_job(&self, job_id: i64) -> Result<Vec<SimTaskRow>, CatalogError> {
        let sql = format!("{SIM_TASK_SELECT} WHERE t.job_id = ?1 ORDER BY t.file_index");
        self.query_rows(&sql, [job_id], "list job simulation tasks", sim_task_row)
    }

    /// Simulation tasks of a campaign, by file index.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn sim_tasks(&self, campaign_id: i64) -> Result<Vec<SimTaskRow>, CatalogError> {
        let sql = format!("{SIM_TASK_SELECT} WHERE t.campaign_id = ?1 ORDER BY t.file_index");
        self.query_rows(&sql, [campaign_id], "list simulation tasks", sim_task_row)
    }

    /// A simulated file is complete at `site`: register it with a verified
    /// replica there and a queued replica, copied from there, at each of
    /// `destinations`; the task is done. One transaction. Returns the file id.
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] when the task is not in a job or the
    /// file name is taken by another file; [`CatalogError::Sqlite`].
    pub fn sim_task_done(
        &self,
        task_id: i64,
        file: &NewRawFile,
        site: Site,
        destinations: &[Site],
    ) -> Result<i64, CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin simulated file"))?;
        let state: Option<TaskState> = tx
            .query_row(
                "SELECT state FROM sim_tasks WHERE id = ?1",
                [task_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("read simulation task"))?;
        if !matches!(state, Some(TaskState::Submitted | TaskState::Submitting)) {
            return Err(CatalogError::StateConflict {
                what: format!("simulation task {task_id} ({})", file.name),
                expected: "submitted".into(),
                found: state.map_or_else(|| "absent".into(), |s| s.to_string()),
            });
        }
        let now = now_unix_s();
        let n = tx
            .execute(
                "INSERT INTO raw_files (run, sequence, name, size_bytes, adler32, state, written_at,
                   registered_at) VALUES (?1, ?2, ?3, ?4, ?5, 'registered', ?6, ?7)
                 ON CONFLICT DO NOTHING",
                params![
                    file.run,
                    file.sequence,
                    file.name,
                    file.size_bytes,
                    file.adler32,
                    file.written_at,
                    now
                ],
            )
            .map_err(self.sql("register simulated file"))?;
        if n != 1 {
            return Err(CatalogError::StateConflict {
                what: format!("raw file {}", file.name),
                expected: "a new name".into(),
                found: "already catalogued".into(),
            });
        }
        let file_id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO replicas (file_id, site, path, size_bytes, adler32, state, verified_at,
               updated_at, source) VALUES (?1, ?2, ?3, ?4, ?5, 'verified', ?6, ?6, ?2)",
            params![
                file_id,
                site,
                file.rel_path,
                file.size_bytes,
                file.adler32,
                now
            ],
        )
        .map_err(self.sql("register simulated replica"))?;
        for &to in destinations.iter().filter(|&&s| s != site) {
            tx.execute(
                "INSERT INTO replicas (file_id, site, path, state, updated_at, source)
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5)",
                params![file_id, to, file.rel_path, now, site],
            )
            .map_err(self.sql("queue simulated replica"))?;
        }
        tx.execute(
            "UPDATE sim_tasks SET state = 'done', file_id = ?2, site = ?3, last_error = NULL,
               updated_at = ?4 WHERE id = ?1",
            params![task_id, file_id, site, now],
        )
        .map_err(self.sql("mark simulation task done"))?;
        tx.commit().map_err(self.sql("commit simulated file"))?;
        Ok(file_id)
    }

    /// A simulation task's attempt failed: spend an attempt; back to `queued`
    /// after `backoff_s` (doubling) while attempts remain, else `failed`.
    /// Returns the new state.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn sim_task_failed(
        &self,
        task_id: i64,
        reason: &str,
        max_attempts: u32,
        backoff_s: f64,
    ) -> Result<TaskState, CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin simulation task failure"))?;
        let attempts: u32 = tx
            .query_row(
                "SELECT attempts FROM sim_tasks WHERE id = ?1",
                [task_id],
                |r| r.get(0),
            )
            .map_err(self.sql("read simulation task"))?;
        let attempts = attempts + 1;
        let state = if attempts >= max_attempts {
            TaskState::Failed
        } else {
            TaskState::Queued
        };
        let now = now_unix_s();
        let not_before = now + backoff_s * f64::from(1u32 << (attempts - 1).min(10));
        tx.execute(
            "UPDATE sim_tasks SET state = ?2, attempts = ?3, last_error = ?4, not_before = ?5,
               job_id = NULL, updated_at = ?6 WHERE id = ?1",
            params![task_id, state, attempts, reason, not_before, now],
        )
        .map_err(self.sql("record simulation task failure"))?;
        tx.commit()
            .map_err(self.sql("commit simulation task failure"))?;
        Ok(state)
    }

    /// A simulation task failed the same way at the limits: `failed` now.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn sim_task_failed_at_limit(
        &self,
        task_id: i64,
        reason: &str,
    ) -> Result<TaskState, CatalogError> {
        let attempts: u32 = self
            .conn()
            .query_row(
                "SELECT attempts FROM sim_tasks WHERE id = ?1",
                [task_id],
                |r| r.get(0),
            )
            .map_err(self.sql("read simulation task"))?;
        self.sim_task_failed(task_id, reason, attempts + 1, 0.0)
    }

    /// A simulation task's attempt ended through no fault of its own (its
    /// node failed, its site was lost): back to `queued`, no attempt spent.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn sim_task_requeued_free(&self, task_id: i64, reason: &str) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE sim_tasks SET state = 'queued', last_error = ?2, not_before = NULL,
                   job_id = NULL, updated_at = ?3
                 WHERE id = ?1 AND state IN ('submitting', 'submitted')",
                params![task_id, reason, now_unix_s()],
            )
            .map(drop)
            .map_err(self.sql("requeue simulation task"))
    }

    /// The resources recorded for the next attempt of these simulation tasks.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn sim_task_resources(
        &self,
        task_ids: &[i64],
    ) -> Result<Vec<super::AttemptResources>, CatalogError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT time_limit_min, mem_mb FROM sim_tasks WHERE id = ?1")
            .map_err(self.sql("read simulation task resources"))?;
        let mut out = Vec::with_capacity(task_ids.len());
        for &id in task_ids {
            if let Some(r) = st
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(self.sql("read simulation task resources"))?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Record the resources a simulation task's next attempt asks for.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn set_sim_task_resources(
        &self,
        task_id: i64,
        time_limit_min: u32,
        mem_mb: Option<u32>,
    ) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE sim_tasks SET time_limit_min = ?2, mem_mb = ?3 WHERE id = ?1",
                params![task_id, time_limit_min, mem_mb],
            )
            .map(drop)
            .map_err(self.sql("write simulation task resources"))
    }

    /// Production progress of a simulation campaign (None: not one).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn sim_progress(&self, c: &CampaignRow) -> Result<Option<SimProgress>, CatalogError> {
        let Some(spec) = self.sim_spec(c.id)? else {
            return Ok(None);
        };
        let row = self
            .conn()
            .query_row(
                "SELECT count(*), coalesce(sum(state = 'done'), 0), coalesce(sum(state = 'failed'), 0),
                        coalesce(sum(state IN ('queued','submitting','submitted')), 0),
                        coalesce(sum(state = 'done' AND site = 'USDC'), 0),
                        coalesce(sum(state = 'done' AND site = 'UKDC'), 0)
                 FROM sim_tasks WHERE campaign_id = ?1",
                [c.id],
                |r| {
                    Ok(SimProgress {
                        spec: None,
                        first_run: c.first_run,
                        last_run: c.last_run,
                        files: r.get(0)?,
                        simulated: r.get(1)?,
                        failed: r.get(2)?,
                        in_flight: r.get(3)?,
                        made_at_usdc: r.get(4)?,
                        made_at_ukdc: r.get(5)?,
                    })
                },
            )
            .map_err(self.sql("simulation progress"))?;
        Ok(Some(SimProgress {
            spec: Some(spec),
            ..row
        }))
    }

    /// True unless a simulation campaign still has work: a file to simulate,
    /// or a simulated file without a finished (done or failed) reconstruction.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn sim_family_settled(&self, campaign_id: i64) -> Result<bool, CatalogError> {
        self.conn()
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM sim_tasks s WHERE s.campaign_id = ?1 AND (
                   s.state IN ('queued','submitting','submitted')
                   OR (s.state = 'done' AND NOT EXISTS (
                         SELECT 1 FROM tasks t WHERE t.campaign_id = ?1 AND t.file_id = s.file_id
                           AND t.state IN ('done','failed','cancelled')))))",
                [campaign_id],
                |r| r.get(0),
            )
            .map_err(self.sql("simulation campaign settled"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{JobKind, ReplicaState, RunType};

    fn spec(files: u32, per_run: u32) -> SimSpec {
        SimSpec {
            source: "wimp".into(),
            events_per_file: 2,
            files,
            files_per_run: per_run,
            seed: u64::MAX,
            conditions: "v1".into(),
            detector_truth: None,
            truth_run: None,
        }
    }

    #[test]
    fn files_fill_runs_in_order() {
        let s = spec(5, 2);
        assert_eq!(s.runs(), 3);
        assert_eq!(
            (0..3).map(|k| s.files_of_run(k)).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(spec(4, 100).runs(), 1);
    }

    #[test]
    fn a_family_gets_the_next_free_runs_and_its_files_are_catalogued_where_made() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::init(&dir.path().join("c.sqlite")).unwrap();
        let a = c
            .create_simulation_campaign("a", "v1", "h", "{}", "any", &spec(5, 2))
            .unwrap();
        assert_eq!(
            (a.first_run, a.last_run),
            (SIM_FIRST_RUN, SIM_FIRST_RUN + 2)
        );
        let b = c
            .create_simulation_campaign("b", "v1", "h", "{}", "UKDC", &spec(1, 2))
            .unwrap();
        assert_eq!(
            (b.first_run, b.last_run),
            (SIM_FIRST_RUN + 3, SIM_FIRST_RUN + 3)
        );
        assert_eq!(c.campaign_site(b.id).unwrap(), "UKDC");
        assert_eq!(
            c.sim_spec(a.id).unwrap().unwrap(),
            spec(5, 2),
            "the seed round-trips"
        );
        assert!(c
            .runs()
            .unwrap()
            .iter()
            .all(|r| r.run_type == RunType::Simulation));
        let tasks = c.sim_tasks(a.id).unwrap();
        let placed: Vec<(u32, u32, u32)> = tasks
            .iter()
            .map(|t| (t.run, t.sequence, t.run_files))
            .collect();
        let r = SIM_FIRST_RUN;
        assert_eq!(
            placed,
            [
                (r, 0, 2),
                (r, 1, 2),
                (r + 1, 0, 2),
                (r + 1, 1, 2),
                (r + 2, 0, 1)
            ]
        );
        assert!(c
            .create_simulation_campaign("a", "v1", "h", "{}", "any", &spec(1, 1))
            .is_err());
        let e = c
            .create_simulation_campaign("c", "v1", "h", "{}", "any", &spec(200_000, 1))
            .unwrap_err();
        assert!(matches!(e, CatalogError::SimRuns { .. }), "{e}");

        // An element ran: its file is registered at the site that made it.
        let t = &tasks[0];
        let (_, jobs) = c
            .begin_array_of(JobKind::Sim, a.id, "p", &[(vec![t.id], 1)])
            .unwrap();
        c.jobs_accepted(&[jobs[0].0], 7).unwrap();
        let name = format!("{:06}_00000.raw.h5", t.run);
        let file = NewRawFile {
            run: t.run,
            sequence: 0,
            rel_path: format!("{:06}/{name}", t.run),
            name: name.clone(),
            size_bytes: 10,
            adler32: "0000abcd".into(),
            written_at: None,
        };
        let id = c
            .sim_task_done(t.id, &file, Site::Ukdc, &Site::DESTINATIONS)
            .unwrap();
        let reps = c.replicas_of(id).unwrap();
        let state = |s: Site| {
            reps.iter()
                .find(|r| r.site == s)
                .map(|r| (r.state, r.source))
        };
        assert_eq!(
            state(Site::Ukdc),
            Some((ReplicaState::Verified, Site::Ukdc))
        );
        assert_eq!(state(Site::Usdc), Some((ReplicaState::Queued, Site::Ukdc)));
        assert_eq!(
            state(Site::Archive),
            Some((ReplicaState::Queued, Site::Ukdc))
        );
        assert_eq!(state(Site::Surf), None, "never at SURF");
        assert!(!c.file(&name).unwrap().salted);
        // Done once: a second report of the same file is refused.
        assert!(c
            .sim_task_done(t.id, &file, Site::Ukdc, &Site::DESTINATIONS)
            .is_err());
        let p = c.sim_progress(&a).unwrap().unwrap();
        assert_eq!(
            (p.files, p.simulated, p.in_flight, p.made_at_ukdc),
            (5, 1, 4, 1)
        );
        assert!(!c.sim_family_settled(a.id).unwrap());
    }
}
