//! What the retention stage needs from the catalog: the SURF copies that may
//! be removed, re-verification times, and the `retiring -> retired` states.
//!
//! ```text
//! SURF replica:  verified -> retiring -> retired       (retention stage)
//!                retiring -> verified                  (a restart finds the file still
//!                                                       there but a destination no longer verified)
//! ```

use rusqlite::params;
use serde::Serialize;

use super::{now_unix_s, Catalog, CatalogError, ReplicaRow, ReplicaState, Site};

/// A file whose SURF copy the retention stage may remove.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionCandidate {
    /// Raw file id.
    pub file_id: i64,
    /// Raw file name.
    pub file: String,
    /// Catalogued size [bytes].
    pub size_bytes: u64,
    /// Catalogued Adler-32 (of the salted bytes for a salted file).
    pub adler32: String,
    /// Salted file (the SURF copy and every destination hold the salted bytes).
    pub salted: bool,
    /// Path of the SURF copy, relative to the SURF root.
    pub surf_path: String,
    /// Its destination replicas (USDC, UKDC, ARCHIVE), each `verified`.
    pub destinations: Vec<ReplicaRow>,
}

impl Catalog {
    /// Files with a verified SURF copy, registered at or before
    /// `registered_before` [s since the Unix epoch], not claimed by a salting
    /// pass, verified at every destination with the catalogued size and
    /// checksum, and with no `bad` or `lost` replica anywhere. By file id.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn retention_candidates(
        &self,
        registered_before: f64,
    ) -> Result<Vec<RetentionCandidate>, CatalogError> {
        let rows: Vec<(i64, String, u64, String, bool, String)> = self.query_rows(
            "SELECT f.id, f.name, f.size_bytes, f.adler32, f.salted, s.path
                     FROM replicas s JOIN raw_files f ON f.id = s.file_id
                     WHERE s.site = 'SURF' AND s.state = 'verified'
                       AND f.salting_since IS NULL AND f.registered_at <= ?1
                       AND NOT EXISTS (SELECT 1 FROM replicas b WHERE b.file_id = f.id
                                         AND b.state IN ('bad','lost'))
                       AND (SELECT count(*) FROM replicas d WHERE d.file_id = f.id
                              AND d.site IN ('USDC','UKDC','ARCHIVE') AND d.state = 'verified'
                              AND d.size_bytes = f.size_bytes AND d.adler32 = f.adler32) = 3
                     ORDER BY f.id",
            [registered_before],
            "list retention candidates",
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )?;
        rows.into_iter()
            .map(|(file_id, file, size_bytes, adler32, salted, surf_path)| {
                let destinations = self
                    .replicas_of(file_id)?
                    .into_iter()
                    .filter(|r| r.site != Site::Surf)
                    .collect();
                Ok(RetentionCandidate {
                    file_id,
                    file,
                    size_bytes,
                    adler32,
                    salted,
                    surf_path,
                    destinations,
                })
            })
            .collect()
    }

    /// True when the file's replica at every destination is verified with
    /// the catalogued size and checksum and none of its replicas is bad or lost.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn verified_everywhere(&self, file_id: i64) -> Result<bool, CatalogError> {
        self.conn()
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM replicas b WHERE b.file_id = f.id
                                      AND b.state IN ('bad','lost'))
                   AND (SELECT count(*) FROM replicas d WHERE d.file_id = f.id
                          AND d.site IN ('USDC','UKDC','ARCHIVE') AND d.state = 'verified'
                          AND d.size_bytes = f.size_bytes AND d.adler32 = f.adler32) = 3
                 FROM raw_files f WHERE f.id = ?1",
                [file_id],
                |r| r.get(0),
            )
            .map_err(self.sql("check destinations"))
    }

    /// A verified replica's checksum was read again and matched: record when.
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] when it is no longer verified; [`CatalogError::Sqlite`].
    pub fn replica_reverified(&self, file_id: i64, site: Site) -> Result<(), CatalogError> {
        let n = self
            .conn()
            .execute(
                "UPDATE replicas SET verified_at = ?3, updated_at = ?3
                 WHERE file_id = ?1 AND site = ?2 AND state = 'verified'",
                params![file_id, site, now_unix_s()],
            )
            .map_err(self.sql("record re-verification"))?;
        if n == 0 {
            return Err(CatalogError::StateConflict {
                what: format!("raw file {file_id} at {site}"),
                expected: ReplicaState::Verified.to_string(),
                found: "another state".to_string(),
            });
        }
        Ok(())
    }
}
