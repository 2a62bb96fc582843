//! Per-pod baseline and calibration: raw ADC counts (pulses going negative)
//! to a positive signal in phd per sample.
//!
//! ```text
//! baseline b = mean of the first n_pre samples            [ADC counts]
//! rms      s = sqrt(mean of (x_i - b)^2) over them         [ADC counts]
//! signal   v_i = (b - x_i) / phd_area_adc(channel)         [phd/sample]
//! ```
//!
//! When the pre-samples are contaminated (rms above a cut, e.g. a pod that
//! starts at the window edge with light in its first samples) and the pod is
//! long enough, the last `n_pre` samples (the post-samples, which the DAQ
//! records after the signal ends) are used if they are quieter.

use crate::threshold_scan::{range_sums, ScanPath};

/// Baseline of one pod.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PodBaseline {
    /// Baseline [ADC counts].
    pub baseline_adc: f32,
    /// Sample rms around the baseline [ADC counts].
    pub rms_adc: f32,
}

/// Mean and rms of `n` samples from their exact sum and sum of squares
/// (0 and 0 for no samples).
#[inline]
fn from_sums(n: usize, sum: i64, sum2: i64) -> PodBaseline {
    if n == 0 {
        return PodBaseline::default();
    }
    let n = n as i64;
    // n^2 var = n sum2 - sum^2, exact in i64 for pods of up to ~10^9 samples.
    let var = (n * sum2 - sum * sum) as f64 / (n * n) as f64;
    PodBaseline {
        baseline_adc: (sum as f64 / n as f64) as f32,
        rms_adc: var.max(0.0).sqrt() as f32,
    }
}

/// Estimate the baseline of a pod from its first `n_pre` samples (all of them
/// if the pod is shorter), falling back to its last `n_pre` samples when the
/// first ones have an rms above `max_rms_adc` and the last ones are quieter.
/// An empty pod has baseline 0 and rms 0.
pub fn estimate_baseline(samples: &[i16], n_pre: usize, max_rms_adc: f32) -> PodBaseline {
    estimate_baseline_with(samples, n_pre, max_rms_adc, ScanPath::Portable)
}

/// [`estimate_baseline`] with the sums taken by `path` (the same result
/// whatever the path: the sums are exact).
pub fn estimate_baseline_with(
    samples: &[i16],
    n_pre: usize,
    max_rms_adc: f32,
    path: ScanPath,
) -> PodBaseline {
    estimate_from_sums(samples.len(), n_pre, max_rms_adc, |a, b| {
        range_sums(samples, a, b, path)
    })
}

/// [`estimate_baseline`] of a pod of `len` samples whose exact sum and sum
/// of squares over `a..b` are `sums(a, b)` (the AVX2 pass over a pod,
/// `hits::pod_baseline_avx2`, takes them from 64-sample windows in place).
#[inline(always)]
pub(crate) fn estimate_from_sums(
    len: usize,
    n_pre: usize,
    max_rms_adc: f32,
    mut sums: impl FnMut(usize, usize) -> (i64, i64),
) -> PodBaseline {
    let n_pre = n_pre.max(1);
    let n_head = n_pre.min(len);
    if n_head == 0 {
        return PodBaseline::default();
    }
    let (s, s2) = sums(0, n_head);
    let head = from_sums(n_head, s, s2);
    if head.rms_adc <= max_rms_adc || len < 2 * n_pre {
        return head;
    }
    let (s, s2) = sums(len - n_pre, len);
    let tail = from_sums(n_pre, s, s2);
    if tail.rms_adc < head.rms_adc {
        tail
    } else {
        head
    }
}

/// Add the calibrated signal of `samples` to `out`:
/// `out[i] += (baseline - samples[i]) * phd_per_adc` [phd/sample]
/// (one sample at a time; the pulse builder uses
/// [`crate::threshold_scan::add_calibrated_with`], the same sums by SIMD).
///
/// # Panics
/// When `out` is shorter than `samples`.
#[inline]
pub fn add_calibrated(samples: &[i16], baseline: f32, phd_per_adc: f32, out: &mut [f32]) {
    crate::threshold_scan::add_calibrated_with(
        samples,
        baseline,
        phd_per_adc,
        out,
        ScanPath::Portable,
    );
}

/// Sum of the baseline-subtracted, flipped signal [ADC counts]:
/// `n b - sum_i x_i`.
///
/// The sum of the samples is an exact integer, so the only rounding is the
/// final conversion; the hit finder gets it from
/// [`crate::threshold_scan::range_sum`] (SIMD) and calls [`flipped_sum`].
#[inline]
pub fn sum_flipped(samples: &[i16], baseline: f32) -> f32 {
    let total = crate::threshold_scan::range_sum(samples, 0, samples.len(), ScanPath::Portable);
    flipped_sum(total, samples.len(), baseline)
}

/// [`sum_flipped`] from the exact sum `total` of `n` samples.
#[inline]
pub fn flipped_sum(total: i64, n: usize, baseline: f32) -> f32 {
    (f64::from(baseline) * n as f64 - total as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_cases() {
        // (samples, n_pre, expected baseline, expected rms)
        let flat = vec![15000i16; 50];
        let mut dirty_head = vec![15010i16; 60];
        for s in dirty_head.iter_mut().take(10) {
            *s = 14900;
        }
        let alternating: Vec<i16> = (0..40)
            .map(|i| 15000 + if i % 2 == 0 { 2 } else { -2 })
            .collect();
        let cases: Vec<(Vec<i16>, usize, f32, f32)> = vec![
            (flat, 20, 15000.0, 0.0),
            (alternating, 20, 15000.0, 2.0),
            (dirty_head, 20, 15010.0, 0.0),
            (vec![14990; 5], 20, 14990.0, 0.0),
            (vec![], 20, 0.0, 0.0),
        ];
        for (samples, n_pre, b, rms) in cases {
            let got = estimate_baseline(&samples, n_pre, 6.0);
            assert!((got.baseline_adc - b).abs() < 1e-3, "{got:?} vs {b}");
            assert!((got.rms_adc - rms).abs() < 1e-3, "{got:?} vs {rms}");
        }
    }

    #[test]
    fn calibration_flips_and_scales() {
        let samples = [15000i16, 14960, 14980, 15000];
        let mut out = [1.0f32; 4];
        add_calibrated(&samples, 15000.0, 0.025, &mut out);
        assert_eq!(out, [1.0, 2.0, 1.5, 1.0]);
        assert_eq!(sum_flipped(&samples, 15000.0), 60.0);
        assert_eq!(sum_flipped(&[], 15000.0), 0.0);
    }
}
