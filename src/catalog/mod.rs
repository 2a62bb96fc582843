//! The catalog: what raw files exist, where their copies are, what was made
//! from them, and which jobs and campaigns did it.
//!
//! [`Catalog`] is the only door to the data: stages call its typed methods and
//! never see SQL, so a server database could replace the embedded SQLite file
//! without touching them. The SQLite file is opened for network file systems
//! (Lustre, GPFS, NFS): rollback journal (`journal_mode=DELETE`, never WAL,
//! whose shared memory does not work across nodes), `synchronous=FULL`, a 30 s
//! busy timeout and foreign keys on. Every state change is one transaction
//! that checks the current state first ([`Catalog::transition`]).
//!
//! ```no_run
//! use tpcflow::catalog::{Catalog, FileState};
//! let catalog = Catalog::init(std::path::Path::new("/tmp/catalog.sqlite"))?;
//! for run in catalog.runs()? {
//!     println!("run {} ({}) {} files", run.number, run.run_type, run.files);
//! }
//! let file = catalog.file("000017_00003.raw.h5")?;
//! catalog.transition(file.id, FileState::Transferred, FileState::Processing)?;
//! # Ok::<(), tpcflow::catalog::CatalogError>(())
//! ```
//!
//! Submodules: [`states`] (the enums), [`schema`] (migrations), [`ingest`]
//! (the stage that registers new raw files); the `Catalog` methods are split
//! by the tables they answer for, one file each (`files.rs`: runs and raw
//! files; `replicas.rs`, `output_replicas.rs`, `processing.rs`: outputs and
//! jobs; `tasks.rs`, `salting.rs`, `blinding.rs`, `retention.rs`,
//! `conditions.rs`, `calibrations.rs`, `simulation.rs`, `sites.rs`,
//! `slurm_health.rs`, `resources.rs`, and the read-only `run_progress.rs`:
//! how far each run has got, `run_outputs.rs`: where a run's data can be
//! read); docs/architecture.md lists each table's owner.

mod blinding;
mod calibrations;
pub mod cli;
mod conditions;
mod files;
pub mod ingest;
mod output_replicas;
mod processing;
mod replicas;
mod resources;
mod retention;
mod run_outputs;
mod run_progress;
mod salting;
pub mod schema;
mod simulation;
mod sites;
mod slurm_health;
pub mod states;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

pub use blinding::{BlindingDecision, BlindingStatus};
pub use calibrations::{CalibrationRow, CalibrationState};
pub use conditions::{ConditionsDecision, ConditionsState, ConditionsTagRow, NewConditions};
pub use files::{NewRawFile, RawFileRow, ReplicaRow, RunInfo, RunSummary, TransferItem};
pub use output_replicas::{OutputPlacement, OutputReplicaRow, OutputTransferItem};
#[cfg(test)]
pub use processing::NewJob;
pub use processing::{CampaignRow, JobRow, NewCampaign, NewOutput, OutputRow};
pub use replicas::CopyStart;
pub use resources::AttemptResources;
pub use retention::RetentionCandidate;
pub use run_outputs::RunOutput;
pub use run_progress::{FamilyRun, RunMovement};
pub use salting::SaltCandidate;
pub use simulation::{SimProgress, SimSpec, SimTaskRow, MAX_RUN, SIM_FIRST_RUN};
pub use sites::SiteDrain;
pub use slurm_health::SlurmHealth;
pub use states::{
    CampaignState, FileState, JobKind, JobState, ReplicaState, RunType, Site, TaskState,
    UnknownName,
};
pub use tasks::{CampaignProgress, RunStatus, TaskRow};

/// How long a writer waits for another process's lock before failing [ms].
pub const BUSY_TIMEOUT_MS: u64 = 30_000;

