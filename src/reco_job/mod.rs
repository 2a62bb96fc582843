//! `tpcflow reco`: the batch program sbatch runs. Spreads raw files over MPI
//! ranks (rayon threads inside each rank), runs the reconstruction core, and
//! writes one RQ file and one result record per input.
//!
//! ```text
//! refuse   inputs that would write the same outputs (see `plan`)
//! plan     rank 0 probes the inputs (event counts only; inputs with a
//!          complete output of the same lineage are skipped) and broadcasts
//!          its plan; every rank cuts it into the same units: event ranges,
//!          ~4 per rank, largest first
//! work     units are handed out dynamically (a thread on rank 0 answers the
//!          other ranks' requests while rank 0 works too; a rank asks for its
//!          next unit near the end of the current one and a prefetch thread
//!          reads that input's first window ahead, as it reads each next
//!          window within a unit); a unit that is a whole file writes the
//!          final RQ file, a part of a split file writes a hidden part file
//! merge    after a barrier, split files are merged in part order by rank
//!          (file index mod size): output is identical whatever the rank count
//! report   per-rank statistics are gathered on rank 0, which prints the summary;
//!          the exit code (see `crate::exit`) is broadcast so every rank agrees
//! ```
//!
//! Every output goes to a hidden temporary name and is renamed when complete
//! (`crate::atomic_file`); the result record is written after the RQ file, so
//! a record saying `ok` always has its output. A full output file system
//! (ENOSPC) fails that input, recorded as `no space left on device for PATH`
//! with its temporary removed; a later run redoes it. An input given with its
//! catalogued adler32 is checksummed on the finisher thread from the moment
//! the rank opens it (beside the reconstruction when the rank has a second
//! core) and fails without an RQ file when the checksum differs;
//! its DAQ header (sample period, window, channels) must match the conditions.
//!
//! A rank that cannot continue (not an input's fault) aborts the whole job
//! after recording the failure of the unit it held: see `abort`.
//!
//! A job of one rank (no launcher, or a launcher that started one task)
//! does not initialise MPI at all: its start-up is milliseconds, not the
//! ~0.5 s of Open MPI's singleton start-up; see `ranks`.
//!
//! A unit's events go read -> reconstruct -> write in `stream::stream_range`;
//! `columns` turns reconstructed events into RQ columns.

pub mod abort;
pub mod cli;
pub mod columns;
pub mod distribute;
mod finisher;
pub mod plan;
pub mod ranks;
pub mod stream;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mpi::collective::Root;
use mpi::traits::*;
use serde::{Deserialize, Serialize};
use tpcflow_reco::RecoConfig;

use crate::conditions::Conditions;
use crate::exit;
use crate::lineage::Lineage;
use crate::raw::prefetch::Prefetcher;
use crate::raw::{self, RawFile};
use crate::rq::{self, RqHeader};
use plan::{FilePlan, OutputNames, Unit};
use ranks::Ranks;

/// Everything a reco job needs, resolved once (CLI + conditions + environment).
#[derive(Debug, Clone)]
pub struct RecoJobOptions {
    /// Raw input files.
    pub inputs: Vec<PathBuf>,
    /// Catalogued adler32 of each input: the job checks the file against it
    /// (a mismatch fails the input) and writes it into the RQ file; `None`
    /// means the job reads the file to compute it.
    pub input_adler32: Vec<Option<String>>,
    /// Where RQ files and result records go.
    pub out_dir: PathBuf,
    /// Detector conditions.
    pub conditions: Conditions,
    /// Reconstruction settings (tracked in the lineage).
    pub config: RecoConfig,
    /// Rayon threads per rank.
    pub threads: usize,
    /// Events per work unit (None: about four units per rank).
    pub events_per_unit: Option<u64>,
    /// Events reconstructed per rayon batch.
    pub batch_events: usize,
    /// Test-only fault injection (see [`abort::FAULT_ENV`]); None in production.
    pub fault: Option<abort::InjectedFault>,
    /// When the command started (the start-up figure of the summary counts
    /// from here).
    pub started: Instant,
}

/// The machine-readable record of one input, `{stem}.{hash}.result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileResult {
    /// Raw input file.
    pub input: PathBuf,
    /// `ok`, `failed` or `skipped`.
    pub status: String,
    /// Events reconstructed.
    pub events: u64,
    /// Pulses found.
    pub pulses: u64,
    /// Wall time spent on the file, summed over its parts [s].
    pub wall_seconds: f64,
    /// Raw sample bytes read.
    pub bytes_read: u64,
    /// Lineage hash of the output.
    pub lineage_hash: String,
    /// The RQ file, when written.
    pub output: Option<PathBuf>,
    /// adler32 of the RQ file.
    pub output_adler32: Option<String>,
    /// Why the file failed.
    pub error: Option<String>,
    /// Software version.
    pub software_version: String,
    /// Detector conditions tag.
    pub conditions_tag: String,
}

