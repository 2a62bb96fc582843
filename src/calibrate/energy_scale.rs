//! The energy scale from the Kr83m line: the factor k on the combined
//! energy that puts the median Kr83m single scatter at 41.5 keV.
//!
//! ```text
//! E_i = W (S1c_i / g1 + S2c_i / g2)        with the measured lifetime, maps, SE gain
//! k   = 41.5 keV / median_i E_i
//! sigma(k) = k sigma_med / median E,       sigma_med = 1.2533 sd(E) / sqrt(n)
//! ```
//!
//! One line fixes one number. The light-collection maps are relative to the
//! centre (the absolute collection there is not measured by them), and the
//! reconstruction's W need not be the one the liquid has: both move every
//! energy by a common factor, which the line measures. g1 and g2 are left as
//! told: they are also what the salt generator uses as detection
//! efficiencies, which a factor fitted for the energy scale is not.

use serde::Serialize;

use super::CalibrateError;

/// Kr83m's total energy [keV] (32.1 + 9.4 keV transitions).
pub const KR83M_KEV: f64 = 41.5;

/// The Kr83m line's energy scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EnergyScale {
    /// Factor on the combined energy.
    pub factor: f64,
    /// Its statistical uncertainty.
    pub sigma_factor: f64,
    /// Median Kr83m energy without the factor [keV].
    pub peak_before_kev: f64,
    /// Events the median is over.
    pub events: usize,
}

/// The factor from the Kr83m single scatters' energies without it [keV].
///
/// # Errors
/// [`CalibrateError::TooFew`] below 100 finite energies; [`CalibrateError::Fit`]
/// when the median is not positive.
pub fn fit_energy_scale(energies_kev: &[f64]) -> Result<EnergyScale, CalibrateError> {
    let mut e: Vec<f64> = energies_kev
        .iter()
        .copied()
        .filter(|e| e.is_finite())
        .collect();
    if e.len() < 100 {
        return Err(CalibrateError::TooFew {
            product: "energy scale",
            what: "Kr83m single scatters with an energy",
            got: e.len(),
            need: 100,
        });
    }
    e.sort_by(f64::total_cmp);
    let median = e[e.len() / 2];
    if median <= 0.0 {
        return Err(CalibrateError::Fit {
            product: "energy scale",
            why: format!("the Kr83m median energy is {median} keV"),
        });
    }
    let n = e.len() as f64;
    let mean = e.iter().sum::<f64>() / n;
    let sd = (e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let factor = KR83M_KEV / median;
    Ok(EnergyScale {
        factor,
        sigma_factor: factor * 1.2533 * sd / n.sqrt() / median,
        peak_before_kev: median,
        events: e.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    /// A line reconstructed 3 % high: the factor brings it back within its
    /// quoted uncertainty.
    #[test]
    fn the_line_gives_the_factor() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let d = Normal::new(KR83M_KEV * 1.03, 0.06 * KR83M_KEV).unwrap();
        let e: Vec<f64> = (0..5000).map(|_| d.sample(&mut rng)).collect();
        let s = fit_energy_scale(&e).unwrap();
        let pull = (s.factor - 1.0 / 1.03) / s.sigma_factor;
        assert!(pull.abs() < 3.0, "{s:?}: pull {pull}");
        assert!(s.sigma_factor < 0.002, "{s:?}");
    }

    #[test]
    fn too_few_events_or_no_line_are_named() {
        let e = fit_energy_scale(&[41.5; 50]).unwrap_err();
        assert!(e.to_string().contains("energy scale"), "{e}");
        let e = fit_energy_scale(&[-1.0; 200]).unwrap_err();
        assert!(e.to_string().contains("median"), "{e}");
    }
}
