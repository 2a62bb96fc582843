//! Replica state changes: the data mover's queue and the audit's marks.
//!
//! A destination replica goes `queued -> transferring -> verified`; a failed
//! attempt goes back to `queued` with `attempts + 1` until the cap, then to
//! `bad` with the reason. The audit moves `verified` to `lost` or `bad`.
//!
//! A copy-in puts a processing site's `bad` or `lost` replica back in the
//! queue with the other processing site as its `source`
//! ([`Catalog::queue_copy_in`]); the mover copies it from there only while
//! that replica is still `verified`.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::files::TransferItem;

/// What [`Catalog::begin_copy`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyStart {
    /// The replica is `transferring`: copy it.
    Started,
    /// The replica is no longer queued (another mover took it).
    NotQueued,
    /// A salting pass claimed the file: copy after it recorded the salted bytes.
    BeingSalted,
    /// The catalogued checksum changed since the replica was listed.
    ChecksumChanged,
    /// The copy's source (a processing site) no longer holds a verified
    /// replica: the destination went back to `bad` (the file waits).
    SourceNotVerified,
}
use super::{now_unix_s, Catalog, CatalogError, ReplicaState, Site};

impl Catalog {
    /// Re-queue replicas left `transferring` by a mover that died.
    ///
    /// Call only when no other mover runs on this catalog.
    /// Returns how many were re-queued.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn requeue_interrupted(&self) -> Result<usize, CatalogError> {
        self.conn()
            .execute(
                "UPDATE replicas SET state = 'queued', updated_at = ?1
                 WHERE site IN ('SURF', 'USDC', 'UKDC', 'ARCHIVE') AND state = 'transferring'",
                [now_unix_s()],
            )
            .map_err(self.sql("re-queue interrupted transfers"))
    }

    /// Queue a replica at `site` for every `registered` file with a verified
    /// SURF replica and none at `site` yet. Returns how many were queued.
    ///
    /// Driven by the `raw_files(state)` index, so its cost follows the new
    /// files, not the catalog size (a site added later needs a backfill of
    /// files already `transferred`).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn queue_replicas(&self, site: Site) -> Result<usize, CatalogError> {
        self.queue_replicas_when(site, false)
    }

    /// As [`Catalog::queue_replicas`]; with `require_salted`, science files are
    /// queued only once salted (salting happens before placement), calibration
    /// (and simulated) files at once.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn queue_replicas_when(
        &self,
        site: Site,
        require_salted: bool,
    ) -> Result<usize, CatalogError> {
        self.conn()
            .execute(
                "INSERT INTO replicas (file_id, site, path, state, updated_at)
                 SELECT s.file_id, ?1, s.path, 'queued', ?2
                 FROM raw_files f INDEXED BY raw_files_state JOIN replicas s
                   ON s.file_id = f.id AND s.site = 'SURF' AND s.state = 'verified'
                 WHERE f.state = 'registered'
                   AND (?3 = 0 OR f.salted = 1
                        OR EXISTS (SELECT 1 FROM runs r WHERE r.number = f.run AND r.run_type <> 'science'))
                 ON CONFLICT DO NOTHING",
                params![site, now_unix_s(), require_salted],
            )
            .map_err(self.sql("queue replicas"))
    }

    /// Put `bad` and `lost` replicas at `site` back in the queue with a fresh
    /// retry budget (an operator's decision), copied from SURF again when
    /// SURF still holds the file verified (a simulated file keeps the site
    /// that made it as its source). Returns how many.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn requeue_failed(&self, site: Site) -> Result<usize, CatalogError> {
        self.conn()
            .execute(
                "UPDATE replicas SET state = 'queued', attempts = 0, updated_at = ?2,
                   source = CASE WHEN EXISTS (SELECT 1 FROM replicas s WHERE s.file_id = replicas.file_id
                                                AND s.site = 'SURF' AND s.state = 'verified')
                            THEN NULL ELSE source END
                 WHERE site = ?1 AND state IN ('bad','lost')",
                params![site, now_unix_s()],
            )
            .map_err(self.sql("re-queue failed replicas"))
    }

    /// Queued replicas at `site` with fewer than `max_attempts` failures, by file id.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn queued_replicas(
        &self,
        site: Site,
        max_attempts: u32,
    ) -> Result<Vec<TransferItem>, CatalogError> {
        self.queued_replicas_when(site, max_attempts, false)
    }

    /// As [`Catalog::queued_replicas`]; with `require_salted`, replicas of
    /// unsalted science files are left out (they stay queued until salted).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn queued_replicas_when(
        &self,
        site: Site,
        max_attempts: u32,
        require_salted: bool,
    ) -> Result<Vec<TransferItem>, CatalogError> {
        self.query_rows(
            "SELECT r.file_id, f.name, r.site, r.path, f.size_bytes, f.adler32, r.attempts,
                   coalesce(r.source, 'SURF')
                 FROM replicas r JOIN raw_files f ON f.id = r.file_id
                 WHERE r.site = ?1 AND r.state = 'queued' AND r.attempts < ?2
                   AND (?3 = 0 OR f.salted = 1
                        OR EXISTS (SELECT 1 FROM runs u WHERE u.number = f.run AND u.run_type <> 'science'))
                 ORDER BY r.file_id",
            params![site, max_attempts, require_salted],
            "list queued replicas",
            |r| {
                Ok(TransferItem {
                    file_id: r.get(0)?,
                    file: r.get(1)?,
                    site: r.get(2)?,
                    path: r.get(3)?,
                    size_bytes: r.get(4)?,
                    adler32: r.get(5)?,
                    attempts: r.get(6)?,
                    source: r.get(7)?,
                })
            },
        )
    }

    /// Move a replica from `from` to `to` in one transaction, recording
    /// `reason` as its last error when given.
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] naming file and site when the replica
    /// is not in `from`; [`CatalogError::UnknownReplica`]; [`CatalogError::Sqlite`].
    pub fn replica_transition(
        &self,
        file_id: i64,
        site: Site,
        from: ReplicaState,
        to: ReplicaState,
        reason: Option<&str>,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin replica transition"))?;
        let current = current_state(&tx, file_id, site).map_err(self.sql("read replica state"))?;
        check_state(current, file_id, site, from, &tx)?;
        tx.execute(
            "UPDATE replicas SET state = ?3, last_error = coalesce(?4, last_error), updated_at = ?5
             WHERE file_id = ?1 AND site = ?2",
            params![file_id, site, to, reason, now_unix_s()],
        )
        .map_err(self.sql("write replica state"))?;
        tx.commit().map_err(self.sql("commit replica transition"))
    }

    /// Start a copy: `queued -> transferring` in one transaction that also
    /// checks the file is not claimed by a salting pass and its catalogued
    /// checksum is still `item.adler32`. Anything else starts nothing: the
    /// replica stays as it is and the mover lists it again later.
    ///
    /// # Errors
    /// [`CatalogError::UnknownReplica`]; [`CatalogError::Sqlite`].
    pub fn begin_copy(&self, item: &TransferItem) -> Result<CopyStart, CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin copy"))?;
        let current =
            current_state(&tx, item.file_id, item.site).map_err(self.sql("read replica state"))?;
        match current {
            None => {
                return Err(CatalogError::UnknownReplica {
                    file_id: item.file_id,
                    site: item.site,
                })
            }
            Some(ReplicaState::Queued) => {}
            Some(_) => return Ok(CopyStart::NotQueued),
        }
        let (adler, salting): (String, Option<f64>) = tx
            .query_row(
                "SELECT adler32, salting_since FROM raw_files WHERE id = ?1",
                [item.file_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.sql("read file for copy"))?;
        if salting.is_some() {
            return Ok(CopyStart::BeingSalted);
        }
        if !crate::adler::same_checksum(&adler, &item.adler32) {
            return Ok(CopyStart::ChecksumChanged);
        }
        if item.source != Site::Surf {
            let source: Option<ReplicaState> = current_state(&tx, item.file_id, item.source)
                .map_err(self.sql("read source replica state"))?;
            if source != Some(ReplicaState::Verified) {
                let why = format!(
                    "copy from {} abandoned: its replica is {}",
                    item.source,
                    source.map_or("absent", ReplicaState::as_str)
                );
                tx.execute(
                    "UPDATE replicas SET state = 'bad', last_error = ?3, updated_at = ?4
                     WHERE file_id = ?1 AND site = ?2",
                    params![item.file_id, item.site, why, now_unix_s()],
                )
                .map_err(self.sql("abandon copy"))?;
                tx.commit().map_err(self.sql("commit abandoned copy"))?;
                return Ok(CopyStart::SourceNotVerified);
            }
        }
        tx.execute(
            "UPDATE replicas SET state = 'transferring', updated_at = ?3
             WHERE file_id = ?1 AND site = ?2",
            params![item.file_id, item.site, now_unix_s()],
        )
        .map_err(self.sql("start copy"))?;
        tx.commit().map_err(self.sql("commit copy start"))?;
        Ok(CopyStart::Started)
    }

    /// A copy whose source changed under it (the catalog now has another
    /// checksum): `transferring -> queued` without counting an attempt.
    ///
    /// # Errors
    /// As [`Catalog::replica_transition`].
    pub fn replica_retry_unchanged(
        &self,
        file_id: i64,
        site: Site,
        reason: &str,
    ) -> Result<(), CatalogError> {
        self.replica_transition(
            file_id,
            site,
            ReplicaState::Transferring,
            ReplicaState::Queued,
            Some(reason),
        )
    }

    /// A transfer arrived with the right checksum: `transferring -> verified`.
    ///
    /// # Errors
    /// As [`Catalog::replica_transition`].
    pub fn replica_verified(
        &self,
        file_id: i64,
        site: Site,
        size_bytes: u64,
        adler32: &str,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin replica verification"))?;
        let current = current_state(&tx, file_id, site).map_err(self.sql("read replica state"))?;
        check_state(current, file_id, site, ReplicaState::Transferring, &tx)?;
        let now = now_unix_s();
        tx.execute(
            "UPDATE replicas SET state = 'verified', size_bytes = ?3, adler32 = ?4,
               verified_at = ?5, updated_at = ?5, last_error = NULL
             WHERE file_id = ?1 AND site = ?2",
            params![file_id, site, size_bytes, adler32, now],
        )
        .map_err(self.sql("write replica verification"))?;
        tx.commit().map_err(self.sql("commit replica verification"))
    }

    /// A transfer attempt failed: `transferring -> queued` with `attempts + 1`,
    /// or `-> bad` once `max_attempts` is reached. Returns the new state.
    ///
    /// # Errors
    /// As [`Catalog::replica_transition`].
    pub fn replica_failed(
        &self,
        file_id: i64,
        site: Site,
        reason: &str,
        max_attempts: u32,
    ) -> Result<ReplicaState, CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin replica failure"))?;
        let current = current_state(&tx, file_id, site).map_err(self.sql("read replica state"))?;
        check_state(current, file_id, site, ReplicaState::Transferring, &tx)?;
        let state: ReplicaState = tx
            .query_row(
                "UPDATE replicas SET attempts = attempts + 1, last_error = ?3, updated_at = ?5,
                   state = CASE WHEN attempts + 1 >= ?4 THEN 'bad' ELSE 'queued' END
                 WHERE file_id = ?1 AND site = ?2 RETURNING state",
                params![file_id, site, reason, max_attempts, now_unix_s()],
                |r| r.get(0),
            )
            .map_err(self.sql("write replica failure"))?;
        tx.commit().map_err(self.sql("commit replica failure"))?;
        Ok(state)
    }

    /// Copy-in: a `bad` or `lost` replica at `site` goes back to the queue,
    /// to be copied from `source`'s verified replica with a fresh retry
    /// budget, in one transaction that checks both. Returns false (nothing
    /// changed) when either is no longer so.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn queue_copy_in(
        &self,
        file_id: i64,
        site: Site,
        source: Site,
    ) -> Result<bool, CatalogError> {
        self.conn()
            .execute(
                "UPDATE replicas SET state = 'queued', attempts = 0, source = ?3, updated_at = ?4,
                   last_error = 'copy-in from ' || ?3 || ': was ' || state || coalesce(' (' || last_error || ')', '')
                 WHERE file_id = ?1 AND site = ?2 AND state IN ('bad', 'lost')
                   AND EXISTS (SELECT 1 FROM replicas s WHERE s.file_id = ?1 AND s.site = ?3
                                 AND s.state = 'verified')",
                params![file_id, site, source, now_unix_s()],
            )
            .map(|n| n == 1)
            .map_err(self.sql("queue copy-in"))
    }

    /// Queued tasks of a campaign whose file no site of `allowed` can read
    /// (no replica there verified or on its way) while one of them holds a
    /// bad or lost replica and a site of `sources` a verified one: (file id,
    /// the site to copy to, the site to copy from), the first of `allowed`
    /// and of `sources` that fit, by file.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn copy_in_candidates(
        &self,
        campaign_id: i64,
        allowed: &[Site],
        sources: &[Site],
    ) -> Result<Vec<(i64, Site, Site)>, CatalogError> {
        if allowed.is_empty() || sources.is_empty() {
            return Ok(Vec::new());
        }
        // Site names are the enum's own constants, never user text.
        let list = |sites: &[Site]| {
            sites
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (to, from) = (list(allowed), list(sources));
        let sql = format!(
            "SELECT t.file_id, d.site, s.site FROM tasks t INDEXED BY tasks_state
               JOIN replicas d ON d.file_id = t.file_id AND d.site IN ({to})
                 AND d.state IN ('bad', 'lost')
               JOIN replicas s ON s.file_id = t.file_id AND s.site IN ({from})
                 AND s.site <> d.site AND s.state = 'verified'
             WHERE t.state = 'queued' AND t.campaign_id = ?1
               AND NOT EXISTS (SELECT 1 FROM replicas v WHERE v.file_id = t.file_id
                                 AND v.site IN ({to})
                                 AND v.state IN ('verified', 'queued', 'transferring'))
             ORDER BY t.file_id"
        );
        let rows: Vec<(i64, Site, Site)> =
            self.query_rows(&sql, [campaign_id], "list copy-in candidates", |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let rank = |sites: &[Site], s: Site| sites.iter().position(|&x| x == s);
        let mut best: std::collections::BTreeMap<i64, (Site, Site)> = Default::default();
        for (file, to, from) in rows {
            let better = best.get(&file).is_none_or(|&(t, f)| {
                (rank(allowed, to), rank(sources, from)) < (rank(allowed, t), rank(sources, f))
            });
            if better {
                best.insert(file, (to, from));
            }
        }
        Ok(best.into_iter().map(|(f, (t, s))| (f, t, s)).collect())
    }

    /// Files still `registered` whose replicas at every site of `sites` are
    /// verified become `transferred`. Returns how many.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn mark_transferred_files(&self, sites: &[Site]) -> Result<usize, CatalogError> {
        let list = sites
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "UPDATE raw_files SET state = 'transferred' WHERE state = 'registered' AND
               (SELECT count(*) FROM replicas r WHERE r.file_id = raw_files.id
                  AND r.site IN ({list}) AND r.state = 'verified') = ?1"
        );
        self.conn()
            .execute(&sql, [sites.len()])
            .map_err(self.sql("mark transferred files"))
    }
}

fn current_state(
    tx: &rusqlite::Transaction<'_>,
    file_id: i64,
    site: Site,
) -> rusqlite::Result<Option<ReplicaState>> {
    tx.query_row(
        "SELECT state FROM replicas WHERE file_id = ?1 AND site = ?2",
        params![file_id, site],
        |r| r.get(0),
    )
    .optional()
}

fn check_state(
    current: Option<ReplicaState>,
    file_id: i64,
    site: Site,
    expected: ReplicaState,
    tx: &rusqlite::Transaction<'_>,
) -> Result<(), CatalogError> {
    match current {
        None => Err(CatalogError::UnknownReplica { file_id, site }),
        Some(s) if s == expected => Ok(()),
        Some(found) => {
            let name: String = tx
                .query_row("SELECT name FROM raw_files WHERE id = ?1", [file_id], |r| {
                    r.get(0)
                })
                .unwrap_or_else(|_| format!("raw file {file_id}"));
            Err(CatalogError::StateConflict {
                what: format!("{name} at {site}"),
                expected: expected.to_string(),
                found: found.to_string(),
            })
        }
    }
}
