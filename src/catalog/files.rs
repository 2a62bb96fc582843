//! Runs, raw files and replicas.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{now_unix_s, Catalog, CatalogError, FileState, ReplicaState, RunType, Site};

/// Facts about a run, from the DAQ's `RUNINFO.toml` or defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// Run number.
    pub number: u32,
    /// Science or calibration.
    pub run_type: RunType,
    /// Start time, ISO 8601 UTC, when known.
    pub start_time: Option<String>,
    /// Detector conditions tag, when known.
    pub conditions: Option<String>,
}

/// A run with its file counts, as `tpcflow catalog runs` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Run number.
    pub number: u32,
    /// Science or calibration.
    pub run_type: RunType,
    /// Start time, ISO 8601 UTC, when known.
    pub start_time: Option<String>,
    /// Detector conditions tag, when known.
    pub conditions: Option<String>,
    /// Raw files registered.
    pub files: u64,
    /// Bytes of raw files [bytes].
    pub bytes: u64,
    /// Files with every destination replica verified (state `transferred` or later).
    pub files_transferred: u64,
    /// Replicas in state `bad` or `lost`.
    pub replicas_bad_or_lost: u64,
}

/// A raw file to register (ingest).
#[derive(Debug, Clone)]
pub struct NewRawFile {
    /// Run number.
    pub run: u32,
    /// Sequence within the run.
    pub sequence: u32,
    /// File name, `{run:06}_{seq:05}.raw.h5`.
    pub name: String,
    /// Path relative to the site root, `{run:06}/{name}`.
    pub rel_path: String,
    /// Size [bytes].
    pub size_bytes: u64,
    /// Adler-32, hex.
    pub adler32: String,
    /// Modification time at SURF [s since the Unix epoch].
    pub written_at: Option<f64>,
}

/// A catalogued raw file.
#[derive(Debug, Clone, Serialize)]
pub struct RawFileRow {
    /// Catalog id.
    pub id: i64,
    /// Run number.
    pub run: u32,
    /// Sequence within the run.
    pub sequence: u32,
    /// File name.
    pub name: String,
    /// Size [bytes].
    pub size_bytes: u64,
    /// Adler-32 at registration, hex.
    pub adler32: String,
    /// Lifecycle state.
    pub state: FileState,
    /// Failed processing attempts.
    pub attempts: u32,
    /// Last processing error.
    pub last_error: Option<String>,
    /// Salt events were added.
    pub salted: bool,
    /// Modification time at SURF [s since the Unix epoch].
    pub written_at: Option<f64>,
    /// Registration time [s since the Unix epoch].
    pub registered_at: f64,
}

/// One copy of a raw file at a site.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaRow {
    /// Raw file id.
    pub file_id: i64,
    /// Raw file name.
    pub file: String,
    /// Site.
    pub site: Site,
    /// Path relative to the site root.
    pub path: String,
    /// Size found at the site [bytes].
    pub size_bytes: Option<u64>,
    /// Adler-32 found at the site, hex.
    pub adler32: Option<String>,
    /// State.
    pub state: ReplicaState,
    /// Time of the last successful verification [s since the Unix epoch].
    pub verified_at: Option<f64>,
    /// Failed transfer attempts.
    pub attempts: u32,
    /// Last failure reason.
    pub last_error: Option<String>,
    /// Where it was (or is being) copied from: SURF, or for a copy-in or a
    /// simulated file, the processing site that had it.
    pub source: Site,
}

/// A queued replica with what the mover needs to copy it.
#[derive(Debug, Clone)]
pub struct TransferItem {
    /// Raw file id.
    pub file_id: i64,
    /// Raw file name.
    pub file: String,
    /// Destination site.
    pub site: Site,
    /// Site copied from: SURF, or the processing site of a copy-in or of a
    /// simulated file.
    pub source: Site,
    /// Path relative to the site roots (same at source and destination).
    pub path: String,
    /// Catalogued size [bytes].
    pub size_bytes: u64,
    /// Catalogued Adler-32, hex.
    pub adler32: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

const FILE_COLUMNS: &str = "id, run, sequence, name, size_bytes, adler32, state, attempts, \
                            last_error, salted, written_at, registered_at";

fn file_row(r: &Row<'_>) -> rusqlite::Result<RawFileRow> {
    Ok(RawFileRow {
        id: r.get(0)?,
        run: r.get(1)?,
        sequence: r.get(2)?,
        name: r.get(3)?,
        size_bytes: r.get(4)?,
        adler32: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        last_error: r.get(8)?,
        salted: r.get(9)?,
        written_at: r.get(10)?,
        registered_at: r.get(11)?,
    })
}

const REPLICA_SELECT: &str = "SELECT r.file_id, f.name, r.site, r.path, r.size_bytes, r.adler32, \
     r.state, r.verified_at, r.attempts, r.last_error, coalesce(r.source, 'SURF') \
     FROM replicas r JOIN raw_files f ON f.id = r.file_id";

fn replica_row(r: &Row<'_>) -> rusqlite::Result<ReplicaRow> {
    Ok(ReplicaRow {
        file_id: r.get(0)?,
        file: r.get(1)?,
        site: r.get(2)?,
        path: r.get(3)?,
        size_bytes: r.get(4)?,
        adler32: r.get(5)?,
        state: r.get(6)?,
        verified_at: r.get(7)?,
        attempts: r.get(8)?,
        last_error: r.get(9)?,
        source: r.get(10)?,
    })
}

impl Catalog {
    /// Register a run. For a known run, `overwrite` (the DAQ's sidecar, which
    /// is authoritative) replaces the run type and the fields it gives;
    /// otherwise only fields still unknown are filled in.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn upsert_run(&self, info: &RunInfo, overwrite: bool) -> Result<(), CatalogError> {
        let sql = if overwrite {
            "INSERT INTO runs (number, run_type, start_time, conditions, registered_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(number) DO UPDATE SET run_type = excluded.run_type,
               start_time = coalesce(excluded.start_time, start_time),
               conditions = coalesce(excluded.conditions, conditions)"
        } else {
            "INSERT INTO runs (number, run_type, start_time, conditions, registered_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(number) DO UPDATE SET
               start_time = coalesce(start_time, excluded.start_time),
               conditions = coalesce(conditions, excluded.conditions)"
        };
        self.conn()
            .execute(
                sql,
                params![
                    info.number,
                    info.run_type,
                    info.start_time,
                    info.conditions,
                    now_unix_s()
                ],
            )
            .map(drop)
            .map_err(self.sql("register run"))
    }

