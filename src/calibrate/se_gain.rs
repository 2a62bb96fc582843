//! Single-electron gain and width from lone single-electron pulses (pulses
//! classified SE before the event's S1, where no S2 electron tail lies).
//!
//! The gain is the mean of the spectrum's Gaussian core (see `peak`): its
//! symmetric window keeps the mean unbiased by the classification cuts on
//! the tails (SE area >= 15 phd, < 100 phd), divided by 1 - area_loss, the
//! share of single-phe area the hit threshold loses (measured from the lone
//! single phe, see `pmt_gains`): an SE's photons mostly land alone on their
//! channels, while the S2s the gain converts to electrons lose none of their
//! area. Light on dead channels stays missing, as it does from every S2.

use super::peak::gaussian_core;
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

/// Fit the SE spectrum; `area_loss` is the share of single-phe area below
/// the hit threshold.
///
/// # Errors
/// [`CalibrateError::TooFew`] with fewer than 30 pulses.
pub fn fit_se_gain(areas: &[f64], area_loss: f64) -> Result<SeGain, CalibrateError> {
    let core = gaussian_core(areas, "single-electron gain", "lone single-electron pulses")?;
    let found = 1.0 - area_loss;
    Ok(SeGain {
        gain_phd: core.mean / found,
        sigma_gain_phd: core.sigma_mean / found,
        resolution: core.width / core.mean,
        n_pulses: core.n,
    })
}
