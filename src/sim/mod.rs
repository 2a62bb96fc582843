//! `tpcflow sim`: the DAQ stand-in. Simulates events with the detector's
//! physics and writes raw files exactly as the pipeline receives them (each
//! appears atomically under its final name), with truth kept aside.
//!
//! Every event has its own random stream derived from (seed, run, event
//! index), so the output is identical whatever the thread count.
//!
//! The simulated detector is the nominal one of the conditions, or a
//! [`detector_truth::DetectorTruth`] resolved for the run ([`run_with_truth`]),
//! whose effective truth is written beside the raw files. Salt events are
//! simulated with the same code on the detector a conditions tag describes
//! ([`told_detector`]).

pub mod detector_truth;
pub mod digitise;
pub mod quanta;
pub mod response;
pub mod signals;
pub mod source;
pub mod told_detector;
pub mod truth_lrf;
pub mod truth_maps;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use rayon::prelude::*;
use serde::Serialize;
use tpcflow_reco::DetectorModel;

use crate::conditions::{Conditions, SimParams};
use crate::raw::{self, OwnedEvent, RawError, RawHeader};
use crate::truth::{self, EventTruth};
use detector_truth::{DetectorTruth, EffectiveTruth, TruthError};
pub use source::Source;

/// Errors of a simulation run with a detector truth.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Writing a file failed.
    #[error(transparent)]
    Raw(#[from] RawError),
    /// The detector truth cannot be resolved or written.
    #[error(transparent)]
    Truth(#[from] TruthError),
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Run number.
    pub run: u32,
    /// Files to write.
    pub files: u32,
    /// Events per file.
    pub events_per_file: u32,
    /// Seed of every random stream.
    pub seed: u64,
    /// Site root: files go to `{out}/{run:06}/`.
    pub out: PathBuf,
    /// Physics source.
    pub source: Source,
    /// First file sequence number.
    pub first_sequence: u32,
    /// Write files over time at `rate_hz` events per second, like a DAQ.
    pub live_rate_hz: Option<f64>,
}

/// What was written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimReport {
    /// Raw files written.
    pub files: Vec<PathBuf>,
    /// Events written.
    pub events: u64,
    /// Bytes of raw files.
    pub bytes: u64,
    /// Bytes of samples in raw files.
    pub sample_bytes: u64,
    /// Wall time [s].
    pub seconds: f64,
}

/// splitmix64: decorrelates seeds derived from small integers.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream of one event.
pub fn event_rng(seed: u64, run: u32, event_index: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(mix(seed) ^ u64::from(run)) ^ event_index) ^ mix(stream))
}

/// Which event to simulate: the random stream and the DAQ stamps.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec {
    /// Physics source.
    pub source: Source,
    /// Seed of the run.
    pub seed: u64,
    /// Run number.
    pub run: u32,
    /// Index of the event in the run (selects the random stream).
    pub event_index: u64,
    /// Event number written to the file.
    pub event_id: u64,
    /// Trigger time since the run start [ns].
    pub trigger_time_ns: i64,
}

/// Simulate one event of the nominal detector: raw data and truth.
pub fn simulate_event(
    model: &DetectorModel,
    p: &SimParams,
    spec: EventSpec,
    scratch: &mut Scratch,
) -> (OwnedEvent, EventTruth) {
    simulate_event_with_truth(model, p, None, spec, scratch)
}

/// Simulate one event: raw data and truth. With a response (a detector
/// truth or a conditions tag), `model` must carry its lifetime, gains and
/// light response ([`detector_truth::SimulatedDetector`],
/// [`told_detector::ToldDetector`]).
pub fn simulate_event_with_truth(
    model: &DetectorModel,
    p: &SimParams,
    truth: Option<&dyn response::DetectorResponse>,
    spec: EventSpec,
    scratch: &mut Scratch,
) -> (OwnedEvent, EventTruth) {
    let EventSpec {
        source,
        seed,
        run,
        event_index,
        event_id,
        trigger_time_ns,
    } = spec;
    let mut rng = event_rng(seed, run, event_index, 0);
    let pure = source.pick(&mut rng);
    let (recoil, energy) = pure.draw_energy(&mut rng);
    let vertices = source::draw_vertices(&mut rng, model, p, recoil, energy);
    let mut sim = signals::EventSimulator::new(model, p).with_truth(truth);
    // The trigger is the largest S2: it sits at window_before_ns in the window.
    let main = vertices
        .iter()
        .max_by(|a, b| {
            sim.expected_s2_electrons(a)
                .total_cmp(&sim.expected_s2_electrons(b))
        })
        .expect("at least one vertex");
    let t0 = model.params.daq.window_before_ns - model.drift_ns_from_z(main.z);
    let vt = sim.simulate(&mut rng, &vertices, t0, &mut scratch.deposits);
    let mut ev = OwnedEvent {
        event_id,
        trigger_time_ns,
        ..Default::default()
    };
    scratch.digitiser.digitise(
        &mut rng,
        model,
        p.baseline_spread_adc,
        sim.window_samples(),
        &mut scratch.deposits,
        &mut ev.pods,
        &mut ev.samples,
    );
    (
        ev,
        EventTruth {
            event_id,
            source: pure.code(),
            t0_ns: t0,
            vertices: vt,
        },
    )
}

