//! Waveforms for the event display, from the raw pods of one event.
//!
//! ```text
//! baseline   mean of a pod's first BASELINE_SAMPLES samples [ADC]
//! signal     (baseline - adc) / phd_area_adc(channel)      [phd/sample]
//! summed     sum of the signals of the top (bottom) array channels per sample
//! shown      the range cut into bins; each bin shows its largest sample, so a
//!            100 ns S1 stays visible in a 4.5 ms window
//! AFT        area-fraction times of a pulse: over the pulse's RQ extent
//!            [start_ns, end_ns), the sum of both arrays' signals at full
//!            resolution, and the time its cumulative area first reaches 1 %,
//!            5 %, 10 %, 50 %, 90 % of the total (area inside a sample
//!            uniform: `tpcflow_reco::pulses::area_fraction_times`, the
//!            convention of the RQ widths)
//! pods       each pod's [start, end) as recorded: the DAQ's buffers, per channel
//! ```
//!
//! Times are counted from the start of the event window, as the RQ pulse
//! times are.

use serde::Serialize;
use tpcflow_reco::pulses::area_fraction_times;
use tpcflow_reco::{DetectorModel, EventView, PodRecord};

/// Samples at the start of a pod that make its baseline.
pub const BASELINE_SAMPLES: usize = 20;

/// A binned trace: bin `i` covers `[t0_ns + i bin_ns, t0_ns + (i+1) bin_ns)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// Start of the first bin [ns].
    pub t0_ns: f64,
    /// Bin width [ns].
    pub bin_ns: f64,
    /// Largest sample of each bin [phd/sample].
    pub values: Vec<f32>,
}

/// The summed waveforms of the two arrays over one range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summed {
    /// Top array.
    pub top: Trace,
    /// Bottom array.
    pub bottom: Trace,
}

/// One channel's trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelTrace {
    /// PMT channel.
    pub channel: u16,
    /// True for the top array.
    pub top: bool,
    /// Area of the selected pulse on this channel [phd].
    pub area_phd: f32,
    /// The trace.
    pub trace: Trace,
    /// This channel's pods overlapping the trace.
    pub pods: Vec<PodSpan>,
}

/// Area fractions whose times are marked on the selected pulse.
pub const AFT_FRACTIONS: [f32; 5] = [0.01, 0.05, 0.10, 0.50, 0.90];

/// One pod (DAQ buffer) of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PodSpan {
    /// PMT channel.
    pub channel: u16,
    /// First sample, from the window start [ns].
    pub start_ns: f64,
    /// One past the last sample [ns].
    pub end_ns: f64,
}

/// The time at which a pulse's cumulative area reaches a fraction of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AreaFractionTime {
    /// Fraction of the area (0.01 = 1 %).
    pub fraction: f64,
    /// Time from the window start [ns].
    pub time_ns: f64,
}

/// The summed waveform (both arrays) around one pulse, with its area-fraction times.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PulseWaveform {
    /// Pulse index within the event.
    pub pulse: usize,
    /// The pulse's extent [ns] (from its RQ row).
    pub start_ns: f64,
    /// End of the extent [ns].
    pub end_ns: f64,
    /// Area of the summed signal over the extent [phd].
    pub area_phd: f64,
    /// The summed signal over the extent and some margin.
    pub trace: Trace,
    /// Area-fraction times ([`AFT_FRACTIONS`]); empty when the area is not positive.
    pub aft: Vec<AreaFractionTime>,
}

/// The signal of one pod in phd/sample.
pub fn pod_signal(samples: &[i16], phd_area_adc: f64) -> Vec<f32> {
    let n = samples.len().clamp(1, BASELINE_SAMPLES);
    let baseline = samples.iter().take(n).map(|&s| f64::from(s)).sum::<f64>() / n as f64;
    let scale = if phd_area_adc > 0.0 {
        1.0 / phd_area_adc
    } else {
        0.0
    };
    samples
        .iter()
        .map(|&s| ((baseline - f64::from(s)) * scale) as f32)
        .collect()
}

/// The sample range `[lo, hi)` covered by the event's pods (`(0, 0)` for none).
pub fn pod_extent(event: &EventView<'_>) -> (i64, i64) {
    let lo = event.pods.iter().map(|p| i64::from(p.start_sample)).min();
    let hi = event
        .pods
        .iter()
        .map(|p| i64::from(p.start_sample) + i64::from(p.length))
        .max();
    lo.zip(hi).unwrap_or((0, 0))
}

