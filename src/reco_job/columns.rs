//! From reconstructed events to RQ columns, and the unit loop that streams
//! events from the raw file through the reconstruction core in batches.

use std::ops::Range;
use std::time::Instant;

use rayon::ThreadPool;
use tpcflow_reco::{
    reconstruct_batch, reconstruct_event_with, DetectorModel, EventRecon, EventView, RecoConfig,
    RecoScratch,
};

use crate::raw::prefetch::{Pending, Prefetcher};
use crate::raw::RawFile;
use crate::rq::{Column, ColumnData, RqError, RqFile, RqWriter};

/// The RQ columns of a range of events.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitOutput {
    /// `/events` columns.
    pub events: Vec<Column>,
    /// `/pulses` columns.
    pub pulses: Vec<Column>,
    /// `/channels` columns.
    pub channels: Vec<Column>,
    /// Events.
    pub n_events: u64,
    /// Pulses.
    pub n_pulses: u64,
    /// Raw sample bytes read.
    pub bytes_read: u64,
}

/// RQ datasets stored without shuffle + deflate: the full-precision float
/// columns that deflate shrinks by less than 1.5x (shuffled, zlib level 1, on
/// mixed events: the float pulse quantities and channel areas 1.19-1.46x, the
/// event positions, times and corrected areas 1.06-1.39x). Their deflate cost
/// a reco rank more than what it saved (`channels/area_phd` alone was a third
/// of the compression time; the small event columns pay deflate's fixed cost
/// per chunk). RQ files grow by 22-31 % (measured on 130 MB raw files of mixed
/// events; RQ files are ~2 % of raw), part of it the zero padding of a long
/// plain column's last chunk, stored as it is; every other column (indices,
/// counts, codes, integer times, areas of the main S1/S2 and fractions:
/// 1.9-84x) keeps shuffle + deflate.
pub const PLAIN_COLUMNS: &[&str] = &[
    "channels/area_phd",
    "pulses/center_ns",
    "pulses/area_phd",
    "pulses/area_top_phd",
    "pulses/area_bottom_phd",
    "pulses/height_phd",
    "pulses/rise_time_ns",
    "pulses/width_10_ns",
    "pulses/width_50_ns",
    "pulses/width_90_ns",
    "events/s1_time_ns",
    "events/s2_time_ns",
    "events/drift_time_ns",
    "events/x_mm",
    "events/y_mm",
    "events/z_mm",
    "events/sigma_x_mm",
    "events/sigma_y_mm",
    "events/xy_gof",
    "events/s1c_phd",
    "events/s2c_phd",
    "events/energy_kev",
    "events/total_area_phd",
];

macro_rules! columns {
    ($builders:ident; $($name:ident : $t:ty => $variant:ident, $units:literal, $doc:literal;)*) => {
        /// Column builders, one vector per quantity.
        #[derive(Debug, Default)]
        struct $builders { $($name: Vec<$t>,)* }
        impl $builders {
            fn with_capacity(n: usize) -> Self {
                Self { $($name: Vec::with_capacity(n),)* }
            }
            fn into_columns(self) -> Vec<Column> {
                vec![$(Column::new(stringify!($name), $units, $doc, ColumnData::$variant(self.$name)),)*]
            }
        }
    };
}

