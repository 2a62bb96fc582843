//! The unit loop of a reco rank: events `range` of a raw file read a window
//! of pods at a time (the next windows read ahead by the rank's prefetch
//! thread, cold ones directly from disk), reconstructed a batch at a time on
//! the rank's pool, and each batch's RQ columns handed to a sink.

use std::ops::Range;
use std::time::Instant;

use rayon::ThreadPool;
use tpcflow_reco::{
    reconstruct_batch, reconstruct_event_with, DetectorModel, EventView, PodRecord, RecoConfig,
    RecoScratch,
};

use super::columns::{RqBuilder, UnitOutput};
use crate::raw::prefetch::{Pending, Prefetcher};
use crate::raw::RawFile;

/// The checksum of an input taken over its memory map as its events are
/// reconstructed (see [`stream_range`]).
pub type MapDigest = crate::adler::InOrderDigest<std::sync::Arc<memmap2::Mmap>>;

/// Events whose pods are read at once when streaming (~10 MB of pod index
/// for mixed events).
pub const POD_WINDOW_EVENTS: usize = 256;

/// Events of a window of a cold range, read directly from disk
/// (`crate::raw::direct`): smaller windows, more of them ahead
/// ([`COLD_WINDOWS_AHEAD`]), so the rank waits for a quarter of a window's
/// read at most, not for a whole one (its reconstruction cannot start on a
/// direct read before the read is complete, as it can on a mapped one).
pub const COLD_WINDOW_EVENTS: usize = POD_WINDOW_EVENTS / 4;

/// Windows of a cold range being read while one is reconstructed.
pub const COLD_WINDOWS_AHEAD: usize = 3;

/// Events per window for batches of `batch` events (a whole number of
/// batches), of a cold range or not.
pub fn window_events(batch: usize, cold: bool) -> usize {
    let batch = batch.max(1);
    let events = if cold {
        COLD_WINDOW_EVENTS
    } else {
        POD_WINDOW_EVENTS
    };
    batch * events.div_ceil(batch)
}

/// Why streaming a range stopped.
#[derive(Debug)]
pub enum StreamError {
    /// An event could not be reconstructed (the input's fault): names file and event.
    Event(String),
    /// The sink failed (the output's fault).
    Sink(anyhow::Error),
}

/// A unit's reading ahead: the rank's prefetch thread, and the unit's first
/// window when it was handed to it already (when the unit was opened ahead,
/// near the end of the one before).
#[derive(Debug)]
pub struct ReadAhead<'a> {
    /// The rank's prefetch thread.
    pub prefetcher: &'a Prefetcher,
    /// The first window, when it was queued to be fetched.
    pub first_window: Option<Pending>,
    /// Whether the range is cold ([`RawFile::is_cold`]), when decided
    /// already (by whoever queued the first window); decided here otherwise.
    pub cold: Option<bool>,
}

/// What a streamed range held, and where its time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamCounts {
    /// Events.
    pub events: u64,
    /// Pulses.
    pub pulses: u64,
    /// Raw sample bytes read.
    pub bytes_read: u64,
    /// Of those, bytes read directly from disk (cold windows; see
    /// `crate::raw::direct`) rather than through the memory map.
    pub direct_bytes: u64,
    /// Reading and validating pods [s].
    pub read_seconds: f64,
    /// Reconstructing (the reco core on the pool) [s].
    pub reco_seconds: f64,
    /// Building columns and handing them to the sink [s].
    pub write_seconds: f64,
}

