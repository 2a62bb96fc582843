//! Catalog schema and its migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version`; migration `i` (0-based)
//! brings the database from version `i` to `i + 1` inside one transaction.
//! Migrations are frozen text: a change is a new entry at the end, never an
//! edit (a test checks the CHECK lists still match the Rust enums).
//!
//! Times are `REAL` seconds since the Unix epoch (UTC). Checksums are Adler-32
//! hex strings. Replica paths are relative to the site root.
//!
//! Indexes for a catalog of ~1M files: `raw_files(state)`, `raw_files(run,
//! sequence)` (unique; serves lookups by run), `replicas(file_id, site)` (primary
//! key), `replicas(site, state)`, `jobs(state)`, `outputs(file_id,
//! lineage_hash)` (unique).

/// The migrations, oldest first. Version N means the first N have run.
pub const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
];

/// Version 1: runs, raw files, replicas, outputs, jobs, campaigns.
const MIGRATION_1: &str = r#"
CREATE TABLE runs (
    number        INTEGER PRIMARY KEY,
    start_time    TEXT,
    run_type      TEXT NOT NULL DEFAULT 'science'
                  CHECK (run_type IN ('science','calibration')),
    conditions    TEXT,
    registered_at REAL NOT NULL
);

CREATE TABLE raw_files (
    id            INTEGER PRIMARY KEY,
    run           INTEGER NOT NULL REFERENCES runs(number),
    sequence      INTEGER NOT NULL CHECK (sequence >= 0),
    name          TEXT NOT NULL UNIQUE,
    size_bytes    INTEGER NOT NULL CHECK (size_bytes >= 0),
    adler32       TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'registered'
                  CHECK (state IN ('registered','transferred','processing','processed','failed')),
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error    TEXT,
    salted        INTEGER NOT NULL DEFAULT 0 CHECK (salted IN (0, 1)),
    written_at    REAL,
    registered_at REAL NOT NULL,
    UNIQUE (run, sequence)
);
CREATE INDEX raw_files_state ON raw_files(state);

CREATE TABLE replicas (
    file_id       INTEGER NOT NULL REFERENCES raw_files(id),
    site          TEXT NOT NULL CHECK (site IN ('SURF','USDC','UKDC','ARCHIVE')),
    path          TEXT NOT NULL,
    size_bytes    INTEGER,
    adler32       TEXT,
    state         TEXT NOT NULL
                  CHECK (state IN ('queued','transferring','verified','bad','lost')),
    verified_at   REAL,
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error    TEXT,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (file_id, site)
) WITHOUT ROWID;
CREATE INDEX replicas_site_state ON replicas(site, state);

CREATE TABLE campaigns (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    first_run      INTEGER NOT NULL,
    last_run       INTEGER NOT NULL,
    conditions_tag TEXT NOT NULL,
    lineage_hash   TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'defined'
                   CHECK (state IN ('defined','active','complete','cancelled')),
    created_at     REAL NOT NULL,
    CHECK (last_run >= first_run)
);

CREATE TABLE outputs (
    id            INTEGER PRIMARY KEY,
    file_id       INTEGER NOT NULL REFERENCES raw_files(id),
    lineage_hash  TEXT NOT NULL,
    rq_path       TEXT NOT NULL,
    checksum      TEXT NOT NULL,
    events        INTEGER NOT NULL CHECK (events >= 0),
    catalogued_at REAL NOT NULL,
    UNIQUE (file_id, lineage_hash)
);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    slurm_id      INTEGER,
    name          TEXT NOT NULL,
    campaign_id   INTEGER REFERENCES campaigns(id),
    task_ids      TEXT NOT NULL DEFAULT '[]',
    attempt       INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    state         TEXT NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending','submitted','running','completed','failed','cancelled')),
    reason        TEXT,
    submitted_at  REAL,
    finished_at   REAL
);
CREATE INDEX jobs_state ON jobs(state);
"#;

/// Version 2: processing tasks (one per raw file and campaign) for the
/// dispatcher, and each campaign's tracked reco configuration.
const MIGRATION_2: &str = r#"
ALTER TABLE campaigns ADD COLUMN config_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE campaigns ADD COLUMN prompt INTEGER NOT NULL DEFAULT 0 CHECK (prompt IN (0, 1));