/// Add the pods accepted by `keep` over samples `[lo, hi)` into `dense` (length `hi - lo`).
fn accumulate(
    event: &EventView<'_>,
    model: &DetectorModel,
    lo: i64,
    dense: &mut [f32],
    keep: impl Fn(&PodRecord) -> bool,
) {
    let hi = lo + dense.len() as i64;
    for pod in event.pods.iter().filter(|p| keep(p)) {
        let start = i64::from(pod.start_sample);
        let end = start + i64::from(pod.length);
        if end <= lo || start >= hi {
            continue;
        }
        let ch = usize::from(pod.channel);
        if ch >= model.params.pmts.spe_area_adc.len() {
            continue;
        }
        let signal = pod_signal(event.pod_samples(pod), model.phd_area_adc(ch));
        for (k, v) in signal.iter().enumerate() {
            let s = start + k as i64;
            if (lo..hi).contains(&s) {
                dense[(s - lo) as usize] += v;
            }
        }
    }
}

/// Cut `dense` (starting at sample `lo`) into at most `bins` bins, keeping each bin's largest sample.
fn bin_max(dense: &[f32], lo: i64, bins: usize, sample_ns: f64) -> Trace {
    let per_bin = dense.len().div_ceil(bins.max(1)).max(1);
    let values = dense
        .chunks(per_bin)
        .map(|c| c.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    Trace {
        t0_ns: lo as f64 * sample_ns,
        bin_ns: per_bin as f64 * sample_ns,
        values,
    }
}

/// The summed top and bottom waveforms over samples `[lo, hi)` in at most `bins` bins.
pub fn summed(
    event: &EventView<'_>,
    model: &DetectorModel,
    sample_ns: f64,
    (lo, hi): (i64, i64),
    bins: usize,
) -> Summed {
    let len = (hi - lo).max(1) as usize;
    let n_top = model.pmts.n_top;
    let mut top = vec![0.0f32; len];
    let mut bottom = vec![0.0f32; len];
    accumulate(event, model, lo, &mut top, |p| {
        usize::from(p.channel) < n_top
    });
    accumulate(event, model, lo, &mut bottom, |p| {
        usize::from(p.channel) >= n_top
    });
    Summed {
        top: bin_max(&top, lo, bins, sample_ns),
        bottom: bin_max(&bottom, lo, bins, sample_ns),
    }
}

/// The pods overlapping samples `[lo, hi)` (of `channel` only, when given),
/// by start; at most `max`, and whether some were left out.
pub fn pod_spans(
    event: &EventView<'_>,
    sample_ns: f64,
    (lo, hi): (i64, i64),
    channel: Option<u16>,
    max: usize,
) -> (Vec<PodSpan>, bool) {
    let mut spans: Vec<PodSpan> = event
        .pods
        .iter()
        .filter(|p| channel.is_none_or(|c| p.channel == c))
        .map(|p| {
            let start = i64::from(p.start_sample);
            (p.channel, start, start + i64::from(p.length))
        })
        .filter(|&(_, a, b)| b > lo && a < hi)
        .map(|(channel, a, b)| PodSpan {
            channel,
            start_ns: a as f64 * sample_ns,
            end_ns: b as f64 * sample_ns,
        })
        .collect();
    spans.sort_by(|a, b| {
        a.start_ns
            .total_cmp(&b.start_ns)
            .then(a.channel.cmp(&b.channel))
    });
    let truncated = spans.len() > max;
    spans.truncate(max);
    (spans, truncated)
}

/// The summed waveform of both arrays around pulse `pulse` (extent samples
/// `[s, e)`, shown over `shown` in at most `bins` bins) and its area-fraction times.
pub fn pulse_waveform(
    event: &EventView<'_>,
    model: &DetectorModel,
    sample_ns: f64,
    pulse: usize,
    (s, e): (i64, i64),
    shown: (i64, i64),
    bins: usize,
) -> PulseWaveform {
    let mut extent = vec![0.0f32; (e - s).max(1) as usize];
    accumulate(event, model, s, &mut extent, |_| true);
    let aft = area_fraction_times(&extent, &AFT_FRACTIONS)
        .map(|q| {
            AFT_FRACTIONS
                .iter()
                .zip(q)
                .map(|(&f, q)| AreaFractionTime {
                    fraction: f64::from(f),
                    time_ns: (s as f64 + f64::from(q)) * sample_ns,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut dense = vec![0.0f32; (shown.1 - shown.0).max(1) as usize];
    accumulate(event, model, shown.0, &mut dense, |_| true);
    PulseWaveform {
        pulse,
        start_ns: s as f64 * sample_ns,
        end_ns: e as f64 * sample_ns,
        area_phd: extent.iter().map(|&v| f64::from(v)).sum(),
        trace: bin_max(&dense, shown.0, bins, sample_ns),
        aft,
    }
}

/// One channel's waveform over samples `[lo, hi)` in at most `bins` bins.
pub fn channel(
    event: &EventView<'_>,
    model: &DetectorModel,
    sample_ns: f64,
    channel: u16,
    (lo, hi): (i64, i64),
    bins: usize,
) -> Trace {
    let mut dense = vec![0.0f32; (hi - lo).max(1) as usize];
    accumulate(event, model, lo, &mut dense, |p| p.channel == channel);
    bin_max(&dense, lo, bins, sample_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_is_subtracted_and_bins_keep_the_peak() {
        let model = crate::conditions::Conditions::load("v1").unwrap().detector;
        let phd = model.phd_area_adc(0);
        // Pod on channel 0 (top): baseline 1000, one sample 1000 - phd (1 phd/sample).
        let mut s = vec![1000i16; 40];
        s[30] = 1000 - phd.round() as i16;
        // Pod on the last channel (bottom): flat.
        s.extend(vec![500i16; 10]);
        let last = (model.pmts.len() - 1) as u16;
        let pods = [
            PodRecord {
                channel: 0,
                start_sample: 100,
                length: 40,
                offset: 0,
            },
            PodRecord {
                channel: last,
                start_sample: 90,
                length: 10,
                offset: 40,
            },
        ];
        let ev = EventView {
            event_id: 7,
            trigger_time_ns: 0,
            pods: &pods,
            samples: &s,
        };
        assert_eq!(pod_extent(&ev), (90, 140));
        let sig = pod_signal(&s[..40], phd);
        assert!(sig[..30].iter().all(|&v| v == 0.0));
        assert!((sig[30] - (phd.round() / phd) as f32).abs() < 1e-6);
        let w = summed(&ev, &model, 10.0, (90, 140), 5);
        assert_eq!(w.top.values.len(), 5);
        assert_eq!(w.top.bin_ns, 100.0);
        assert_eq!(w.top.t0_ns, 900.0);
        // Sample 130 lies in bin (130 - 90) / 10 = 4.
        assert!((w.top.values[4] - sig[30]).abs() < 1e-6);
        assert!(w.bottom.values.iter().all(|&v| v == 0.0));
        let c = channel(&ev, &model, 10.0, 0, (125, 135), 100);
        assert_eq!(c.values.len(), 10);
        assert!((c.values[5] - sig[30]).abs() < 1e-6);
        // Pods: both overlap 90..140, only channel 0's overlaps 120..130.
        let (all, cut) = pod_spans(&ev, 10.0, (90, 140), None, 10);
        assert_eq!((all.len(), cut), (2, false));
        assert_eq!((all[0].start_ns, all[0].end_ns), (900.0, 1000.0));
        let (one, _) = pod_spans(&ev, 10.0, (120, 130), None, 10);
        assert_eq!(
            one,
            vec![PodSpan {
                channel: 0,
                start_ns: 1000.0,
                end_ns: 1400.0
            }]
        );
        assert_eq!(
            pod_spans(&ev, 10.0, (90, 140), None, 1),
            (vec![all[0]], true)
        );
        // The single-sample pulse at sample 130: every fraction falls inside it.
        let p = pulse_waveform(&ev, &model, 10.0, 0, (128, 133), (120, 140), 100);
        assert_eq!(p.aft.len(), AFT_FRACTIONS.len());
        for (a, f) in p.aft.iter().zip(AFT_FRACTIONS) {
            assert!(
                (a.time_ns - (1300.0 + 10.0 * f64::from(f))).abs() < 1e-3,
                "{a:?}"
            );
        }
        assert!((p.area_phd - f64::from(sig[30])).abs() < 1e-6);
    }
}
