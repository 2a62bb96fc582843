//! Processing outputs, SLURM jobs and campaigns (families): the tables the
//! dispatcher builds on. Basic inserts, queries and checked state changes.

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{now_unix_s, CampaignState, Catalog, CatalogError, JobState};

/// A campaign to define.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    /// Unique name, e.g. `SR3_autodata_Y2024_W41_PROD-1`.
    pub name: String,
    /// First run of the range (inclusive).
    pub first_run: u32,
    /// Last run of the range (inclusive).
    pub last_run: u32,
    /// Detector conditions tag.
    pub conditions_tag: String,
    /// Software lineage hash (short sha256 hex).
    pub lineage_hash: String,
}

/// A catalogued campaign.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignRow {
    /// Catalog id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// First run (inclusive).
    pub first_run: u32,
    /// Last run (inclusive).
    pub last_run: u32,
    /// Conditions tag.
    pub conditions_tag: String,
    /// Lineage hash.
    pub lineage_hash: String,
    /// State.
    pub state: CampaignState,
    /// Creation time [s since the Unix epoch].
    pub created_at: f64,
}

/// A job to record with [`Catalog::insert_job`] (tests only: the dispatcher
/// records jobs with `Catalog::begin_job` and `begin_array`).
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Job name (named after catalog ids).
    pub name: String,
    /// Campaign it works for.
    pub campaign_id: Option<i64>,
    /// Raw file ids (or array task ids) it covers.
    pub task_ids: Vec<i64>,
    /// Attempt number, from 1.
    pub attempt: u32,
}

/// A catalogued job.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// Catalog id.
    pub id: i64,
    /// SLURM job id once submitted.
    pub slurm_id: Option<u64>,
    /// Job name.
    pub name: String,
    /// Campaign.
    pub campaign_id: Option<i64>,
    /// Task ids covered.
    pub task_ids: Vec<i64>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// State.
    pub state: JobState,
    /// Why it is in that state (SLURM reason, failure).
    pub reason: Option<String>,
    /// Submission time [s since the Unix epoch].
    pub submitted_at: Option<f64>,
    /// End time [s since the Unix epoch].
    pub finished_at: Option<f64>,
    /// The name SLURM knows it by: the array's name for an array element, else `name`.
    pub slurm_name: String,
    /// Index of this job in its SLURM job array (`slurm_id` is the array's id).
    pub array_index: Option<u32>,
    /// What it runs: reconstruction tasks or simulation tasks.
    pub kind: super::JobKind,
}

impl JobRow {
    /// How SLURM commands name it: `123` or `123_4` for an array element.
    pub fn slurm_ref(&self) -> Option<String> {
        self.slurm_id.map(|id| match self.array_index {
            Some(i) => format!("{id}_{i}"),
            None => id.to_string(),
        })
    }
}

/// A processing output to catalogue.
#[derive(Debug, Clone)]
pub struct NewOutput {
    /// Raw file it was made from.
    pub file_id: i64,
    /// Lineage hash of the processing.
    pub lineage_hash: String,
    /// RQ file path.
    pub rq_path: String,
    /// Checksum of the RQ file.
    pub checksum: String,
    /// Events in it.
    pub events: u64,
}

/// A catalogued processing output.
#[derive(Debug, Clone, Serialize)]
pub struct OutputRow {
    /// Catalog id.
    pub id: i64,
    /// Raw file id.
    pub file_id: i64,
    /// Lineage hash.
    pub lineage_hash: String,
    /// RQ file path.
    pub rq_path: String,
    /// Checksum.
    pub checksum: String,
    /// Events.
    pub events: u64,
    /// Catalogue time [s since the Unix epoch].
    pub catalogued_at: f64,
    /// The processing site that made it (None: catalogued before sites processed).
    pub site: Option<super::Site>,
}

fn job_row(r: &Row<'_>) -> rusqlite::Result<JobRow> {
    let tasks: String = r.get(4)?;
    Ok(JobRow {
        id: r.get(0)?,
        slurm_id: r.get(1)?,
        name: r.get(2)?,
        campaign_id: r.get(3)?,
        task_ids: serde_json::from_str(&tasks).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
        })?,
        attempt: r.get(5)?,
        state: r.get(6)?,
        reason: r.get(7)?,
        submitted_at: r.get(8)?,
        finished_at: r.get(9)?,
        slurm_name: r.get(10)?,
        array_index: r.get(11)?,
        kind: r.get(12)?,
    })
}

