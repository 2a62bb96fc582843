//! Read-only queries behind the web pages (`tpcflow serve`): the run table of
//! data movement, per-run family progress, and the outputs an event lookup
//! starts from. Nothing here writes.
//!
//! ```text
//! run_movement       every detector run: files catalogued, verified replicas
//!                    per site, files with an output, files failed (state
//!                    `failed` or a bad/lost replica, as `tpcflow status`
//!                    counts them); simulated runs are their families' rows
//! family_runs        one campaign's tasks grouped by run: done, failed, in flight
//! outputs_of_run     the RQ outputs of a run's raw files, newest per file, as
//!                    the server's RQ root (USDC's) holds them: an output made
//!                    at UKDC by its verified USDC replica
//! verified_replicas  where a raw file can be read
//! runs_using_conditions  runs with outputs of campaigns using a conditions tag
//! run_last_file_at   when a run's newest raw file was written at SURF
//! ```

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Catalog, CatalogError, ReplicaState, Site};

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

/// The RQ output of one raw file, with what an event lookup needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutput {
    /// Raw file id.
    pub file_id: i64,
    /// Sequence of the raw file within the run.
    pub sequence: u32,
    /// Raw file name.
    pub file_name: String,
    /// Lineage hash of the output.
    pub lineage_hash: String,
    /// RQ file path as catalogued.
    pub rq_path: String,
    /// Events in the RQ file.
    pub events: u64,
    /// Catalogue time [s since the Unix epoch].
    pub catalogued_at: f64,
}

impl Catalog {
    /// Every run with its data-movement counts, by run number.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn run_movement(&self) -> Result<Vec<RunMovement>, CatalogError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT ru.number, ru.run_type, ru.start_time, count(f.id),
                   coalesce(sum(EXISTS (SELECT 1 FROM outputs o WHERE o.file_id = f.id)), 0),
                   coalesce(sum(f.state = 'failed' OR EXISTS (SELECT 1 FROM replicas r
                       WHERE r.file_id = f.id AND r.state IN ('bad','lost'))), 0)
                 FROM runs ru LEFT JOIN raw_files f ON f.run = ru.number
                 WHERE ru.run_type <> 'simulation'
                 GROUP BY ru.number ORDER BY ru.number",
            )
            .map_err(self.sql("run movement"))?;
        let mut rows: Vec<RunMovement> = st
            .query_map([], |r| {
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
            })
            .and_then(|rows| rows.collect())
            .map_err(self.sql("run movement"))?;
        let mut st = conn
            .prepare_cached(
                "SELECT f.run, p.site, count(*) FROM replicas p JOIN raw_files f ON f.id = p.file_id
                 WHERE p.state = 'verified' GROUP BY f.run, p.site",
            )
            .map_err(self.sql("count verified replicas"))?;
        let counts: Vec<(u32, Site, u64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .map_err(self.sql("count verified replicas"))?;
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
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT f.run, ru.start_time, count(*), sum(t.state = 'done'), sum(t.state = 'failed'),
                        sum(t.state IN ('queued','submitting','submitted'))
                 FROM tasks t JOIN raw_files f ON f.id = t.file_id JOIN runs ru ON ru.number = f.run
                 WHERE t.campaign_id = ?1 GROUP BY f.run ORDER BY f.run",
            )
            .map_err(self.sql("family runs"))?;
        let rows = st
            .query_map([campaign_id], |r| {
                Ok(FamilyRun {
                    run: r.get(0)?,
                    start_time: r.get(1)?,
                    tasks: r.get(2)?,
                    done: r.get(3)?,
                    failed: r.get(4)?,
                    in_flight: r.get(5)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(self.sql("family runs"));
        rows
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

    /// The RQ outputs of a run's raw files by sequence: of `lineage` when
    /// given, else the newest output of each file. The path is the output's,
    /// or for one made at another site, its verified USDC replica's (relative
    /// to USDC's RQ root, which the server reads).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn outputs_of_run(
        &self,
        run: u32,
        lineage: Option<&str>,
    ) -> Result<Vec<RunOutput>, CatalogError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT f.id, f.sequence, f.name, o.lineage_hash,
                   coalesce((SELECT r.path FROM output_replicas r WHERE r.output_id = o.id
                               AND r.site = 'USDC' AND r.state = 'verified' AND r.source IS NOT NULL),
                            o.rq_path),
                   o.events, o.catalogued_at
                 FROM raw_files f JOIN outputs o ON o.file_id = f.id
                 WHERE f.run = ?1 AND (?2 IS NULL OR o.lineage_hash = ?2)
                 ORDER BY f.sequence, o.catalogued_at DESC, o.id DESC",
            )
            .map_err(self.sql("outputs of run"))?;
        let mut rows: Vec<RunOutput> = st
            .query_map(params![run, lineage], |r| {
                Ok(RunOutput {
                    file_id: r.get(0)?,
                    sequence: r.get(1)?,
                    file_name: r.get(2)?,
                    lineage_hash: r.get(3)?,
                    rq_path: r.get(4)?,
                    events: r.get(5)?,
                    catalogued_at: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(self.sql("outputs of run"))?;
        // Newest first within a file: keep the first row of each file.
        rows.dedup_by_key(|o| o.file_id);
        Ok(rows)
    }

    /// The verified replicas of a raw file as (site, path relative to the site root).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn verified_replicas(&self, file_id: i64) -> Result<Vec<(Site, String)>, CatalogError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT site, path FROM replicas WHERE file_id = ?1 AND state = ?2 ORDER BY site",
            )
            .map_err(self.sql("list verified replicas"))?;
        let rows = st
            .query_map(params![file_id, ReplicaState::Verified], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(self.sql("list verified replicas"));
        rows
    }

    /// Runs with at least one catalogued output of a campaign whose
    /// conditions are `tag`, ascending.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn runs_using_conditions(&self, tag: &str) -> Result<Vec<u32>, CatalogError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT DISTINCT f.run FROM campaigns c
                 JOIN outputs o ON o.lineage_hash = c.lineage_hash
                 JOIN raw_files f ON f.id = o.file_id
                 WHERE c.conditions_tag = ?1 ORDER BY f.run",
            )
            .map_err(self.sql("runs using conditions"))?;
        let rows = st
            .query_map([tag], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(self.sql("runs using conditions"));
        rows
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
