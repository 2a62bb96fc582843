//! Processing tasks: one per (raw file, campaign), the dispatcher's unit of
//! bookkeeping. Every state change is a transaction that checks the state it
//! leaves, so a crash between two steps leaves a state the next pass can
//! reconcile.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{
    now_unix_s, CampaignRow, CampaignState, Catalog, CatalogError, JobKind, JobState, NewOutput,
    Site, TaskState,
};

/// A task with what the dispatcher needs to run it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    /// Catalog id.
    pub id: i64,
    /// Raw file id.
    pub file_id: i64,
    /// Campaign id.
    pub campaign_id: i64,
    /// State.
    pub state: TaskState,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Job holding it.
    pub job_id: Option<i64>,
    /// Last failure.
    pub last_error: Option<String>,
    /// Raw file name.
    pub file_name: String,
    /// Run number.
    pub run: u32,
    /// Raw file size [bytes].
    pub size_bytes: u64,
    /// Catalogued adler32 of the raw file (after salting).
    pub adler32: String,
    /// Path of the USDC replica relative to the site root.
    pub usdc_path: Option<String>,
}

const TASK_SELECT: &str = "SELECT t.id, t.file_id, t.campaign_id, t.state, t.attempts, t.job_id, t.last_error,
       f.name, f.run, f.size_bytes, f.adler32,
       (SELECT r.path FROM replicas r WHERE r.file_id = f.id AND r.site = 'USDC' AND r.state = 'verified')
     FROM tasks t JOIN raw_files f ON f.id = t.file_id";

/// As [`TASK_SELECT`], driven by the `(state, campaign)` index: few tasks
/// are queued however many are done, which SQLite's statistics cannot know.
const TASK_SELECT_BY_STATE: &str = "SELECT t.id, t.file_id, t.campaign_id, t.state, t.attempts, t.job_id, t.last_error,
       f.name, f.run, f.size_bytes, f.adler32,
       (SELECT r.path FROM replicas r WHERE r.file_id = f.id AND r.site = 'USDC' AND r.state = 'verified')
     FROM tasks t INDEXED BY tasks_state JOIN raw_files f ON f.id = t.file_id";

fn task_row(r: &Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        id: r.get(0)?,
        file_id: r.get(1)?,
        campaign_id: r.get(2)?,
        state: r.get(3)?,
        attempts: r.get(4)?,
        job_id: r.get(5)?,
        last_error: r.get(6)?,
        file_name: r.get(7)?,
        run: r.get(8)?,
        size_bytes: r.get(9)?,
        adler32: r.get(10)?,
        usdc_path: r.get(11)?,
    })
}

/// Progress of a campaign (a family).
#[derive(Debug, Clone, Serialize)]
pub struct CampaignProgress {
    /// The campaign.
    pub campaign: CampaignRow,
    /// Prompt (real-time) processing rather than a reprocessing family.
    pub prompt: bool,
    /// Tasks in total.
    pub tasks: u64,
    /// Tasks done.
    pub done: u64,
    /// Tasks failed after the cap.
    pub failed: u64,
    /// Tasks queued or in jobs.
    pub in_flight: u64,
    /// Runs with at least one task.
    pub runs: u64,
    /// A simulation campaign's production (None: it reconstructs detector data).
    pub simulation: Option<super::SimProgress>,
}

/// The operator's per-run view (LZ's run table of data movement).
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    /// Run number.
    pub run: u32,
    /// Science or calibration.
    pub run_type: String,
    /// Start time, ISO 8601 UTC.
    pub start_time: Option<String>,
    /// Raw files catalogued at SURF.
    pub files: u64,
    /// Of them, SURF copies removed by the retention stage (safe elsewhere, not lost).
    pub surf_retired: u64,
    /// Verified replicas at USDC.
    pub usdc: u64,
    /// Verified replicas at UKDC.
    pub ukdc: u64,
    /// Verified replicas at ARCHIVE.
    pub archive: u64,
    /// Salted files.
    pub salted: u64,
    /// Files with a prompt-processing output.
    pub reconstructed: u64,
    /// Files failed (processing or a bad/lost replica).
    pub failed: u64,
}

