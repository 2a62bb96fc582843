//! How far each run has got, read-only: the run table of data movement, a
//! family's (campaign's) progress per run, whether a run is catalogued, and
//! when its newest raw file was written. Nothing here writes.
//!
//! ```text
//! run_movement       every detector run: files catalogued, verified replicas
//!                    per site, files with an output, files failed (state
//!                    `failed` or a bad/lost replica, as `tpcflow status`
//!                    counts them); simulated runs are their families' rows
//! family_runs        one campaign's tasks grouped by run: done, failed, in flight
//! run_exists         whether a run is catalogued
//! run_last_file_at   when a run's newest raw file was written at SURF
//! ```

use rusqlite::OptionalExtension;
use serde::Serialize;

use super::{Catalog, CatalogError, Site};

/// One row of the run table of data movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunMovement {
    /// Run number.
    pub run: u32,
    /// Science or calibration.
    pub run_type: String,
    /// Start time, ISO 8601 UTC, when known.
    pub start_time: Option<String>,
    /// Raw files catalogued.
    pub files: u64,
    /// Verified replicas at SURF.
    pub surf: u64,
    /// Verified replicas at USDC.
    pub usdc: u64,
    /// Verified replicas at UKDC.
    pub ukdc: u64,
    /// Verified replicas at ARCHIVE.
    pub archive: u64,
    /// Files with at least one catalogued RQ output.
    pub reconstructed: u64,
    /// Files failed: state `failed` or a bad/lost replica.
    pub failed: u64,
}

impl RunMovement {
    /// True when some file is not yet placed everywhere, or failed.
    pub fn missing_files(&self) -> bool {
        self.usdc < self.files
            || self.ukdc < self.files
            || self.archive < self.files
            || self.failed > 0
    }
}

/// One run of a family (campaign): its tasks by state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyRun {
    /// Run number.
    pub run: u32,
    /// Start time, ISO 8601 UTC, when known.
    pub start_time: Option<String>,
    /// Tasks (raw files of the run queued for this family).
    pub tasks: u64,
    /// Tasks whose output is catalogued.
    pub done: u64,
    /// Tasks failed after the retry cap.
    pub failed: u64,
    /// Tasks queued or in jobs.
    pub in_flight: u64,
}

impl Catalog {
    /// Every run with its data-movement counts, by run number.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn run_movement(&self) -> Result<Vec<RunMovement>, CatalogError> {
        // Both queries under one hold of the connection.
        let conn = self.conn();
        let mut rows: Vec<RunMovement> = self.query_rows_on(
            &conn,
            "SELECT ru.number, ru.run_type, ru.start_time, count(f.id),
                   coalesce(sum(EXISTS (SELECT 1 FROM outputs o WHERE o.file_id = f.id)), 0),
                   coalesce(sum(f.state = 'failed' OR EXISTS (SELECT 1 FROM replicas r
                       WHERE r.file_id = f.id AND r.state IN ('bad','lost'))), 0)
                 FROM runs ru LEFT JOIN raw_files f ON f.run = ru.number
                 WHERE ru.run_type <> 'simulation'
                 GROUP BY ru.number ORDER BY ru.number",
            [],
            "run movement",
            |r| {
                Ok(RunMovement {
                    run: r.get(0)?,
                    run_type: r.get(1)?,
                    start_time: r.get(2)?,
                    files: r.get(3)?,
                    surf: 0,
                    usdc: 0,
                    ukdc: 0,
                    archive: 0,
                    reconstructed: r.get(4)?,
                    failed: r.get(5)?,
                })
            },
        )?;
        let counts: Vec<(u32, Site, u64)> = self.query_rows_on(
            &conn,
            "SELECT f.run, p.site, count(*) FROM replicas p JOIN raw_files f ON f.id = p.file_id
                 WHERE p.state = 'verified' GROUP BY f.run, p.site",
            [],
            "count verified replicas",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        for (run, site, n) in counts {
            let Ok(i) = rows.binary_search_by_key(&run, |r| r.run) else {
                continue;
            };
            let row = &mut rows[i];
            match site {
                Site::Surf => row.surf = n,
                Site::Usdc => row.usdc = n,
                Site::Ukdc => row.ukdc = n,
                Site::Archive => row.archive = n,
            }
        }
        Ok(rows)
    }

    /// The runs of one family with its tasks by state, by run number.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn family_runs(&self, campaign_id: i64) -> Result<Vec<FamilyRun>, CatalogError> {
        self.query_rows(
            "SELECT f.run, ru.start_time, count(*), sum(t.state = 'done'), sum(t.state = 'failed'),
                        sum(t.state IN ('queued','submitting','submitted'))
                 FROM tasks t JOIN raw_files f ON f.id = t.file_id JOIN runs ru ON ru.number = f.run
                 WHERE t.campaign_id = ?1 GROUP BY f.run ORDER BY f.run",
            [campaign_id],
            "family runs",
            |r| {
                Ok(FamilyRun {
                    run: r.get(0)?,
                    start_time: r.get(1)?,
                    tasks: r.get(2)?,
                    done: r.get(3)?,
                    failed: r.get(4)?,
                    in_flight: r.get(5)?,
                })
            },
        )
    }

    /// True when the run is catalogued.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn run_exists(&self, run: u32) -> Result<bool, CatalogError> {
        self.conn()
            .query_row("SELECT 1 FROM runs WHERE number = ?1", [run], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(self.sql("look up run"))
    }

    /// When the newest raw file of a run was written at SURF (its
    /// registration when the write time is unknown) [s since the Unix
    /// epoch]; None for a run without files.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn run_last_file_at(&self, run: u32) -> Result<Option<f64>, CatalogError> {
        self.conn()
            .query_row(
                "SELECT max(coalesce(written_at, registered_at)) FROM raw_files WHERE run = ?1",
                [run],
                |r| r.get(0),
            )
            .map_err(self.sql("newest file of run"))
    }
}