CREATE TABLE tasks (
    id            INTEGER PRIMARY KEY,
    file_id       INTEGER NOT NULL REFERENCES raw_files(id),
    campaign_id   INTEGER NOT NULL REFERENCES campaigns(id),
    state         TEXT NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued','submitting','submitted','done','failed','cancelled')),
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    job_id        INTEGER REFERENCES jobs(id),
    last_error    TEXT,
    not_before    REAL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    UNIQUE (file_id, campaign_id)
);
CREATE INDEX tasks_state ON tasks(state, campaign_id);
CREATE INDEX tasks_job ON tasks(job_id);
CREATE INDEX outputs_lineage ON outputs(lineage_hash);

-- A random identity of this catalog: SLURM job names carry it, so that two
-- catalogs on one cluster never mistake each other's jobs.
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('instance', lower(hex(randomblob(3))));
"#;

/// Version 3: SLURM job arrays. An array element is one catalog job; its SLURM
/// identity is the array's job id (`slurm_id`) and its `array_index`. Every
/// element carries the array's SLURM job name (`slurm_name`, NULL for a plain
/// job, whose SLURM name is `name`), by which a crash between sbatch and its
/// record is reconciled.
const MIGRATION_3: &str = r#"
ALTER TABLE jobs ADD COLUMN slurm_name TEXT;
ALTER TABLE jobs ADD COLUMN array_index INTEGER CHECK (array_index >= 0);
CREATE INDEX jobs_slurm_name ON jobs(slurm_name) WHERE slurm_name IS NOT NULL;
"#;

/// Version 4: blinding as a property of the catalog (a log of blind/unblind
/// decisions, the last one wins), a salting claim on raw files (the mover
/// never starts a copy of a file being salted), and the retention states of
/// a replica (`retiring`, `retired`). SQLite cannot change a CHECK, so the
/// replicas table is rebuilt with the longer list.
const MIGRATION_4: &str = r#"
CREATE TABLE blinding_log (
    id       INTEGER PRIMARY KEY,
    blinded  INTEGER NOT NULL CHECK (blinded IN (0, 1)),
    by_whom  TEXT NOT NULL,
    reason   TEXT NOT NULL,
    at       REAL NOT NULL
);

ALTER TABLE raw_files ADD COLUMN salting_since REAL;

CREATE TABLE replicas_v4 (
    file_id       INTEGER NOT NULL REFERENCES raw_files(id),
    site          TEXT NOT NULL CHECK (site IN ('SURF','USDC','UKDC','ARCHIVE')),
    path          TEXT NOT NULL,
    size_bytes    INTEGER,
    adler32       TEXT,
    state         TEXT NOT NULL
                  CHECK (state IN ('queued','transferring','verified','bad','lost','retiring','retired')),
    verified_at   REAL,
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error    TEXT,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (file_id, site)
) WITHOUT ROWID;
INSERT INTO replicas_v4 (file_id, site, path, size_bytes, adler32, state, verified_at,
                         attempts, last_error, updated_at)
  SELECT file_id, site, path, size_bytes, adler32, state, verified_at,
         attempts, last_error, updated_at FROM replicas;
DROP TABLE replicas;
ALTER TABLE replicas_v4 RENAME TO replicas;
CREATE INDEX replicas_site_state ON replicas(site, state);
"#;

/// Version 5: conditions as data. A conditions tag is its TOML text, stored
/// whole with its SHA-256 (`content_sha256`, the hash outputs' lineage
/// covers) and provenance; a published tag is valid from `first_run` until
/// the next published tag's `first_run` (its interval of validity). Every
/// decision (add, publish, hold) is a row of `conditions_log` with who and
/// why. A global tag is a frozen copy of the intervals that a campaign pins
/// (`campaigns.global_tag`). A calibration run's products are made by one
/// SLURM job, tracked in `calibrations` (intent first, by its job name).
const MIGRATION_5: &str = r#"
CREATE TABLE conditions_tags (
    tag            TEXT PRIMARY KEY,
    content        TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    provenance     TEXT NOT NULL DEFAULT '{}',
    state          TEXT NOT NULL DEFAULT 'candidate'
                   CHECK (state IN ('candidate','held','published')),
    first_run      INTEGER CHECK (first_run >= 0),
    source_run     INTEGER,
    note           TEXT,
    created_at     REAL NOT NULL,
    published_at   REAL,
    CHECK ((state = 'published') = (first_run IS NOT NULL))
);
CREATE UNIQUE INDEX conditions_iov ON conditions_tags(first_run) WHERE first_run IS NOT NULL;

