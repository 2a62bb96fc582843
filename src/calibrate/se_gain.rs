//! Single-electron gain and width from lone single-electron pulses (pulses
//! classified SE before the event's S1, where no S2 electron tail lies).
//!
//! ```text
//! start: mu = median, sigma = 1.4826 MAD
//! repeat: window W = [mu - 2 sigma, mu + 2 sigma]
//!         mu = mean(W),  sigma = sd(W) / 0.8796     (sd of a Gaussian cut at +-2 sigma)
//! sigma(mu) = sd(W) / sqrt(n_W)
//! ```
//! The symmetric window keeps the mean of the Gaussian core unbiased by the
//! classification cuts on the tails (SE area >= 15 phd, < 100 phd).

use super::CalibrateError;

/// Gaussian core of the single-electron area spectrum.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeGain {
    /// Mean single-electron area [phd].
    pub gain_phd: f64,
    /// Uncertainty of the mean [phd].
    pub sigma_gain_phd: f64,
    /// Relative width (sigma / mean).
    pub resolution: f64,
    /// Pulses used.
    pub n_pulses: usize,
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

/// Fit the SE spectrum.
///
/// # Errors
/// [`CalibrateError::TooFew`] with fewer than 30 pulses.
pub fn fit_se_gain(areas: &[f64]) -> Result<SeGain, CalibrateError> {
    let v: Vec<f64> = areas.iter().copied().filter(|a| a.is_finite()).collect();
    if v.len() < 30 {
        return Err(CalibrateError::TooFew {
            product: "single-electron gain",
            what: "lone single-electron pulses",
            got: v.len(),
            need: 30,
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
        (mu, sigma, n) = (m, sd / 0.8796, k);
        if converged {
            break;
        }
    }
    Ok(SeGain {
        gain_phd: mu,
        sigma_gain_phd: sigma * 0.8796 / (n as f64).sqrt(),
        resolution: sigma / mu,
        n_pulses: n,
    })
}