columns! {
    EventBuilders;
    event_id: u64 => U64, "1", "event number (unique within the run)";
    trigger_time_ns: i64 => I64, "ns", "S2 trigger time since the run start";
    first_pulse: u64 => U64, "1", "row of the event's first pulse in /pulses";
    n_pulses: u32 => U32, "1", "pulses of the event";
    n_pods: u32 => U32, "1", "pods (digitised records) of the event";
    n_s1: u32 => U32, "1", "pulses classified S1";
    n_s2: u32 => U32, "1", "pulses classified S2";
    n_se: u32 => U32, "1", "pulses classified single electron";
    n_spe: u32 => U32, "1", "pulses classified single phe";
    interaction: u8 => U8, "1", "0 no signal, 1 single scatter, 2 multiple scatter, 3 S2 only, 4 S1 only, 5 other";
    main_s1: i32 => I32, "1", "pulse index (within the event) of the main S1, -1 if none";
    main_s2: i32 => I32, "1", "pulse index (within the event) of the main S2, -1 if none";
    second_s2: i32 => I32, "1", "pulse index of the second-largest S2, -1 if none";
    n_significant_s2: u32 => U32, "1", "S2s above the multiple-scatter fraction of the main S2";
    s1_area_phd: f64 => F64, "phd", "main S1 area";
    s2_area_phd: f64 => F64, "phd", "main S2 area";
    second_s2_area_phd: f64 => F64, "phd", "second S2 area";
    s1_aft: f64 => F64, "1", "main S1 area fraction top";
    s2_aft: f64 => F64, "1", "main S2 area fraction top";
    s1_time_ns: f64 => F64, "ns", "main S1 time in the event window";
    s2_time_ns: f64 => F64, "ns", "main S2 time in the event window";
    drift_time_ns: f64 => F64, "ns", "main S2 time minus main S1 time";
    x_mm: f64 => F64, "mm", "x from the S2 top-array likelihood fit";
    y_mm: f64 => F64, "mm", "y from the S2 top-array likelihood fit";
    z_mm: f64 => F64, "mm", "z from the drift time (cathode at 0)";
    sigma_x_mm: f64 => F64, "mm", "uncertainty of x";
    sigma_y_mm: f64 => F64, "mm", "uncertainty of y";
    xy_gof: f64 => F64, "1", "xy fit goodness of fit (deviance per degree of freedom)";
    xy_flag: u8 => U8, "1", "xy fit: 0 fitted, 1 no S2 (not tried), 2 failed (NaN position, no S1c/S2c/energy)";
    s1c_phd: f64 => F64, "phd", "S1 corrected for light collection";
    s2c_phd: f64 => F64, "phd", "S2 corrected for electron lifetime and xy light collection";
    energy_kev: f64 => F64, "keV", "W (S1c/g1 + S2c/g2)";
    total_area_phd: f64 => F64, "phd", "area of all pulses";
}

columns! {
        PulseBuilders;
        event_id: u64 => U64, "1", "event number of the pulse";
        start_ns: i64 => I64, "ns", "first sample with signal, from the window start";
        end_ns: i64 => I64, "ns", "one past the last sample with signal";
        peak_ns: i64 => I64, "ns", "highest sample";
        center_ns: f64 => F64, "ns", "area-weighted centre";
        area_phd: f32 => F32, "phd", "total area";
        area_top_phd: f32 => F32, "phd", "area on the top array";
        area_bottom_phd: f32 => F32, "phd", "area on the bottom array";
        area_fraction_top: f32 => F32, "1", "area fraction top";
        height_phd: f32 => F32, "phd/sample", "highest sample of the summed waveform";
        rise_time_ns: f32 => F32, "ns", "time from 10% to 50% of the area";
        width_10_ns: f32 => F32, "ns", "width of the central 10% of the area";
        width_50_ns: f32 => F32, "ns", "width of the central 50% of the area";
        width_90_ns: f32 => F32, "ns", "width of the central 90% of the area";
        n_channels: u32 => U32, "1", "channels contributing area";
        coincidence: u32 => U32, "1", "channels with a hit near the peak";
        n_hits: u32 => U32, "1", "hits in the pulse";
        kind: u8 => U8, "1", "0 other, 1 S1, 2 S2, 3 single electron, 4 single phe";
        first_channel: u64 => U64, "1", "row of the pulse's first entry in /channels";
        n_channel_areas: u32 => U32, "1", "entries of the pulse in /channels";
}

columns! {
        ChannelBuilders;
        channel: u16 => U16, "1", "PMT channel (0-252 top, 253-493 bottom)";
        area_phd: f32 => F32, "phd", "area of the pulse on this channel";
}

/// Accumulates reconstructed events into columns.
#[derive(Debug, Default)]
pub struct RqBuilder {
    ev: EventBuilders,
    pu: PulseBuilders,
    ch: ChannelBuilders,
}

impl RqBuilder {
    /// A builder with room for `[events, pulses, channel areas]` rows (a
    /// batch's columns are built without growing when sized from the last).
    pub fn with_capacity(rows: [usize; 3]) -> Self {
        Self {
            ev: EventBuilders::with_capacity(rows[0]),
            pu: PulseBuilders::with_capacity(rows[1]),
            ch: ChannelBuilders::with_capacity(rows[2]),
        }
    }

