//! Natural breaks: split a summed waveform at significant local minima.
//!
//! The waveform is first binned (non-overlapping sums of `w` samples, with
//! `w` about a quarter of the area-weighted rms width, at most
//! `split_max_bin_ns`), so that a 1-2 us wide S2 is smooth while an S1 keeps
//! its 10 ns resolution. Scanning the bins left to right, a dip `m` between a
//! maximum `a` on its left and a value `c` on its right is a break when both
//! sides pass
//!
//! ```text
//! side - m > n_sigma * sqrt(F * (side + m)) + min_depth     (compound Poisson)
//! m       < ratio * side
//! ```
//!
//! where F is the variance factor of a bin's content relative to its mean in
//! phd: the phd-area factor plus, because S2 light comes in bunches of one
//! electron's ~47 phd spread over the ~1 us electroluminescence, the phd one
//! electron puts into one bin: `F = F_phd + SE * min(w dt, EL) / EL`.
//! The split sample is the middle of the dip's bin. Cost: linear in the
//! waveform length.

/// Parameters of the split (from [`crate::RecoConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitParams {
    /// Dip below this fraction of each side.
    pub min_ratio: f32,
    /// Significance of each side over the dip [sigma].
    pub n_sigma: f32,
    /// Absolute depth of the dip [phd per bin].
    pub min_depth_phd: f32,
    /// Largest bin [samples].
    pub max_bin: usize,
    /// Excess-variance factor of one phd's area.
    pub excess_variance: f32,
    /// phd one electron makes per sample of its electroluminescence
    /// (SE size / EL width in samples) [phd/sample].
    pub se_phd_per_sample: f32,
    /// Electroluminescence width [samples].
    pub el_samples: f32,
}

/// Bin width for a waveform: a quarter of its area-weighted rms, in [1, max_bin].
pub fn bin_width(wf: &[f32], max_bin: usize) -> usize {
    let (mut s0, mut s1, mut s2) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &v) in wf.iter().enumerate() {
        if v > 0.0 {
            let (v, t) = (f64::from(v), i as f64);
            s0 += v;
            s1 += v * t;
            s2 += v * t * t;
        }
    }
    if s0 <= 0.0 {
        return 1;
    }
    let mean = s1 / s0;
    let rms = (s2 / s0 - mean * mean).max(0.0).sqrt();
    ((rms / 4.0).round() as usize).clamp(1, max_bin.max(1))
}

/// Find the split points of `wf` (sample indices in 1..len, ascending) into
/// `out` (cleared first); `bins` is scratch space.
pub fn split_points(wf: &[f32], p: &SplitParams, bins: &mut Vec<f32>, out: &mut Vec<usize>) {
    out.clear();
    if wf.len() < 3 {
        return;
    }
    let w = bin_width(wf, p.max_bin);
    // Bins of one sample (most pulses are short) are the waveform itself.
    let bins: &[f32] = if w == 1 {
        wf
    } else {
        bins.clear();
        bins.extend(wf.chunks(w).map(|c| c.iter().sum::<f32>()));
        bins
    };
    if bins.len() < 3 {
        return;
    }
    let f = p.excess_variance + p.se_phd_per_sample * (w as f32).min(p.el_samples);
    let significant = |side: f32, dip: f32| {
        let noise = p.n_sigma * (f * (side.max(0.0) + dip.max(0.0))).sqrt();
        side - dip > noise + p.min_depth_phd && dip < p.min_ratio * side
    };
    let mut left_max = bins[0];
    let mut dip = bins[0];
    let mut dip_idx = 0usize;
    for (i, &x) in bins.iter().enumerate().skip(1) {
        if x < dip {
            dip = x;
            dip_idx = i;
            continue;
        }
        if dip_idx > 0 && dip < left_max && significant(left_max, dip) && significant(x, dip) {
            let at = (dip_idx * w + w / 2).min(wf.len() - 1).max(1);
            if out.last().is_none_or(|&l| at > l) {
                out.push(at);
            }
            left_max = x;
            dip = x;
            dip_idx = i;
            continue;
        }
        if x > left_max {
            left_max = x;
            dip = x;
            dip_idx = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SplitParams {
        SplitParams {
            min_ratio: 0.75,
            n_sigma: 4.0,
            min_depth_phd: 1.0,
            max_bin: 25,
            excess_variance: 1.2,
            se_phd_per_sample: 0.47,
            el_samples: 100.0,
        }
    }

    fn gauss(len: usize, peaks: &[(f64, f64, f64)]) -> Vec<f32> {
        (0..len)
            .map(|i| {
                peaks
                    .iter()
                    .map(|&(mu, sigma, area)| {
                        let z = (i as f64 - mu) / sigma;
                        area * (-0.5 * z * z).exp() / (sigma * 2.5066)
                    })
                    .sum::<f64>() as f32
            })
            .collect()
    }

    #[test]
    fn split_table() {
        // (waveform, expected number of split points, expected split region)
        type Case = (&'static str, Vec<f32>, usize, Option<(usize, usize)>);
        let cases: Vec<Case> = vec![
            ("empty", vec![], 0, None),
            ("one S2", gauss(1000, &[(500.0, 100.0, 5000.0)]), 0, None),
            (
                "two S2 5 us apart",
                gauss(1500, &[(500.0, 160.0, 50000.0), (1000.0, 160.0, 50000.0)]),
                1,
                Some((700, 800)),
            ),
            (
                "S1 then S2",
                {
                    let mut w = gauss(400, &[(300.0, 40.0, 3000.0)]);
                    w[10] += 150.0;
                    w[11] += 100.0;
                    w
                },
                1,
                Some((12, 200)),
            ),
            (
                "small wiggle",
                gauss(1000, &[(450.0, 100.0, 5000.0), (550.0, 100.0, 5000.0)]),
                0,
                None,
            ),
        ];
        let (mut bins, mut out) = (Vec::new(), Vec::new());
        for (name, wf, n, region) in cases {
            split_points(&wf, &params(), &mut bins, &mut out);
            assert_eq!(out.len(), n, "{name}: {out:?}");
            if let Some((lo, hi)) = region {
                assert!(out[0] >= lo && out[0] <= hi, "{name}: {out:?}");
            }
        }
    }
}