/// Reconstruct events `range` of `raw` in batches of `batch` events on
/// `pool` and hand each batch's columns to `sink` (index columns local to the
/// batch), calling `between` with the events left after each batch (rank 0
/// updates its progress bar there; near the end a rank asks for its next
/// unit). With `read_ahead` each window's successor is read ahead while the
/// window is reconstructed. Memory holds one batch, whatever the
/// range (with a file opened by [`RawFile::open_streaming`], its pod window
/// too). `pod_buffer` holds the pod windows; the caller keeps it from one
/// range to the next (each unit of a rank reuses the previous unit's: a
/// fresh 10 MB buffer per file costs its page faults); it is left empty when
/// the range fails.
///
/// With `digest` (the input's checksum over its map), the file is hashed in
/// order up to each event's last sample as the events are reconstructed: on
/// a one-thread pool right after each event, while its samples are in this
/// core's cache; on a larger pool after each batch. A window read directly
/// is hashed from its buffer, not from the map (whose pages would be read
/// from disk again). The caller finishes it (which hashes whatever no event
/// covered).
///
/// # Errors
/// The first reconstruction error, naming file and event, or the sink's.
#[allow(clippy::too_many_arguments)]
pub fn stream_range(
    raw: &RawFile,
    range: Range<usize>,
    model: &DetectorModel,
    cfg: &RecoConfig,
    batch: usize,
    pool: &ThreadPool,
    read_ahead: Option<ReadAhead<'_>>,
    pod_buffer: &mut Vec<PodRecord>,
    between: &mut dyn FnMut(usize),
    sink: &mut dyn FnMut(UnitOutput) -> anyhow::Result<()>,
    mut digest: Option<&mut MapDigest>,
) -> Result<StreamCounts, StreamError> {
    let mut counts = StreamCounts::default();
    let mut start = range.start;
    // Pods are read in windows of several batches (fewer, larger HDF5 reads);
    // the window bounds the memory they take.
    let batch = batch.max(1);
    // A one-thread pool: events are reconstructed on this thread, as the core
    // benchmark does (no hand-over to the pool's thread and back per batch,
    // one scratch for the whole range); results are the same either way.
    let serial = pool.current_num_threads() == 1;
    let mut scratch = RecoScratch::default();
    // Rows of the last batch, an eighth more: the next batch's capacity.
    let mut rows_hint = [0usize; 3];
    let mut first = true;
    // Windows queued to be fetched, by first event, in order.
    let mut pending: std::collections::VecDeque<(usize, Pending)> = Default::default();
    let (prefetcher, cold) = match read_ahead {
        Some(r) => {
            if let Some(p) = r.first_window {
                pending.push_back((range.start, p));
            }
            let cold = r.cold.unwrap_or_else(|| raw.is_cold(range.clone()));
            (Some(r.prefetcher), cold)
        }
        None => (None, false),
    };
    let window = window_events(batch, cold);
    let ahead = if cold { COLD_WINDOWS_AHEAD } else { 1 };
    // The first event not fetched yet.
    let mut fetched_to = pending
        .back()
        .map_or(range.start, |_| (range.start + window).min(range.end));
    while start < range.end {
        let window_end = (start + window).min(range.end);
        // The first window, unless it was handed to the prefetch thread when
        // the unit was opened ahead, is handed to it now: the reconstruction
        // starts on its first events while the thread reads the rest.
        let behind = std::mem::take(&mut first)
            && prefetcher.is_some_and(|p| {
                pending.is_empty()
                    && raw
                        .readahead(start..window_end)
                        .is_some_and(|w| p.submit(w))
            });
        // The next window (cold: the next few) is fetched while this one is
        // reconstructed: read ahead into the page cache, or, when cold, into
        // a buffer.
        fetched_to = fetched_to.max(window_end);
        if let Some(p) = prefetcher {
            while fetched_to < range.end && fetched_to < window_end + ahead * window {
                let next = fetched_to..range.end.min(fetched_to + window);
                fetched_to = next.end;
                let Some(f) = raw
                    .readahead_for(next.clone(), cold)
                    .and_then(|w| p.fetch(w))
                else {
                    break;
                };
                pending.push_back((next.start, f));
            }
        }
        // The window's pods: borrowed, or read and validated now when the file
        // was opened for streaming (a bad pod fails the input, naming it).
        let t = Instant::now();
        let buffer = std::mem::take(pod_buffer);
        let fetched = match pending.front() {
            Some((s, _)) if *s == start => pending.pop_front().map(|(_, f)| f.wait()),
            _ => None,
        };
        let pods = match (fetched, prefetcher) {
            (Some(f), Some(p)) => raw.pod_batch_fetched(start..window_end, buffer, f, p.pool()),
            _ if behind => raw.pod_batch_behind_readahead(start..window_end, buffer),
            _ => raw.pod_batch_reusing(start..window_end, buffer),
        }
        .map_err(|e| StreamError::Event(e.to_string()))?;
        counts.read_seconds += t.elapsed().as_secs_f64();
        counts.direct_bytes += pods.direct_bytes();
        while start < window_end {
            let end = (start + batch).min(window_end);
            let t = Instant::now();
            let views: Vec<EventView<'_>> = (start..end).map(|i| raw.event_in(&pods, i)).collect();
            // The batch's sample bytes: on a one-thread pool counted after
            // each event, whose pods are then in cache (counted first, they
            // are one more pass over the window's pods from memory).
            let mut bytes = 0u64;
            let failed = |view: &EventView<'_>, e| {
                StreamError::Event(format!(
                    "{}: event {}: {e}",
                    raw.path().display(),
                    view.event_id
                ))
            };
            let mut builder = RqBuilder::with_capacity(rows_hint);
            let t_built = if serial {
                // Each event's result goes into the columns and is dropped
                // before the next event (as in the core benchmark: its
                // buffers stay in cache and are reused by the allocator).
                let (mut reco, mut hash, mut build) = (0.0, 0.0, 0.0);
                let mut t0 = t;
                for view in &views {
                    let r = reconstruct_event_with(view, model, cfg, &mut scratch);
                    let t1 = Instant::now();
                    bytes += 2 * view.n_samples();
                    let mut th = t1;
                    if let Some(d) = digest.as_deref_mut() {
                        if hash_through(raw, &pods, view, d) {
                            th = Instant::now();
                        }
                    }
                    builder.push(&r.map_err(|e| failed(view, e))?);
                    let t2 = Instant::now();
                    reco += (t1 - t0).as_secs_f64();
                    hash += (th - t1).as_secs_f64();
                    build += (t2 - th).as_secs_f64();
                    t0 = t2;
                }
                counts.reco_seconds += reco;
                counts.read_seconds += hash;
                counts.write_seconds += build;
                Instant::now()
            } else {
                bytes = views.iter().map(|v| 2 * v.n_samples()).sum::<u64>();
                let results = pool.install(|| reconstruct_batch(&views, model, cfg));
                let t_built = Instant::now();
                counts.reco_seconds += (t_built - t).as_secs_f64();
                // The batch's bytes are hashed here, on this thread, while
                // the window is held (a cold window's pages are not in the
                // page cache: hashed later from the map, they would be read
                // from disk again).
                if let Some(d) = digest.as_deref_mut() {
                    for view in &views {
                        hash_through(raw, &pods, view, d);
                    }
                    counts.read_seconds += t_built.elapsed().as_secs_f64();
                }
                let t_push = Instant::now();
                for (view, r) in views.iter().zip(results) {
                    builder.push(&r.map_err(|e| failed(view, e))?);
                }
                t_push
            };
            rows_hint = builder.rows().map(|n| n + n / 8);
            let out = builder.finish(bytes);
            counts.events += out.n_events;
            counts.pulses += out.n_pulses;
            counts.bytes_read += bytes;
            sink(out).map_err(StreamError::Sink)?;
            counts.write_seconds += t_built.elapsed().as_secs_f64();
            between(range.end - end);
            start = end;
        }
        let (buffer, direct) = pods.into_parts();
        *pod_buffer = buffer;
        if let (Some(b), Some(p)) = (direct, prefetcher) {
            p.pool().give(b);
        }
    }
    Ok(counts)
}

/// Advance `digest` to the end of `view`'s samples, taking a directly read
/// window's bytes from its buffer; false when the event gives no offset (no
/// pods, or a file read through HDF5).
fn hash_through(
    raw: &RawFile,
    pods: &crate::raw::PodBatch<'_>,
    view: &EventView<'_>,
    digest: &mut MapDigest,
) -> bool {
    match raw.samples_in_file(pods, view) {
        Some(s) => {
            match s.held {
                Some((at, held)) => digest.advance_held(s.end, at, held),
                None => digest.advance_to(s.end),
            }
            true
        }
        None => false,
    }
}