/// Errors of the catalog. Each names the catalog file, or the file/site/state involved.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite refused an operation.
    #[error("catalog {path}: {op}: {source}")]
    Sqlite {
        /// Catalog file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Cause.
        source: rusqlite::Error,
    },
    /// The catalog file does not exist (run `tpcflow catalog init`).
    #[error("catalog {path} does not exist (create it with `tpcflow catalog init`)")]
    Missing {
        /// Catalog file.
        path: PathBuf,
    },
    /// The database was written by a newer tpcflow.
    #[error("catalog {path}: schema version {found} is newer than this build knows ({known})")]
    NewerSchema {
        /// Catalog file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Latest version this build knows.
        known: u32,
    },
    /// A read-only opening found an older schema, which only a writer migrates.
    #[error(
        "catalog {path}: schema version {found} is older than this build reads ({known}); \
         it is opened read-only and never migrated here: upgrade it with the dispatcher's \
         build (`tpcflow catalog init`)"
    )]
    OlderSchema {
        /// Catalog file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        known: u32,
    },
    /// A simulation campaign needs more run numbers than are left.
    #[error(
        "a simulation campaign of {runs} run(s) from run {first} passes run {max} \
         (six digits in a file name): use fewer, larger runs (--files-per-run)"
    )]
    SimRuns {
        /// First free simulated run.
        first: u32,
        /// Runs needed.
        runs: u32,
        /// Largest run number.
        max: u32,
    },
    /// No raw file by that name or id.
    #[error("no raw file `{file}` in the catalog")]
    UnknownFile {
        /// Name or id asked for.
        file: String,
    },
    /// No replica of that file at that site.
    #[error("no replica of raw file {file_id} at {site}")]
    UnknownReplica {
        /// Raw file id.
        file_id: i64,
        /// Site.
        site: Site,
    },
    /// The row is not in the state the change starts from.
    #[error("{what}: state is `{found}`, expected `{expected}`")]
    StateConflict {
        /// File (and site) or job, e.g. `000017_00003.raw.h5 at USDC`.
        what: String,
        /// State required.
        expected: String,
        /// State found.
        found: String,
    },
    /// A blinding decision that cannot be recorded.
    #[error("catalog {path}: {message}")]
    Blinding {
        /// Catalog file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A conditions tag that cannot be added, published or held.
    #[error("catalog {path}: conditions {tag}: {message}")]
    Conditions {
        /// Catalog file.
        path: PathBuf,
        /// Tag (or global tag).
        tag: String,
        /// What is wrong.
        message: String,
    },
    /// A file state change the lifecycle does not allow.
    #[error("raw file {file}: `{from}` -> `{to}` is not an allowed transition")]
    ForbiddenTransition {
        /// File name.
        file: String,
        /// Current state.
        from: FileState,
        /// Requested state.
        to: FileState,
    },
}

/// The catalog database. Cheap to share: methods take `&self` and serialise
/// on one connection, so worker threads may call it concurrently.
#[derive(Debug)]
pub struct Catalog {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Catalog {
    /// Create the catalog file if needed and bring its schema up to date.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`] when the file cannot be created or migrated;
    /// [`CatalogError::NewerSchema`] for a database from a newer build.
    pub fn init(path: &Path) -> Result<Self, CatalogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| CatalogError::Sqlite {
                path: path.to_path_buf(),
                op: "create parent directory",
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        Self::connect(path, OpenFlags::SQLITE_OPEN_CREATE)
    }

