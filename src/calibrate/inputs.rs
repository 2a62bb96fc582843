//! What the products are measured from, read from RQ files: Kr83m single
//! scatters, lone single-electron pulses and lone single-phe pulses.
//!
//! ```text
//! Kr83m single scatter: interaction = 1, xy fitted (xy_flag = 0, or a finite x
//!                       in files without the flag), finite drift time, S1 and S2 > 0
//! lone SE:              pulse kind 3 ending before the event's main S1 (the
//!                       pre-trigger window holds no S2 and its electron tail)
//! lone single phe:      pulse kind 4 with exactly one channel area
//! single-phe pairs:     pulse kind 0 with exactly two channel areas, each
//!                       below the reconstruction's single-phe cut (two
//!                       single phe on two channels within one pulse)
//! trigger intervals:    per file, events - 1 and the span of their trigger times
//! SE search time:       the time before the main S1 of each event with an S1
//! ```
//!
//! Each Kr83m single scatter also keeps its main S2's per-channel areas (the
//! light response is learned from them).
//! Only the datasets these need are read, not whole files.

use std::path::{Path, PathBuf};

use hdf5::H5Type;

use super::CalibrateError;

/// One Kr83m single scatter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KrEvent {
    /// Drift time [ns].
    pub drift_ns: f64,
    /// Main S1 area [phd].
    pub s1_phd: f64,
    /// Main S2 area [phd].
    pub s2_phd: f64,
    /// Position [mm].
    pub x_mm: f64,
    /// Position [mm].
    pub y_mm: f64,
    /// Height above the cathode [mm].
    pub z_mm: f64,
    /// 50 % area width of the main S2 [ns].
    pub s2_width_50_ns: f64,
}

/// Everything the estimators use, from all input files.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// RQ files read.
    pub files: Vec<PathBuf>,
    /// Conditions tag of the reconstruction (the first file's).
    pub conditions_tag: String,
    /// Events in the files.
    pub n_events: u64,
    /// Kr83m single scatters with a position.
    pub kr: Vec<KrEvent>,
    /// Areas of lone single-electron pulses [phd].
    pub se_areas_phd: Vec<f64>,
    /// Channel of each lone single-phe pulse.
    pub spe_channel: Vec<u16>,
    /// Area of each lone single-phe pulse [phd, with the reconstruction's gains].
    pub spe_area_phd: Vec<f64>,
    /// Channels of each single-phe pair: two single phe that fell within one
    /// pulse, so neither is a lone single phe.
    pub spe_pairs: Vec<(u16, u16)>,
    /// Per-channel areas of the Kr83m events' main S2s: (channel, area [phd]),
    /// event after event; `kr_s2_first[i]..kr_s2_first[i + 1]` are event i's.
    pub kr_s2_channels: Vec<(u16, f32)>,
    /// Start of each Kr83m event's rows in `kr_s2_channels`, plus the end.
    pub kr_s2_first: Vec<usize>,
    /// Per-channel areas of the Kr83m events' main S1s, event after event.
    pub kr_s1_channels: ChannelAreas,
    /// Per-channel areas of the lone single-electron pulses, one after another.
    pub se_channels: ChannelAreas,
    /// Intervals between consecutive triggers, summed over files.
    pub trigger_intervals: u64,
    /// Time from the first to the last trigger, summed over files [ns].
    pub trigger_span_ns: f64,
    /// Time searched for lone single electrons: the main S1 time (from the
    /// window start) of each event with an S1, summed [ns].
    pub se_search_ns: f64,
}

/// Per-channel areas of a sequence of pulses: pulse i's are
/// `rows[first[i]..first[i + 1]]`.
#[derive(Debug, Clone, Default)]
pub struct ChannelAreas {
    /// (channel, area [phd]).
    pub rows: Vec<(u16, f32)>,
    /// Start of each pulse's rows, plus the end.
    pub first: Vec<usize>,
}

