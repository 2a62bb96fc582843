//! Electron lifetime from Kr83m single scatters: the S2 falls as
//! exp(-t_drift / tau) because electrons attach to impurities while drifting.
//!
//! ```text
//! ln S2_i = a - lambda t_i + c (r_i / R)^2 + e_i        lambda = 1 / tau
//! ```
//! Robust least squares (rejection beyond 3.5 robust sigma, see
//! `linear_fit`); sigma(lambda) from the fit covariance with the residual
//! variance of the kept events. The r^2 term takes out the S2 light
//! collection's radial fall-off. The spread of ln S2 at one drift time is
//! dominated by recombination fluctuations (NEST's, ~12 % rms for Kr83m here): an S1
//! anti-correlation term narrows the residuals but, on seeded runs, not the
//! run-to-run scatter of lambda (its quoted uncertainty then undercovers:
//! pull width 1.6), so it is not used.

use super::inputs::KrEvent;
use super::linear_fit::robust_least_squares;
use super::CalibrateError;

/// The fitted electron lifetime.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LifetimeFit {
    /// Electron lifetime [us].
    pub lifetime_us: f64,
    /// 1 / tau [1/ms].
    pub inverse_lifetime_per_ms: f64,
    /// Uncertainty of 1 / tau [1/ms].
    pub sigma_inverse_lifetime_per_ms: f64,
    /// S2 at zero drift at the centre [phd].
    pub s2_at_zero_drift_phd: f64,
    /// Events offered / kept by the fit.
    pub n_events: usize,
    /// Events kept after outlier rejection.
    pub n_kept: usize,
    /// Residual rms of ln S2.
    pub residual_sd: f64,
    /// For the plot: (drift [us], median ln S2 adjusted to r = 0) per drift bin.
    pub profile: Vec<(f64, f64)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// Decile index (0..bins) of each value, by rank.
fn quantile_bins(t: &[f64], bins: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..t.len()).collect();
    order.sort_by(|&a, &b| t[a].total_cmp(&t[b]));
    let mut out = vec![0; t.len()];
    for (rank, &i) in order.iter().enumerate() {
        out[i] = rank * bins / t.len();
    }
    out
}

/// Fit the lifetime; `radius_mm` scales the radial term.
///
/// # Errors
/// [`CalibrateError::TooFew`] with fewer than 50 usable single scatters;
/// [`CalibrateError::Fit`] when the S2 does not fall with drift time.
pub fn fit_lifetime(events: &[KrEvent], radius_mm: f64) -> Result<LifetimeFit, CalibrateError> {
    let ev: Vec<&KrEvent> = events
        .iter()
        .filter(|e| e.drift_ns > 0.0 && e.s1_phd > 0.0 && e.s2_phd > 0.0)
        .collect();
    if ev.len() < 50 {
        return Err(CalibrateError::TooFew {
            product: "electron lifetime",
            what: "Kr83m single scatters with a drift time",
            got: ev.len(),
            need: 50,
        });
    }
    let t_ms: Vec<f64> = ev.iter().map(|e| e.drift_ns * 1e-6).collect();
    let bins = 10;
    let bin = quantile_bins(&t_ms, bins);
    let rows: Vec<Vec<f64>> = ev
        .iter()
        .zip(&t_ms)
        .map(|(e, &t)| {
            let r2 = (e.x_mm * e.x_mm + e.y_mm * e.y_mm) / (radius_mm * radius_mm);
            vec![1.0, t, r2]
        })
        .collect();
    let y: Vec<f64> = ev.iter().map(|e| e.s2_phd.ln()).collect();
    let fit =
        robust_least_squares(&rows, &y, &vec![1.0; y.len()], 3.5).ok_or(CalibrateError::Fit {
            product: "electron lifetime",
            why: "singular design (all drift times equal?)".into(),
        })?;
    let lambda = -fit.coef[1];
    if lambda.is_nan() || lambda <= 0.0 {
        return Err(CalibrateError::Fit {
            product: "electron lifetime",
            why: format!(
                "S2 does not fall with drift time (slope {:.3e} per ms)",
                -lambda
            ),
        });
    }
    let profile = (0..bins)
        .map(|b| {
            let sel: Vec<usize> = (0..ev.len()).filter(|&i| bin[i] == b).collect();
            let t = median(sel.iter().map(|&i| t_ms[i] * 1e3).collect());
            let adj = median(
                sel.iter()
                    .map(|&i| y[i] - fit.coef[2] * rows[i][2])
                    .collect(),
            );
            (t, adj)
        })
        .collect();
    Ok(LifetimeFit {
        lifetime_us: 1e3 / lambda,
        inverse_lifetime_per_ms: lambda,
        sigma_inverse_lifetime_per_ms: fit.cov[1][1].sqrt(),
        s2_at_zero_drift_phd: fit.coef[0].exp(),
        n_events: ev.len(),
        n_kept: fit.n_kept,
        residual_sd: fit.residual_sd,
        profile,
    })
}