    /// Open an existing catalog, migrating an older schema.
    ///
    /// # Errors
    /// [`CatalogError::Missing`] when the file does not exist; otherwise as
    /// [`Catalog::init`].
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        if !path.exists() {
            return Err(CatalogError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::connect(path, OpenFlags::empty())
    }

    /// Open an existing catalog for reading only (`SQLITE_OPEN_READ_ONLY`,
    /// `PRAGMA query_only`): nothing is migrated, no pragma is persisted, and
    /// any write fails. For readers such as `tpcflow serve`, which must never
    /// upgrade a production catalog under an older dispatcher.
    ///
    /// # Errors
    /// [`CatalogError::Missing`]; [`CatalogError::OlderSchema`] or
    /// [`CatalogError::NewerSchema`] unless the schema is exactly the one this
    /// build knows; [`CatalogError::Sqlite`] when the file cannot be read.
    pub fn open_read_only(path: &Path) -> Result<Self, CatalogError> {
        if !path.exists() {
            return Err(CatalogError::Missing {
                path: path.to_path_buf(),
            });
        }
        let err = |op| {
            let path = path.to_path_buf();
            move |source| CatalogError::Sqlite { path, op, source }
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err("open read-only"))?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(err("set busy timeout"))?;
        conn.execute_batch("PRAGMA query_only=ON;")
            .map_err(err("set query_only"))?;
        let found: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("read schema version"))?;
        let known = schema::MIGRATIONS.len() as u32;
        let path = path.to_path_buf();
        if found > known {
            return Err(CatalogError::NewerSchema { path, found, known });
        }
        if found < known {
            return Err(CatalogError::OlderSchema { path, found, known });
        }
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn connect(path: &Path, extra: OpenFlags) -> Result<Self, CatalogError> {
        let err = |op| {
            let path = path.to_path_buf();
            move |source| CatalogError::Sqlite { path, op, source }
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra;
        let conn = Connection::open_with_flags(path, flags).map_err(err("open"))?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(err("set busy timeout"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .map_err(err("set journal_mode=DELETE"))?;
        debug_assert_eq!(mode.to_ascii_lowercase(), "delete");
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(err("set pragmas"))?;
        let catalog = Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        };
        catalog.migrate()?;
        Ok(catalog)
    }

    fn migrate(&self) -> Result<(), CatalogError> {
        let known = schema::MIGRATIONS.len() as u32;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.sql("begin migration"))?;
        let found: u32 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.sql("read schema version"))?;
        if found > known {
            return Err(CatalogError::NewerSchema {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql).map_err(self.sql("migrate schema"))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(self.sql("set schema version"))?;
        }
        tx.commit().map_err(self.sql("commit migration"))
    }

    /// The catalog file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Schema version of the database (number of migrations applied).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`] when the pragma cannot be read.
    pub fn schema_version(&self) -> Result<u32, CatalogError> {
        self.conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.sql("read schema version"))
    }

    /// The connection; a panic in another thread does not poison the catalog.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Map a SQLite error to [`CatalogError::Sqlite`] naming this catalog.
    fn sql(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> CatalogError + '_ {
        move |source| CatalogError::Sqlite {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Rows of the cached statement `sql`, each mapped by `row`, collected in
    /// order into `C` (a `Vec`, a set, ...); errors are [`CatalogError::Sqlite`]
    /// naming `what`. Takes the connection for the call: a caller already
    /// holding it (or in a transaction) uses [`Catalog::query_rows_on`].
    fn query_rows<C, T, P, F>(
        &self,
        sql: &str,
        params: P,
        what: &'static str,
        row: F,
    ) -> Result<C, CatalogError>
    where
        C: FromIterator<T>,
        P: rusqlite::Params,
        F: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.query_rows_on(&self.conn(), sql, params, what, row)
    }

    /// As [`Catalog::query_rows`], on `conn`: the held connection or a
    /// transaction (which derefs to it).
    fn query_rows_on<C, T, P, F>(
        &self,
        conn: &Connection,
        sql: &str,
        params: P,
        what: &'static str,
        row: F,
    ) -> Result<C, CatalogError>
    where
        C: FromIterator<T>,
        P: rusqlite::Params,
        F: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        let mut st = conn.prepare_cached(sql).map_err(self.sql(what))?;
        let rows = st
            .query_map(params, row)
            .and_then(|rows| rows.collect())
            .map_err(self.sql(what));
        rows
    }
}

/// Now [s since the Unix epoch].
pub fn now_unix_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A Unix time [s] as ISO 8601 UTC, `2026-11-28T12:39:03Z` (proleptic Gregorian).
pub fn utc_string(unix_s: f64) -> String {
    let secs = unix_s.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (H. Hinnant), days since 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_strings() {
        assert_eq!(utc_string(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_string(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(utc_string(1_795_869_543.9), "2026-11-28T12:39:03Z");
    }

    #[test]
    fn init_migrates_once_and_open_refuses_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/catalog.sqlite");
        let missing = Catalog::open(&path).unwrap_err();
        assert!(matches!(missing, CatalogError::Missing { .. }), "{missing}");
        let c = Catalog::init(&path).unwrap();
        assert_eq!(c.schema_version().unwrap(), schema::MIGRATIONS.len() as u32);
        drop(c);
        let c = Catalog::open(&path).unwrap();
        assert_eq!(c.schema_version().unwrap(), schema::MIGRATIONS.len() as u32);
        let mode: String = c
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        let fk: i64 = c
            .conn()
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn a_read_only_opening_never_writes_or_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        drop(Catalog::init(&path).unwrap());
        let c = Catalog::open_read_only(&path).unwrap();
        assert!(c.runs().unwrap().is_empty());
        let e = c.set_salted(1, true).unwrap_err();
        assert!(e.to_string().contains("readonly"), "{e}");
        drop(c);
        // A catalog one migration behind is refused, not upgraded.
        let old = dir.path().join("old.sqlite");
        let conn = Connection::open(&old).unwrap();
        for sql in &schema::MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch("PRAGMA user_version = 2").unwrap();
        drop(conn);
        let before = std::fs::read(&old).unwrap();
        let e = Catalog::open_read_only(&old).unwrap_err();
        assert!(
            matches!(e, CatalogError::OlderSchema { found: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("never migrated"), "{e}");
        assert_eq!(std::fs::read(&old).unwrap(), before, "bytes unchanged");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let e = Catalog::open_read_only(&path).unwrap_err();
        assert!(
            matches!(e, CatalogError::NewerSchema { found: 99, .. }),
            "{e}"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        drop(Catalog::init(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let e = Catalog::open(&path).unwrap_err();
        assert!(
            matches!(e, CatalogError::NewerSchema { found: 99, .. }),
            "{e}"
        );
    }
}

#[cfg(test)]
mod method_tests;

#[cfg(test)]
mod atomicity_tests;