/// Per-rank statistics gathered on rank 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RankStats {
    /// Units processed.
    pub units: u64,
    /// Events reconstructed.
    pub events: u64,
    /// Pulses found.
    pub pulses: u64,
    /// Raw sample bytes read.
    pub bytes: u64,
    /// Of those, bytes of windows that were not in the page cache, read
    /// directly from disk into the rank's buffers (`crate::raw::direct`).
    pub direct_bytes: u64,
    /// Time spent in units [s]: reading, reconstructing, writing, and
    /// opening inputs and outputs.
    pub busy_seconds: f64,
    /// Of which reading and validating pod indices [s].
    pub read_seconds: f64,
    /// Of which reconstructing [s] (bytes / this is the core's speed in the job).
    pub reco_seconds: f64,
    /// Of which building, encoding and writing RQ columns, finishing the
    /// files (fsync, rename) and result records [s].
    pub write_seconds: f64,
    /// Time waiting: for a unit to be assigned, and at the end for the other
    /// ranks to finish theirs [s] (not part of busy).
    pub idle_seconds: f64,
}

/// Events left in a unit when its rank asks for the next one and reads that
/// one's input ahead: a pod window, so the next unit's first window is read
/// while the last one is reconstructed (~0.14 s here). Half a window was
/// too little with cold inputs and two ranks sharing the disk: the
/// second rank waited for its next unit's first window 10-21 ms per unit,
/// reading was 10-11 % of its busy time (2-4.5 % asking a window ahead), and
/// the other rank idled at the end. Asking earlier holds a unit back from
/// the other ranks for longer.
const ASK_AHEAD_EVENTS: usize = stream::POD_WINDOW_EVENTS;

/// Failed inputs the summary names (the batch log then says which inputs
/// failed and why without opening the result records).
pub const MAX_FAILURES_LISTED: usize = 20;

/// A failed input in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedInput {
    /// The raw file.
    pub input: String,
    /// Its error, as in its result record.
    pub error: String,
}

/// What rank 0 reports.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// MPI world size.
    pub ranks: usize,
    /// Threads per rank.
    pub threads: usize,
    /// Lineage hash of the outputs.
    pub lineage_hash: String,
    /// Inputs reconstructed.
    pub files_ok: usize,
    /// Inputs that failed.
    pub files_failed: usize,
    /// Inputs skipped (complete output with the same lineage).
    pub files_skipped: usize,
    /// Wall time of the job [s].
    pub wall_seconds: f64,
    /// From the command's start to rank 0's first batch of events
    /// reconstructed and handed to its RQ writer (start-up: MPI when the job
    /// has several ranks, conditions, opening the input) [s]; None when rank
    /// 0 reconstructed nothing.
    pub first_batch_seconds: Option<f64>,
    /// Per rank.
    pub per_rank: Vec<RankStats>,
    /// The first [`MAX_FAILURES_LISTED`] failed inputs and why (all of
    /// them are in their result records).
    pub failures: Vec<FailedInput>,
    /// Exit code (see `crate::exit`).
    pub exit_code: u8,
}

/// Lineage of reco outputs: what changes them, nothing else.
pub fn lineage(cond: &Conditions, config: &RecoConfig) -> Lineage {
    let raw = Lineage::new(
        "raw",
        raw::FORMAT_VERSION.to_string(),
        serde_json::json!({ "conditions_tag": cond.tag, "conditions_sha256": cond.sha256 }),
    );
    Lineage::new(
        "reco",
        crate::SOFTWARE_VERSION,
        serde_json::to_value(config).expect("config is JSON"),
    )
    .with_input(raw)
}

/// Threads per rank: `--threads`, else SLURM_CPUS_PER_TASK, else the cores
/// this process may use shared among the ranks on this node.
pub fn default_threads(explicit: Option<usize>) -> usize {
    if let Some(n) = explicit {
        return n.max(1);
    }
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    if let Some(n) = env("SLURM_CPUS_PER_TASK") {
        return n.max(1);
    }
    rank_cores()
}

/// The cores this process may use (its affinity mask and CPU quota) shared
/// among the ranks on this node, at least 1.
fn rank_cores() -> usize {
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = env("OMPI_COMM_WORLD_LOCAL_SIZE")
        .or_else(|| env("MPI_LOCALNRANKS"))
        .or_else(|| env("SLURM_NTASKS_PER_NODE"))
        .unwrap_or(1);
    (cores / local.max(1)).max(1)
}

/// Make a closed RQ file final, then record its success (for a whole file:
/// with the output and its checksum). When `verify` holds the check of the
/// input against its catalogued adler32, its outcome is read first (the
/// check started with the input, see [`InputCheck`]) and a mismatch records
/// the input's failure instead (the closed file is removed, never renamed into
/// place). A full disk records the failure, with no file under the final name.
fn commit_ok(
    closed: rq::ClosedRq,
    record: PathBuf,
    mut r: FileResult,
    whole: bool,
    verify: Option<InputCheck>,
) -> Result<()> {
    if let Some(check) = verify {
        if let Err(e) = check.outcome() {
            drop(closed);
            return record_failure(&record, r, e);
        }
    }
    let path = closed.path().to_path_buf();
    if let Err(e) = closed.commit() {
        if !e.is_no_space() {
            return Err(e.into());
        }
        return record_failure(&record, r, no_space_message(&path, &e));
    }
    r.status = "ok".into();
    if whole {
        r.output_adler32 = Some(crate::adler::digest_mapped(&path)?.adler32);
        r.output = Some(path);
    }
    write_json_atomic(&record, &r)
}

