//! Electron lifetime from Kr83m single scatters: the S2 falls as
//! exp(-t_drift / tau) because electrons attach to impurities while drifting.
//!
//! ```text
//! ln S2_i = a - lambda t_i + b s1r_i + c (r_i / R)^2 + e_i        lambda = 1 / tau
//! s1r_i   = S1_i / median(S1 | drift-time decile of i) - 1
//! ```
//! Robust least squares (rejection beyond 3.5 robust sigma, see
//! `linear_fit`); sigma(lambda) from the fit covariance with the residual
//! variance of the kept events. The S1 term takes out the recombination
//! fluctuation (more electrons recombine -> more light, fewer electrons);
//! taken relative to its own drift-time decile it is uncorrelated with t, so
//! it narrows the fit without biasing lambda. The r^2 term takes out the
//! S2 light collection's radial fall-off.

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
    /// S2 at zero drift, at the mean S1 and centre [phd].
    pub s2_at_zero_drift_phd: f64,
    /// Events offered / kept by the fit.
    pub n_events: usize,
    /// Events kept after outlier rejection.
    pub n_kept: usize,
    /// Residual rms of ln S2.
    pub residual_sd: f64,
    /// For the plot: (drift [us], median ln S2 adjusted to s1r = 0 and r = 0) per drift bin.
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
    let s1_median: Vec<f64> = (0..bins)
        .map(|b| {
            median(
                ev.iter()
                    .zip(&bin)
                    .filter(|(_, &k)| k == b)
                    .map(|(e, _)| e.s1_phd)
                    .collect(),
            )
        })
        .collect();
    let rows: Vec<Vec<f64>> = ev
        .iter()
        .zip(&t_ms)
        .zip(&bin)
        .map(|((e, &t), &b)| {
            let r2 = (e.x_mm * e.x_mm + e.y_mm * e.y_mm) / (radius_mm * radius_mm);
            vec![1.0, t, e.s1_phd / s1_median[b] - 1.0, r2]
        })
        .collect();
    let y: Vec<f64> = ev.iter().map(|e| e.s2_phd.ln()).collect();
    let fit = robust_least_squares(&rows, &y, &vec![1.0; y.len()], 3.5).ok_or(
        CalibrateError::Fit {
            product: "electron lifetime",
            why: "singular design (all drift times equal?)".into(),
        },
    )?;
    let lambda = -fit.coef[1];
    if !(lambda > 0.0) {
        return Err(CalibrateError::Fit {
            product: "electron lifetime",
            why: format!("S2 does not fall with drift time (slope {:.3e} per ms)", -lambda),
        });
    }
    let profile = (0..bins)
        .map(|b| {
            let sel: Vec<usize> = (0..ev.len()).filter(|&i| bin[i] == b).collect();
            let t = median(sel.iter().map(|&i| t_ms[i] * 1e3).collect());
            let adj = median(
                sel.iter()
                    .map(|&i| y[i] - fit.coef[2] * rows[i][2] - fit.coef[3] * rows[i][3])
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