/// Per-thread reusable buffers.
#[derive(Debug, Default)]
pub struct Scratch {
    deposits: signals::Deposits,
    digitiser: digitise::Digitiser,
}

/// How the simulated DAQ closes its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileClosing {
    /// Exactly `events_per_file` events per file (tests and benchmarks).
    #[default]
    Count,
    /// Each file covers the same span of DAQ time, `events_per_file` mean
    /// trigger intervals long, so its event count varies as a real DAQ's does
    /// (and a salted file's count does not tell its salt count).
    Time,
}

/// Trigger times of a run [ns since run start] (Poisson arrivals after a dead
/// time of one event window) and the range of events in each file.
fn trigger_times(
    opts: &SimOptions,
    model: &DetectorModel,
    p: &SimParams,
    closing: FileClosing,
) -> (Vec<i64>, Vec<Range<u64>>) {
    let e = u64::from(opts.events_per_file);
    let mut rng = event_rng(opts.seed, opts.run, u64::MAX, 1);
    let rate = p.event_rate_hz.max(1e-6);
    let gap = Exp::new(rate).expect("positive rate");
    let dead_ns = model.params.daq.window_before_ns + model.params.daq.window_after_ns;
    let mut t = 0.0f64;
    let mut next = || {
        t += dead_ns + gap.sample(&mut rng) * 1e9;
        t
    };
    match closing {
        FileClosing::Count => {
            let n = u64::from(opts.files) * e;
            let times = (0..n).map(|_| next().round() as i64).collect();
            let ranges = (0..u64::from(opts.files))
                .map(|f| f * e..(f + 1) * e)
                .collect();
            (times, ranges)
        }
        FileClosing::Time => {
            let span_ns = e as f64 * (dead_ns + 1e9 / rate);
            let end_ns = span_ns * f64::from(opts.files);
            let mut times = Vec::new();
            let mut ranges = vec![0..0; opts.files as usize];
            loop {
                let t = next();
                if t >= end_ns {
                    break;
                }
                let f = ((t / span_ns) as usize).min(ranges.len() - 1);
                let i = times.len() as u64;
                if ranges[f].is_empty() {
                    ranges[f] = i..i;
                }
                ranges[f].end = i + 1;
                times.push(t.round() as i64);
            }
            // A file with no trigger still starts where the events stand.
            let mut at = 0;
            for r in &mut ranges {
                if r.is_empty() {
                    *r = at..at;
                }
                at = r.end;
            }
            (times, ranges)
        }
    }
}

/// Simulate the events of file `file` of a run with exactly
/// `events_per_file` events per file ([`FileClosing::Count`]).
pub fn simulate_file(
    opts: &SimOptions,
    cond: &Conditions,
    file: u32,
    times: &[i64],
) -> (Vec<OwnedEvent>, Vec<EventTruth>) {
    let e = u64::from(opts.events_per_file);
    let base = u64::from(file) * e;
    simulate_events(opts, cond, None, base..base + e, times)
}

/// Simulate events `range` of a run (index = event id = position in `times`).
fn simulate_events(
    opts: &SimOptions,
    cond: &Conditions,
    truth: Option<&EffectiveTruth>,
    range: Range<u64>,
    times: &[i64],
) -> (Vec<OwnedEvent>, Vec<EventTruth>) {
    range
        .into_par_iter()
        .map_init(Scratch::default, |scratch, idx| {
            simulate_event_with_truth(
                &cond.detector,
                &cond.sim,
                truth.map(|t| t as &dyn response::DetectorResponse),
                EventSpec {
                    source: opts.source,
                    seed: opts.seed,
                    run: opts.run,
                    event_index: idx,
                    event_id: idx,
                    trigger_time_ns: times[idx as usize],
                },
                scratch,
            )
        })
        .unzip()
}

/// Run the simulator with exactly `events_per_file` events per file.
///
/// # Errors
/// When a file cannot be written.
pub fn run(opts: &SimOptions, cond: &Conditions) -> Result<SimReport, RawError> {
    run_with(opts, cond, FileClosing::Count)
}

/// Run the simulator, closing files as `closing` says.
///
/// # Errors
/// When a file cannot be written.
pub fn run_with(
    opts: &SimOptions,
    cond: &Conditions,
    closing: FileClosing,
) -> Result<SimReport, RawError> {
    run_files(opts, cond, cond, None, closing, 0..opts.files)
}

