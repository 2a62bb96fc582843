//! Resources of jobs and of a task's next attempt (time limit, memory), which
//! the dispatcher's retry policy raises after a job hit its time or memory
//! limit, and the ways a task's attempt ends besides the plain failure of
//! [`Catalog::task_failed`]: retried without spending an attempt (the node
//! failed, the job was preempted) or failed at once (the same failure at the
//! limits).

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{now_unix_s, Catalog, CatalogError, TaskState};

/// Time limit [min] and memory [MB] of one attempt; None: the settings' default.
pub type AttemptResources = (Option<u32>, Option<u32>);

impl Catalog {
    /// The resources recorded for the next attempt of each of these tasks.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn task_resources(
        &self,
        task_ids: &[i64],
    ) -> Result<HashMap<i64, AttemptResources>, CatalogError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT time_limit_min, mem_mb FROM tasks WHERE id = ?1")
            .map_err(self.sql("read task resources"))?;
        let mut out = HashMap::new();
        for &id in task_ids {
            let r: Option<AttemptResources> = st
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(self.sql("read task resources"))?;
            if let Some(r) = r {
                out.insert(id, r);
            }
        }
        Ok(out)
    }

    /// Record the resources a task's next attempt asks for.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn set_task_resources(
        &self,
        task_id: i64,
        time_limit_min: u32,
        mem_mb: Option<u32>,
    ) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE tasks SET time_limit_min = ?2, mem_mb = ?3 WHERE id = ?1",
                params![task_id, time_limit_min, mem_mb],
            )
            .map(drop)
            .map_err(self.sql("write task resources"))
    }

    /// Record what these jobs (one, or the elements of an array) were submitted with.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn set_jobs_resources(
        &self,
        job_ids: &[i64],
        time_limit_min: u32,
        mem_mb: Option<u32>,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin job resources"))?;
        for id in job_ids {
            tx.execute(
                "UPDATE jobs SET time_limit_min = ?2, mem_mb = ?3 WHERE id = ?1",
                params![id, time_limit_min, mem_mb],
            )
            .map_err(self.sql("write job resources"))?;
        }
        tx.commit().map_err(self.sql("commit job resources"))
    }

    /// What a job was submitted with (None for a job recorded without).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn job_resources(&self, job_id: i64) -> Result<AttemptResources, CatalogError> {
        self.conn()
            .query_row(
                "SELECT time_limit_min, mem_mb FROM jobs WHERE id = ?1",
                [job_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.sql("read job resources"))
    }

    /// A task's attempt ended through no fault of the file (NODE_FAIL,
    /// PREEMPTED, its site lost): back to `queued` at once, no attempt spent
    /// (a prompt task's raw file back to `transferred`).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn task_requeued_free(&self, task_id: i64, reason: &str) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin free requeue"))?;
        let now = now_unix_s();
        tx.execute(
            "UPDATE tasks SET state = 'queued', last_error = ?2, not_before = NULL, job_id = NULL, updated_at = ?3
             WHERE id = ?1 AND state IN ('submitting', 'submitted')",
            params![task_id, reason, now],
        )
        .map_err(self.sql("requeue task"))?;
        tx.execute(
            "UPDATE raw_files SET state = 'transferred' WHERE state = 'processing' AND id =
               (SELECT t.file_id FROM tasks t JOIN campaigns c ON c.id = t.campaign_id WHERE t.id = ?1 AND c.prompt = 1)",
            [task_id],
        )
        .map_err(self.sql("requeue file"))?;
        tx.commit().map_err(self.sql("commit free requeue"))
    }

    /// A task failed the same way at the limits: `failed` now, whatever
    /// attempts remain, with the reason (and a prompt task's raw file too).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn task_failed_at_limit(
        &self,
        task_id: i64,
        reason: &str,
    ) -> Result<TaskState, CatalogError> {
        // One more failed attempt with a cap of it: `failed` at once.
        let attempts: u32 = self
            .conn()
            .query_row("SELECT attempts FROM tasks WHERE id = ?1", [task_id], |r| {
                r.get(0)
            })
            .map_err(self.sql("read task attempts"))?;
        self.task_failed(task_id, reason, attempts + 1, 0.0)
    }
}
