//! Replicas of RQ outputs at the processing sites: an output is catalogued
//! with the site that made it, and is itself replicated to the other
//! processing sites (RQ files are data too).
//!
//! ```text
//! made at S:   replica at S `verified` (path relative to S's RQ root),
//!              a `queued` replica at every other processing site, source S
//! the mover:   queued -> transferring -> verified (size and Adler-32 of the
//!              copy checked against the output's catalogued checksum)
//!              a failed attempt -> queued (attempts + 1) -> bad at the cap
//! ```
//!
//! An output made again for the same file and lineage replaces the old one
//! and its replicas, in the transaction that catalogues it.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{now_unix_s, Catalog, CatalogError, NewOutput, ReplicaState, Site};

/// Where an output was made and where it goes.
#[derive(Debug, Clone)]
pub struct OutputPlacement<'a> {
    /// The processing site that made it.
    pub site: Site,
    /// Its path relative to that site's RQ root (the same at every site).
    pub path: &'a str,
    /// Its size [bytes].
    pub size_bytes: u64,
    /// The other sites that get a replica.
    pub replicate_to: &'a [Site],
}

/// One replica of an output.
#[derive(Debug, Clone, Serialize)]
pub struct OutputReplicaRow {
    /// Output id.
    pub output_id: i64,
    /// Site.
    pub site: Site,
    /// Path relative to the site's RQ root.
    pub path: String,
    /// Where it was copied from (None: made there).
    pub source: Option<Site>,
    /// Catalogued size [bytes].
    pub size_bytes: u64,
    /// Catalogued Adler-32 (the output's checksum), hex.
    pub adler32: String,
    /// State.
    pub state: ReplicaState,
    /// Time of the last verification [s since the Unix epoch].
    pub verified_at: Option<f64>,
    /// Failed copy attempts.
    pub attempts: u32,
    /// Last failure reason.
    pub last_error: Option<String>,
}