const JOB_COLUMNS: &str = "id, slurm_id, name, campaign_id, task_ids, attempt, state, reason, \
     submitted_at, finished_at, coalesce(slurm_name, name), array_index, kind";

impl Catalog {
    /// Define a campaign (state `defined`). Returns its id.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`], e.g. for a name already taken.
    pub fn create_campaign(&self, c: &NewCampaign) -> Result<i64, CatalogError> {
        self.create_campaign_in(&self.conn(), c)
    }

    /// Define a campaign with its reco configuration and prompt flag, in one
    /// transaction (never a campaign without its configuration). Returns its id.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`], e.g. for a name already taken.
    pub fn create_configured_campaign(
        &self,
        c: &NewCampaign,
        config_json: &str,
        prompt: bool,
    ) -> Result<i64, CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin campaign creation"))?;
        let id = self.create_campaign_in(&tx, c)?;
        tx.execute(
            "UPDATE campaigns SET config_json = ?2, prompt = ?3 WHERE id = ?1",
            params![id, config_json, prompt],
        )
        .map_err(self.sql("write campaign config"))?;
        tx.commit().map_err(self.sql("commit campaign creation"))?;
        Ok(id)
    }

    fn create_campaign_in(&self, conn: &Connection, c: &NewCampaign) -> Result<i64, CatalogError> {
        conn.execute(
            "INSERT INTO campaigns (name, first_run, last_run, conditions_tag, lineage_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![c.name, c.first_run, c.last_run, c.conditions_tag, c.lineage_hash, now_unix_s()],
        )
        .map_err(self.sql("create campaign"))?;
        Ok(conn.last_insert_rowid())
    }

    /// Every campaign, newest first.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn campaigns(&self) -> Result<Vec<CampaignRow>, CatalogError> {
        self.query_rows(
            "SELECT id, name, first_run, last_run, conditions_tag, lineage_hash, state, created_at
                 FROM campaigns ORDER BY id DESC",
            [],
            "list campaigns",
            |r| {
                Ok(CampaignRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    first_run: r.get(2)?,
                    last_run: r.get(3)?,
                    conditions_tag: r.get(4)?,
                    lineage_hash: r.get(5)?,
                    state: r.get(6)?,
                    created_at: r.get(7)?,
                })
            },
        )
    }

    /// Move a campaign from `from` to `to`.
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] naming the campaign when it is not in
    /// `from`; [`CatalogError::Sqlite`].
    pub fn campaign_transition(
        &self,
        id: i64,
        from: CampaignState,
        to: CampaignState,
    ) -> Result<(), CatalogError> {
        self.campaign_transition_in(&self.conn(), id, from, to)
    }

    /// [`Catalog::campaign_transition`] inside the caller's transaction.
    pub(super) fn campaign_transition_in(
        &self,
        conn: &Connection,
        id: i64,
        from: CampaignState,
        to: CampaignState,
    ) -> Result<(), CatalogError> {
        let n = conn
            .execute(
                "UPDATE campaigns SET state = ?3 WHERE id = ?1 AND state = ?2",
                params![id, from, to],
            )
            .map_err(self.sql("write campaign state"))?;
        if n == 0 {
            let found: Option<CampaignState> = conn
                .query_row("SELECT state FROM campaigns WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(self.sql("read campaign state"))?;
            return Err(CatalogError::StateConflict {
                what: format!("campaign {id}"),
                expected: from.to_string(),
                found: found.map_or_else(|| "absent".to_string(), |s| s.to_string()),
            });
        }
        Ok(())
    }

    /// Record a job (state `pending`) without tasks moving. Returns its id.
    /// Tests only: the dispatcher records a job and moves its tasks in one
    /// transaction (`Catalog::begin_job`, `begin_array`).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    #[cfg(test)]
    pub fn insert_job(&self, j: &NewJob) -> Result<i64, CatalogError> {
        let tasks = serde_json::to_string(&j.task_ids).unwrap_or_else(|_| "[]".to_string());
        let conn = self.conn();
        conn.execute(
            "INSERT INTO jobs (name, campaign_id, task_ids, attempt) VALUES (?1, ?2, ?3, ?4)",
            params![j.name, j.campaign_id, tasks, j.attempt.max(1)],
        )
        .map_err(self.sql("record job"))?;
        Ok(conn.last_insert_rowid())
    }

    /// Record a job's submission: `pending -> submitted` with its SLURM id.
    ///
    /// # Errors
    /// As [`Catalog::job_transition`].
    pub fn job_submitted(&self, id: i64, slurm_id: u64) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin job submission"))?;
        self.job_transition_in(&tx, id, JobState::Pending, JobState::Submitted, None)?;
        tx.execute(
            "UPDATE jobs SET slurm_id = ?2, submitted_at = ?3 WHERE id = ?1",
            params![id, slurm_id, now_unix_s()],
        )
        .map_err(self.sql("record submission"))?;
        tx.commit().map_err(self.sql("commit job submission"))
    }

    /// Move a job from `from` to `to` with a reason; end states stamp `finished_at`.
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] naming the job when it is not in `from`;
    /// [`CatalogError::Sqlite`].
    pub fn job_transition(
        &self,
        id: i64,
        from: JobState,
        to: JobState,
        reason: Option<&str>,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin job transition"))?;
        self.job_transition_in(&tx, id, from, to, reason)?;
        tx.commit().map_err(self.sql("commit job transition"))
    }

    /// [`Catalog::job_transition`] inside the caller's transaction.
    pub(super) fn job_transition_in(
        &self,
        tx: &Connection,
        id: i64,
        from: JobState,
        to: JobState,
        reason: Option<&str>,
    ) -> Result<(), CatalogError> {
        let found: Option<(String, JobState)> = tx
            .query_row("SELECT name, state FROM jobs WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(self.sql("read job state"))?;
        match found {
            Some((_, state)) if state == from => {}
            other => {
                return Err(CatalogError::StateConflict {
                    what: other
                        .as_ref()
                        .map_or_else(|| format!("job {id}"), |(n, _)| format!("job {id} ({n})")),
                    expected: from.to_string(),
                    found: other.map_or_else(|| "absent".to_string(), |(_, s)| s.to_string()),
                })
            }
        }
        let finished = matches!(
            to,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
        .then(now_unix_s);
        tx.execute(
            "UPDATE jobs SET state = ?2, reason = coalesce(?3, reason),
               finished_at = coalesce(?4, finished_at) WHERE id = ?1",
            params![id, to, reason, finished],
        )
        .map_err(self.sql("write job state"))?;
        Ok(())
    }

    /// Jobs in a state, oldest first.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn jobs_in_state(&self, state: JobState) -> Result<Vec<JobRow>, CatalogError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state = ?1 ORDER BY id");
        self.query_rows(&sql, [state], "list jobs", job_row)
    }

    /// Catalogue a processing output without a task; the same (file,
    /// lineage) again replaces it. Returns its id.
    ///
    /// For tests and fixtures (the integration tests build catalogs with
    /// outputs this way): the dispatcher catalogues an output with its task
    /// in one transaction (`Catalog::task_done`, `task_done_at`), through
    /// the same insert (`insert_output`).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`], e.g. for an unknown raw file id.
    pub fn record_output(&self, o: &NewOutput) -> Result<i64, CatalogError> {
        self.insert_output(&self.conn(), o, now_unix_s())
    }

    /// Insert or replace the output of (file, lineage) on `conn` (a
    /// connection or the caller's transaction), catalogued at `now`; its id.
    pub(super) fn insert_output(
        &self,
        conn: &Connection,
        o: &NewOutput,
        now: f64,
    ) -> Result<i64, CatalogError> {
        conn.query_row(
            "INSERT INTO outputs (file_id, lineage_hash, rq_path, checksum, events, catalogued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(file_id, lineage_hash) DO UPDATE SET rq_path = excluded.rq_path,
               checksum = excluded.checksum, events = excluded.events,
               catalogued_at = excluded.catalogued_at
             RETURNING id",
            params![
                o.file_id,
                o.lineage_hash,
                o.rq_path,
                o.checksum,
                o.events,
                now
            ],
            |r| r.get(0),
        )
        .map_err(self.sql("record output"))
    }

    /// The outputs made from a raw file.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn outputs_of(&self, file_id: i64) -> Result<Vec<OutputRow>, CatalogError> {
        self.query_rows(
            "SELECT id, file_id, lineage_hash, rq_path, checksum, events, catalogued_at, site
                 FROM outputs WHERE file_id = ?1 ORDER BY id",
            [file_id],
            "list outputs",
            |r| {
                Ok(OutputRow {
                    id: r.get(0)?,
                    file_id: r.get(1)?,
                    lineage_hash: r.get(2)?,
                    rq_path: r.get(3)?,
                    checksum: r.get(4)?,
                    events: r.get(5)?,
                    catalogued_at: r.get(6)?,
                    site: r.get(7)?,
                })
            },
        )
    }
}