/// The check of an input against its catalogued adler32, started on the
/// finisher when the rank opens the input ([`InputCheck::start`]) so that on
/// a rank with a second core it runs beside the reconstruction instead of
/// after it; the commit of the input's RQ file (queued on the same thread,
/// later) reads its outcome.
///
/// When the reader holds the whole file in a memory map (`RawFile::file_map`),
/// the check hashes that map: the pages are mapped once for both, where a
/// second map of the file cost its own page-table setup and teardown.
#[derive(Debug, Clone)]
struct InputCheck {
    input: PathBuf,
    expected: String,
    map: Option<Arc<memmap2::Mmap>>,
    outcome: Arc<OnceLock<Result<(), String>>>,
}

impl InputCheck {
    /// Queue the check of `input` (held in `map` when the reader maps it
    /// whole) on `finisher`.
    fn start(
        finisher: &finisher::Finisher,
        input: PathBuf,
        expected: String,
        map: Option<Arc<memmap2::Mmap>>,
    ) -> Result<Self> {
        let check = Self {
            input,
            expected,
            map,
            outcome: Arc::default(),
        };
        let c = check.clone();
        finisher.submit(move || {
            // Set once: nothing else sets it before this task runs.
            let _ = c.outcome.set(c.verify());
            Ok(())
        })?;
        Ok(check)
    }

    /// The check of `input` whose adler32 (`actual`) was taken already.
    fn taken(input: PathBuf, expected: String, actual: &str) -> Self {
        let outcome = verify_input_adler32(&input, &expected, actual);
        Self {
            input,
            expected,
            map: None,
            outcome: Arc::new(OnceLock::from(outcome)),
        }
    }

    /// The check's outcome (computed here if its task has not run, which
    /// the finisher's order rules out for a commit queued after it).
    fn outcome(&self) -> Result<(), String> {
        self.outcome.get_or_init(|| self.verify()).clone()
    }

    fn verify(&self) -> Result<(), String> {
        let actual = match &self.map {
            Some(map) => crate::adler::digest_bytes(map).adler32,
            None => {
                crate::adler::digest_mapped(&self.input)
                    .map_err(|e| e.to_string())?
                    .adler32
            }
        };
        verify_input_adler32(&self.input, &self.expected, &actual)
    }
}

/// Compare `input`'s adler32 (`actual`) with the catalogued one; the error
/// names the file, the expected and the actual checksum.
fn verify_input_adler32(input: &Path, expected: &str, actual: &str) -> Result<(), String> {
    if crate::adler::same_checksum(actual, expected) {
        Ok(())
    } else {
        Err(format!(
            "{}: adler32 mismatch: catalogued {expected}, file has {actual}",
            input.display()
        ))
    }
}

/// Write a `failed` record with `error` (no output).
fn record_failure(record: &Path, mut r: FileResult, error: String) -> Result<()> {
    r.status = "failed".into();
    tracing::warn!(input = %r.input.display(), %error, "input failed");
    r.error = Some(error);
    r.output = None;
    r.output_adler32 = None;
    write_json_atomic(record, &r)
}

/// True when an output error is a full file system (ENOSPC, EDQUOT): the
/// input's failure, recorded in its result record (the job goes on, a run
/// once space is freed redoes it), not a job error.
fn is_no_space(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rq::RqError>()
            .is_some_and(rq::RqError::is_no_space)
            || c.downcast_ref::<crate::atomic_file::AtomicFileError>()
                .is_some_and(crate::atomic_file::AtomicFileError::is_no_space)
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(crate::atomic_file::is_no_space)
    })
}

/// The recorded error of an output that did not fit: says so first, names
/// the final file, then the cause as reported.
fn no_space_message(output: &Path, cause: &dyn std::fmt::Display) -> String {
    format!("no space left on device for {}: {cause}", output.display())
}

/// Write a result record atomically and durably with its directory entry:
/// the dispatcher trusts a record it finds, so a power cut must not leave
/// one that is empty or lost after the rename.
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .with_context(|| format!("encoding the result record {}", path.display()))?;
    crate::atomic_file::write(path, &bytes)?;
    Ok(())
}

/// Read a result record.
///
/// # Errors
/// When it is missing or not a record.
pub fn read_result(path: &Path) -> Result<FileResult> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a result record", path.display()))
}

/// True when a complete output of this lineage exists with an `ok` record.
fn already_done(names: &OutputNames, hash: &str) -> bool {
    names.rq.exists()
        && rq::existing_lineage_hash(&names.rq).as_deref() == Some(hash)
        && read_result(&names.record).is_ok_and(|r| r.status == "ok")
}

/// A unit's input opened ahead ([`Job::open_ahead`]).
struct Opened {
    raw: Result<RawFile, String>,
    /// Its first window, handed to the prefetch thread (None when the queue
    /// was full).
    fetch: Option<crate::raw::prefetch::Pending>,
    /// Whether its events are read directly from disk (`RawFile::is_cold`).
    cold: Option<bool>,
}

