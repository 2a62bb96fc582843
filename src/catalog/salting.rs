//! What the salting stage needs from the catalog: the files awaiting it, and
//! one transaction that records a salted file's new size and checksum.
//!
//! The catalog says a file is salted (`raw_files.salted`), never which or
//! how many events: the salt identities live only in the vault.
//!
//! Salting and the mover are ordered through the catalog: a salting pass
//! claims a file ([`Catalog::begin_salting`], `raw_files.salting_since`)
//! before it rewrites it, and only if no destination copy has begun; the
//! mover starts a copy ([`Catalog::begin_copy`]) only of a file not claimed
//! and whose catalogued checksum is still the one it is about to verify.
//! So a copy either reads the bytes the catalog describes or does not start,
//! and the rewrite never happens under a running copy.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{now_unix_s, Catalog, CatalogError, FileState, RawFileRow, RunType};

/// A registered, not yet salted raw file.
#[derive(Debug, Clone)]
pub struct SaltCandidate {
    /// The file.
    pub file: RawFileRow,
    /// Its run's type: calibration files bypass salting.
    pub run_type: RunType,
    /// Path of its SURF replica, relative to the SURF root.
    pub surf_path: String,
}

impl Catalog {
    /// Files in state `registered` with `salted = 0` and a verified SURF
    /// replica, by run and sequence (science and calibration alike: the
    /// stage lets calibration files bypass).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn files_awaiting_salting(&self) -> Result<Vec<SaltCandidate>, CatalogError> {
        let rows: Vec<(i64, RunType, String)> = self.query_rows(
            "SELECT f.id, r.run_type, s.path FROM raw_files f
                     JOIN runs r ON r.number = f.run
                     JOIN replicas s ON s.file_id = f.id AND s.site = 'SURF' AND s.state = 'verified'
                     WHERE f.state = 'registered' AND f.salted = 0
                     ORDER BY f.run, f.sequence",
            [],
            "list files awaiting salting",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        rows.into_iter()
            .map(|(id, run_type, surf_path)| {
                Ok(SaltCandidate {
                    file: self.file(&id.to_string())?,
                    run_type,
                    surf_path,
                })
            })
            .collect()
    }

    /// Claim a registered, unsalted file with checksum `old_adler32` for
    /// salting, in one transaction that checks no destination copy has begun
    /// (`queued` replicas wait). Returns false (nothing claimed) when a copy
    /// has begun. A claim left by a crashed pass is taken again.
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] when the file is not registered and
    /// unsalted with that checksum; [`CatalogError::UnknownFile`]; [`CatalogError::Sqlite`].
    pub fn begin_salting(&self, file_id: i64, old_adler32: &str) -> Result<bool, CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin salting claim"))?;
        check_saltable(&tx, self, file_id, old_adler32)?;
        if destination_copies_begun(&tx, self, file_id)? > 0 {
            return Ok(false);
        }
        tx.execute(
            "UPDATE raw_files SET salting_since = ?2 WHERE id = ?1",
            params![file_id, now_unix_s()],
        )
        .map_err(self.sql("claim file for salting"))?;
        tx.commit().map_err(self.sql("commit salting claim"))?;
        Ok(true)
    }

    /// Drop the salting claim of a file left unchanged (the pass failed
    /// before its rewrite).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn abandon_salting(&self, file_id: i64) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE raw_files SET salting_since = NULL WHERE id = ?1",
                [file_id],
            )
            .map_err(self.sql("drop salting claim"))?;
        Ok(())
    }

    /// Record that a raw file was salted: in one transaction, check it is
    /// still `registered`, unsalted, with checksum `old_adler32` and no
    /// destination copy begun; then set its size, checksum and the salted
    /// flag, and the same size and checksum on its SURF replica. Queued
    /// destination replicas then copy (and verify) the salted bytes.
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] naming the file when any check fails;
    /// [`CatalogError::UnknownFile`]; [`CatalogError::Sqlite`].
    pub fn record_salted(
        &self,
        file_id: i64,
        old_adler32: &str,
        size_bytes: u64,
        adler32: &str,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin salting record"))?;
        check_saltable(&tx, self, file_id, old_adler32)?;
        let begun = destination_copies_begun(&tx, self, file_id)?;
        if begun > 0 {
            return Err(CatalogError::StateConflict {
                what: format!("raw file {file_id}"),
                expected: "no destination copy begun".to_string(),
                found: format!("{begun} destination replica(s) past `queued`"),
            });
        }
        tx.execute(
            "UPDATE raw_files SET size_bytes = ?2, adler32 = ?3, salted = 1, salting_since = NULL
             WHERE id = ?1",
            params![file_id, size_bytes, adler32],
        )
        .map_err(self.sql("record salted file"))?;
        tx.execute(
            "UPDATE replicas SET size_bytes = ?2, adler32 = ?3, verified_at = ?4, updated_at = ?4
             WHERE file_id = ?1 AND site = 'SURF'",
            params![file_id, size_bytes, adler32, now_unix_s()],
        )
        .map_err(self.sql("record salted SURF replica"))?;
        tx.commit().map_err(self.sql("commit salting record"))
    }
}

/// Check, inside a transaction, that a file is registered, unsalted and has
/// checksum `old_adler32`.
fn check_saltable(
    tx: &rusqlite::Transaction<'_>,
    catalog: &Catalog,
    file_id: i64,
    old_adler32: &str,
) -> Result<(), CatalogError> {
    let (name, state, salted, adler): (String, FileState, bool, String) = tx
        .query_row(
            "SELECT name, state, salted, adler32 FROM raw_files WHERE id = ?1",
            [file_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(catalog.sql("read file for salting"))?
        .ok_or_else(|| CatalogError::UnknownFile {
            file: file_id.to_string(),
        })?;
    let conflict = |expected: &str, found: String| CatalogError::StateConflict {
        what: name.clone(),
        expected: expected.to_string(),
        found,
    };
    if state != FileState::Registered || salted {
        return Err(conflict(
            "registered, unsalted",
            format!("{state}, salted={salted}"),
        ));
    }
    if !crate::adler::same_checksum(&adler, old_adler32) {
        return Err(conflict(
            &format!("adler32 {old_adler32}"),
            format!("adler32 {adler}"),
        ));
    }
    Ok(())
}

/// Destination replicas of a file past `queued` (a copy has begun).
fn destination_copies_begun(
    tx: &rusqlite::Transaction<'_>,
    catalog: &Catalog,
    file_id: i64,
) -> Result<i64, CatalogError> {
    tx.query_row(
        "SELECT count(*) FROM replicas WHERE file_id = ?1 AND site != 'SURF'
           AND state NOT IN ('queued')",
        [file_id],
        |r| r.get(0),
    )
    .map_err(catalog.sql("check destination replicas"))
}