/// A queued output replica with what the mover needs to copy it.
#[derive(Debug, Clone)]
pub struct OutputTransferItem {
    /// Output id.
    pub output_id: i64,
    /// RQ file name.
    pub name: String,
    /// Destination site.
    pub site: Site,
    /// Site copied from.
    pub source: Site,
    /// Path relative to the RQ roots.
    pub path: String,
    /// Catalogued size [bytes].
    pub size_bytes: u64,
    /// Catalogued Adler-32, hex.
    pub adler32: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

const OUTPUT_REPLICA_SELECT: &str = "SELECT output_id, site, path, source, size_bytes, adler32, \
     state, verified_at, attempts, last_error FROM output_replicas";

fn output_replica_row(r: &Row<'_>) -> rusqlite::Result<OutputReplicaRow> {
    Ok(OutputReplicaRow {
        output_id: r.get(0)?,
        site: r.get(1)?,
        path: r.get(2)?,
        source: r.get(3)?,
        size_bytes: r.get(4)?,
        adler32: r.get(5)?,
        state: r.get(6)?,
        verified_at: r.get(7)?,
        attempts: r.get(8)?,
        last_error: r.get(9)?,
    })
}

impl Catalog {
    /// As [`Catalog::task_done`], and in the same transaction: the output's
    /// site, its replica there (`verified`) and a `queued` replica at each
    /// site of `at.replicate_to`. An output made before for the same file
    /// and lineage loses its old replicas.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn task_done_at(
        &self,
        task_id: i64,
        output: &NewOutput,
        at: &OutputPlacement<'_>,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin task done"))?;
        let output_id = self.task_done_in(&tx, task_id, output)?;
        let now = now_unix_s();
        tx.execute(
            "UPDATE outputs SET site = ?2 WHERE id = ?1",
            params![output_id, at.site],
        )
        .map_err(self.sql("record output site"))?;
        tx.execute(
            "DELETE FROM output_replicas WHERE output_id = ?1",
            [output_id],
        )
        .map_err(self.sql("drop old output replicas"))?;
        tx.execute(
            "INSERT INTO output_replicas (output_id, site, path, size_bytes, adler32, state,
               verified_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'verified', ?6, ?6)",
            params![
                output_id,
                at.site,
                at.path,
                at.size_bytes,
                output.checksum,
                now
            ],
        )
        .map_err(self.sql("record output replica"))?;
        for &to in at.replicate_to.iter().filter(|&&s| s != at.site) {
            tx.execute(
                "INSERT INTO output_replicas (output_id, site, path, source, size_bytes, adler32,
                   state, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7)",
                params![
                    output_id,
                    to,
                    at.path,
                    at.site,
                    at.size_bytes,
                    output.checksum,
                    now
                ],
            )
            .map_err(self.sql("queue output replica"))?;
        }
        tx.commit().map_err(self.sql("commit task done"))
    }

    /// The replicas of an output, by site.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn output_replicas_of(
        &self,
        output_id: i64,
    ) -> Result<Vec<OutputReplicaRow>, CatalogError> {
        let sql = format!("{OUTPUT_REPLICA_SELECT} WHERE output_id = ?1 ORDER BY site");
        self.query_rows(
            &sql,
            [output_id],
            "list output replicas",
            output_replica_row,
        )
    }

    /// Output replicas left `transferring` by a mover that died go back to
    /// `queued` (call only under the transfer lock). Returns how many.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn requeue_interrupted_outputs(&self) -> Result<usize, CatalogError> {
        self.conn()
            .execute(
                "UPDATE output_replicas SET state = 'queued', updated_at = ?1
                 WHERE site IN ('SURF','USDC','UKDC','ARCHIVE') AND state = 'transferring'",
                [now_unix_s()],
            )
            .map_err(self.sql("re-queue interrupted output copies"))
    }

    /// Queued output replicas with fewer than `max_attempts` failures, oldest output first.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn queued_output_replicas(
        &self,
        max_attempts: u32,
    ) -> Result<Vec<OutputTransferItem>, CatalogError> {
        self.query_rows(
            "SELECT output_id, path, site, source, size_bytes, adler32, attempts
                 FROM output_replicas INDEXED BY output_replicas_site_state
                 WHERE site IN ('SURF','USDC','UKDC','ARCHIVE') AND state = 'queued'
                   AND attempts < ?1 AND source IS NOT NULL
                 ORDER BY output_id, site",
            [max_attempts],
            "list queued output replicas",
            |r| {
                let path: String = r.get(1)?;
                Ok(OutputTransferItem {
                    output_id: r.get(0)?,
                    name: path.rsplit('/').next().unwrap_or(&path).to_string(),
                    site: r.get(2)?,
                    source: r.get(3)?,
                    path,
                    size_bytes: r.get(4)?,
                    adler32: r.get(5)?,
                    attempts: r.get(6)?,
                })
            },
        )
    }

    /// Start copying an output replica: `queued -> transferring`, in one
    /// transaction that checks its source is still `verified` (else the
    /// replica goes `bad` with the reason and nothing is copied). Returns
    /// whether to copy.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn begin_output_copy(&self, item: &OutputTransferItem) -> Result<bool, CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin output copy"))?;
        let state = |site: Site| {
            tx.query_row(
                "SELECT state FROM output_replicas WHERE output_id = ?1 AND site = ?2",
                params![item.output_id, site],
                |r| r.get::<_, ReplicaState>(0),
            )
            .optional()
        };
        let here = state(item.site).map_err(self.sql("read output replica"))?;
        if here != Some(ReplicaState::Queued) {
            return Ok(false);
        }
        let source = state(item.source).map_err(self.sql("read output replica"))?;
        let now = now_unix_s();
        if source != Some(ReplicaState::Verified) {
            let why = format!(
                "copy from {} abandoned: its replica is {}",
                item.source,
                source.map_or("absent", ReplicaState::as_str)
            );
            tx.execute(
                "UPDATE output_replicas SET state = 'bad', last_error = ?3, updated_at = ?4
                 WHERE output_id = ?1 AND site = ?2",
                params![item.output_id, item.site, why, now],
            )
            .map_err(self.sql("abandon output copy"))?;
        } else {
            tx.execute(
                "UPDATE output_replicas SET state = 'transferring', updated_at = ?3
                 WHERE output_id = ?1 AND site = ?2",
                params![item.output_id, item.site, now],
            )
            .map_err(self.sql("start output copy"))?;
        }
        tx.commit().map_err(self.sql("commit output copy start"))?;
        Ok(source == Some(ReplicaState::Verified))
    }

    /// Move an output replica from `from` to `to` (with `reason` as its last
    /// error when given); `verified` stamps the time and clears the error.
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] when it is not in `from`; [`CatalogError::Sqlite`].
    pub fn output_replica_transition(
        &self,
        output_id: i64,
        site: Site,
        from: ReplicaState,
        to: ReplicaState,
        reason: Option<&str>,
    ) -> Result<(), CatalogError> {
        let now = now_unix_s();
        let n = self
            .conn()
            .execute(
                "UPDATE output_replicas SET state = ?4, updated_at = ?6,
                   last_error = CASE WHEN ?4 = 'verified' THEN NULL ELSE coalesce(?5, last_error) END,
                   verified_at = CASE WHEN ?4 = 'verified' THEN ?6 ELSE verified_at END
                 WHERE output_id = ?1 AND site = ?2 AND state = ?3",
                params![output_id, site, from, to, reason, now],
            )
            .map_err(self.sql("write output replica state"))?;
        if n == 0 {
            return Err(CatalogError::StateConflict {
                what: format!("output {output_id} at {site}"),
                expected: from.to_string(),
                found: "another state".into(),
            });
        }
        Ok(())
    }

    /// A failed copy attempt: `transferring -> queued` with `attempts + 1`,
    /// or `-> bad` at `max_attempts`. Returns the new state.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`]; [`CatalogError::StateConflict`] when not `transferring`.
    pub fn output_replica_failed(
        &self,
        output_id: i64,
        site: Site,
        reason: &str,
        max_attempts: u32,
    ) -> Result<ReplicaState, CatalogError> {
        self.conn()
            .query_row(
                "UPDATE output_replicas SET attempts = attempts + 1, last_error = ?3, updated_at = ?5,
                   state = CASE WHEN attempts + 1 >= ?4 THEN 'bad' ELSE 'queued' END
                 WHERE output_id = ?1 AND site = ?2 AND state = 'transferring' RETURNING state",
                params![output_id, site, reason, max_attempts, now_unix_s()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("write output replica failure"))?
            .ok_or_else(|| CatalogError::StateConflict {
                what: format!("output {output_id} at {site}"),
                expected: "transferring".into(),
                found: "another state".into(),
            })
    }
}