impl Catalog {
    /// This catalog's random identity (6 hex digits), part of every job name.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn instance_id(&self) -> Result<String, CatalogError> {
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = 'instance'", [], |r| {
                r.get(0)
            })
            .map_err(self.sql("read catalog identity"))
    }

    /// The campaign with this name.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn campaign_by_name(&self, name: &str) -> Result<Option<CampaignRow>, CatalogError> {
        Ok(self.campaigns()?.into_iter().find(|c| c.name == name))
    }

    /// A campaign's tracked reco configuration (JSON) and whether it is prompt processing.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn campaign_extras(&self, id: i64) -> Result<(String, bool), CatalogError> {
        self.conn()
            .query_row(
                "SELECT config_json, prompt FROM campaigns WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.sql("read campaign config"))
    }

    /// Store a campaign's reco configuration and prompt flag.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn set_campaign_extras(
        &self,
        id: i64,
        config_json: &str,
        prompt: bool,
    ) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE campaigns SET config_json = ?2, prompt = ?3 WHERE id = ?1",
                params![id, config_json, prompt],
            )
            .map(drop)
            .map_err(self.sql("write campaign config"))
    }

    /// Queue a task for every transferred file of the campaign's run range
    /// that has none yet. Science files must be salted when `require_salted`;
    /// prompt processing never takes simulated runs (their own simulation
    /// campaign reconstructs them).
    /// Returns how many were queued.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn queue_campaign_tasks(
        &self,
        c: &CampaignRow,
        require_salted: bool,
    ) -> Result<usize, CatalogError> {
        let (_, prompt) = self.campaign_extras(c.id)?;
        // Prompt processing only ever looks at files waiting for it
        // (`transferred`, via the state index): its cost follows new data, not
        // the catalog size. A reprocessing campaign scans its run range.
        // SQLite's statistics cannot tell that few files are `transferred`:
        // name the index.
        let (files, states) = if prompt {
            ("raw_files f INDEXED BY raw_files_state", "('transferred')")
        } else {
            ("raw_files f", "('transferred', 'processing', 'processed')")
        };
        let now = now_unix_s();
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO tasks (file_id, campaign_id, state, created_at, updated_at)
                     SELECT f.id, ?1, 'queued', ?4, ?4 FROM {files} JOIN runs ru ON ru.number = f.run
                     WHERE f.state IN {states} AND f.run BETWEEN ?2 AND ?3
                       AND (?5 = 0 OR ru.run_type <> 'science' OR f.salted = 1)
                       AND (?6 = 0 OR ru.run_type <> 'simulation')
                       AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.file_id = f.id AND t.campaign_id = ?1)"
                ),
                params![c.id, c.first_run, c.last_run, now, require_salted, prompt],
            )
            .map_err(self.sql("queue tasks"))
    }

    /// Tasks of a campaign still queued or in jobs (index-driven).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn campaign_in_flight(&self, campaign_id: i64) -> Result<(u64, u64), CatalogError> {
        self.conn()
            .query_row(
                "SELECT (SELECT count(*) FROM tasks WHERE state IN ('queued','submitting','submitted') AND campaign_id = ?1),
                        (SELECT count(*) FROM tasks WHERE state IN ('done','failed') AND campaign_id = ?1)",
                [campaign_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.sql("campaign in flight"))
    }

    /// Queued tasks of a campaign whose back-off has passed, oldest file first.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn runnable_tasks(
        &self,
        campaign_id: i64,
        limit: usize,
    ) -> Result<Vec<TaskRow>, CatalogError> {
        let conn = self.conn();
        let sql = format!(
            "{TASK_SELECT_BY_STATE} WHERE t.state = 'queued' AND t.campaign_id = ?1
               AND (t.not_before IS NULL OR t.not_before <= ?2) ORDER BY f.run, f.sequence LIMIT ?3"
        );
        // The clock is read with the connection held.
        self.query_rows_on(
            &conn,
            &sql,
            params![campaign_id, now_unix_s(), limit as i64],
            "list runnable tasks",
            task_row,
        )
    }

    /// As [`Catalog::runnable_tasks`], only tasks whose file has a verified
    /// replica at one of `sites`: a file that must wait for a replica does not
    /// hold back the files behind it.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn runnable_tasks_at(
        &self,
        campaign_id: i64,
        sites: &[Site],
        limit: usize,
    ) -> Result<Vec<TaskRow>, CatalogError> {
        if sites.is_empty() {
            return Ok(Vec::new());
        }
        // Site names are the enum's own constants, never user text.
        let names: Vec<String> = sites.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let conn = self.conn();
        let sql = format!(
            "{TASK_SELECT_BY_STATE} WHERE t.state = 'queued' AND t.campaign_id = ?1
               AND (t.not_before IS NULL OR t.not_before <= ?2)
               AND EXISTS (SELECT 1 FROM replicas r WHERE r.file_id = t.file_id
                             AND r.state = 'verified' AND r.site IN ({}))
             ORDER BY f.run, f.sequence LIMIT ?3",
            names.join(",")
        );
        // The clock is read with the connection held.
        self.query_rows_on(
            &conn,
            &sql,
            params![campaign_id, now_unix_s(), limit as i64],
            "list runnable tasks",
            task_row,
        )
    }

    /// Tasks of a job.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn tasks_of_job(&self, job_id: i64) -> Result<Vec<TaskRow>, CatalogError> {
        let sql = format!("{TASK_SELECT} WHERE t.job_id = ?1 ORDER BY f.run, f.sequence");
        self.query_rows(&sql, [job_id], "list job tasks", task_row)
    }

    /// Tasks of a campaign in a state.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn tasks_in_state(
        &self,
        campaign_id: i64,
        state: TaskState,
    ) -> Result<Vec<TaskRow>, CatalogError> {
        let sql = format!(
            "{TASK_SELECT} WHERE t.campaign_id = ?1 AND t.state = ?2 ORDER BY f.run, f.sequence"
        );
        self.query_rows(&sql, params![campaign_id, state], "list tasks", task_row)
    }

    /// Write the intent to submit: a `pending` job named `{prefix}-j{id}`
    /// holding `task_ids` (which move `queued -> submitting`), in one
    /// transaction. Returns (job id, job name).
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] when a task is no longer queued.
    pub fn begin_job(
        &self,
        campaign_id: i64,
        prefix: &str,
        task_ids: &[i64],
        attempt: u32,
    ) -> Result<(i64, String), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin job"))?;
        let job = self.claim_job(
            &tx,
            campaign_id,
            prefix,
            task_ids,
            attempt,
            None,
            JobKind::Reco,
        )?;
        tx.commit().map_err(self.sql("commit job"))?;
        Ok(job)
    }

    /// The intent to submit a SLURM job array: one `pending` job per element
    /// (`elements[i]` = (task ids, attempt) of index `i`), all carrying the
    /// array's SLURM name `{prefix}-a{first job id}`, in one transaction.
    /// Returns (array name, [(job id, job name)] by index).
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] when a task is no longer queued.
    pub fn begin_array(
        &self,
        campaign_id: i64,
        prefix: &str,
        elements: &[(Vec<i64>, u32)],
    ) -> Result<(String, Vec<(i64, String)>), CatalogError> {
        self.begin_array_of(JobKind::Reco, campaign_id, prefix, elements)
    }

    /// [`Catalog::begin_array`] for a job array of `kind`: its elements hold
    /// reconstruction tasks or simulation tasks.
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] when a task is no longer queued.
    pub fn begin_array_of(
        &self,
        kind: JobKind,
        campaign_id: i64,
        prefix: &str,
        elements: &[(Vec<i64>, u32)],
    ) -> Result<(String, Vec<(i64, String)>), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin job array"))?;
        let mut jobs = Vec::with_capacity(elements.len());
        for (index, (tasks, attempt)) in elements.iter().enumerate() {
            jobs.push(self.claim_job(
                &tx,
                campaign_id,
                prefix,
                tasks,
                *attempt,
                Some(index),
                kind,
            )?);
        }
        let first = jobs.first().map_or(0, |j| j.0);
        let array_name = format!("{prefix}-a{first}");
        tx.execute(
            "UPDATE jobs SET slurm_name = ?3 WHERE id BETWEEN ?1 AND ?2 AND array_index IS NOT NULL",
            params![first, jobs.last().map_or(0, |j| j.0), array_name],
        )
        .map_err(self.sql("name job array"))?;
        tx.commit().map_err(self.sql("commit job array"))?;
        Ok((array_name, jobs))
    }

    #[allow(clippy::too_many_arguments)]
    fn claim_job(
        &self,
        tx: &rusqlite::Transaction<'_>,
        campaign_id: i64,
        prefix: &str,
        task_ids: &[i64],
        attempt: u32,
        array_index: Option<usize>,
        kind: JobKind,
    ) -> Result<(i64, String), CatalogError> {
        let tasks = serde_json::to_string(task_ids).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO jobs (name, campaign_id, task_ids, attempt, array_index, kind) VALUES ('', ?1, ?2, ?3, ?4, ?5)",
            params![campaign_id, tasks, attempt.max(1), array_index.map(|i| i as i64), kind],
        )
        .map_err(self.sql("record job"))?;
        let id = tx.last_insert_rowid();
        let name = format!("{prefix}-j{id}");
        tx.execute("UPDATE jobs SET name = ?2 WHERE id = ?1", params![id, name])
            .map_err(self.sql("name job"))?;
        let now = now_unix_s();
        let claim = match kind {
            JobKind::Reco => "UPDATE tasks SET state = 'submitting', job_id = ?2, updated_at = ?3 WHERE id = ?1 AND state = 'queued'",
            JobKind::Sim => "UPDATE sim_tasks SET state = 'submitting', job_id = ?2, updated_at = ?3 WHERE id = ?1 AND state = 'queued'",
        };
        for t in task_ids {
            let n = tx
                .execute(claim, params![t, id, now])
                .map_err(self.sql("claim task"))?;
            if n != 1 {
                return Err(CatalogError::StateConflict {
                    what: format!("task {t}"),
                    expected: "queued".into(),
                    found: "another state".into(),
                });
            }
        }
        // Prompt tasks move their raw files to `processing`.
        tx.execute(
            "UPDATE raw_files SET state = 'processing' WHERE state = 'transferred' AND id IN
               (SELECT t.file_id FROM tasks t JOIN campaigns c ON c.id = t.campaign_id WHERE t.job_id = ?1 AND c.prompt = 1)",
            [id],
        )
        .map_err(self.sql("mark files processing"))?;
        Ok((id, name))
    }

    /// After sbatch accepted the job: job `pending -> submitted`, its tasks `submitting -> submitted`.
    ///
    /// # Errors
    /// As [`Catalog::job_submitted`].
    pub fn job_accepted(&self, job_id: i64, slurm_id: u64) -> Result<(), CatalogError> {
        self.jobs_accepted(&[job_id], slurm_id)
    }

    /// [`Catalog::job_accepted`] for every element of a job array (or one
    /// plain job), in one transaction.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`], or a job no longer `pending`.
    pub fn jobs_accepted(&self, job_ids: &[i64], slurm_id: u64) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("accept jobs"))?;
        let now = now_unix_s();
        for id in job_ids {
            let n = tx
                .execute(
                    "UPDATE jobs SET slurm_id = ?2, submitted_at = ?3, state = 'submitted' WHERE id = ?1 AND state = 'pending'",
                    params![id, slurm_id, now],
                )
                .map_err(self.sql("mark job submitted"))?;
            if n != 1 {
                return Err(CatalogError::StateConflict {
                    what: format!("job {id}"),
                    expected: "pending".into(),
                    found: "another state".into(),
                });
            }
            for sql in [
                "UPDATE tasks SET state = 'submitted', updated_at = ?2 WHERE job_id = ?1 AND state = 'submitting'",
                "UPDATE sim_tasks SET state = 'submitted', updated_at = ?2 WHERE job_id = ?1 AND state = 'submitting'",
            ] {
                tx.execute(sql, params![id, now])
                    .map_err(self.sql("mark tasks submitted"))?;
            }
        }
        tx.commit().map_err(self.sql("commit accepted jobs"))
    }

    /// A job that never reached SLURM: job `pending -> failed`, its tasks back
    /// to `queued` without spending an attempt.
    ///
    /// # Errors
    /// As [`Catalog::job_transition`].
    pub fn job_never_submitted(&self, job_id: i64, reason: &str) -> Result<(), CatalogError> {
        self.jobs_never_submitted(&[job_id], reason)
    }

    /// [`Catalog::job_never_submitted`] for every element of a job array (or
    /// one plain job), in one transaction: a crash never leaves a failed job
    /// whose tasks are stuck in `submitting`.
    ///
    /// # Errors
    /// As [`Catalog::job_transition`]; nothing is changed then.
    pub fn jobs_never_submitted(&self, job_ids: &[i64], reason: &str) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin never-submitted jobs"))?;
        let now = now_unix_s();
        for &id in job_ids {
            self.job_transition_in(&tx, id, JobState::Pending, JobState::Failed, Some(reason))?;
            for sql in [
                "UPDATE tasks SET state = 'queued', job_id = NULL, updated_at = ?2 WHERE job_id = ?1 AND state IN ('submitting', 'submitted')",
                "UPDATE sim_tasks SET state = 'queued', job_id = NULL, updated_at = ?2 WHERE job_id = ?1 AND state IN ('submitting', 'submitted')",
            ] {
                tx.execute(sql, params![id, now])
                    .map_err(self.sql("requeue tasks"))?;
            }
        }
        tx.commit().map_err(self.sql("commit never-submitted jobs"))
    }

    /// A task's output is complete: catalogue it and mark the task done (and a
    /// prompt task's raw file `processed`), in one transaction.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn task_done(&self, task_id: i64, output: &NewOutput) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin task done"))?;
        self.task_done_in(&tx, task_id, output)?;
        tx.commit().map_err(self.sql("commit task done"))
    }

    /// [`Catalog::task_done`] inside the caller's transaction; returns the output's id.
    pub(super) fn task_done_in(
        &self,
        tx: &rusqlite::Transaction<'_>,
        task_id: i64,
        output: &NewOutput,
    ) -> Result<i64, CatalogError> {
        let now = now_unix_s();
        let id = self.insert_output(tx, output, now)?;
        tx.execute(
            "UPDATE tasks SET state = 'done', last_error = NULL, updated_at = ?2 WHERE id = ?1",
            params![task_id, now],
        )
        .map_err(self.sql("mark task done"))?;
        tx.execute(
            "UPDATE raw_files SET state = 'processed' WHERE state = 'processing' AND id =
               (SELECT t.file_id FROM tasks t JOIN campaigns c ON c.id = t.campaign_id WHERE t.id = ?1 AND c.prompt = 1)",
            [task_id],
        )
        .map_err(self.sql("mark file processed"))?;
        Ok(id)
    }

    /// A task's attempt failed: spend an attempt; back to `queued` after
    /// `backoff_s` while attempts remain, else `failed` (and a prompt task's
    /// raw file `failed` with the reason). Returns the new state.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn task_failed(
        &self,
        task_id: i64,
        reason: &str,
        max_attempts: u32,
        backoff_s: f64,
    ) -> Result<TaskState, CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin task failure"))?;
        let attempts: u32 = tx
            .query_row("SELECT attempts FROM tasks WHERE id = ?1", [task_id], |r| {
                r.get(0)
            })
            .map_err(self.sql("read task attempts"))?;
        let attempts = attempts + 1;
        let now = now_unix_s();
        let state = if attempts >= max_attempts {
            TaskState::Failed
        } else {
            TaskState::Queued
        };
        // Exponential back-off: backoff, 2 backoff, 4 backoff, ...
        let not_before = now + backoff_s * f64::from(1u32 << (attempts - 1).min(10));
        tx.execute(
            "UPDATE tasks SET state = ?2, attempts = ?3, last_error = ?4, not_before = ?5, job_id = NULL, updated_at = ?6 WHERE id = ?1",
            params![task_id, state, attempts, reason, not_before, now],
        )
        .map_err(self.sql("record task failure"))?;
        let (file_state, file_error) = if state == TaskState::Failed {
            ("failed", Some(reason))
        } else {
            ("transferred", None)
        };
        tx.execute(
            "UPDATE raw_files SET state = ?2, attempts = ?3, last_error = coalesce(?4, last_error) WHERE state = 'processing' AND id =
               (SELECT t.file_id FROM tasks t JOIN campaigns c ON c.id = t.campaign_id WHERE t.id = ?1 AND c.prompt = 1)",
            params![task_id, file_state, attempts, file_error],
        )
        .map_err(self.sql("record file failure"))?;
        tx.commit().map_err(self.sql("commit task failure"))?;
        Ok(state)
    }

    /// Give failed tasks of a campaign (and of its production, for a
    /// simulation campaign) a fresh retry budget. Returns how many.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn retry_failed_tasks(&self, campaign_id: i64) -> Result<usize, CatalogError> {
        let now = now_unix_s();
        let mut conn = self.conn();
        // Files and tasks together: never a file back to `transferred` whose
        // task stays `failed`, nor the reverse.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin retry of failed tasks"))?;
        tx.execute(
            "UPDATE raw_files SET state = 'transferred' WHERE state = 'failed' AND id IN
               (SELECT t.file_id FROM tasks t JOIN campaigns c ON c.id = t.campaign_id
                WHERE t.campaign_id = ?1 AND t.state = 'failed' AND c.prompt = 1)",
            [campaign_id],
        )
        .map_err(self.sql("reset failed files"))?;
        let mut n = 0;
        for sql in [
            "UPDATE tasks SET state = 'queued', attempts = 0, not_before = NULL, updated_at = ?2 WHERE campaign_id = ?1 AND state = 'failed'",
            "UPDATE sim_tasks SET state = 'queued', attempts = 0, not_before = NULL, updated_at = ?2 WHERE campaign_id = ?1 AND state = 'failed'",
        ] {
            n += tx
                .execute(sql, params![campaign_id, now])
                .map_err(self.sql("retry failed tasks"))?;
        }
        tx.commit()
            .map_err(self.sql("commit retry of failed tasks"))?;
        Ok(n)
    }

    /// Cancel a campaign: its queued tasks are cancelled; returns the ids of
    /// its jobs still pending/submitted/running (for scancel).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`] or a forbidden campaign transition.
    pub fn cancel_campaign(&self, c: &CampaignRow) -> Result<Vec<i64>, CatalogError> {
        let mut conn = self.conn();
        // The campaign and its queued tasks together: never a cancelled
        // campaign with tasks still queued, nor the reverse.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin campaign cancel"))?;
        if c.state != CampaignState::Cancelled {
            self.campaign_transition_in(&tx, c.id, c.state, CampaignState::Cancelled)?;
        }
        for sql in [
            "UPDATE tasks SET state = 'cancelled', updated_at = ?2 WHERE campaign_id = ?1 AND state = 'queued'",
            "UPDATE sim_tasks SET state = 'cancelled', updated_at = ?2 WHERE campaign_id = ?1 AND state = 'queued'",
        ] {
            tx.execute(sql, params![c.id, now_unix_s()])
                .map_err(self.sql("cancel tasks"))?;
        }
        let ids: Vec<i64> = {
            let mut st = tx
                .prepare("SELECT id FROM jobs WHERE campaign_id = ?1 AND state IN ('pending','submitted','running')")
                .map_err(self.sql("list campaign jobs"))?;
            let ids = st
                .query_map([c.id], |r| r.get(0))
                .and_then(|r| r.collect())
                .map_err(self.sql("list campaign jobs"))?;
            ids
        };
        tx.commit().map_err(self.sql("commit campaign cancel"))?;
        Ok(ids)
    }

    /// Jobs still pending, submitted or running (what reconciliation looks at).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn active_jobs(&self) -> Result<Vec<super::JobRow>, CatalogError> {
        let mut out = Vec::new();
        for s in [JobState::Pending, JobState::Submitted, JobState::Running] {
            out.extend(self.jobs_in_state(s)?);
        }
        out.sort_by_key(|j| j.id);
        Ok(out)
    }

    /// Progress of every campaign.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn campaign_progress(&self) -> Result<Vec<CampaignProgress>, CatalogError> {
        let campaigns = self.campaigns()?;
        let mut out = Vec::new();
        // The connection is not re-entrant: production progress first.
        let mut rows = Vec::with_capacity(campaigns.len());
        for c in campaigns {
            let simulation = self.sim_progress(&c)?;
            rows.push((c, simulation));
        }
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT count(t.id), sum(t.state = 'done'), sum(t.state = 'failed'),
                        sum(t.state IN ('queued','submitting','submitted')), count(DISTINCT f.run), c.prompt
                 FROM campaigns c LEFT JOIN tasks t ON t.campaign_id = c.id LEFT JOIN raw_files f ON f.id = t.file_id
                 WHERE c.id = ?1",
            )
            .map_err(self.sql("campaign progress"))?;
        for (c, simulation) in rows {
            let (tasks, done, failed, in_flight, runs, prompt): (
                u64,
                Option<u64>,
                Option<u64>,
                Option<u64>,
                u64,
                bool,
            ) = st
                .query_row([c.id], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .map_err(self.sql("campaign progress"))?;
            out.push(CampaignProgress {
                campaign: c,
                prompt,
                tasks,
                done: done.unwrap_or(0),
                failed: failed.unwrap_or(0),
                in_flight: in_flight.unwrap_or(0),
                runs,
                simulation,
            });
        }
        Ok(out)
    }

    /// The per-run operator view; `missing_first` puts runs with files not
    /// yet everywhere (or failed) on top.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn run_status(
        &self,
        run: Option<u32>,
        missing_first: bool,
    ) -> Result<Vec<RunStatus>, CatalogError> {
        let mut rows: Vec<RunStatus> = self.query_rows(
            "SELECT ru.number, ru.run_type, ru.start_time, count(f.id),
                   coalesce(sum(EXISTS (SELECT 1 FROM replicas r WHERE r.file_id = f.id AND r.site = 'USDC' AND r.state = 'verified')), 0),
                   coalesce(sum(EXISTS (SELECT 1 FROM replicas r WHERE r.file_id = f.id AND r.site = 'UKDC' AND r.state = 'verified')), 0),
                   coalesce(sum(EXISTS (SELECT 1 FROM replicas r WHERE r.file_id = f.id AND r.site = 'ARCHIVE' AND r.state = 'verified')), 0),
                   coalesce(sum(f.salted), 0),
                   coalesce(sum(EXISTS (SELECT 1 FROM tasks t JOIN campaigns c ON c.id = t.campaign_id
                                 WHERE t.file_id = f.id AND c.prompt = 1 AND t.state = 'done')), 0),
                   coalesce(sum(f.state = 'failed' OR EXISTS (SELECT 1 FROM replicas r WHERE r.file_id = f.id AND r.state IN ('bad','lost'))), 0),
                   coalesce(sum(EXISTS (SELECT 1 FROM replicas r WHERE r.file_id = f.id AND r.site = 'SURF' AND r.state = 'retired')), 0)
                 FROM runs ru LEFT JOIN raw_files f ON f.run = ru.number
                 WHERE (?1 IS NULL AND ru.run_type <> 'simulation') OR ru.number = ?1
                 GROUP BY ru.number ORDER BY ru.number",
            [run],
            "run status",
            |r| {
                Ok(RunStatus {
                    run: r.get(0)?,
                    run_type: r.get(1)?,
                    start_time: r.get(2)?,
                    files: r.get(3)?,
                    usdc: r.get(4)?,
                    ukdc: r.get(5)?,
                    archive: r.get(6)?,
                    salted: r.get(7)?,
                    reconstructed: r.get(8)?,
                    failed: r.get(9)?,
                    surf_retired: r.get(10)?,
                })
            },
        )?;
        if missing_first {
            rows.sort_by_key(|r| {
                let complete =
                    r.usdc == r.files && r.ukdc == r.files && r.archive == r.files && r.failed == 0;
                (complete, r.run)
            });
        }
        Ok(rows)
    }

    /// Latencies of prompt processing: output catalogued minus file written
    /// at SURF [s], one per processed file.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn prompt_latencies(&self) -> Result<Vec<f64>, CatalogError> {
        self.query_rows(
            "SELECT o.catalogued_at - coalesce(f.written_at, f.registered_at)
                 FROM outputs o JOIN raw_files f ON f.id = o.file_id
                 JOIN runs ru ON ru.number = f.run AND ru.run_type <> 'simulation'
                 JOIN campaigns c ON c.lineage_hash = o.lineage_hash AND c.prompt = 1",
            [],
            "latencies",
            |r| r.get(0),
        )
    }

    /// Job ids by state of a campaign's task: used by tests and status.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn task_of_file(
        &self,
        file_id: i64,
        campaign_id: i64,
    ) -> Result<Option<TaskRow>, CatalogError> {
        let conn = self.conn();
        let sql = format!("{TASK_SELECT} WHERE t.file_id = ?1 AND t.campaign_id = ?2");
        let row = conn
            .query_row(&sql, params![file_id, campaign_id], task_row)
            .optional()
            .map_err(self.sql("read task"));
        row
    }
}