/// Run the simulator on the detector `truth` describes (None: the nominal
/// detector of `cond`, as [`run_with`]). The raw files carry `cond`'s tag,
/// the conditions the reconstruction is told; the physics is the truth's
/// base with the run's deviations, written first to
/// `{out}/{run:06}/{run:06}.detector-truth.json`.
///
/// # Errors
/// When the truth cannot be resolved for the run, or a file cannot be written.
pub fn run_with_truth(
    opts: &SimOptions,
    cond: &Conditions,
    truth: Option<&DetectorTruth>,
    closing: FileClosing,
) -> Result<SimReport, SimError> {
    run_selected(opts, cond, truth, None, closing, 0..opts.files)
}

/// As [`run_with_truth`], the detector as `truth` gives it at run
/// `truth_run` (None: at the simulated run): a simulation production
/// numbered apart from detector runs simulates the detector of a real one.
/// The truth written beside the data is that detector, for the simulated run.
///
/// # Errors
/// As [`run_with_truth`].
pub fn run_with_truth_at(
    opts: &SimOptions,
    cond: &Conditions,
    truth: Option<&DetectorTruth>,
    truth_run: Option<u32>,
    closing: FileClosing,
) -> Result<SimReport, SimError> {
    run_selected(opts, cond, truth, truth_run, closing, 0..opts.files)
}

/// Write only file `index` of the run `opts` describes (`index <
/// opts.files`): byte for byte the file a whole run writes at that place
/// (its events and trigger times come from the run's streams, whatever
/// else is written). One element of a simulation campaign's job array;
/// `truth_run` as in [`run_with_truth_at`].
///
/// # Errors
/// As [`run_with_truth`].
///
/// # Panics
/// When `index >= opts.files` (the caller checks its input).
pub fn run_one_file(
    opts: &SimOptions,
    cond: &Conditions,
    truth: Option<&DetectorTruth>,
    truth_run: Option<u32>,
    closing: FileClosing,
    index: u32,
) -> Result<SimReport, SimError> {
    assert!(
        index < opts.files,
        "file {index} of a run of {}",
        opts.files
    );
    run_selected(opts, cond, truth, truth_run, closing, index..index + 1)
}

/// The files `which` of the run (indices into its `opts.files` files).
fn run_selected(
    opts: &SimOptions,
    cond: &Conditions,
    truth: Option<&DetectorTruth>,
    truth_run: Option<u32>,
    closing: FileClosing,
    which: Range<u32>,
) -> Result<SimReport, SimError> {
    let Some(truth) = truth else {
        return Ok(run_files(opts, cond, cond, None, closing, which)?);
    };
    let mut detector = truth.simulated_detector(truth_run.unwrap_or(opts.run))?;
    detector.truth.run = opts.run;
    let path = detector.truth.write_for_run(&opts.out)?;
    tracing::info!(file = %path.display(), truth = %truth.name, "detector truth written");
    Ok(run_files(
        opts,
        cond,
        &detector.conditions,
        Some(&detector.truth),
        closing,
        which,
    )?)
}

/// Simulate files `which` of the run, `physics` (with `truth`'s extras),
/// into files that declare `declared`.
fn run_files(
    opts: &SimOptions,
    declared: &Conditions,
    physics: &Conditions,
    truth: Option<&EffectiveTruth>,
    closing: FileClosing,
    which: Range<u32>,
) -> Result<SimReport, RawError> {
    let start = Instant::now();
    let (times, ranges) = trigger_times(opts, &physics.detector, &physics.sim, closing);
    let d = &physics.detector.params.daq;
    let header_for = |seq| RawHeader {
        run: opts.run,
        sequence: seq,
        sample_period_ns: d.sample_ns,
        conditions_tag: declared.tag.clone(),
        n_channels: physics.detector.n_channels() as u32,
        window_samples: ((d.window_before_ns + d.window_after_ns) / d.sample_ns).round() as u32,
    };
    let bar = indicatif::ProgressBar::new(u64::from(which.len() as u32));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("run {}", opts.run));
    let mut report = SimReport::default();
    for f in which {
        let file_start = Instant::now();
        let seq = opts.first_sequence + f;
        let (events, truths) =
            simulate_events(opts, physics, truth, ranges[f as usize].clone(), &times);
        let path = raw::raw_file_path(&opts.out, opts.run, seq);
        // Truth first: when the raw file appears, its truth is already there.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| RawError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        truth::write_truth_file(&raw::truth_path_for(&path), &truths)?;
        let stats = raw::write_raw_file(&path, &header_for(seq), &events)?;
        report.events += stats.events as u64;
        report.bytes += stats.bytes;
        report.sample_bytes += 2 * stats.samples as u64;
        tracing::info!(file = %path.display(), events = stats.events, bytes = stats.bytes, "raw file written");
        report.files.push(path);
        bar.inc(1);
        if let Some(rate) = opts.live_rate_hz {
            let due = Duration::from_secs_f64(f64::from(opts.events_per_file) / rate.max(1e-9));
            if let Some(rest) = due.checked_sub(file_start.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }
    bar.finish_and_clear();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Check a sim output directory is writable before starting (clear early error).
///
/// # Errors
/// When the directory cannot be created.
pub fn prepare_out(out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out)
}
