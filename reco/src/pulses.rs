//! Pulses: hits of all channels clustered in time, summed into one waveform
//! at full 10 ns resolution, split at natural breaks, and measured.
//!
//! ```text
//! cluster:   hits sorted by start; a hit joins the cluster when it starts at
//!            most `pulse_gap_ns` after the cluster's end so far
//! waveform:  wf[i] = sum over the cluster's hits of the calibrated samples   [phd/sample]
//! split:     at significant local minima of the binned waveform (see `split`)
//! times:     sample i covers [t_i, t_i + dt), t_i = i dt from the window start;
//!            area inside a sample is taken as uniform for quantiles and centre
//! centre     = sum_i wf_i (t_i + dt/2) / area                                 [ns]
//! q(f)       = time at which the cumulative area reaches f * area             [ns]
//! width_X    = q(1/2 + X/2) - q(1/2 - X/2),  X in {10, 50, 90} %
//! rise time  = q(50 %) - q(10 %)
//! ```
//!
//! Memory is bounded by the event window (the waveform scratch is at most one
//! window long) and reused across events; cost is linear in the hit samples.
//!
//! The pulse record ([`PulseRq`]) and its kind ([`PulseKind`]) live here;
//! `classify` sets the kind and imports both.

#[cfg(target_arch = "x86_64")]
use crate::baseline::flipped_sum;
use crate::hits::{hit_area_phd, Hit};
use crate::split::{split_points, SplitParams};
use crate::threshold_scan::{add_calibrated_in, ScanPath};

/// Area of one channel in one pulse.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ChannelArea {
    /// Channel.
    pub channel: u16,
    /// Area [phd].
    pub area_phd: f32,
}

/// Kind of a pulse (set by [`crate::classify::classify`]); the discriminant
/// is what RQ files store.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[repr(u8)]
pub enum PulseKind {
    /// Unclassified.
    #[default]
    Other = 0,
    /// Prompt scintillation.
    S1 = 1,
    /// Electroluminescence of several electrons.
    S2 = 2,
    /// Electroluminescence of one (or two) electrons.
    SingleElectron = 3,
    /// One photoelectron on one channel (e.g. a dark count).
    SinglePhe = 4,
}

impl PulseKind {
    /// The numeric code stored in RQ files.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Reduced quantities of one pulse.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct PulseRq {
    /// First sample with signal, from the window start [ns].
    pub start_ns: i64,
    /// One past the last sample with signal, from the window start [ns].
    pub end_ns: i64,
    /// Start of the highest sample, from the window start [ns].
    pub peak_ns: i64,
    /// Area-weighted centre, from the window start [ns].
    pub center_ns: f64,
    /// Total area [phd].
    pub area_phd: f32,
    /// Area on the top array [phd].
    pub area_top_phd: f32,
    /// Area on the bottom array [phd].
    pub area_bottom_phd: f32,
    /// Area fraction top (0 when the area is not positive).
    pub area_fraction_top: f32,
    /// Highest sample of the summed waveform [phd/sample].
    pub height_phd: f32,
    /// Time from 10 % to 50 % of the area [ns].
    pub rise_time_ns: f32,
    /// Width holding the central 10 % of the area [ns].
    pub width_10_ns: f32,
    /// Width holding the central 50 % of the area [ns].
    pub width_50_ns: f32,
    /// Width holding the central 90 % of the area [ns].
    pub width_90_ns: f32,
    /// Channels contributing area.
    pub n_channels: u32,
    /// Channels with a hit within the coincidence window around the peak.
    pub coincidence: u32,
    /// Hits starting in the pulse.
    pub n_hits: u32,
    /// Classification.
    pub kind: PulseKind,
    /// First entry of this pulse in the event's channel-area list.
    pub channel_area_start: u32,
    /// Number of entries of this pulse in the event's channel-area list.
    pub channel_area_count: u32,
}

