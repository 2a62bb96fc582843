//! What the event display returns (and exports as JSON): the header, the RQ
//! and raw sources, pulses, hit maps and PMT positions, plus the helpers that
//! turn RQ columns into values.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::waveform::{ChannelTrace, PodSpan, PulseWaveform, Summed};
use crate::catalog::Site;
use crate::rq::ColumnData;

/// The header the display shows on top.
#[derive(Debug, Clone, Serialize)]
pub struct EventHeader {
    /// Run number.
    pub run: u32,
    /// Event id.
    pub event_id: u64,
    /// Trigger time since the run start [ns].
    pub trigger_time_ns: i64,
    /// `single scatter`, `multiple scatter`, `S2 only`, ...
    pub interaction: String,
    /// Interaction code of the RQ file.
    pub interaction_code: i64,
    /// Main S1 pulse index within the event (None if none).
    pub s1_pulse: Option<i64>,
    /// Main and second S2 pulse indices.
    pub s2_pulses: Vec<i64>,
    /// Drift time [ns].
    pub drift_time_ns: f64,
    /// Main S1 area [phd].
    pub s1_area_phd: f64,
    /// Main S2 area [phd].
    pub s2_area_phd: f64,
    /// Corrected S1 [phd].
    pub s1c_phd: f64,
    /// Corrected S2 [phd].
    pub s2c_phd: f64,
    /// x [mm].
    pub x_mm: f64,
    /// y [mm].
    pub y_mm: f64,
    /// z [mm].
    pub z_mm: f64,
    /// Energy [keV].
    pub energy_kev: f64,
    /// Software version that wrote the RQ file.
    pub software_version: String,
    /// Lineage hash of the RQ file.
    pub lineage_hash: String,
}

/// The RQ file the event came from.
#[derive(Debug, Clone, Serialize)]
pub struct RqSource {
    /// Path as catalogued.
    pub path: String,
    /// Raw file it was made from.
    pub input_file: String,
    /// Software version.
    pub software_version: String,
    /// Lineage hash.
    pub lineage_hash: String,
    /// Lineage (parsed JSON).
    pub lineage: Value,
    /// Conditions tag.
    pub conditions_tag: String,
    /// SHA-256 of the conditions' content (from the lineage), when recorded.
    pub conditions_sha256: Option<String>,
    /// Row of the event in the file.
    pub event_index: usize,
    /// Events in the file.
    pub events_in_file: usize,
}

/// The raw file the waveforms came from.
#[derive(Debug, Clone, Serialize)]
pub struct RawSource {
    /// Site of the replica read.
    pub site: Site,
    /// Raw file name.
    pub file: String,
    /// Sample period [ns].
    pub sample_ns: f64,
    /// Event window [ns].
    pub window_ns: f64,
    /// Range of the event's pods [ns].
    pub pods_ns: (f64, f64),
    /// Range shown [ns].
    pub range_ns: (f64, f64),
}

/// PMT areas of the selected pulse, one per channel of each array.
#[derive(Debug, Clone, Serialize)]
pub struct HitMap {
    /// Pulse index within the event.
    pub pulse: usize,
    /// Top array areas [phd], by channel.
    pub top: Vec<f32>,
    /// Bottom array areas [phd], by channel - n_top.
    pub bottom: Vec<f32>,
    /// Smallest positive area (adaptive colour scale) [phd].
    pub min_phd: f32,
    /// Largest area (adaptive colour scale) [phd].
    pub max_phd: f32,
}

/// Where the PMTs are.
#[derive(Debug, Clone, Serialize)]
pub struct PmtLayout {
    /// Conditions tag of the map.
    pub conditions_tag: String,
    /// Top array channels (0..n_top).
    pub n_top: usize,
    /// x of each channel [mm].
    pub x: Vec<f32>,
    /// y of each channel [mm].
    pub y: Vec<f32>,
    /// PMT pitch [mm].
    pub pitch_mm: f64,
    /// TPC radius [mm].
    pub radius_mm: f64,
}

/// Everything the event display shows (and exports).
#[derive(Debug, Clone, Serialize)]
pub struct EventDisplay {
    /// The header.
    pub header: EventHeader,
    /// Previous event id of the run.
    pub previous_event: Option<u64>,
    /// Next event id of the run.
    pub next_event: Option<u64>,
    /// Events of the run in its RQ files.
    pub events_in_run: usize,
    /// The RQ file.
    pub rq: RqSource,
    /// Every `/events` column of the event.
    pub rq_event: BTreeMap<String, Value>,
    /// Units of the `/events` and `/pulses` columns.
    pub units: BTreeMap<String, String>,
    /// The event's pulses (every `/pulses` column, plus `index` and `kind_name`).
    pub pulses: Vec<BTreeMap<String, Value>>,
    /// Pulse selected for the hit maps and channel waveforms.
    pub selected_pulse: Option<usize>,
    /// Hit maps of the selected pulse.
    pub hitmap: Option<HitMap>,
    /// PMT positions.
    pub pmts: PmtLayout,
    /// The raw file read.
    pub raw: Option<RawSource>,
    /// Summed waveforms.
    pub waveform: Option<Summed>,
    /// The event's pods overlapping the range shown, by start.
    pub pods: Vec<PodSpan>,
    /// True when more pods overlap the range than are listed.
    pub pods_truncated: bool,
    /// The selected pulse's summed waveform with its area-fraction times.
    pub pulse_waveform: Option<PulseWaveform>,
    /// Waveforms of the channels with the most area in the selected pulse.
    pub channels: Vec<ChannelTrace>,
    /// Why there are no waveforms.
    pub waveform_error: Option<String>,
    /// Anything else worth knowing (e.g. a conditions mismatch).
    pub warnings: Vec<String>,
}

/// Row `i` of a column as JSON; `null` past its end.
pub(crate) fn cell(c: &ColumnData, i: usize) -> Value {
    fn at<T: Copy + Into<Value>>(v: &[T], i: usize) -> Value {
        v.get(i).map_or(Value::Null, |&x| x.into())
    }
    match c {
        ColumnData::F32(v) => v.get(i).map_or(Value::Null, |&x| Value::from(f64::from(x))),
        ColumnData::F64(v) => at(v, i),
        ColumnData::I64(v) => at(v, i),
        ColumnData::I32(v) => at(v, i),
        ColumnData::U64(v) => at(v, i),
        ColumnData::U32(v) => at(v, i),
        ColumnData::U16(v) => at(v, i),
        ColumnData::U8(v) => at(v, i),
    }
}

pub(crate) fn as_f64(c: Option<&ColumnData>, i: usize) -> f64 {
    match c.map(|c| cell(c, i)) {
        Some(v) => v.as_f64().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

pub(crate) fn as_i64(c: Option<&ColumnData>, i: usize) -> Option<i64> {
    c.and_then(|c| cell(c, i).as_i64())
}

pub(crate) fn interaction_name(code: i64) -> &'static str {
    match code {
        0 => "no signal",
        1 => "single scatter",
        2 => "multiple scatter",
        3 => "S2 only",
        4 => "S1 only",
        _ => "other",
    }
}

pub(crate) fn pulse_kind_name(code: i64) -> &'static str {
    match code {
        1 => "S1",
        2 => "S2",
        3 => "SE",
        4 => "SPE",
        _ => "other",
    }
}
