//! The energy scale from the Kr83m line: g1 such that the median corrected
//! energy of the Kr83m single scatters is 41.5 keV.
//!
//! ```text
//! E_i(g1) = W (S1c_i / g1 + S2c_i / g2) = a_i g1_base / g1 + b_i
//! g1: median_i E_i(g1) = 41.5 keV                  (bisection; E falls with g1)
//! sigma(g1) = g1 sigma_med / median(a_i g1_base / g1),  sigma_med = 1.2533 sd(E) / sqrt(n)
//! ```
//!
//! One line fixes one combination of g1 and g2: g2 is the measured
//! single-electron gain times the nominal extraction efficiency, and the
//! line sets g1. The light-collection maps are relative to the centre (the
//! absolute collection at the centre is not measured by them), so without
//! this the energy scale carries the maps' normalisation and the fit
//! statistics of their intercepts (~0.5-1 % for a run of a few thousand
//! events); with it, the statistics of one median (~0.1 %).

use serde::Serialize;

use super::CalibrateError;

/// Kr83m's total energy [keV] (32.1 + 9.4 keV transitions).
pub const KR83M_KEV: f64 = 41.5;

/// g1 from the Kr83m line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EnergyScale {
    /// Measured g1 [phd per photon].
    pub g1: f64,
    /// Its statistical uncertainty.
    pub sigma_g1: f64,
    /// Median Kr83m energy with the base g1 [keV].
    pub peak_before_kev: f64,
    /// Events the median is over.
    pub events: usize,
}

/// Median of finite values (NaN when none).
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// g1 from the S1 and S2 parts of each Kr83m energy at `g1_base` [keV]
/// (`s1_kev[i] + s2_kev[i]` is the event's energy with `g1_base`).
///
/// # Errors
/// [`CalibrateError::TooFew`] below 100 events; [`CalibrateError::Fit`]
/// when no g1 in (0, 1] puts the line at 41.5 keV.
pub fn fit_g1(s1_kev: &[f64], s2_kev: &[f64], g1_base: f64) -> Result<EnergyScale, CalibrateError> {
    let pairs: Vec<(f64, f64)> = s1_kev
        .iter()
        .zip(s2_kev)
        .filter(|(a, b)| a.is_finite() && b.is_finite() && **a > 0.0)
        .map(|(a, b)| (*a, *b))
        .collect();
    if pairs.len() < 100 {
        return Err(CalibrateError::TooFew {
            product: "energy scale",
            what: "Kr83m single scatters with S1 and S2",
            got: pairs.len(),
            need: 100,
        });
    }
    let peak = |g1: f64| median(pairs.iter().map(|(a, b)| a * g1_base / g1 + b).collect());
    let (mut lo, mut hi) = (g1_base / 4.0, (4.0 * g1_base).min(1.0));
    if !(peak(lo) >= KR83M_KEV && peak(hi) <= KR83M_KEV) {
        return Err(CalibrateError::Fit {
            product: "energy scale",
            why: format!(
                "the Kr83m line is at {:.2} keV with g1 = {g1_base}: no g1 in [{lo:.4}, {hi:.4}] puts it at {KR83M_KEV} keV",
                peak(g1_base)
            ),
        });
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if peak(mid) > KR83M_KEV {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let g1 = 0.5 * (lo + hi);
    let energies: Vec<f64> = pairs.iter().map(|(a, b)| a * g1_base / g1 + b).collect();
    let n = energies.len() as f64;
    let mean = energies.iter().sum::<f64>() / n;
    let sd = (energies.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n).sqrt();
    let sigma_med = 1.2533 * sd / n.sqrt();
    let s1_part = median(pairs.iter().map(|(a, _)| a * g1_base / g1).collect());
    Ok(EnergyScale {
        g1,
        sigma_g1: g1 * sigma_med / s1_part,
        peak_before_kev: peak(g1_base),
        events: pairs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    /// A detector whose S1 collection is 4 % above what g1 = 0.112 says: the
    /// line comes out high with the base g1 and the fit finds 0.112 x 1.04
    /// within its quoted uncertainty.
    #[test]
    fn the_line_gives_g1() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (g1_true, g1_base) = (0.112 * 1.04, 0.112);
        let noise = Normal::new(0.0, 0.05).unwrap();
        let (mut s1, mut s2) = (Vec::new(), Vec::new());
        for _ in 0..5000 {
            // 74 % of the energy in light, 26 % in charge, anti-correlated.
            let f = noise.sample(&mut rng);
            let photons_kev = 0.74 * KR83M_KEV * (1.0 + f / 0.74 * 0.26);
            s1.push(photons_kev * g1_true / g1_base);
            s2.push(0.26 * KR83M_KEV * (1.0 - f));
        }
        let s = fit_g1(&s1, &s2, g1_base).unwrap();
        assert!(s.peak_before_kev > 42.5, "{s:?}");
        let pull = (s.g1 - g1_true) / s.sigma_g1;
        assert!(pull.abs() < 3.0, "{s:?}: pull {pull}");
        assert!(s.sigma_g1 / s.g1 < 0.003, "{s:?}");
    }

    #[test]
    fn too_few_events_or_no_solution_are_named() {
        let e = fit_g1(&[30.0; 50], &[10.0; 50], 0.112).unwrap_err();
        assert!(e.to_string().contains("energy scale"), "{e}");
        // The S2 part alone is beyond the line: no g1 brings it down.
        let e = fit_g1(&[1.0; 200], &[60.0; 200], 0.112).unwrap_err();
        assert!(e.to_string().contains("41.5 keV"), "{e}");
    }
}