/// Calibration of one pod, and where its samples are.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PodCalibration {
    /// Baseline [ADC counts].
    pub baseline_adc: f32,
    /// Calibration [phd per ADC count x sample].
    pub phd_per_adc: f32,
    /// The pod's offset in the event's samples minus its first sample in
    /// the window: a hit starting at window sample `t` starts at
    /// `t + shift` in the samples.
    pub shift: i64,
}

/// Settings of the pulse builder, in samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PulseParams {
    /// Largest gap inside a pulse [samples].
    pub gap: u32,
    /// Coincidence half window [samples].
    pub coincidence_half_window: u32,
    /// Sample period [ns].
    pub sample_ns: f64,
    /// Number of top channels.
    pub n_top: usize,
    /// Natural-break parameters.
    pub split: SplitParams,
    /// How hit samples are added to the waveform (the same sums on every path).
    pub scan: ScanPath,
}

/// What the pulse builder reads: the event's pods, samples and calibrations.
#[derive(Debug, Clone, Copy)]
pub struct PulseInput<'a> {
    /// Sample array the pods index.
    pub samples: &'a [i16],
    /// One calibration per pod (with where its samples are).
    pub calib: &'a [PodCalibration],
    /// Hits sorted by start sample.
    pub hits: &'a [Hit],
}

/// Reusable buffers of the pulse builder.
#[derive(Debug, Default, Clone)]
pub struct PulseScratch {
    wf: Vec<f32>,
    bins: Vec<f32>,
    splits: Vec<usize>,
    entries: Vec<(u32, f32)>,
    /// Area of each hit of the pulse [phd].
    areas: Vec<f32>,
    n_hits: Vec<u32>,
    /// Per channel: the coincidence count that saw it last.
    seen: Vec<u32>,
    stamp: u32,
    /// Per-channel area of a pulse that is not split (all 0 between pulses).
    channel_sum: Vec<f32>,
    /// Channels with an entry in `channel_sum`, one bit each (all 0 between pulses).
    touched: Vec<u64>,
    /// Words of `touched` that the event's channels use.
    touched_words: usize,
}

const QUANTILES: [f32; 8] = [0.05, 0.10, 0.25, 0.45, 0.50, 0.55, 0.75, 0.95];

/// Shape of a waveform slice, in samples from its start.
struct Shape {
    area: f32,
    center: f64,
    peak: usize,
    height: f32,
    q: [f32; 8],
}

fn shape(wf: &[f32]) -> Shape {
    let mut area = 0.0f32;
    let mut moment = 0.0f64;
    let (mut peak, mut height) = (0usize, f32::MIN);
    for (i, &v) in wf.iter().enumerate() {
        area += v;
        moment += f64::from(v) * (i as f64 + 0.5);
        if v > height {
            height = v;
            peak = i;
        }
    }
    let mut q = [0.0f32; 8];
    if area > 0.0 {
        fill_quantiles(wf, area, &QUANTILES, &mut q);
    }
    let center = if area > 0.0 {
        moment / f64::from(area)
    } else {
        wf.len() as f64 / 2.0
    };
    Shape {
        area,
        center,
        peak,
        height,
        q,
    }
}

/// `q[k]` = where the cumulative area of `wf` first reaches `fractions[k]`
/// of `area` [samples from the slice start; area inside a sample taken as
/// uniform]; `wf.len()` for a fraction never reached. `fractions` ascending.
#[inline]
fn fill_quantiles(wf: &[f32], area: f32, fractions: &[f32], q: &mut [f32]) {
    let mut cum = 0.0f32;
    let mut k = 0;
    for (i, &v) in wf.iter().enumerate() {
        let next = cum + v;
        while k < q.len() && next >= fractions[k] * area {
            let frac = if v > 0.0 {
                ((fractions[k] * area - cum) / v).clamp(0.0, 1.0)
            } else {
                0.0
            };
            q[k] = i as f32 + frac;
            k += 1;
        }
        cum = next;
    }
    for qk in q.iter_mut().skip(k) {
        *qk = wf.len() as f32;
    }
}