impl ChannelAreas {
    fn push(&mut self, rows: impl Iterator<Item = (u16, f32)>) {
        if self.first.is_empty() {
            self.first.push(0);
        }
        self.rows.extend(rows);
        self.first.push(self.rows.len());
    }

    /// How pulse `i`'s area changes when each channel's area is multiplied by
    /// `ratio[channel]`: the area-weighted mean ratio (1 without channel areas).
    ///
    /// # Panics
    /// When `i` is not a pulse index.
    pub fn area_factor(&self, i: usize, ratio: &[f64]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for &(c, a) in &self.rows[self.first[i]..self.first[i + 1]] {
            let a = f64::from(a);
            num += a * ratio.get(usize::from(c)).copied().unwrap_or(1.0);
            den += a;
        }
        if den > 0.0 {
            num / den
        } else {
            1.0
        }
    }
}

fn read<T: H5Type>(file: &hdf5::File, name: &str, path: &Path) -> Result<Vec<T>, CalibrateError> {
    file.dataset(name)
        .and_then(|d| d.read_raw::<T>())
        .map_err(|e| CalibrateError::Rq {
            path: path.to_path_buf(),
            what: format!("/{name}: {e}"),
        })
}

fn string_attr(file: &hdf5::File, key: &str) -> String {
    file.attr(key)
        .and_then(|a| a.read_scalar::<hdf5::types::VarLenUnicode>())
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

impl Inputs {
    /// The Kr83m events and single-electron areas in another gain scale:
    /// each channel's area times `ratio[channel]` (the reconstruction's gain
    /// over the measured one), applied to each pulse through its channel
    /// areas.
    pub fn in_gain_scale(&self, ratio: &[f64]) -> (Vec<KrEvent>, Vec<f64>) {
        let kr = self
            .kr
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let s2 = ChannelAreas {
                    rows: self.kr_s2_channels[self.kr_s2_first[i]..self.kr_s2_first[i + 1]]
                        .to_vec(),
                    first: vec![0, self.kr_s2_first[i + 1] - self.kr_s2_first[i]],
                };
                KrEvent {
                    s1_phd: e.s1_phd * self.kr_s1_channels.area_factor(i, ratio),
                    s2_phd: e.s2_phd * s2.area_factor(0, ratio),
                    ..*e
                }
            })
            .collect();
        let se = self
            .se_areas_phd
            .iter()
            .enumerate()
            .map(|(i, a)| a * self.se_channels.area_factor(i, ratio))
            .collect();
        (kr, se)
    }

    /// Main-S2 areas of Kr83m event `i` on the top channels (0..`n_top`) [phd].
    ///
    /// # Panics
    /// When `i` is not a Kr83m event index.
    pub fn kr_top_areas(&self, i: usize, n_top: usize) -> Vec<f64> {
        let mut top = vec![0.0; n_top];
        for &(c, a) in &self.kr_s2_channels[self.kr_s2_first[i]..self.kr_s2_first[i + 1]] {
            if usize::from(c) < n_top {
                top[usize::from(c)] += f64::from(a);
            }
        }
        top
    }

    /// Read the columns of each RQ file and select the calibration samples.
    ///
    /// # Errors
    /// [`CalibrateError::Rq`] naming the file and dataset, or
    /// [`CalibrateError::Inconsistent`] when a file's indices point outside its tables.
    pub fn read(paths: &[PathBuf]) -> Result<Self, CalibrateError> {
        let mut out = Inputs::default();
        for path in paths {
            out.add_file(path)?;
        }
        Ok(out)
    }

    #[allow(clippy::needless_range_loop)]
    fn add_file(&mut self, path: &Path) -> Result<(), CalibrateError> {
        let file = crate::h5::open(path).map_err(|e| CalibrateError::Rq {
            path: path.to_path_buf(),
            what: format!("open: {e}"),
        })?;
        if self.files.is_empty() {
            self.conditions_tag = string_attr(&file, "conditions_tag");
        }
        self.files.push(path.to_path_buf());
        let spe_max_area_phd = tpcflow_reco::RecoConfig::default().spe_max_area_phd;
        let interaction: Vec<u8> = read(&file, "events/interaction", path)?;
        let drift: Vec<f64> = read(&file, "events/drift_time_ns", path)?;
        let s1: Vec<f64> = read(&file, "events/s1_area_phd", path)?;
        let s2: Vec<f64> = read(&file, "events/s2_area_phd", path)?;
        let x: Vec<f64> = read(&file, "events/x_mm", path)?;
        let y: Vec<f64> = read(&file, "events/y_mm", path)?;
        let z: Vec<f64> = read(&file, "events/z_mm", path)?;
        let s1_time: Vec<f64> = read(&file, "events/s1_time_ns", path)?;
        let main_s1: Vec<i32> = read(&file, "events/main_s1", path)?;
        let trigger: Vec<i64> = read(&file, "events/trigger_time_ns", path)?;
        let main_s2: Vec<i32> = read(&file, "events/main_s2", path)?;
        let first_pulse: Vec<u64> = read(&file, "events/first_pulse", path)?;
        let n_pulses: Vec<u32> = read(&file, "events/n_pulses", path)?;
        let xy_flag: Option<Vec<u8>> = if file.link_exists("events/xy_flag") {
            Some(read(&file, "events/xy_flag", path)?)
        } else {
            None
        };
        let kind: Vec<u8> = read(&file, "pulses/kind", path)?;
        let area: Vec<f32> = read(&file, "pulses/area_phd", path)?;
        let end: Vec<i64> = read(&file, "pulses/end_ns", path)?;
        let width50: Vec<f32> = read(&file, "pulses/width_50_ns", path)?;
        let n_ch: Vec<u32> = read(&file, "pulses/n_channel_areas", path)?;
        let first_ch: Vec<u64> = read(&file, "pulses/first_channel", path)?;
        let channel: Vec<u16> = read(&file, "channels/channel", path)?;
        let ch_area: Vec<f32> = read(&file, "channels/area_phd", path)?;
        let n = interaction.len();
        for (what, len) in [
            ("events/drift_time_ns", drift.len()),
            ("events/first_pulse", first_pulse.len()),
            ("events/n_pulses", n_pulses.len()),
            ("events/x_mm", x.len()),
            ("events/s1_time_ns", s1_time.len()),
            ("events/trigger_time_ns", trigger.len()),
        ] {
            if len != n {
                return Err(CalibrateError::Inconsistent {
                    path: path.to_path_buf(),
                    what: format!("/{what} has {len} rows, /events/interaction {n}"),
                });
            }
        }
        let bad = |what: String| CalibrateError::Inconsistent {
            path: path.to_path_buf(),
            what,
        };
        self.n_events += n as u64;
        if let (Some(lo), Some(hi)) = (trigger.iter().min(), trigger.iter().max()) {
            self.trigger_intervals += n as u64 - 1;
            self.trigger_span_ns += (hi - lo) as f64;
        }
        self.se_search_ns += s1_time
            .iter()
            .filter(|t| t.is_finite() && **t > 0.0)
            .sum::<f64>();
        for ev in 0..n {
            let p0 = first_pulse[ev] as usize;
            let p1 = p0 + n_pulses[ev] as usize;
            if p1 > kind.len() {
                return Err(bad(format!(
                    "event row {ev}: pulses {p0}..{p1} beyond {} pulses",
                    kind.len()
                )));
            }
            let fitted = xy_flag
                .as_ref()
                .map_or(x[ev].is_finite(), |f| f[ev] == 0 && x[ev].is_finite());
            if interaction[ev] == 1
                && fitted
                && drift[ev].is_finite()
                && s1[ev] > 0.0
                && s2[ev] > 0.0
                && main_s2[ev] >= 0
                && main_s1[ev] >= 0
            {
                let s2_row = p0 + main_s2[ev] as usize;
                if s2_row >= p1 {
                    return Err(bad(format!("event row {ev}: main_s2 outside its pulses")));
                }
                let (Some(&c0), Some(&nc)) = (first_ch.get(s2_row), n_ch.get(s2_row)) else {
                    return Err(bad(format!(
                        "pulse row {s2_row}: beyond /pulses/first_channel or n_channel_areas"
                    )));
                };
                let (c0, c1) = (c0 as usize, c0 as usize + nc as usize);
                if c1 > channel.len() || c1 > ch_area.len() {
                    return Err(bad(format!(
                        "pulse row {s2_row}: channel rows {c0}..{c1} beyond {}",
                        channel.len().min(ch_area.len())
                    )));
                }
                if self.kr_s2_first.is_empty() {
                    self.kr_s2_first.push(0);
                }
                self.kr_s2_channels.extend(
                    channel[c0..c1]
                        .iter()
                        .copied()
                        .zip(ch_area[c0..c1].iter().copied()),
                );
                self.kr_s2_first.push(self.kr_s2_channels.len());
                let s1_row = p0 + main_s1[ev] as usize;
                let (Some(&c0), Some(&nc)) = (first_ch.get(s1_row), n_ch.get(s1_row)) else {
                    return Err(bad(format!(
                        "pulse row {s1_row}: main_s1 beyond /pulses/first_channel or n_channel_areas"
                    )));
                };
                let (c0, c1) = (c0 as usize, c0 as usize + nc as usize);
                if s1_row >= p1 || c1 > channel.len() || c1 > ch_area.len() {
                    return Err(bad(format!(
                        "event row {ev}: main_s1 pulse {s1_row} or its channel rows {c0}..{c1} out of range"
                    )));
                }
                self.kr_s1_channels.push(
                    channel[c0..c1]
                        .iter()
                        .copied()
                        .zip(ch_area[c0..c1].iter().copied()),
                );
                self.kr.push(KrEvent {
                    drift_ns: drift[ev],
                    s1_phd: s1[ev],
                    s2_phd: s2[ev],
                    x_mm: x[ev],
                    y_mm: y[ev],
                    z_mm: z[ev],
                    s2_width_50_ns: f64::from(width50[s2_row]),
                });
            }
            for p in p0..p1 {
                if kind[p] == 3 && s1_time[ev].is_finite() && (end[p] as f64) < s1_time[ev] {
                    let (c0, c1) = (
                        first_ch[p] as usize,
                        first_ch[p] as usize + n_ch[p] as usize,
                    );
                    if c1 > channel.len() || c1 > ch_area.len() {
                        return Err(bad(format!(
                            "pulse row {p}: channel rows {c0}..{c1} beyond {}",
                            channel.len().min(ch_area.len())
                        )));
                    }
                    self.se_areas_phd.push(f64::from(area[p]));
                    self.se_channels.push(
                        channel[c0..c1]
                            .iter()
                            .copied()
                            .zip(ch_area[c0..c1].iter().copied()),
                    );
                } else if kind[p] == 4 && n_ch[p] == 1 {
                    let c = first_ch[p] as usize;
                    if c >= channel.len() {
                        return Err(bad(format!(
                            "pulse row {p}: channel row {c} beyond {}",
                            channel.len()
                        )));
                    }
                    self.spe_channel.push(channel[c]);
                    self.spe_area_phd.push(f64::from(ch_area[c]));
                } else if kind[p] == 0 && n_ch[p] == 2 {
                    let c = first_ch[p] as usize;
                    if c + 2 > channel.len() || c + 2 > ch_area.len() {
                        return Err(bad(format!(
                            "pulse row {p}: channel rows {c}..{} beyond {}",
                            c + 2,
                            channel.len().min(ch_area.len())
                        )));
                    }
                    if ch_area[c..c + 2]
                        .iter()
                        .all(|&a| f64::from(a) < spe_max_area_phd)
                    {
                        self.spe_pairs.push((channel[c], channel[c + 1]));
                    }
                }
            }
        }
        Ok(())
    }
}