    /// Rows so far: `[events, pulses, channel areas]`.
    pub fn rows(&self) -> [usize; 3] {
        [
            self.ev.event_id.len(),
            self.pu.event_id.len(),
            self.ch.channel.len(),
        ]
    }

    /// Add one event.
    pub fn push(&mut self, r: &EventRecon) {
        let e = &r.event;
        let b = &mut self.ev;
        b.event_id.push(e.event_id);
        b.trigger_time_ns.push(e.trigger_time_ns);
        b.first_pulse.push(self.pu.event_id.len() as u64);
        b.n_pulses.push(r.pulses.len() as u32);
        b.n_pods.push(e.n_pods);
        b.n_s1.push(e.n_s1);
        b.n_s2.push(e.n_s2);
        b.n_se.push(e.n_se);
        b.n_spe.push(e.n_spe);
        b.interaction.push(e.kind as u8);
        b.main_s1.push(e.main_s1);
        b.main_s2.push(e.main_s2);
        b.second_s2.push(e.second_s2);
        b.n_significant_s2.push(e.n_significant_s2);
        b.s1_area_phd.push(e.s1_area_phd);
        b.s2_area_phd.push(e.s2_area_phd);
        b.second_s2_area_phd.push(e.second_s2_area_phd);
        b.s1_aft.push(e.s1_aft);
        b.s2_aft.push(e.s2_aft);
        b.s1_time_ns.push(e.s1_time_ns);
        b.s2_time_ns.push(e.s2_time_ns);
        b.drift_time_ns.push(e.drift_time_ns);
        b.x_mm.push(e.x_mm);
        b.y_mm.push(e.y_mm);
        b.z_mm.push(e.z_mm);
        b.sigma_x_mm.push(e.sigma_x_mm);
        b.sigma_y_mm.push(e.sigma_y_mm);
        b.xy_gof.push(e.xy_gof);
        b.xy_flag.push(e.xy_flag);
        b.s1c_phd.push(e.s1c_phd);
        b.s2c_phd.push(e.s2c_phd);
        b.energy_kev.push(e.energy_kev);
        b.total_area_phd.push(e.total_area_phd);
        for (i, p) in r.pulses.iter().enumerate() {
            let q = &mut self.pu;
            q.event_id.push(e.event_id);
            q.start_ns.push(p.start_ns);
            q.end_ns.push(p.end_ns);
            q.peak_ns.push(p.peak_ns);
            q.center_ns.push(p.center_ns);
            q.area_phd.push(p.area_phd);
            q.area_top_phd.push(p.area_top_phd);
            q.area_bottom_phd.push(p.area_bottom_phd);
            q.area_fraction_top.push(p.area_fraction_top);
            q.height_phd.push(p.height_phd);
            q.rise_time_ns.push(p.rise_time_ns);
            q.width_10_ns.push(p.width_10_ns);
            q.width_50_ns.push(p.width_50_ns);
            q.width_90_ns.push(p.width_90_ns);
            q.n_channels.push(p.n_channels);
            q.coincidence.push(p.coincidence);
            q.n_hits.push(p.n_hits);
            q.kind.push(p.kind.code());
            q.first_channel.push(self.ch.channel.len() as u64);
            let areas = r.pulse_channel_areas(i);
            q.n_channel_areas.push(areas.len() as u32);
            for a in areas {
                self.ch.channel.push(a.channel);
                self.ch.area_phd.push(a.area_phd);
            }
        }
    }

    /// The columns built so far.
    pub fn finish(self, bytes_read: u64) -> UnitOutput {
        let n_events = self.ev.event_id.len() as u64;
        let n_pulses = self.pu.event_id.len() as u64;
        UnitOutput {
            events: self.ev.into_columns(),
            pulses: self.pu.into_columns(),
            channels: self.ch.into_columns(),
            n_events,
            n_pulses,
            bytes_read,
        }
    }
}

fn offset_column(cols: &mut [Column], name: &str, by: u64) {
    if let Some(ColumnData::U64(v)) = cols
        .iter_mut()
        .find(|c| c.name == name)
        .map(|c| &mut c.data)
    {
        for x in v {
            *x += by;
        }
    }
}

fn column_len(cols: &[Column]) -> u64 {
    cols.first().map_or(0, |c| c.data.len() as u64)
}