/// Area-fraction times of a summed waveform: for each fraction f
/// (ascending, in (0, 1]) the time at which the cumulative area first
/// reaches f of the total [samples from the start of `wf`], with the
/// convention of the pulse widths (area inside a sample uniform). None when
/// the total area is not positive.
///
/// ```
/// use tpcflow_reco::pulses::area_fraction_times;
/// let wf = [0.0, 4.0, 4.0, 2.0];
/// assert_eq!(area_fraction_times(&wf, &[0.1, 0.5]), Some(vec![1.25, 2.25]));
/// assert_eq!(area_fraction_times(&[0.0, -1.0], &[0.5]), None);
/// ```
///
/// # Panics
/// When `fractions` is not ascending.
pub fn area_fraction_times(wf: &[f32], fractions: &[f32]) -> Option<Vec<f32>> {
    assert!(
        fractions.windows(2).all(|w| w[0] <= w[1]),
        "fractions must be ascending"
    );
    let area: f32 = wf.iter().sum();
    if area.is_nan() || area <= 0.0 {
        return None;
    }
    let mut q = vec![0.0f32; fractions.len()];
    fill_quantiles(wf, area, fractions, &mut q);
    Some(q)
}

/// Build, split and measure the pulses of one event; append them to `pulses`
/// and their per-channel areas to `channel_areas`. On the AVX2 and AVX-512
/// paths the builder is compiled for AVX2 and each hit's calibrated samples
/// are added to the pulse's waveform, and summed for its area, 16 samples a
/// step (the same arithmetic per sample and the same exact sums as the
/// portable path: bit-identical).
pub fn build_pulses(
    input: &PulseInput<'_>,
    p: &PulseParams,
    n_channels: usize,
    scratch: &mut PulseScratch,
    pulses: &mut Vec<PulseRq>,
    channel_areas: &mut Vec<ChannelArea>,
) {
    #[cfg(target_arch = "x86_64")]
    if p.scan.runs_avx2() {
        // SAFETY: runs_avx2 detected AVX2.
        #[allow(unsafe_code)]
        unsafe {
            build_pulses_avx2(input, p, n_channels, scratch, pulses, channel_areas);
        }
        return;
    }
    build_pulses_on::<false>(input, p, n_channels, scratch, pulses, channel_areas);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn build_pulses_avx2(
    input: &PulseInput<'_>,
    p: &PulseParams,
    n_channels: usize,
    scratch: &mut PulseScratch,
    pulses: &mut Vec<PulseRq>,
    channel_areas: &mut Vec<ChannelArea>,
) {
    build_pulses_on::<true>(input, p, n_channels, scratch, pulses, channel_areas);
}

/// [`build_pulses`]; `AVX2` only where AVX2 is enabled.
#[inline(always)]
fn build_pulses_on<const AVX2: bool>(
    input: &PulseInput<'_>,
    p: &PulseParams,
    n_channels: usize,
    scratch: &mut PulseScratch,
    pulses: &mut Vec<PulseRq>,
    channel_areas: &mut Vec<ChannelArea>,
) {
    // The per-channel arrays have a slot for every u16 channel number, so
    // that a hit's channel indexes them with no bounds check (the readback
    // visits only the words of the `n_channels` channels).
    if scratch.seen.len() != CHANNEL_SLOTS {
        scratch.seen = vec![0; CHANNEL_SLOTS];
        scratch.stamp = 0;
        scratch.channel_sum = vec![0.0; CHANNEL_SLOTS];
        scratch.touched = vec![0; CHANNEL_SLOTS / 64];
    }
    scratch.touched_words = n_channels.div_ceil(64).min(CHANNEL_SLOTS / 64);
    let hits = input.hits;
    let mut i = 0;
    while i < hits.len() {
        let mut end = hits[i].end();
        let mut j = i + 1;
        while j < hits.len() && hits[j].start <= end + p.gap {
            end = end.max(hits[j].end());
            j += 1;
        }
        cluster::<AVX2>(input, &hits[i..j], end, p, scratch, pulses, channel_areas);
        i = j;
    }
}

/// Slots of the per-channel scratch arrays: one per u16 channel number.
const CHANNEL_SLOTS: usize = 1 << 16;

/// Index of the first sample of hit `h`, of the pod calibrated by `cal`, in
/// the event's samples.
#[inline(always)]
fn hit_at(cal: &PodCalibration, h: &Hit) -> usize {
    (i64::from(h.start) + cal.shift) as usize
}

/// Sort key of a (sub-pulse, channel) area entry.
fn entry_key(sub: usize, channel: u16) -> u32 {
    ((sub as u32) << 16) | u32::from(channel)
}

#[inline(always)]
fn cluster<const AVX2: bool>(
    input: &PulseInput<'_>,
    hits: &[Hit],
    end: u32,
    p: &PulseParams,
    s: &mut PulseScratch,
    pulses: &mut Vec<PulseRq>,
    channel_areas: &mut Vec<ChannelArea>,
) {
    let c0 = hits[0].start;
    let len = (end - c0) as usize;
    // 16 values of room past the end: a short hit is added as whole vector
    // steps (`add_calibrated_in`).
    s.wf.clear();
    s.wf.resize(len + 16, 0.0);
    // Each hit's area is taken here, from the samples that are added to the
    // waveform, and summed per channel in hit order into a dense array, the
    // channels read back in order from the bit set (when the pulse is not
    // split, most pulses; a split pulse sorts entries instead, below: the
    // same sums).
    s.areas.clear();
    s.areas.resize(hits.len(), 0.0);
    let channel_sum: &mut [f32; CHANNEL_SLOTS] = (&mut s.channel_sum[..])
        .try_into()
        .expect("a slot per channel");
    let touched: &mut [u64; CHANNEL_SLOTS / 64] =
        (&mut s.touched[..]).try_into().expect("a bit per channel");
    for (h, area_out) in hits.iter().zip(s.areas.iter_mut()) {
        let cal = input.calib[h.pod as usize];
        let at = (h.start - c0) as usize;
        let (from, n) = (hit_at(&cal, h), h.length as usize);
        // The label is left only by the x86-64 paths.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_labels))]
        let area = 'area: {
            #[cfg(target_arch = "x86_64")]
            if AVX2 && n <= 16 && from + 16 <= input.samples.len() {
                // SAFETY: AVX2 is only set in build_pulses_avx2, whose
                // caller detected AVX2.
                #[allow(unsafe_code)]
                let total = unsafe {
                    crate::threshold_scan::x86::add_calibrated_16_avx2(
                        (&input.samples[from..from + 16])
                            .try_into()
                            .expect("16 samples"),
                        n,
                        cal.baseline_adc,
                        cal.phd_per_adc,
                        (&mut s.wf[at..at + 16]).try_into().expect("16 values"),
                    )
                };
                break 'area flipped_sum(total, n, cal.baseline_adc) * cal.phd_per_adc;
            }
            #[cfg(target_arch = "x86_64")]
            if AVX2 && from + 16 * n.div_ceil(16) <= input.samples.len() {
                // A longer hit (one in 14): the same 16-sample steps (the
                // waveform has room for the last step's 16 values). Apart
                // from the short path above: one loop for both would keep
                // the kernel out of line for every hit.
                let mut total = 0;
                for c in (0..n).step_by(16) {
                    // SAFETY: as above.
                    #[allow(unsafe_code)]
                    let sum = unsafe {
                        crate::threshold_scan::x86::add_calibrated_16_avx2(
                            (&input.samples[from + c..from + c + 16])
                                .try_into()
                                .expect("16 samples"),
                            (n - c).min(16),
                            cal.baseline_adc,
                            cal.phd_per_adc,
                            (&mut s.wf[at + c..at + c + 16])
                                .try_into()
                                .expect("16 values"),
                        )
                    };
                    total += sum;
                }
                break 'area flipped_sum(total, n, cal.baseline_adc) * cal.phd_per_adc;
            }
            add_calibrated_in(
                input.samples,
                from,
                n,
                cal.baseline_adc,
                cal.phd_per_adc,
                &mut s.wf[at..],
                p.scan,
            );
            hit_area_phd(
                &input.samples[from..from + n],
                cal.baseline_adc,
                cal.phd_per_adc,
                p.scan,
            )
        };
        *area_out = area;
        let ch = usize::from(h.channel);
        channel_sum[ch] += area;
        touched[ch / 64] |= 1 << (ch % 64);
    }
    split_points(&s.wf[..len], &p.split, &mut s.bins, &mut s.splits);
    // Per-channel areas per sub-pulse; hits straddling a split are divided by sample.
    s.entries.clear();
    let n_sub = s.splits.len() + 1;
    s.n_hits.clear();
    s.n_hits.resize(n_sub, 0);
    if n_sub == 1 {
        s.n_hits[0] = hits.len() as u32;
    } else {
        for (w, word) in s.touched[..s.touched_words].iter_mut().enumerate() {
            while *word != 0 {
                s.channel_sum[w * 64 + word.trailing_zeros() as usize] = 0.0;
                *word &= *word - 1;
            }
        }
    }
    for (h, &area) in hits.iter().zip(&s.areas).filter(|_| n_sub > 1) {
        let a = (h.start - c0) as usize;
        let b = a + h.length as usize;
        let sub_a = s.splits.partition_point(|&x| x <= a);
        let sub_b = s.splits.partition_point(|&x| x < b);
        s.n_hits[sub_a] += 1;
        if sub_a == sub_b {
            s.entries.push((entry_key(sub_a, h.channel), area));
            continue;
        }
        let cal = input.calib[h.pod as usize];
        let from = hit_at(&cal, h);
        let raw = &input.samples[from..from + h.length as usize];
        for sub in sub_a..=sub_b {
            let lo = if sub == 0 { 0 } else { s.splits[sub - 1] }.max(a);
            let hi = s.splits.get(sub).copied().unwrap_or(len).min(b);
            let area: f32 = raw[lo - a..hi - a]
                .iter()
                .map(|&x| (cal.baseline_adc - f32::from(x)) * cal.phd_per_adc)
                .sum();
            s.entries.push((entry_key(sub, h.channel), area));
        }
    }
    // Radix sort (a few passes over the key's varying bytes; ~2x faster
    // here than a comparison sort); stable: a channel's pieces of one
    // sub-pulse are summed in hit order.
    if n_sub > 1 {
        radsort::sort_by_key(&mut s.entries, |e| e.0);
    }
    let mut e = 0;
    for sub in 0..n_sub {
        let mut lo = if sub == 0 { 0 } else { s.splits[sub - 1] };
        let mut hi = s.splits.get(sub).copied().unwrap_or(len);
        while lo < hi && s.wf[lo] == 0.0 {
            lo += 1;
        }
        while hi > lo && s.wf[hi - 1] == 0.0 {
            hi -= 1;
        }
        let first_entry = channel_areas.len();
        let (mut top, mut bottom) = (0.0f32, 0.0f32);
        if n_sub == 1 {
            for (w, word) in s.touched[..s.touched_words].iter_mut().enumerate() {
                while *word != 0 {
                    let ch = w * 64 + word.trailing_zeros() as usize;
                    *word &= *word - 1;
                    let area = std::mem::take(&mut s.channel_sum[ch]);
                    if ch < p.n_top {
                        top += area;
                    } else {
                        bottom += area;
                    }
                    channel_areas.push(ChannelArea {
                        channel: ch as u16,
                        area_phd: area,
                    });
                }
            }
        }
        while e < s.entries.len() && (s.entries[e].0 >> 16) as usize == sub {
            let key = s.entries[e].0;
            let ch = (key & 0xffff) as u16;
            let mut area = 0.0f32;
            while e < s.entries.len() && s.entries[e].0 == key {
                area += s.entries[e].1;
                e += 1;
            }
            if (ch as usize) < p.n_top {
                top += area;
            } else {
                bottom += area;
            }
            channel_areas.push(ChannelArea {
                channel: ch,
                area_phd: area,
            });
        }
        if lo == hi {
            channel_areas.truncate(first_entry);
            continue;
        }
        let sh = shape(&s.wf[lo..hi]);
        let dt = p.sample_ns;
        let t0 = f64::from(c0) + lo as f64;
        let peak_sample = c0 + (lo + sh.peak) as u32;
        let coincidence = coincident_channels(s, hits, peak_sample, p.coincidence_half_window);
        let area = top + bottom;
        let q = |k: usize| f64::from(sh.q[k]) * dt;
        pulses.push(PulseRq {
            start_ns: (t0 * dt) as i64,
            end_ns: ((f64::from(c0) + hi as f64) * dt) as i64,
            peak_ns: (f64::from(peak_sample) * dt) as i64,
            center_ns: (t0 + sh.center) * dt,
            area_phd: area,
            area_top_phd: top,
            area_bottom_phd: bottom,
            area_fraction_top: if area > 0.0 { top / area } else { 0.0 },
            height_phd: sh.height,
            rise_time_ns: (q(4) - q(1)) as f32,
            width_10_ns: (q(5) - q(3)) as f32,
            width_50_ns: (q(6) - q(2)) as f32,
            width_90_ns: (q(7) - q(0)) as f32,
            n_channels: (channel_areas.len() - first_entry) as u32,
            coincidence,
            n_hits: s.n_hits[sub],
            kind: PulseKind::Other,
            channel_area_start: first_entry as u32,
            channel_area_count: (channel_areas.len() - first_entry) as u32,
        });
        debug_assert!(sh.area.is_finite());
    }
}

