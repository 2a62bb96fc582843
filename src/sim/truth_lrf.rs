//! The true light response of the top array in a detector truth
//! ([`super::detector_truth`]): the `[lrf]` table.
//!
//! ```text
//! f(rho) = (1 + (rho / r0)^2)^(-3/2) + a (1 + (rho / L)^2)^(-3/2) + flat
//! eta_k  = e_k f(rho_k),   e_k = exp(d_k) / mean_j exp(d_j),   d_k ~ N(0, efficiency_rms), seeded
//! ```
//!
//! The nominal conditions (v1) have r0 = 60 mm, no halo (a = 0) and flat =
//! 0.01, with every PMT alike; a truth with an `[lrf]` table gives the
//! simulator another radial shape (the halo stands for light reflected once
//! off the walls and the liquid surface) and a relative efficiency per top
//! PMT. It is resolved into a [`LightResponse`] written with the run's truth,
//! in the same form as the learned response of `tpcflow calibrate`, so the
//! Cramer-Rao bound of the true detector can be computed from it
//! (`DetectorModel` with `calibration.lrf` set to it).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use tpcflow_reco::lrf::{LightResponse, LrfShape};

use super::truth_maps::FieldError;

/// The `[lrf]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrfSpec {
    /// Scale of the direct light's fall-off [mm].
    pub r0_mm: f64,
    /// Amplitude of the reflection halo, relative to the direct light on axis.
    #[serde(default)]
    pub tail_amplitude: f64,
    /// Scale of the reflection halo [mm].
    #[serde(default = "default_tail_length")]
    pub tail_length_mm: f64,
    /// Flat term, relative to the direct light on axis.
    #[serde(default)]
    pub flat: f64,
    /// rms of ln(relative efficiency) over the top PMTs.
    #[serde(default)]
    pub efficiency_rms: f64,
    /// Seed of the per-PMT efficiencies.
    #[serde(default)]
    pub efficiency_seed: u64,
}

fn default_tail_length() -> f64 {
    200.0
}

impl LrfSpec {
    /// Check the ranges.
    ///
    /// # Errors
    /// (field, value, why) of the first value out of range.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (field, v, positive) in [
            ("lrf.r0_mm", self.r0_mm, true),
            ("lrf.tail_length_mm", self.tail_length_mm, true),
            ("lrf.tail_amplitude", self.tail_amplitude, false),
            ("lrf.flat", self.flat, false),
            ("lrf.efficiency_rms", self.efficiency_rms, false),
        ] {
            let ok = v.is_finite() && if positive { v > 0.0 } else { v >= 0.0 };
            if !ok {
                let why = if positive {
                    "must be finite and > 0"
                } else {
                    "must be finite and >= 0"
                };
                return Err((field.to_string(), v, why.to_string()));
            }
        }
        Ok(())
    }

    /// The response of a detector with `n_top` top PMTs.
    pub fn resolve(&self, n_top: usize) -> LightResponse {
        let mut rng = ChaCha8Rng::seed_from_u64(self.efficiency_seed);
        let dev = Normal::new(0.0, self.efficiency_rms).expect("validated rms");
        let raw: Vec<f64> = (0..n_top).map(|_| dev.sample(&mut rng).exp()).collect();
        let mean = raw.iter().sum::<f64>() / n_top.max(1) as f64;
        LightResponse {
            shape: LrfShape::Analytic {
                r0_mm: self.r0_mm,
                tail_amplitude: self.tail_amplitude,
                tail_length_mm: self.tail_length_mm,
                flat: self.flat,
            },
            relative_efficiency: raw.iter().map(|e| e / mean).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiencies_have_the_asked_spread_and_mean_one() {
        let spec = LrfSpec {
            r0_mm: 66.0,
            tail_amplitude: 0.03,
            tail_length_mm: 200.0,
            flat: 0.004,
            efficiency_rms: 0.1,
            efficiency_seed: 20,
        };
        let r = spec.resolve(253);
        let e = &r.relative_efficiency;
        let mean = e.iter().sum::<f64>() / 253.0;
        let rms = (e.iter().map(|v| (v - 1.0).powi(2)).sum::<f64>() / 253.0).sqrt();
        assert!((mean - 1.0).abs() < 1e-12);
        assert!((0.08..0.12).contains(&rms), "rms {rms}");
        assert_eq!(spec.resolve(253), r, "seeded");
        assert!(r.validate(253).is_ok());
        let bad = LrfSpec {
            r0_mm: -1.0,
            ..spec
        };
        assert_eq!(bad.validate().unwrap_err().0, "lrf.r0_mm");
    }
}
