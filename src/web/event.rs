//! The event display: `/api/event?run=N&event=M`.
//!
//! ```text
//! 1. the catalog's outputs of the run (newest per raw file, or ?lineage=)
//! 2. a per-run index event id -> (RQ file, row), built from /events/event_id
//!    of each RQ file and cached until the run's outputs change
//! 3. the event's /events row, its /pulses rows and the /channels rows of the
//!    selected pulse (hit maps) from the RQ file (cached)
//! 4. waveforms from the raw file (verified replica at USDC, else SURF, UKDC):
//!    summed top/bottom over the range asked for with the pods (DAQ buffers)
//!    that overlap it, the selected pulse's summed waveform with its
//!    area-fraction times, and the channels with the most area in the
//!    selected pulse with their pods (see `waveform`)
//! ```
//!
//! Without a readable raw file the header, pulses and hit maps are still
//! shown, with `waveform_error` saying why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::Value;

use super::cache::Lru;
use super::event_view::{
    as_f64, as_i64, cell, interaction_name, pulse_kind_name, EventDisplay, EventHeader, HitMap,
    PmtLayout, RawSource, RqSource,
};
use super::params::Params;
use super::waveform::{self, ChannelTrace};
use super::{AppState, WebError};
use crate::catalog::RunOutput;
use crate::catalog::Site;
use crate::raw::RawFile;
use crate::rq::{read_event_ids, read_rq_file, ColumnData, RqFile};

/// Parameters of `/api/event` and `/event`.
pub(crate) const EVENT_PARAMS: &[&str] = &[
    "run", "event", "pulse", "lineage", "xmin_us", "xmax_us", "bins", "channels",
];
/// Default bins of the summed waveform.
pub const DEFAULT_BINS: u64 = 1200;
/// Default number of individual channel waveforms.
pub const DEFAULT_CHANNELS: u64 = 12;
/// Bins of one channel waveform.
pub const CHANNEL_BINS: usize = 300;
/// Bins of the selected pulse's waveform.
pub const PULSE_BINS: usize = 1000;
/// Most pods listed for the range shown.
pub const MAX_PODS: usize = 20_000;

/// What identifies a file version: path, modification time and size.
type Stamp = (PathBuf, Option<SystemTime>, u64);

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok();
    let modified = meta.as_ref().and_then(|m| m.modified().ok());
    (path.to_path_buf(), modified, meta.map_or(0, |m| m.len()))
}

/// A run's event index.
#[derive(Debug)]
struct RunIndex {
    /// (RQ path, catalogue time) of each output: a change rebuilds the index.
    signature: Vec<(String, u64)>,
    outputs: Vec<RunOutput>,
    /// (event id, output index, row in the RQ file), by event id.
    ids: Vec<(u64, u32, u32)>,
}

/// An RQ file with its software version.
#[derive(Debug)]
struct RqData {
    file: RqFile,
    software_version: String,
}

/// Open files and run indexes of the event display.
/// Run indexes by (run, lineage asked for).
type IndexCache = Lru<(u32, Option<String>), Arc<RunIndex>>;

#[derive(Debug)]
pub(crate) struct EventCache {
    indexes: Mutex<IndexCache>,
    rq: Mutex<Lru<Stamp, Arc<RqData>>>,
    raw: Mutex<Lru<Stamp, Arc<RawFile>>>,
}