/// Distinct channels with a hit overlapping [peak - w, peak + w].
fn coincident_channels(s: &mut PulseScratch, hits: &[Hit], peak: u32, w: u32) -> u32 {
    if s.stamp == u32::MAX {
        s.seen.iter_mut().for_each(|x| *x = 0);
        s.stamp = 0;
    }
    s.stamp += 1;
    let (lo, hi) = (peak.saturating_sub(w), peak + w);
    let mut n = 0;
    let seen_at: &mut [u32; CHANNEL_SLOTS] =
        (&mut s.seen[..]).try_into().expect("a slot per channel");
    for h in hits {
        if h.start > hi {
            break;
        }
        if h.end() > lo {
            let seen = &mut seen_at[usize::from(h.channel)];
            if *seen != s.stamp {
                *seen = s.stamp;
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_of_a_box_and_a_spike() {
        // (waveform, area, centre, width_50, rise)
        let cases: Vec<(Vec<f32>, f32, f64, f32, f32)> = vec![
            (vec![1.0; 100], 100.0, 50.0, 50.0, 40.0),
            (vec![0.0, 0.0, 8.0, 0.0], 8.0, 2.5, 0.5, 0.4),
        ];
        for (wf, area, center, w50, rise) in cases {
            let sh = shape(&wf);
            assert!((sh.area - area).abs() < 1e-4);
            assert!((sh.center - center).abs() < 1e-6, "{}", sh.center);
            assert!((sh.q[6] - sh.q[2] - w50).abs() < 1e-3);
            assert!((sh.q[4] - sh.q[1] - rise).abs() < 1e-3);
        }
    }
}
