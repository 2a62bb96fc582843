//! Sample statistics of the report: quantiles, mean and sd, and the mean and
//! sd of a core clipped at k sd (with the factor that turns the clipped sd of
//! a Gaussian back into its sd).

/// sd of a Gaussian clipped at +-2.5 sd, in units of its sd.
pub(super) const CLIP_25_SD: f64 = 0.9465;

/// The q-quantile (nearest rank); NaN for an empty sample.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Mean and sd (n - 1).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// Mean and sd after iterative clipping at `k` sd, and the events kept.
pub fn clipped_mean_sd(v: &[f64], k: f64) -> (f64, f64, usize) {
    let (mut mean, mut sd) = mean_sd(v);
    let mut kept = v.len();
    for _ in 0..20 {
        let core: Vec<f64> = v
            .iter()
            .copied()
            .filter(|x| (x - mean).abs() < k * sd)
            .collect();
        if core.len() < 2 {
            break;
        }
        let (m2, s2) = mean_sd(&core);
        kept = core.len();
        let tol = 1e-9 * sd.max(1e-12);
        if (m2 - mean).abs() < tol && (s2 - sd).abs() < tol {
            break;
        }
        (mean, sd) = (m2, s2);
    }
    (mean, sd, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_statistics_ignore_outliers() {
        let mut v: Vec<f64> = (0..1000)
            .map(|i| (f64::from(i) / 999.0 - 0.5) * 2.0)
            .collect();
        v.push(1e6);
        let (m, _, kept) = clipped_mean_sd(&v, 3.0);
        assert!(m.abs() < 1e-9 && kept == 1000, "{m} {kept}");
        assert!(quantile(&mut [], 0.5).is_nan());
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.5), 2.0);
    }
}
