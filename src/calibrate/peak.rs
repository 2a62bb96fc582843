//! The Gaussian core of a spectrum: the position and width of a peak,
//! unbiased by tails and by cuts outside it. Used for the single-electron
//! area spectrum and the Kr83m energy peak.
//!
//! ```text
//! start:  mu = median, sigma = 1.4826 MAD
//! repeat: window W = [mu - 2 sigma, mu + 2 sigma]
//!         mu = mean(W),  sigma = sd(W) / 0.8796     (sd of a Gaussian cut at +-2 sigma)
//! sigma(mu)    = 1.292 sd(W) / sqrt(n_W)
//! sigma(sigma) = 1.106 sigma / sqrt(n_W)
//! ```
//! The window follows the estimate, so a fluctuation feeds back: a window
//! moved (widened) by one takes in more of the same side (more tail). At the
//! fixed point an estimate's error is its one-window error divided by
//! 1 - g', g' the derivative of the window statistic by the window's centre
//! (half width), for a unit Gaussian cut at a = 2 (phi, Phi its density and
//! distribution, D = 2 Phi(2) - 1, m2 = 1 - 2 a phi(a) / D = 0.7737,
//! m4 = 1.4162 the cut moments):
//!
//! ```text
//! mean:  one window sd(W) / sqrt(n),                        g' = 2 a phi(a) / D = 0.2263
//! width: one window sqrt((m4 - m2^2) / (4 m2 n)) / sqrt(m2)  = 0.5843 / sqrt(n) (delta method),
//!        g' = d sqrt(m2(2 s)) / ds / sqrt(m2) at s = 1       = 0.4717
//! ```
//! The unit test checks both pulls on seeded Gaussian peaks with a flat tail.

use super::CalibrateError;

/// Fewest finite values a peak is measured from.
pub const MIN_VALUES: usize = 30;

/// sd of a unit Gaussian cut at +-2 sigma.
const CUT_SD: f64 = 0.8796;

/// Feedback of the window on the mean: 1 / (1 - 0.2263) (see the module docs).
const MEAN_FEEDBACK: f64 = 1.2924;

/// sd of the width estimate times sqrt(n) / sigma: 0.5843 / (1 - 0.4717).
const WIDTH_SD: f64 = 1.106;

/// Position and width of a peak, with their uncertainties.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GaussianCore {
    /// Mean of the core.
    pub mean: f64,
    /// Uncertainty of the mean.
    pub sigma_mean: f64,
    /// Gaussian sigma of the core.
    pub width: f64,
    /// Uncertainty of the width.
    pub sigma_width: f64,
    /// Values inside the final window.
    pub n: usize,
}

/// Mean and sd of the values inside [lo, hi].
fn window_moments(v: &[f64], lo: f64, hi: f64) -> (f64, f64, usize) {
    let (mut n, mut s, mut s2) = (0usize, 0.0, 0.0);
    for &a in v.iter().filter(|&&a| (lo..=hi).contains(&a)) {
        n += 1;
        s += a;
        s2 += a * a;
    }
    let m = s / n.max(1) as f64;
    (m, (s2 / n.max(1) as f64 - m * m).max(0.0).sqrt(), n)
}

/// Measure the core of `values` (non-finite values are left out).
///
/// # Errors
/// [`CalibrateError::TooFew`] naming `product` and `what` with fewer than
/// [`MIN_VALUES`] finite values.
pub fn gaussian_core(
    values: &[f64],
    product: &'static str,
    what: &'static str,
) -> Result<GaussianCore, CalibrateError> {
    let v: Vec<f64> = values.iter().copied().filter(|a| a.is_finite()).collect();
    if v.len() < MIN_VALUES {
        return Err(CalibrateError::TooFew {
            product,
            what,
            got: v.len(),
            need: MIN_VALUES,
        });
    }
    let mut sorted = v.clone();
    sorted.sort_by(f64::total_cmp);
    let mut mu = sorted[sorted.len() / 2];
    let mut dev: Vec<f64> = v.iter().map(|a| (a - mu).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mut sigma = 1.4826 * dev[dev.len() / 2];
    let mut n = v.len();
    for _ in 0..20 {
        let (m, sd, k) = window_moments(&v, mu - 2.0 * sigma, mu + 2.0 * sigma);
        let converged = (m - mu).abs() < 1e-6 * mu.abs();
        (mu, sigma, n) = (m, sd / CUT_SD, k);
        if converged {
            break;
        }
    }
    let root_n = (n.max(1) as f64).sqrt();
    Ok(GaussianCore {
        mean: mu,
        sigma_mean: MEAN_FEEDBACK * sigma * CUT_SD / root_n,
        width: sigma,
        sigma_width: WIDTH_SD * sigma / root_n,
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal, Uniform};

    #[test]
    fn too_few_values_name_the_product() {
        let e = gaussian_core(&[1.0; 29], "kr", "energies").unwrap_err();
        assert!(e.to_string().contains("kr: 29 energies"), "{e}");
        let nan = [f64::NAN; 40];
        assert!(gaussian_core(&nan, "kr", "energies").is_err());
    }

    #[test]
    fn mean_and_width_uncertainties_cover_on_seeded_peaks_with_a_tail() {
        // 400 peaks of 500 values, N(41.5, 3), plus 5 % flat background:
        // the pulls of the mean and the width have unit spread.
        let (mu, sd) = (41.5, 3.0);
        let (mut pull_m, mut pull_w) = (Vec::new(), Vec::new());
        for seed in 0..400 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let g = Normal::new(mu, sd).unwrap();
            let flat = Uniform::new(20.0, 70.0).unwrap();
            let v: Vec<f64> = (0..500)
                .map(|i| {
                    if i % 20 == 0 {
                        flat.sample(&mut rng)
                    } else {
                        g.sample(&mut rng)
                    }
                })
                .collect();
            let c = gaussian_core(&v, "test", "values").unwrap();
            pull_m.push((c.mean - mu) / c.sigma_mean);
            pull_w.push((c.width - sd) / c.sigma_width);
        }
        let stats = |p: &[f64]| {
            let n = p.len() as f64;
            let m = p.iter().sum::<f64>() / n;
            let s = (p.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            (m, s)
        };
        let ((mm, sm), (mw, sw)) = (stats(&pull_m), stats(&pull_w));
        eprintln!("pulls over 400 peaks: mean {mm:.3} +- {sm:.3}, width {mw:.3} +- {sw:.3}");
        assert!(
            mm.abs() < 0.3 && (0.8..1.25).contains(&sm),
            "mean pull {mm} +- {sm}"
        );
        assert!(
            mw.abs() < 0.5 && (0.8..1.25).contains(&sw),
            "width pull {mw} +- {sw}"
        );
    }
}
