//! Where a run's reconstructed data and raw files can be read, read-only:
//! the RQ outputs of a run, the verified replicas of a raw file, and the runs
//! whose outputs used a conditions tag. Nothing here writes.
//!
//! ```text
//! outputs_of_run     the RQ outputs of a run's raw files, newest per file, as
//!                    USDC's RQ root holds them: an output made at UKDC by its
//!                    verified USDC replica
//! verified_replicas  where a raw file can be read
//! runs_using_conditions  runs with outputs of campaigns using a conditions tag
//! ```

use rusqlite::params;
use serde::Serialize;

use super::{Catalog, CatalogError, ReplicaState, Site};

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
    /// The RQ outputs of a run's raw files by sequence: of `lineage` when
    /// given, else the newest output of each file. The path is the output's,
    /// or for one made at another site, its verified USDC replica's (relative
    /// to USDC's RQ root).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn outputs_of_run(
        &self,
        run: u32,
        lineage: Option<&str>,
    ) -> Result<Vec<RunOutput>, CatalogError> {
        let mut rows: Vec<RunOutput> = self.query_rows(
            "SELECT f.id, f.sequence, f.name, o.lineage_hash,
                   coalesce((SELECT r.path FROM output_replicas r WHERE r.output_id = o.id
                               AND r.site = 'USDC' AND r.state = 'verified' AND r.source IS NOT NULL),
                            o.rq_path),
                   o.events, o.catalogued_at
                 FROM raw_files f JOIN outputs o ON o.file_id = f.id
                 WHERE f.run = ?1 AND (?2 IS NULL OR o.lineage_hash = ?2)
                 ORDER BY f.sequence, o.catalogued_at DESC, o.id DESC",
            params![run, lineage],
            "outputs of run",
            |r| {
                Ok(RunOutput {
                    file_id: r.get(0)?,
                    sequence: r.get(1)?,
                    file_name: r.get(2)?,
                    lineage_hash: r.get(3)?,
                    rq_path: r.get(4)?,
                    events: r.get(5)?,
                    catalogued_at: r.get(6)?,
                })
            },
        )?;
        // Newest first within a file: keep the first row of each file.
        rows.dedup_by_key(|o| o.file_id);
        Ok(rows)
    }

    /// The verified replicas of a raw file as (site, path relative to the site root).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn verified_replicas(&self, file_id: i64) -> Result<Vec<(Site, String)>, CatalogError> {
        self.query_rows(
            "SELECT site, path FROM replicas WHERE file_id = ?1 AND state = ?2 ORDER BY site",
            params![file_id, ReplicaState::Verified],
            "list verified replicas",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Runs with at least one catalogued output of a campaign whose
    /// conditions are `tag`, ascending.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn runs_using_conditions(&self, tag: &str) -> Result<Vec<u32>, CatalogError> {
        self.query_rows(
            "SELECT DISTINCT f.run FROM campaigns c
                 JOIN outputs o ON o.lineage_hash = c.lineage_hash
                 JOIN raw_files f ON f.id = o.file_id
                 WHERE c.conditions_tag = ?1 ORDER BY f.run",
            [tag],
            "runs using conditions",
            |r| r.get(0),
        )
    }
}