CREATE TABLE conditions_log (
    id       INTEGER PRIMARY KEY,
    tag      TEXT NOT NULL,
    action   TEXT NOT NULL,
    by_whom  TEXT NOT NULL,
    reason   TEXT NOT NULL,
    at       REAL NOT NULL
);

CREATE TABLE global_tags (
    name       TEXT PRIMARY KEY,
    by_whom    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE global_tag_iovs (
    global_tag TEXT NOT NULL REFERENCES global_tags(name),
    first_run  INTEGER NOT NULL,
    tag        TEXT NOT NULL REFERENCES conditions_tags(tag),
    PRIMARY KEY (global_tag, first_run)
) WITHOUT ROWID;

ALTER TABLE campaigns ADD COLUMN global_tag TEXT REFERENCES global_tags(name);

CREATE TABLE calibrations (
    run          INTEGER PRIMARY KEY REFERENCES runs(number),
    state        TEXT NOT NULL CHECK (state IN ('pending','submitted','done','failed')),
    slurm_name   TEXT NOT NULL,
    slurm_id     INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 1,
    tag          TEXT,
    reason       TEXT,
    last_file_at REAL,
    created_at   REAL NOT NULL,
    finished_at  REAL
);
"#;

/// Version 6: sites that process. The resources of each job and of a task's
/// next attempt (the retry policy raises them after TIMEOUT and
/// OUT_OF_MEMORY), the site a job runs at and an output was made at, the
/// site a campaign runs at (`any` or a site name), and the operator's drain
/// of a site.
const MIGRATION_6: &str = r#"
ALTER TABLE tasks ADD COLUMN time_limit_min INTEGER CHECK (time_limit_min > 0);
ALTER TABLE tasks ADD COLUMN mem_mb INTEGER CHECK (mem_mb > 0);
ALTER TABLE jobs ADD COLUMN time_limit_min INTEGER CHECK (time_limit_min > 0);
ALTER TABLE jobs ADD COLUMN mem_mb INTEGER CHECK (mem_mb > 0);
ALTER TABLE jobs ADD COLUMN site TEXT;
ALTER TABLE outputs ADD COLUMN site TEXT;
ALTER TABLE campaigns ADD COLUMN site TEXT NOT NULL DEFAULT 'any';

CREATE TABLE site_drains (
    site        TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    by_whom     TEXT NOT NULL,
    since       REAL NOT NULL
);
"#;

/// Version 7: both sites process, and simulate.
///
/// - A replica remembers where it was copied from (`source`, NULL: SURF): a
///   processing site's bad or lost replica is copied in from the other
///   site's verified one.
/// - RQ outputs have replicas at the processing sites (`output_replicas`,
///   paths relative to each site's RQ root), moved and verified like raw files.
/// - Simulated runs (`run_type` 'simulation'): a simulation campaign's
///   parameters (`sim_productions`) and one row per file to simulate
///   (`sim_tasks`), run by SLURM job arrays whose jobs are `kind` 'sim'.
///
/// SQLite cannot change a CHECK: `runs` is rebuilt under its own name. Foreign
/// keys stay on inside the migration's transaction, so their checks are
/// deferred: dropping the old table counts the files and calibrations that
/// lose their run, inserting the same runs again counts them back.
const MIGRATION_7: &str = r#"
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE runs_v6 AS SELECT number, start_time, run_type, conditions, registered_at FROM runs;
DROP TABLE runs;
CREATE TABLE runs (
    number        INTEGER PRIMARY KEY,
    start_time    TEXT,
    run_type      TEXT NOT NULL DEFAULT 'science'
                  CHECK (run_type IN ('science','calibration','simulation')),
    conditions    TEXT,
    registered_at REAL NOT NULL
);
INSERT INTO runs (number, start_time, run_type, conditions, registered_at)
  SELECT number, start_time, run_type, conditions, registered_at FROM temp.runs_v6;
DROP TABLE temp.runs_v6;

ALTER TABLE replicas ADD COLUMN source TEXT CHECK (source IN ('SURF','USDC','UKDC','ARCHIVE'));

CREATE TABLE output_replicas (
    output_id     INTEGER NOT NULL REFERENCES outputs(id) ON DELETE CASCADE,
    site          TEXT NOT NULL CHECK (site IN ('SURF','USDC','UKDC','ARCHIVE')),
    path          TEXT NOT NULL,
    source        TEXT CHECK (source IN ('SURF','USDC','UKDC','ARCHIVE')),
    size_bytes    INTEGER NOT NULL CHECK (size_bytes >= 0),
    adler32       TEXT NOT NULL,
    state         TEXT NOT NULL
                  CHECK (state IN ('queued','transferring','verified','bad','lost','retiring','retired')),
    verified_at   REAL,
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error    TEXT,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (output_id, site)
) WITHOUT ROWID;
CREATE INDEX output_replicas_site_state ON output_replicas(site, state);

CREATE TABLE sim_productions (
    campaign_id     INTEGER PRIMARY KEY REFERENCES campaigns(id),
    source          TEXT NOT NULL,
    events_per_file INTEGER NOT NULL CHECK (events_per_file > 0),
    files           INTEGER NOT NULL CHECK (files > 0),
    files_per_run   INTEGER NOT NULL CHECK (files_per_run > 0),
    seed            INTEGER NOT NULL,
    conditions      TEXT NOT NULL,
    detector_truth  TEXT,
    truth_run       INTEGER CHECK (truth_run >= 0)
);

ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'reco' CHECK (kind IN ('reco','sim'));

CREATE TABLE sim_tasks (
    id            INTEGER PRIMARY KEY,
    campaign_id   INTEGER NOT NULL REFERENCES campaigns(id),
    file_index    INTEGER NOT NULL CHECK (file_index >= 0),
    run           INTEGER NOT NULL REFERENCES runs(number),
    sequence      INTEGER NOT NULL CHECK (sequence >= 0),
    state         TEXT NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued','submitting','submitted','done','failed','cancelled')),
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    job_id        INTEGER REFERENCES jobs(id),
    last_error    TEXT,
    not_before    REAL,
    site          TEXT,
    file_id       INTEGER REFERENCES raw_files(id),
    time_limit_min INTEGER CHECK (time_limit_min > 0),
    mem_mb        INTEGER CHECK (mem_mb > 0),
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    UNIQUE (campaign_id, file_index),
    UNIQUE (run, sequence)
);
CREATE INDEX sim_tasks_state ON sim_tasks(state, campaign_id);
CREATE INDEX sim_tasks_job ON sim_tasks(job_id);
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::states::*;

    #[test]
    fn check_constraints_list_every_enum_value() {
        let sql = MIGRATIONS.concat();
        for list in [
            check_list(Site::ALL),
            check_list(RunType::ALL),
            check_list(FileState::ALL),
            check_list(ReplicaState::ALL),
            check_list(JobState::ALL),
            check_list(CampaignState::ALL),
            check_list(TaskState::ALL),
            check_list(JobKind::ALL),
        ] {
            assert!(
                sql.contains(&format!("IN ({list})")),
                "schema lacks CHECK IN ({list})"
            );
        }
    }

    #[test]
    fn the_runs_rebuild_keeps_every_run_and_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        for sql in &MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 6;
             INSERT INTO runs (number, run_type, conditions, registered_at)
               VALUES (17400, 'science', 'v1', 1.0), (17401, 'calibration', NULL, 2.0);
             INSERT INTO raw_files (run, sequence, name, size_bytes, adler32, registered_at)
               VALUES (17400, 0, '017400_00000.raw.h5', 10, '1', 1.0),
                      (17401, 0, '017401_00000.raw.h5', 10, '2', 2.0);
             INSERT INTO calibrations (run, state, slurm_name, created_at)
               VALUES (17401, 'pending', 'x', 2.0);",
        )
        .unwrap();
        drop(conn);
        let c = crate::catalog::Catalog::init(&path).unwrap();
        assert_eq!(c.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let runs: Vec<(u32, String)> = c
            .runs()
            .unwrap()
            .into_iter()
            .map(|r| (r.number, r.run_type.to_string()))
            .collect();
        assert_eq!(
            runs,
            [(17400, "science".into()), (17401, "calibration".into())]
        );
        let conn = c.conn();
        let broken: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(broken, 0);
        // Still enforced, and the new run type is accepted.
        assert!(conn
            .execute(
                "INSERT INTO raw_files (run, sequence, name, size_bytes, adler32, registered_at)
                 VALUES (99, 0, '000099_00000.raw.h5', 1, '1', 1.0)",
                [],
            )
            .is_err());
        conn.execute(
            "INSERT INTO runs (number, run_type, registered_at) VALUES (900000, 'simulation', 3.0)",
            [],
        )
        .unwrap();
    }
}
