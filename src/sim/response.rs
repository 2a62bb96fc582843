//! What the simulator asks of a detector beyond its conditions' model: the
//! light collection and electroluminescence at a position, and which
//! channels are dead or noisy.
//!
//! Two detectors answer: the true one of a detector-truth file
//! ([`super::detector_truth::EffectiveTruth`], the detector the
//! reconstruction is not told) and the one a conditions tag describes
//! ([`super::told_detector::ToldDetector`], the pipeline's measurement of it,
//! which salt events are made with). Without either the simulator uses the
//! nominal closed forms of the model.
//!
//! ```text
//! S1 detected   ~ Binomial(N_ph, g1 s1_light_collection(x, y, z))
//! S2 per e-     ~ N(se_size_phd(x, y), se_res se_size_phd), emitted over el_width_ns(x, y)
//! photon on a dead channel: lost;  noisy channel: + Poisson(rate x window) single phe
//! ```

use super::detector_truth::EffectiveTruth;

/// A detector's response where it differs from the nominal closed forms.
pub trait DetectorResponse: Sync + std::fmt::Debug {
    /// Relative S1 light collection at (x, y, z) [mm] (multiplies g1).
    fn s1_light_collection(&self, x: f64, y: f64, z: f64) -> f64;
    /// Mean phd emitted per extracted electron at (x, y) [mm], before any is
    /// lost on a dead channel.
    fn se_size_phd(&self, x: f64, y: f64) -> f64;
    /// Electroluminescence duration at (x, y) [ns].
    fn el_width_ns(&self, x: f64, y: f64) -> f64;
    /// True when `channel` records nothing.
    fn is_dead(&self, channel: usize) -> bool;
    /// Channels with extra single phe, in the order their backgrounds are drawn.
    fn noisy_channels(&self) -> &[u16];
    /// Extra single-phe rate of the `i`-th noisy channel [Hz].
    fn noisy_rate_hz(&self, i: usize) -> f64;
}

impl DetectorResponse for EffectiveTruth {
    fn s1_light_collection(&self, x: f64, y: f64, z: f64) -> f64 {
        self.light.s1_light_collection(x, y, z)
    }

    fn se_size_phd(&self, x: f64, y: f64) -> f64 {
        EffectiveTruth::se_size_phd(self, x, y)
    }

    fn el_width_ns(&self, x: f64, y: f64) -> f64 {
        self.gas_gap.el_width_ns(x, y)
    }

    fn is_dead(&self, channel: usize) -> bool {
        EffectiveTruth::is_dead(self, channel)
    }

    fn noisy_channels(&self) -> &[u16] {
        &self.noisy_channels
    }

    fn noisy_rate_hz(&self, _i: usize) -> f64 {
        self.noisy_rate_hz
    }
}