impl UnitOutput {
    /// A part file read back (columns in file order, sorted by name).
    pub fn from_rq(f: RqFile, bytes_read: u64) -> Self {
        let n_events = column_len(&f.events);
        let n_pulses = column_len(&f.pulses);
        Self {
            events: f.events,
            pulses: f.pulses,
            channels: f.channels,
            n_events,
            n_pulses,
            bytes_read,
        }
    }

    /// Append the next part of the same file (index columns are re-based).
    ///
    /// # Panics
    /// When the parts have different column sets (they come from one writer).
    pub fn append(&mut self, mut next: UnitOutput) {
        offset_column(&mut next.events, "first_pulse", self.n_pulses);
        offset_column(
            &mut next.pulses,
            "first_channel",
            column_len(&self.channels),
        );
        for (groups, more) in [
            (&mut self.events, next.events),
            (&mut self.pulses, next.pulses),
            (&mut self.channels, next.channels),
        ] {
            sort_by_name(groups);
            let mut more = more;
            sort_by_name(&mut more);
            assert_eq!(
                groups.len(),
                more.len(),
                "parts of one file share their columns"
            );
            for (a, b) in groups.iter_mut().zip(&more) {
                assert_eq!(a.name, b.name, "parts of one file share their columns");
                a.data.extend(&b.data);
            }
        }
        self.n_events += next.n_events;
        self.n_pulses += next.n_pulses;
        self.bytes_read += next.bytes_read;
    }
}

fn sort_by_name(cols: &mut [Column]) {
    cols.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Append a unit (or batch) to an RQ file being written, re-basing its index
/// columns (`first_pulse`, `first_channel`) on the rows already there.
///
/// # Errors
/// [`RqError`] from the writer.
pub fn append_to(w: &mut RqWriter, mut out: UnitOutput) -> Result<(), RqError> {
    let [_, pulses, channels] = w.rows();
    offset_column(&mut out.events, "first_pulse", pulses);
    offset_column(&mut out.pulses, "first_channel", channels);
    w.append(&out.events, &out.pulses, &out.channels)
}

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

thread_local! {
    /// A thread's pod window buffer, kept between [`stream_range`] calls.
    static POD_BUFFER: std::cell::Cell<Vec<tpcflow_reco::event::PodRecord>> =
        const { std::cell::Cell::new(Vec::new()) };
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
/// too).
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
    between: &mut dyn FnMut(usize),
    sink: &mut dyn FnMut(UnitOutput) -> anyhow::Result<()>,
) -> Result<StreamCounts, StreamError> {
    let mut counts = StreamCounts::default();
    let mut start = range.start;
    // Pods are read in windows of several batches (fewer, larger HDF5 reads);
    // the window bounds the memory they take.
    let batch = batch.max(1);
    // The pod buffer outlives the range: each unit of a rank reuses the
    // previous unit's (a fresh 10 MB buffer per file costs its page faults).
    let mut pod_buffer = POD_BUFFER.take();
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
        let buffer = std::mem::take(&mut pod_buffer);
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
            let bytes = views.iter().map(|v| 2 * v.n_samples()).sum::<u64>();
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
                let (mut reco, mut build) = (0.0, 0.0);
                let mut t0 = t;
                for view in &views {
                    let r = reconstruct_event_with(view, model, cfg, &mut scratch);
                    let t1 = Instant::now();
                    builder.push(&r.map_err(|e| failed(view, e))?);
                    let t2 = Instant::now();
                    reco += (t1 - t0).as_secs_f64();
                    build += (t2 - t1).as_secs_f64();
                    t0 = t2;
                }
                counts.reco_seconds += reco;
                counts.write_seconds += build;
                Instant::now()
            } else {
                let results = pool.install(|| reconstruct_batch(&views, model, cfg));
                let t_built = Instant::now();
                counts.reco_seconds += (t_built - t).as_secs_f64();
                for (view, r) in views.iter().zip(results) {
                    builder.push(&r.map_err(|e| failed(view, e))?);
                }
                t_built
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
        pod_buffer = buffer;
        if let (Some(b), Some(p)) = (direct, prefetcher) {
            p.pool().give(b);
        }
    }
    POD_BUFFER.set(pod_buffer);
    Ok(counts)
}