impl Default for EventCache {
    fn default() -> Self {
        Self {
            indexes: Mutex::new(Lru::new(32)),
            rq: Mutex::new(Lru::new(16)),
            raw: Mutex::new(Lru::new(8)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What `/api/event` asks for, validated.
#[derive(Debug, Clone)]
pub(crate) struct EventQuery {
    run: u32,
    event: Option<u64>,
    pulse: Option<u64>,
    lineage: Option<String>,
    range_us: Option<(f64, f64)>,
    bins: usize,
    channels: usize,
}

impl EventQuery {
    /// Validate the parameters.
    ///
    /// # Errors
    /// [`WebError::BadParam`] naming the parameter.
    pub(crate) fn parse(p: &Params) -> Result<Self, WebError> {
        let run = p
            .run("run")?
            .ok_or_else(|| WebError::bad_param("run", "", "a run number"))?;
        let range_us = match (
            p.number("xmin_us", "a time in microseconds")?,
            p.number("xmax_us", "a time in microseconds")?,
        ) {
            (None, None) => None,
            (Some(a), Some(b)) if a < b => Some((a, b)),
            (a, b) => {
                let v = format!("{}..{}", a.unwrap_or(f64::NAN), b.unwrap_or(f64::NAN));
                return Err(WebError::bad_param(
                    "xmin_us/xmax_us",
                    &v,
                    "both, with xmin_us < xmax_us",
                ));
            }
        };
        Ok(Self {
            run,
            event: p.uint("event", "an event number", u64::MAX)?,
            pulse: p.uint("pulse", "a pulse index within the event", 1_000_000)?,
            lineage: p
                .name("lineage", "a lineage hash (hex)")?
                .map(str::to_string),
            range_us,
            bins: p
                .uint("bins", "bins of the summed waveform (10-5000)", 5000)?
                .unwrap_or(DEFAULT_BINS)
                .max(10) as usize,
            channels: p
                .uint("channels", "channel waveforms to show (0-64)", 64)?
                .unwrap_or(DEFAULT_CHANNELS) as usize,
        })
    }
}

fn load_rq(state: &AppState, path: &Path, what: &str) -> Result<Arc<RqData>, WebError> {
    let key = stamp(path);
    if let Some(d) = lock(&state.events.rq).get(&key) {
        return Ok(d);
    }
    let unavailable = |reason: String| WebError::FileUnavailable {
        what: what.to_string(),
        reason,
    };
    let file = read_rq_file(path).map_err(|e| unavailable(e.to_string()))?;
    let software_version = crate::h5::open(path)
        .and_then(|f| f.attr("software_version"))
        .and_then(|a| a.read_scalar::<hdf5::types::VarLenUnicode>())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let data = Arc::new(RqData {
        file,
        software_version,
    });
    lock(&state.events.rq).put(key, Arc::clone(&data));
    Ok(data)
}

fn run_index(state: &AppState, run: u32, lineage: Option<&str>) -> Result<Arc<RunIndex>, WebError> {
    if !state.catalog.run_exists(run)? {
        return Err(WebError::UnknownRun { run });
    }
    let outputs = state.catalog.outputs_of_run(run, lineage)?;
    if outputs.is_empty() {
        return Err(WebError::NotReconstructed {
            run,
            lineage: lineage.map(str::to_string),
        });
    }
    let signature: Vec<(String, u64)> = outputs
        .iter()
        .map(|o| (o.rq_path.clone(), o.catalogued_at.to_bits()))
        .collect();
    let key = (run, lineage.map(str::to_string));
    if let Some(ix) = lock(&state.events.indexes).get(&key) {
        if ix.signature == signature {
            return Ok(ix);
        }
    }
    let mut ids = Vec::new();
    let mut last_error = None;
    for (k, o) in outputs.iter().enumerate() {
        let what = format!("RQ file of {}", o.file_name);
        let read = state.roots.rq_file(&o.rq_path, &what).and_then(|p| {
            read_event_ids(&p).map_err(|e| WebError::FileUnavailable {
                what: what.clone(),
                reason: e.to_string(),
            })
        });
        match read {
            Ok(v) => ids.extend(
                v.into_iter()
                    .enumerate()
                    .map(|(row, id)| (id, k as u32, row as u32)),
            ),
            Err(e) => {
                tracing::warn!("event index of run {run}: {e}");
                last_error = Some(e);
            }
        }
    }
    if ids.is_empty() {
        return Err(last_error.unwrap_or(WebError::NotReconstructed {
            run,
            lineage: lineage.map(str::to_string),
        }));
    }
    ids.sort_unstable();
    let ix = Arc::new(RunIndex {
        signature,
        outputs,
        ids,
    });
    lock(&state.events.indexes).put(key, Arc::clone(&ix));
    Ok(ix)
}

/// Open the raw file of an output at the first site that has it (USDC, SURF, UKDC, ARCHIVE).
fn open_raw(state: &AppState, o: &RunOutput) -> Result<(Site, Arc<RawFile>), String> {
    let replicas = state
        .catalog
        .verified_replicas(o.file_id)
        .map_err(|e| e.to_string())?;
    let mut why = vec![];
    for site in [Site::Usdc, Site::Surf, Site::Ukdc, Site::Archive] {
        let Some((_, rel)) = replicas.iter().find(|(s, _)| *s == site) else {
            continue;
        };
        let what = format!("{} at {site}", o.file_name);
        let path = match state.roots.raw_file(site, rel, &what) {
            Ok(p) => p,
            Err(e) => {
                why.push(e.to_string());
                continue;
            }
        };
        let key = stamp(&path);
        if let Some(f) = lock(&state.events.raw).get(&key) {
            return Ok((site, f));
        }
        match RawFile::open(&path) {
            Ok(f) => {
                let f = Arc::new(f);
                lock(&state.events.raw).put(key, Arc::clone(&f));
                return Ok((site, f));
            }
            Err(e) => why.push(format!("{what}: {e}")),
        }
    }
    if why.is_empty() {
        why.push(format!("{} has no verified replica", o.file_name));
    }
    Err(why.join("; "))
}

/// Answer `/api/event`.
///
/// # Errors
/// [`WebError::UnknownRun`], [`WebError::NotReconstructed`],
/// [`WebError::UnknownEvent`], [`WebError::BadParam`] (pulse, range), or
/// [`WebError::FileUnavailable`] when the RQ file cannot be read.
pub(crate) fn event_display(state: &AppState, q: &EventQuery) -> Result<EventDisplay, WebError> {
    let ix = run_index(state, q.run, q.lineage.as_deref())?;
    let pos = match q.event {
        None => 0,
        Some(e) => {
            ix.ids
                .binary_search_by_key(&e, |t| t.0)
                .map_err(|_| WebError::UnknownEvent {
                    run: q.run,
                    event: e,
                    first: ix.ids[0].0,
                    last: ix.ids[ix.ids.len() - 1].0,
                })?
        }
    };
    let (event_id, out_k, row) = ix.ids[pos];
    let (out, row) = (&ix.outputs[out_k as usize], row as usize);
    let what = format!("RQ file of {}", out.file_name);
    let rq_path = state.roots.rq_file(&out.rq_path, &what)?;
    let rq = load_rq(state, &rq_path, &what)?;
    let f = &rq.file;
    let ev = |name: &str| f.event_column(name);
    let first_pulse = as_i64(ev("first_pulse"), row).unwrap_or(0).max(0) as usize;
    let n_pulses = as_i64(ev("n_pulses"), row).unwrap_or(0).max(0) as usize;
    let main_s1 = as_i64(ev("main_s1"), row).filter(|&p| p >= 0);
    let main_s2 = as_i64(ev("main_s2"), row).filter(|&p| p >= 0);
    let second_s2 = as_i64(ev("second_s2"), row).filter(|&p| p >= 0);
    let code = as_i64(ev("interaction"), row).unwrap_or(5);
    let header = EventHeader {
        run: q.run,
        event_id,
        trigger_time_ns: as_i64(ev("trigger_time_ns"), row).unwrap_or(0),
        interaction: interaction_name(code).into(),
        interaction_code: code,
        s1_pulse: main_s1,
        s2_pulses: main_s2.into_iter().chain(second_s2).collect(),
        drift_time_ns: as_f64(ev("drift_time_ns"), row),
        s1_area_phd: as_f64(ev("s1_area_phd"), row),
        s2_area_phd: as_f64(ev("s2_area_phd"), row),
        s1c_phd: as_f64(ev("s1c_phd"), row),
        s2c_phd: as_f64(ev("s2c_phd"), row),
        x_mm: as_f64(ev("x_mm"), row),
        y_mm: as_f64(ev("y_mm"), row),
        z_mm: as_f64(ev("z_mm"), row),
        energy_kev: as_f64(ev("energy_kev"), row),
        software_version: rq.software_version.clone(),
        lineage_hash: f.header.lineage_hash.clone(),
    };
    let rq_event = f
        .events
        .iter()
        .map(|c| (c.name.clone(), cell(&c.data, row)))
        .collect();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for c in f.events.iter().chain(&f.pulses) {
        units.insert(c.name.clone(), c.units.clone());
    }
    let n_rows = f.pulses.first().map_or(0, |c| c.data.len());
    let pulse_rows = first_pulse..first_pulse.saturating_add(n_pulses).min(n_rows);
    let pulses: Vec<BTreeMap<String, Value>> = pulse_rows
        .clone()
        .enumerate()
        .map(|(k, r)| {
            let mut m: BTreeMap<String, Value> = f
                .pulses
                .iter()
                .map(|c| (c.name.clone(), cell(&c.data, r)))
                .collect();
            let kind = m.get("kind").and_then(Value::as_i64).unwrap_or(0);
            m.insert("index".into(), Value::from(k));
            m.insert("kind_name".into(), Value::from(pulse_kind_name(kind)));
            m
        })
        .collect();
    let selected = match q.pulse {
        Some(p) if (p as usize) < pulses.len() => Some(p as usize),
        Some(p) => {
            return Err(WebError::bad_param(
                "pulse",
                &p.to_string(),
                &format!(
                    "a pulse index of this event (it has {} pulses)",
                    pulses.len()
                ),
            ))
        }
        None => main_s2
            .or(main_s1)
            .map(|p| p as usize)
            .filter(|&p| p < pulses.len()),
    };
    let model = &state.conditions.detector;
    let mut warnings = Vec::new();
    if f.header.conditions_tag != model.tag {
        warnings.push(format!(
            "the RQ file was made with conditions {} but the PMT map shown is {}",
            f.header.conditions_tag, model.tag
        ));
    }
    // Hit maps from /channels.
    let n_top = model.pmts.n_top;
    let n_ch = model.pmts.len();
    let hitmap = selected.map(|p| {
        let r = first_pulse + p;
        let first = as_i64(f.pulse_column("first_channel"), r)
            .unwrap_or(0)
            .max(0) as usize;
        let n = as_i64(f.pulse_column("n_channel_areas"), r)
            .unwrap_or(0)
            .max(0) as usize;
        let mut areas = vec![0.0f32; n_ch];
        let ch = f
            .channels
            .iter()
            .find(|c| c.name == "channel")
            .map(|c| &c.data);
        let ar = f
            .channels
            .iter()
            .find(|c| c.name == "area_phd")
            .map(|c| &c.data);
        let rows = ch.map_or(0, ColumnData::len);
        for i in first..first.saturating_add(n).min(rows) {
            let (Some(c), a) = (as_i64(ch, i), as_f64(ar, i)) else {
                continue;
            };
            if (c as usize) < n_ch && a.is_finite() {
                areas[c as usize] += a as f32;
            }
        }
        let positive = areas.iter().copied().filter(|&a| a > 0.0);
        let min_phd = positive.clone().fold(f32::INFINITY, f32::min);
        let max_phd = positive.fold(0.0f32, f32::max);
        HitMap {
            pulse: p,
            bottom: areas.split_off(n_top.min(n_ch)),
            top: areas,
            min_phd: if min_phd.is_finite() { min_phd } else { 0.0 },
            max_phd,
        }
    });
    let pmts = PmtLayout {
        conditions_tag: model.tag.clone(),
        n_top,
        x: model.pmts.x.iter().map(|&v| v as f32).collect(),
        y: model.pmts.y.iter().map(|&v| v as f32).collect(),
        pitch_mm: model.params.pmts.pitch_mm,
        radius_mm: model.params.tpc.radius_mm,
    };
    // Waveforms from the raw file.
    let (mut raw_src, mut summed, mut channels, mut waveform_error) =
        (None, None, Vec::new(), None);
    let (mut pods, mut pods_truncated, mut pulse_waveform) = (Vec::new(), false, None);
    match open_raw(state, out) {
        Err(why) => waveform_error = Some(why),
        Ok((site, raw)) => match raw.event_ids().iter().position(|&id| id == event_id) {
            None => {
                waveform_error = Some(format!("{} has no event {event_id}", out.file_name));
            }
            Some(i) => {
                let view = raw.event(i);
                let dt = raw.header().sample_period_ns;
                let window = i64::from(raw.header().window_samples);
                let (plo, phi) = waveform::pod_extent(&view);
                let range = match q.range_us {
                    Some((a, b)) => {
                        let lo = ((a * 1e3 / dt).floor() as i64).max(0);
                        let hi = ((b * 1e3 / dt).ceil() as i64).min(window);
                        if lo >= hi {
                            return Err(WebError::bad_param(
                                "xmin_us/xmax_us",
                                &format!("{a}..{b}"),
                                &format!(
                                    "a range inside the event window 0-{} us",
                                    window as f64 * dt / 1e3
                                ),
                            ));
                        }
                        (lo, hi)
                    }
                    None => {
                        let pad = ((phi - plo) / 50).max(10);
                        ((plo - pad).max(0), (phi + pad).min(window.max(phi)))
                    }
                };
                summed = Some(waveform::summed(&view, model, dt, range, q.bins));
                (pods, pods_truncated) = waveform::pod_spans(&view, dt, range, None, MAX_PODS);
                if let (Some(p), Some(h)) = (selected, &hitmap) {
                    let pulse = &pulses[p];
                    let t = |k: &str| pulse.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                    let (s, e) = (
                        (t("start_ns") / dt).floor() as i64,
                        (t("end_ns") / dt).ceil() as i64,
                    );
                    let pad = ((e - s) / 4).max(20);
                    let crange = ((s - pad).max(0), (e + pad).min(window.max(e)));
                    pulse_waveform = Some(waveform::pulse_waveform(
                        &view,
                        model,
                        dt,
                        p,
                        (s, e),
                        crange,
                        PULSE_BINS,
                    ));
                    let mut by_area: Vec<(usize, f32)> = h
                        .top
                        .iter()
                        .chain(&h.bottom)
                        .copied()
                        .enumerate()
                        .filter(|&(_, a)| a > 0.0)
                        .collect();
                    by_area.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    channels = by_area
                        .into_iter()
                        .take(q.channels)
                        .map(|(c, a)| ChannelTrace {
                            channel: c as u16,
                            top: c < n_top,
                            area_phd: a,
                            trace: waveform::channel(
                                &view,
                                model,
                                dt,
                                c as u16,
                                crange,
                                CHANNEL_BINS,
                            ),
                            pods: waveform::pod_spans(&view, dt, crange, Some(c as u16), MAX_PODS)
                                .0,
                        })
                        .collect();
                }
                raw_src = Some(RawSource {
                    site,
                    file: out.file_name.clone(),
                    sample_ns: dt,
                    window_ns: window as f64 * dt,
                    pods_ns: (plo as f64 * dt, phi as f64 * dt),
                    range_ns: (range.0 as f64 * dt, range.1 as f64 * dt),
                });
            }
        },
    }
    let events_in_file = f.events.first().map_or(0, |c| c.data.len());
    Ok(EventDisplay {
        previous_event: pos.checked_sub(1).map(|p| ix.ids[p].0),
        next_event: ix.ids.get(pos + 1).map(|t| t.0),
        events_in_run: ix.ids.len(),
        rq: RqSource {
            path: out.rq_path.clone(),
            input_file: f.header.input_file.clone(),
            software_version: rq.software_version.clone(),
            lineage_hash: f.header.lineage_hash.clone(),
            lineage: serde_json::from_str(&f.header.lineage_json)
                .unwrap_or_else(|_| Value::from(f.header.lineage_json.clone())),
            conditions_tag: f.header.conditions_tag.clone(),
            conditions_sha256: f.header.conditions_sha256(),
            event_index: row,
            events_in_file,
        },
        header,
        rq_event,
        units,
        pulses,
        selected_pulse: selected,
        hitmap,
        pmts,
        raw: raw_src,
        waveform: summed,
        pods,
        pods_truncated,
        pulse_waveform,
        channels,
        waveform_error,
        warnings,
    })
}