    /// Names of the raw files already registered for a run.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn file_names_of_run(&self, run: u32) -> Result<HashSet<String>, CatalogError> {
        self.query_rows(
            "SELECT name FROM raw_files WHERE run = ?1",
            [run],
            "list file names",
            |r| r.get(0),
        )
    }

    /// Register raw files and their verified SURF replicas in one
    /// transaction; files already known are skipped. Their runs must exist
    /// ([`Catalog::upsert_run`]).
    ///
    /// Returns the number of files newly registered.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`] (nothing is registered then).
    pub fn register_files(&self, files: &[NewRawFile]) -> Result<usize, CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin registration"))?;
        let now = now_unix_s();
        let mut new = 0;
        {
            let mut file_st = tx
                .prepare_cached(
                    "INSERT INTO raw_files (run, sequence, name, size_bytes, adler32, written_at,
                     registered_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                )
                .map_err(self.sql("register raw file"))?;
            let mut rep_st = tx
                .prepare_cached(
                    "INSERT INTO replicas (file_id, site, path, size_bytes, adler32, state,
                     verified_at, updated_at) VALUES (?1, 'SURF', ?2, ?3, ?4, 'verified', ?5, ?5)",
                )
                .map_err(self.sql("register SURF replica"))?;
            for f in files {
                let n = file_st
                    .execute(params![
                        f.run,
                        f.sequence,
                        f.name,
                        f.size_bytes,
                        f.adler32,
                        f.written_at,
                        now
                    ])
                    .map_err(self.sql("register raw file"))?;
                if n == 1 {
                    let id = tx.last_insert_rowid();
                    rep_st
                        .execute(params![id, f.rel_path, f.size_bytes, f.adler32, now])
                        .map_err(self.sql("register SURF replica"))?;
                    new += 1;
                }
            }
        }
        tx.commit().map_err(self.sql("commit registration"))?;
        Ok(new)
    }

    /// Every run with its counts, by run number.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn runs(&self) -> Result<Vec<RunSummary>, CatalogError> {
        // Both queries under one hold of the connection.
        let conn = self.conn();
        let mut bad_or_lost = std::collections::HashMap::<u32, u64>::new();
        let rows: Vec<(u32, u64)> = self.query_rows_on(
            &conn,
            "SELECT f.run, count(*) FROM replicas p JOIN raw_files f ON f.id = p.file_id
                     WHERE p.site IN ('SURF','USDC','UKDC','ARCHIVE') AND p.state IN ('bad','lost')
                     GROUP BY f.run",
            [],
            "count bad replicas",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        bad_or_lost.extend(rows);
        self.query_rows_on(
            &conn,
            "SELECT r.number, r.run_type, r.start_time, r.conditions, count(f.id),
                   coalesce(sum(f.size_bytes), 0),
                   count(CASE WHEN f.state IN ('transferred','processing','processed') THEN 1 END)
                 FROM runs r LEFT JOIN raw_files f ON f.run = r.number
                 GROUP BY r.number ORDER BY r.number",
            [],
            "list runs",
            |r| {
                let number = r.get(0)?;
                Ok(RunSummary {
                    number,
                    run_type: r.get(1)?,
                    start_time: r.get(2)?,
                    conditions: r.get(3)?,
                    files: r.get(4)?,
                    bytes: r.get(5)?,
                    files_transferred: r.get(6)?,
                    replicas_bad_or_lost: bad_or_lost.get(&number).copied().unwrap_or(0),
                })
            },
        )
    }

    /// The raw files of a run, by sequence.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn files_of_run(&self, run: u32) -> Result<Vec<RawFileRow>, CatalogError> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM raw_files WHERE run = ?1 ORDER BY sequence");
        self.query_rows(&sql, [run], "list files", file_row)
    }

    /// A raw file by name (`000017_00003.raw.h5`, a path ending in it) or by id.
    ///
    /// # Errors
    /// [`CatalogError::UnknownFile`] when there is none; [`CatalogError::Sqlite`].
    pub fn file(&self, name_or_id: &str) -> Result<RawFileRow, CatalogError> {
        let name = name_or_id.rsplit('/').next().unwrap_or(name_or_id);
        let sql = format!("SELECT {FILE_COLUMNS} FROM raw_files WHERE name = ?1 OR id = ?2");
        let id: Option<i64> = name.parse().ok();
        self.conn()
            .query_row(&sql, params![name, id], file_row)
            .optional()
            .map_err(self.sql("look up file"))?
            .ok_or_else(|| CatalogError::UnknownFile {
                file: name_or_id.to_string(),
            })
    }

    /// The replicas of a raw file, by site.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn replicas_of(&self, file_id: i64) -> Result<Vec<ReplicaRow>, CatalogError> {
        let sql = format!("{REPLICA_SELECT} WHERE r.file_id = ?1 ORDER BY r.site");
        self.query_rows(&sql, [file_id], "list replicas", replica_row)
    }

    /// The replicas at a site in any of `states`, by path.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn replicas_at(
        &self,
        site: Site,
        states: &[ReplicaState],
    ) -> Result<Vec<ReplicaRow>, CatalogError> {
        let conn = self.conn();
        let sql = format!("{REPLICA_SELECT} WHERE r.site = ?1 AND r.state = ?2");
        let mut st = conn
            .prepare_cached(&sql)
            .map_err(self.sql("list replicas"))?;
        let mut out = Vec::new();
        for state in states {
            let rows: Vec<ReplicaRow> = st
                .query_map(params![site, state], replica_row)
                .and_then(|rows| rows.collect())
                .map_err(self.sql("list replicas"))?;
            out.extend(rows);
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Number of replicas at a site in a state.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn count_replicas(&self, site: Site, state: ReplicaState) -> Result<u64, CatalogError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM replicas WHERE site = ?1 AND state = ?2",
                params![site, state],
                |r| r.get(0),
            )
            .map_err(self.sql("count replicas"))
    }

    /// Move a raw file from state `from` to `to` in one transaction.
    ///
    /// # Errors
    /// [`CatalogError::StateConflict`] when the file is not in `from`;
    /// [`CatalogError::ForbiddenTransition`] when the lifecycle forbids the
    /// move; [`CatalogError::UnknownFile`]; [`CatalogError::Sqlite`].
    pub fn transition(
        &self,
        file_id: i64,
        from: FileState,
        to: FileState,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin transition"))?;
        let (name, state): (String, FileState) = tx
            .query_row(
                "SELECT name, state FROM raw_files WHERE id = ?1",
                [file_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.sql("read file state"))?
            .ok_or_else(|| CatalogError::UnknownFile {
                file: file_id.to_string(),
            })?;
        if state != from {
            return Err(CatalogError::StateConflict {
                what: name,
                expected: from.to_string(),
                found: state.to_string(),
            });
        }
        if !from.can_become(to) {
            return Err(CatalogError::ForbiddenTransition {
                file: name,
                from,
                to,
            });
        }
        tx.execute(
            "UPDATE raw_files SET state = ?2 WHERE id = ?1",
            params![file_id, to],
        )
        .map_err(self.sql("write file state"))?;
        tx.commit().map_err(self.sql("commit transition"))
    }

    /// Record a failed processing attempt: the count goes up, the reason is
    /// kept, and at `max_attempts` the file becomes `failed`.
    ///
    /// Returns the file's state afterwards.
    ///
    /// # Errors
    /// [`CatalogError::UnknownFile`]; [`CatalogError::Sqlite`].
    pub fn record_file_failure(
        &self,
        file_id: i64,
        reason: &str,
        max_attempts: u32,
    ) -> Result<FileState, CatalogError> {
        self.conn()
            .query_row(
                "UPDATE raw_files SET attempts = attempts + 1, last_error = ?2,
                   state = CASE WHEN attempts + 1 >= ?3 THEN 'failed' ELSE state END
                 WHERE id = ?1 RETURNING state",
                params![file_id, reason, max_attempts],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("record file failure"))?
            .ok_or_else(|| CatalogError::UnknownFile {
                file: file_id.to_string(),
            })
    }

    /// Set or clear the salted flag of a raw file.
    ///
    /// # Errors
    /// [`CatalogError::UnknownFile`]; [`CatalogError::Sqlite`].
    pub fn set_salted(&self, file_id: i64, salted: bool) -> Result<(), CatalogError> {
        let n = self
            .conn()
            .execute(
                "UPDATE raw_files SET salted = ?2 WHERE id = ?1",
                params![file_id, salted],
            )
            .map_err(self.sql("set salted flag"))?;
        if n == 0 {
            return Err(CatalogError::UnknownFile {
                file: file_id.to_string(),
            });
        }
        Ok(())
    }
}