struct Job<'a> {
    opts: &'a RecoJobOptions,
    rank: i32,
    lineage: Lineage,
    hash: String,
    pool: std::sync::Arc<rayon::ThreadPool>,
    names: Vec<OutputNames>,
    finisher: finisher::Finisher,
    prefetch: Prefetcher,
    /// Whether this rank has a core beyond its pool's threads, where the
    /// finisher checks an input's adler32 beside the reconstruction; without
    /// one, a one-thread rank hashes the input as it reconstructs it.
    spare_core: bool,
}

impl Job<'_> {
    fn result(&self, file: usize, status: &str) -> FileResult {
        FileResult {
            input: self.opts.inputs[file].clone(),
            status: status.into(),
            events: 0,
            pulses: 0,
            wall_seconds: 0.0,
            bytes_read: 0,
            lineage_hash: self.hash.clone(),
            output: None,
            output_adler32: None,
            error: None,
            software_version: crate::SOFTWARE_VERSION.into(),
            conditions_tag: self.opts.conditions.tag.clone(),
        }
    }

    /// Root attributes of the file's RQ output; `checksum` reads the whole
    /// input for its adler32 (done once, for the final file, not for parts).
    fn header(&self, file: usize, checksum: bool) -> Result<RqHeader> {
        let input = &self.opts.inputs[file];
        let known = self.opts.input_adler32.get(file).cloned().flatten();
        let adler32 = if let Some(known) = known {
            known
        } else if checksum {
            crate::adler::digest_mapped(input)?.adler32
        } else {
            String::new()
        };
        Ok(RqHeader {
            lineage_json: self.lineage.canonical_json(),
            lineage_hash: self.hash.clone(),
            conditions_tag: self.opts.conditions.tag.clone(),
            input_file: input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            input_adler32: adler32,
        })
    }

    fn fail(&self, file: usize, error: String, partial: Option<&FileResult>) -> Result<()> {
        let r = partial
            .cloned()
            .unwrap_or_else(|| self.result(file, "failed"));
        record_failure(&self.names[file].record, r, error)
    }

    /// Close an RQ output (`record` is its result record); `None` when the
    /// disk was full, recorded as the failure (the temporary is removed).
    fn close_or_record(
        &self,
        w: rq::RqWriter,
        header: &RqHeader,
        record: &Path,
        r: &FileResult,
    ) -> Result<Option<rq::ClosedRq>> {
        let output = w.path().to_path_buf();
        match w.close(header) {
            Ok(closed) => Ok(Some(closed)),
            Err(e) if e.is_no_space() => {
                record_failure(record, r.clone(), no_space_message(&output, &e))?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The catalogued adler32 of input `file`, when the job was given one.
    fn expected_adler32(&self, file: usize) -> Option<String> {
        self.opts.input_adler32.get(file).cloned().flatten()
    }

    /// Start checking the input against its catalogued adler32, when the
    /// job was given one (see [`InputCheck`]).
    fn start_check(
        &self,
        file: usize,
        map: Option<Arc<memmap2::Mmap>>,
    ) -> Result<Option<InputCheck>> {
        let Some(expected) = self.expected_adler32(file) else {
            return Ok(None);
        };
        let input = self.opts.inputs[file].clone();
        InputCheck::start(&self.finisher, input, expected, map).map(Some)
    }

    /// The check of input `file` against its catalogued adler32 (when the
    /// job was given one) from its digest taken already.
    fn taken_check(&self, file: usize, digest: &crate::adler::FileDigest) -> Option<InputCheck> {
        let expected = self.expected_adler32(file)?;
        Some(InputCheck::taken(
            self.opts.inputs[file].clone(),
            expected,
            &digest.adler32,
        ))
    }

    /// Close the file's RQ output and record success with its checksum (the
    /// input was verified by its part 0, see [`Job::run_unit`]).
    fn finish_ok(&self, file: usize, r: FileResult, w: rq::RqWriter) -> Result<()> {
        let record = &self.names[file].record;
        match self.close_or_record(w, &self.header(file, true)?, record, &r)? {
            Some(closed) => commit_ok(closed, record.clone(), r, true, None),
            None => Ok(()),
        }
    }

    /// Close a whole file's RQ output, then on the finisher (overlapping the
    /// next unit): verify the input's checksum, make the output durable
    /// (fsync, rename, checksum) and record it.
    fn finish_ok_later(
        &self,
        file: usize,
        r: FileResult,
        w: rq::RqWriter,
        verify: Option<InputCheck>,
    ) -> Result<()> {
        let record = self.names[file].record.clone();
        match self.close_or_record(w, &self.header(file, true)?, &record, &r)? {
            Some(closed) => self
                .finisher
                .submit(move || commit_ok(closed, record, r, true, verify)),
            None => Ok(()),
        }
    }

    /// Open a unit's input for streaming and check its DAQ header against
    /// the conditions (the error is the input's).
    fn open_input(&self, unit: Unit) -> Result<RawFile, String> {
        let raw =
            RawFile::open_streaming(&self.opts.inputs[unit.file]).map_err(|e| e.to_string())?;
        raw.check_daq(&self.opts.conditions.detector, &self.opts.conditions.tag)
            .map_err(|e| e.to_string())?;
        Ok(raw)
    }

    /// This rank cannot go on with `unit`: let the outputs it finished become
    /// durable, then record the unit's input as failed with `error` (best
    /// effort: the output directory may be what failed).
    fn abandon(&self, unit: Unit, error: &anyhow::Error) {
        if let Err(e) = self.finisher.wait() {
            tracing::error!(rank = self.rank, error = %format!("{e:#}"), "finishing outputs");
        }
        let why = format!(
            "rank {} could not finish events {}..{} of this input: {error:#}",
            self.rank, unit.first_event, unit.end_event
        );
        if let Err(e) = self.fail(unit.file, why, None) {
            tracing::error!(rank = self.rank, error = %format!("{e:#}"), "cannot record the failure");
        }
    }

    /// Open the unit this rank will do next and read its first window ahead.
    fn open_ahead(&self, unit: Unit) -> Opened {
        let raw = self.open_input(unit);
        let first = unit.first_event as usize;
        let cold = raw
            .as_ref()
            .is_ok_and(|raw| raw.is_cold(first..unit.end_event as usize));
        let window = stream::window_events(self.opts.batch_events, cold)
            .min((unit.end_event - unit.first_event) as usize);
        let fetch = raw
            .as_ref()
            .ok()
            .and_then(|raw| raw.readahead_for(first..first + window, cold))
            .and_then(|w| self.prefetch.fetch(w));
        Opened {
            raw,
            fetch,
            cold: Some(cold),
        }
    }

    /// Process one unit, streaming its events batch by batch into its RQ
    /// output (the file's, or a part's when the file is split); returns its
    /// statistics. A bad event fails the unit and leaves no output. `opened`
    /// is its input when it was opened ahead ([`Job::open_ahead`]);
    /// `pod_buffer` is the rank's pod window buffer (see
    /// [`stream::stream_range`]); `between` gets the events left after each
    /// batch.
    fn run_unit(
        &self,
        unit: Unit,
        opened: Option<Opened>,
        pod_buffer: &mut Vec<tpcflow_reco::PodRecord>,
        between: &mut dyn FnMut(usize),
    ) -> Result<RankStats> {
        let start = Instant::now();
        let names = &self.names[unit.file];
        let whole = unit.n_parts == 1;
        let target = if whole {
            names.rq.clone()
        } else {
            names.part(unit.part)
        };
        let mut writer = rq::RqWriter::create(&target)?
            .encode_on(self.pool.clone())
            .plain(columns::PLAIN_COLUMNS);
        let opened = opened.unwrap_or_else(|| Opened {
            raw: self.open_input(unit),
            fetch: None,
            cold: None,
        });
        let range = unit.first_event as usize..unit.end_event as usize;
        // Whether the samples are read directly from disk (cold) or through
        // the map, decided once for the checksum and the stream.
        let cold = match (&opened.raw, opened.cold) {
            (Ok(raw), None) => Some(raw.is_cold(range.clone())),
            (_, cold) => cold,
        };
        // The input's checksum. A whole file is hashed as it is
        // reconstructed (see `stream::stream_range`) when it is cold: its
        // windows are read directly from disk and hashed from their buffers,
        // where a check through the map would read the file from disk a
        // second time. A cached one is, on a one-thread rank with no core to
        // spare, hashed event by event right after each event's
        // reconstruction, from the core's cache (one pass over memory, not
        // two: see `crate::adler::InOrderDigest`). Otherwise a whole file, or
        // part 0 of a split one (which checks for all its parts: a mismatch
        // fails the part, and with it the merge), starts it now on the
        // finisher, beside its reconstruction.
        let mut in_order: Option<stream::MapDigest> = None;
        let mut check = None;
        if let (true, Ok(raw)) = (whole || unit.part == 0, &opened.raw) {
            let follow = whole
                && self.expected_adler32(unit.file).is_some()
                && match cold {
                    Some(true) => true,
                    Some(false) => !self.spare_core && self.pool.current_num_threads() == 1,
                    None => false,
                };
            match raw.file_map() {
                Some(map) if follow => {
                    tracing::debug!(
                        input = %raw.path().display(),
                        cold = cold == Some(true),
                        "input adler32 taken event by event"
                    );
                    in_order = Some(crate::adler::InOrderDigest::new(map));
                }
                map => check = self.start_check(unit.file, map)?,
            }
        }
        let read_ahead = stream::ReadAhead {
            prefetcher: &self.prefetch,
            first_window: opened.fetch,
            cold,
        };
        let processed = match opened.raw {
            Err(e) => Err(e),
            Ok(raw) => {
                let mut sink = |out| Ok(columns::append_to(&mut writer, out)?);
                match stream::stream_range(
                    &raw,
                    range,
                    &self.opts.conditions.detector,
                    &self.opts.config,
                    self.opts.batch_events,
                    &self.pool,
                    Some(read_ahead),
                    pod_buffer,
                    between,
                    &mut sink,
                    in_order.as_mut(),
                ) {
                    Ok(counts) => Ok(counts),
                    Err(stream::StreamError::Event(e)) => Err(e),
                    // A full disk fails this input (recorded below, after the
                    // writer's temporary is removed).
                    Err(stream::StreamError::Sink(e)) if is_no_space(&e) => {
                        Err(no_space_message(&target, &format!("{e:#}")))
                    }
                    // Any other output fault is the job's, not the input's.
                    Err(stream::StreamError::Sink(e)) => return Err(e),
                }
            }
        };
        let mut r = self.result(unit.file, "ok");
        let mut stats = RankStats {
            units: 1,
            ..Default::default()
        };
        match processed {
            Ok(c) => {
                r.events = c.events;
                r.pulses = c.pulses;
                r.bytes_read = c.bytes_read;
                stats.events = c.events;
                stats.pulses = c.pulses;
                stats.bytes = c.bytes_read;
                stats.read_seconds = c.read_seconds;
                stats.direct_bytes = c.direct_bytes;
                stats.reco_seconds = c.reco_seconds;
                if let Some(d) = in_order.take() {
                    let t = Instant::now();
                    check = self.taken_check(unit.file, &d.finish());
                    stats.read_seconds += t.elapsed().as_secs_f64();
                }
                r.wall_seconds = start.elapsed().as_secs_f64();
                let t = Instant::now();
                if whole {
                    self.finish_ok_later(unit.file, r, writer, check)?;
                } else {
                    let record = names.part_record(unit.part);
                    let header = self.header(unit.file, false)?;
                    if let Some(closed) = self.close_or_record(writer, &header, &record, &r)? {
                        self.finisher
                            .submit(move || commit_ok(closed, record, r, false, check))?;
                    }
                }
                stats.write_seconds = c.write_seconds + t.elapsed().as_secs_f64();
            }
            Err(error) => {
                drop(writer);
                r.wall_seconds = start.elapsed().as_secs_f64();
                if whole {
                    self.fail(unit.file, error, Some(&r))?;
                } else {
                    r.status = "failed".into();
                    r.error = Some(error);
                    write_json_atomic(&names.part_record(unit.part), &r)?;
                }
            }
        }
        stats.busy_seconds = start.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Append part `part` of `file` to its merged output, creating that first.
    fn append_part(
        &self,
        writer: &mut Option<rq::RqWriter>,
        file: usize,
        part: u32,
        bytes_read: u64,
    ) -> Result<(), rq::RqError> {
        let names = &self.names[file];
        let part_file = rq::read_rq_file(&names.part(part))?;
        let w = match writer {
            Some(w) => w,
            None => writer.insert(
                rq::RqWriter::create(&names.rq)?
                    .encode_on(self.pool.clone())
                    .plain(columns::PLAIN_COLUMNS),
            ),
        };
        columns::append_to(w, columns::UnitOutput::from_rq(part_file, bytes_read))
    }

    /// Merge the parts of a split file into its final RQ file, in part
    /// order, one part in memory at a time.
    fn merge(&self, file: usize, n_parts: u32) -> Result<()> {
        let names = &self.names[file];
        let mut total = self.result(file, "ok");
        // Created with the first part: a file whose first part failed gets
        // no output at all (on a full disk, not even an empty one).
        let mut writer = None;
        let mut error = None;
        for part in 0..n_parts {
            let r = read_result(&names.part_record(part));
            match r {
                Ok(r) if r.status == "ok" => {
                    total.events += r.events;
                    total.pulses += r.pulses;
                    total.wall_seconds += r.wall_seconds;
                    total.bytes_read += r.bytes_read;
                    if error.is_none() {
                        match self.append_part(&mut writer, file, part, r.bytes_read) {
                            Ok(()) => {}
                            Err(e) if e.is_no_space() => {
                                error = Some(no_space_message(&names.rq, &e));
                                // Dropping the writer removes its temporary.
                                writer = None;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Ok(r) => error = error.or(r.error).or(Some(format!("part {part} failed"))),
                Err(e) => {
                    error = error.or(Some(format!("part {part} has no result record: {e:#}")))
                }
            }
        }
        match (error, writer.take()) {
            (None, Some(w)) if n_parts > 0 => self.finish_ok(file, total, w)?,
            (Some(e), _) => self.fail(file, e, Some(&total))?,
            _ => self.fail(file, "no parts".into(), None)?,
        }
        for part in 0..n_parts {
            let _ = std::fs::remove_file(names.part(part));
            let _ = std::fs::remove_file(names.part_record(part));
        }
        Ok(())
    }
}

/// Run the job on this rank. Rank 0 returns the summary.
///
/// With several ranks, a rank that cannot continue (its outputs cannot be
/// written, a panic, a failed exchange) records the failure of the unit it
/// held and aborts the whole job with [`abort::ABORT_CODE`]
/// (`MPI_Abort`: this function does not return then).
///
/// # Errors
/// Inputs that would write the same outputs ([`plan::PlanError`], on every
/// rank); with one rank, what would abort a job of several; on ranks other
/// than 0, the job's exit code when it is not success (input faults are
/// recorded per file, not returned).
pub fn run(opts: &RecoJobOptions, world: Ranks<'_>) -> Result<Option<JobSummary>> {
    plan::check_distinct_outputs(&opts.inputs)?;
    let rank = world.rank();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_job(opts, world)))
        .unwrap_or_else(|p| {
            Err(anyhow::anyhow!(
                "rank {rank} panicked: {}",
                abort::panic_message(&*p)
            ))
        });
    match outcome {
        Ok((summary, code)) => {
            if rank != 0 && code != exit::OK {
                // Every rank exits with the job's code; rank 0 prints the summary.
                return Err(exit::ExitError::new(
                    code,
                    format!("rank {rank}: job ended with code {code}"),
                )
                .into());
            }
            Ok(summary)
        }
        Err(e) => match world.mpi() {
            Some(w) if w.size() > 1 => abort::abort_job(w, &e),
            _ => Err(e),
        },
    }
}

/// [`run`] on this rank until the exit code is known to all: the summary
/// (rank 0) and the code. An error means this rank cannot continue.
fn run_job(opts: &RecoJobOptions, world: Ranks<'_>) -> Result<(Option<JobSummary>, u8)> {
    let start = Instant::now();
    let (rank, size) = (world.rank(), world.size());
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let lineage = lineage(&opts.conditions, &opts.config);
    let hash = lineage.hash();
    let pool = std::sync::Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads)
            .build()?,
    );
    let names: Vec<OutputNames> = opts
        .inputs
        .iter()
        .map(|i| OutputNames::new(&opts.out_dir, i, &hash))
        .collect();
    let job = Job {
        opts,
        rank,
        lineage,
        hash: hash.clone(),
        pool,
        names,
        finisher: finisher::Finisher::start(4)?,
        prefetch: Prefetcher::start()?,
        spare_core: rank_cores() > opts.threads,
    };

    // Plan: made by rank 0 alone, the same on every rank.
    let plans: Vec<FilePlan> = if rank == 0 {
        opts.inputs
            .iter()
            .zip(&job.names)
            .map(|(input, names)| {
                if already_done(names, &hash) {
                    FilePlan::Skip
                } else {
                    match raw::reader::probe_events(input) {
                        Ok(n) => FilePlan::Process { n_events: n },
                        Err(e) => FilePlan::Fail(e.to_string()),
                    }
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let plans = plan::broadcast_plans(world, plans)?;
    anyhow::ensure!(
        plans.len() == opts.inputs.len(),
        "rank {rank}: rank 0's plan has {} inputs, this rank was given {}",
        plans.len(),
        opts.inputs.len()
    );
    let counts: Vec<Option<u64>> = plans
        .iter()
        .map(|p| {
            if let FilePlan::Process { n_events } = p {
                Some(*n_events)
            } else {
                None
            }
        })
        .collect();
    let total_events: u64 = counts.iter().flatten().sum();
    let size_per_unit = plan::unit_size(total_events, size as usize, opts.events_per_unit, 16);
    let units = plan::cut_units(&counts, size_per_unit);
    if rank == 0 {
        tracing::info!(inputs = opts.inputs.len(), units = units.len(), events = total_events, ranks = size, threads = opts.threads, lineage = %hash, "reco job planned");
    }
    for (file, p) in plans.iter().enumerate() {
        if let FilePlan::Fail(e) = p {
            if file % size as usize == rank as usize {
                job.fail(file, e.clone(), None)?;
            }
        }
    }

    // Work.
    let mut stats = RankStats::default();
    let mut queue = distribute::WorkQueue::new(world, units.len())?;
    let mut last_log = Instant::now();
    // On a terminal, rank 0 draws a bar of the units started on any rank; in
    // batch logs it writes a plain progress line every 10 s instead.
    let bar = (rank == 0 && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(units.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "reco [{bar:30}] {pos}/{len} units started, {msg} {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    // The next unit, opened (and its first window read ahead) while the
    // current one finishes.
    let mut next: Option<(usize, Opened)> = None;
    let mut first_batch: Option<f64> = None;
    // The pod window buffer, reused by each unit of this rank.
    let mut pod_buffer = Vec::new();
    loop {
        let t = Instant::now();
        let Some(u) = queue.next_unit() else {
            stats.idle_seconds += t.elapsed().as_secs_f64();
            break;
        };
        stats.idle_seconds += t.elapsed().as_secs_f64();
        let opened = next.take().filter(|(n, _)| *n == u).map(|(_, raw)| raw);
        let outcome = if opts.fault.is_some_and(|f| f.fires(rank, stats.units)) {
            Err(anyhow::anyhow!(
                "injected fault ({}): rank {rank} stops after {} unit(s)",
                abort::FAULT_ENV,
                stats.units
            ))
        } else {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                job.run_unit(units[u], opened, &mut pod_buffer, &mut |left| {
                    first_batch.get_or_insert_with(|| opts.started.elapsed().as_secs_f64());
                    if let Some(b) = &bar {
                        b.set_position(queue.handed_out());
                    }
                    if left <= ASK_AHEAD_EVENTS {
                        queue.ask_ahead();
                        if next.is_none() {
                            next = queue.peek_ahead().map(|n| (n, job.open_ahead(units[n])));
                        }
                    }
                })
            }))
            .unwrap_or_else(|p| {
                Err(anyhow::anyhow!(
                    "rank {rank} panicked: {}",
                    abort::panic_message(&*p)
                ))
            })
        };
        let s = match outcome {
            Ok(s) => s,
            Err(e) => {
                job.abandon(units[u], &e);
                return Err(e);
            }
        };
        stats.units += s.units;
        stats.events += s.events;
        stats.pulses += s.pulses;
        stats.bytes += s.bytes;
        stats.busy_seconds += s.busy_seconds;
        stats.read_seconds += s.read_seconds;
        stats.direct_bytes += s.direct_bytes;
        stats.reco_seconds += s.reco_seconds;
        stats.write_seconds += s.write_seconds;
        if let Some(b) = &bar {
            b.set_position(queue.handed_out());
            b.set_message(format!("rank 0: {} events", stats.events));
        } else if rank == 0 && last_log.elapsed() > Duration::from_secs(10) {
            tracing::info!(
                rank,
                units_started = queue.handed_out(),
                units = units.len(),
                rank0_units_done = stats.units,
                rank0_events = stats.events,
                "progress"
            );
            last_log = Instant::now();
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // Every output of this rank durable and recorded before the merge and the
    // summary read the records; the wait counts as the rank's write time.
    let t = Instant::now();
    let finished = job.finisher.wait();
    stats.write_seconds += t.elapsed().as_secs_f64();
    stats.busy_seconds += t.elapsed().as_secs_f64();
    // Rank 0 waits for its server to have told every rank to stop; then all
    // wait for the slowest.
    let t = Instant::now();
    queue.drain();
    finished?;
    world.barrier();
    stats.idle_seconds += t.elapsed().as_secs_f64();

    // Merge split files.
    for (file, p) in plans.iter().enumerate() {
        if matches!(p, FilePlan::Process { .. }) && file % size as usize == rank as usize {
            let n_parts = units
                .iter()
                .find(|u| u.file == file)
                .map_or(1, |u| u.n_parts);
            if n_parts > 1 {
                job.merge(file, n_parts)?;
            }
        }
    }
    world.barrier();

    // Report.
    let local = [
        stats.units as f64,
        stats.events as f64,
        stats.pulses as f64,
        stats.bytes as f64,
        stats.busy_seconds,
        stats.read_seconds,
        stats.reco_seconds,
        stats.write_seconds,
        stats.idle_seconds,
        stats.direct_bytes as f64,
    ];
    let root = world.mpi().map(|w| w.process_at_rank(0));
    let mut code = exit::OK;
    let mut summary = None;
    if rank == 0 {
        let mut all = vec![0.0f64; local.len() * size as usize];
        match &root {
            Some(root) => root.gather_into_root(&local[..], &mut all[..]),
            None => all.copy_from_slice(&local),
        }
        let per_rank: Vec<RankStats> = all
            .chunks(local.len())
            .map(|c| RankStats {
                units: c[0] as u64,
                events: c[1] as u64,
                pulses: c[2] as u64,
                bytes: c[3] as u64,
                busy_seconds: c[4],
                read_seconds: c[5],
                reco_seconds: c[6],
                write_seconds: c[7],
                idle_seconds: c[8],
                direct_bytes: c[9] as u64,
            })
            .collect();
        let (mut ok, mut failed, mut skipped) = (0, 0, 0);
        let mut failures = Vec::new();
        for (file, p) in plans.iter().enumerate() {
            let error = match p {
                FilePlan::Skip => {
                    skipped += 1;
                    continue;
                }
                _ => match read_result(&job.names[file].record) {
                    Ok(r) if r.status == "ok" => {
                        ok += 1;
                        continue;
                    }
                    Ok(r) => r.error.unwrap_or_else(|| format!("status {}", r.status)),
                    Err(e) => format!("no result record: {e:#}"),
                },
            };
            failed += 1;
            if failures.len() < MAX_FAILURES_LISTED {
                failures.push(FailedInput {
                    input: opts.inputs[file].display().to_string(),
                    error,
                });
            }
        }
        code = if failed == 0 {
            exit::OK
        } else if ok + skipped > 0 {
            exit::PARTIAL_FAILURE
        } else {
            exit::FAILURE
        };
        summary = Some(JobSummary {
            ranks: size as usize,
            threads: opts.threads,
            lineage_hash: hash,
            files_ok: ok,
            files_failed: failed,
            files_skipped: skipped,
            wall_seconds: start.elapsed().as_secs_f64(),
            first_batch_seconds: first_batch,
            per_rank,
            failures,
            exit_code: code,
        });
    } else if let Some(root) = &root {
        root.gather_into(&local[..]);
    }
    if let Some(root) = &root {
        root.broadcast_into(&mut code);
    }
    Ok((summary, code))
}
