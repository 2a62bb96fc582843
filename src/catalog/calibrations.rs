//! Calibration jobs: one per calibration run, recorded before its sbatch
//! (`pending`, with the SLURM job name), `submitted` with the SLURM id, then
//! `done` (its products are a conditions tag) or `failed`. A dispatcher that
//! crashes between the intent and the sbatch finds the job by its name.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{now_unix_s, Catalog, CatalogError};

/// Where a calibration job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationState {
    /// Recorded; sbatch may or may not have run.
    Pending,
    /// In SLURM.
    Submitted,
    /// Finished; its products are a conditions tag.
    Done,
    /// Finished without products (attempts spent).
    Failed,
}

impl CalibrationState {
    /// Name in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Submitted => "submitted",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "submitted" => Self::Submitted,
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// A calibration job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationRow {
    /// Calibration run.
    pub run: u32,
    /// State.
    pub state: CalibrationState,
    /// SLURM job name.
    pub slurm_name: String,
    /// SLURM job id, once known.
    pub slurm_id: Option<u64>,
    /// Attempts so far (from 1).
    pub attempts: u32,
    /// The tag its products became.
    pub tag: Option<String>,
    /// Why it failed, or what became of the tag.
    pub reason: Option<String>,
    /// When the run's last raw file was registered [s since the Unix epoch].
    pub last_file_at: Option<f64>,
    /// When it was recorded [s since the Unix epoch].
    pub created_at: f64,
    /// When it finished [s since the Unix epoch].
    pub finished_at: Option<f64>,
}

fn row(r: &Row<'_>) -> rusqlite::Result<CalibrationRow> {
    let state: String = r.get(1)?;
    Ok(CalibrationRow {
        run: r.get(0)?,
        state: CalibrationState::parse(&state),
        slurm_name: r.get(2)?,
        slurm_id: r.get(3)?,
        attempts: r.get(4)?,
        tag: r.get(5)?,
        reason: r.get(6)?,
        last_file_at: r.get(7)?,
        created_at: r.get(8)?,
        finished_at: r.get(9)?,
    })
}

const COLUMNS: &str = "run, state, slurm_name, slurm_id, attempts, tag, reason, last_file_at, \
                       created_at, finished_at";

impl Catalog {
    /// Calibration runs without a calibration job whose every raw file was
    /// reconstructed by prompt processing and whose newest file was
    /// registered before `settled_before` [s since the Unix epoch]:
    /// (run, newest file's registration time), oldest run first.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn calibration_runs_ready(
        &self,
        settled_before: f64,
    ) -> Result<Vec<(u32, f64)>, CatalogError> {
        self.query_rows(
            "SELECT ru.number, max(f.registered_at) FROM runs ru JOIN raw_files f ON f.run = ru.number
                 WHERE ru.run_type = 'calibration'
                   AND NOT EXISTS (SELECT 1 FROM calibrations k WHERE k.run = ru.number)
                 GROUP BY ru.number
                 HAVING sum(f.state <> 'processed') = 0 AND max(f.registered_at) < ?1
                 ORDER BY ru.number",
            [settled_before],
            "find calibration runs",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// The prompt-processing RQ outputs of a run: (RQ path, conditions tag
    /// it was made with), by file name.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn prompt_outputs_of_run(&self, run: u32) -> Result<Vec<(String, String)>, CatalogError> {
        self.query_rows(
            "SELECT o.rq_path, c.conditions_tag FROM tasks t
                 JOIN campaigns c ON c.id = t.campaign_id
                 JOIN raw_files f ON f.id = t.file_id
                 JOIN outputs o ON o.file_id = t.file_id AND o.lineage_hash = c.lineage_hash
                 WHERE c.prompt = 1 AND t.state = 'done' AND f.run = ?1
                 ORDER BY f.name",
            [run],
            "read outputs of run",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Record the intent to submit a run's calibration job (before sbatch).
    /// Returns false when the run has one already.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn begin_calibration(
        &self,
        run: u32,
        slurm_name: &str,
        last_file_at: f64,
    ) -> Result<bool, CatalogError> {
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO calibrations (run, state, slurm_name, last_file_at, created_at)
                 VALUES (?1, 'pending', ?2, ?3, ?4)",
                params![run, slurm_name, last_file_at, now_unix_s()],
            )
            .map_err(self.sql("record calibration job"))?;
        Ok(n == 1)
    }

    /// sbatch accepted the calibration job.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn calibration_submitted(&self, run: u32, slurm_id: u64) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE calibrations SET state = 'submitted', slurm_id = ?2
                 WHERE run = ?1 AND state IN ('pending','submitted')",
                params![run, slurm_id],
            )
            .map_err(self.sql("record calibration submission"))?;
        Ok(())
    }

    /// Another attempt: back to `pending` (a new SLURM name) or, with
    /// no attempts left, `failed` with the reason.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn calibration_attempt_failed(
        &self,
        run: u32,
        reason: &str,
        next_name: Option<&str>,
    ) -> Result<(), CatalogError> {
        let conn = self.conn();
        match next_name {
            Some(name) => conn.execute(
                "UPDATE calibrations SET state = 'pending', slurm_name = ?2, slurm_id = NULL,
                   attempts = attempts + 1, reason = ?3 WHERE run = ?1",
                params![run, name, reason],
            ),
            None => conn.execute(
                "UPDATE calibrations SET state = 'failed', reason = ?2, finished_at = ?3 WHERE run = ?1",
                params![run, reason, now_unix_s()],
            ),
        }
        .map_err(self.sql("record calibration failure"))?;
        Ok(())
    }

    /// The job finished and its products are the tag `tag`.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn calibration_done(&self, run: u32, tag: &str, reason: &str) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE calibrations SET state = 'done', tag = ?2, reason = ?3, finished_at = ?4
                 WHERE run = ?1",
                params![run, tag, reason, now_unix_s()],
            )
            .map_err(self.sql("record calibration done"))?;
        Ok(())
    }

    /// Every calibration job, by run.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn calibrations(&self) -> Result<Vec<CalibrationRow>, CatalogError> {
        self.query_rows(
            &format!("SELECT {COLUMNS} FROM calibrations ORDER BY run"),
            [],
            "read calibrations",
            row,
        )
    }

    /// One run's calibration job, if any.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn calibration(&self, run: u32) -> Result<Option<CalibrationRow>, CatalogError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM calibrations WHERE run = ?1"),
                [run],
                row,
            )
            .optional()
            .map_err(self.sql("read calibration"))
    }
}
