//! Tunable thresholds of the reconstruction, resolved once and passed by
//! reference. The whole struct is hashed into the processing lineage, so every
//! field changes the output and nothing here depends on threads or paths.
//!
//! Defaults are chosen for the LZ-like conditions `v1` (10 ns samples, SPE
//! area ~40 ADC x samples, noise 1.5 ADC); see each field for the reasoning.

use serde::{Deserialize, Serialize};

use crate::error::RecoError;

/// Reconstruction settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoConfig {
    /// Samples at the start of a pod averaged for the baseline [samples]
    /// (the DAQ's pre-samples).
    pub baseline_samples: u32,
    /// Pre-sample rms above which the pre-samples are taken as contaminated and
    /// the pod's last `baseline_samples` samples are used instead [ADC counts].
    pub baseline_max_rms_adc: f64,
    /// Hit threshold in units of the noise rms (the larger of the pod's
    /// pre-sample rms and the nominal `daq.noise_adc`).
    pub hit_threshold_rms: f64,
    /// Absolute floor of the hit threshold [phd/sample].
    pub hit_min_threshold_phd: f64,
    /// Samples added before a hit's first sample above threshold [samples].
    pub hit_left_extension: u32,
    /// Samples added after a hit's last sample above threshold [samples].
    pub hit_right_extension: u32,
    /// Largest gap between hits of one pulse [ns].
    pub pulse_gap_ns: f64,
    /// Natural-break split: the dip must be below this fraction of both
    /// neighbouring maxima.
    pub split_min_ratio: f64,
    /// Natural-break split: significance of the dip against the compound
    /// Poisson fluctuation of the binned waveform [sigma].
    pub split_n_sigma: f64,
    /// Natural-break split: absolute depth the dip must have [phd per bin].
    pub split_min_depth_phd: f64,
    /// Natural-break split: largest bin of the smoothed waveform [ns].
    pub split_max_bin_ns: f64,
    /// Channels with a hit within +- this of the pulse peak count as
    /// coincident [ns].
    pub coincidence_half_window_ns: f64,
    /// A pulse on at most one channel below this area is a single phe [phd].
    pub spe_max_area_phd: f64,
    /// S1: largest 50% area width [ns].
    pub s1_max_width50_ns: f64,
    /// S1: largest rise time (10% to 50% area) [ns].
    pub s1_max_rise_time_ns: f64,
    /// S1: fewest coincident channels.
    pub s1_min_coincidence: u32,
    /// S2-like (S2 or single electron): smallest 50% area width [ns].
    pub s2_min_width50_ns: f64,
    /// An S2-like pulse below this area is not an SE but `Other` [phd].
    pub se_min_area_phd: f64,
    /// An S2-like pulse below this area is a single electron [phd]
    /// (about two SE sizes).
    pub se_max_area_phd: f64,
    /// An S2 counts as a further scatter when its area is at least this
    /// fraction of the main S2.
    pub multiple_s2_min_fraction: f64,
    /// A second S1 before the main S2 at least this fraction of the main S1
    /// makes the pairing ambiguous (interaction kind `Other`).
    pub other_s1_max_fraction: f64,
    /// Extra time allowed beyond the maximum drift time when pairing S1 and
    /// S2 [ns].
    pub drift_margin_ns: f64,
    /// Delay of the area-weighted centre of one photoelectron's pulse after
    /// the photon [ns] (SPE shape [0.10, 0.45, 0.30, 0.15] at 10 ns: 1.5 samples).
    pub spe_shape_delay_ns: f64,
    /// Mean delay of S1 photons after the interaction (scintillation decay
    /// plus transit time; ER 28 ns, NR 20 ns with the v1 simulation) [ns].
    pub s1_mean_delay_ns: f64,
    /// Electroluminescence duration of one electron [ns]; the S2 time is its
    /// area-weighted centre minus half of it.
    pub el_width_ns: f64,
    /// Most iterations of the xy likelihood fit.
    pub xy_max_iterations: u32,
    /// The xy fit stops when a step is shorter than this [mm].
    pub xy_tolerance_mm: f64,
}

impl Default for RecoConfig {
    fn default() -> Self {
        Self {
            baseline_samples: 20,
            baseline_max_rms_adc: 6.0,
            hit_threshold_rms: 4.5,
            hit_min_threshold_phd: 0.12,
            hit_left_extension: 2,
            hit_right_extension: 3,
            pulse_gap_ns: 700.0,
            split_min_ratio: 0.75,
            split_n_sigma: 4.0,
            split_min_depth_phd: 1.0,
            split_max_bin_ns: 250.0,
            coincidence_half_window_ns: 100.0,
            spe_max_area_phd: 3.0,
            s1_max_width50_ns: 150.0,
            s1_max_rise_time_ns: 100.0,
            s1_min_coincidence: 3,
            s2_min_width50_ns: 200.0,
            se_min_area_phd: 15.0,
            se_max_area_phd: 100.0,
            multiple_s2_min_fraction: 0.05,
            other_s1_max_fraction: 0.3,
            drift_margin_ns: 20_000.0,
            spe_shape_delay_ns: 15.0,
            s1_mean_delay_ns: 24.0,
            el_width_ns: 1000.0,
            xy_max_iterations: 50,
            xy_tolerance_mm: 0.01,
        }
    }
}

impl RecoConfig {
    /// Check that the values are usable.
    ///
    /// # Errors
    /// [`RecoError::BadConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), RecoError> {
        let checks: [(&'static str, f64, bool); 10] = [
            (
                "baseline_samples",
                f64::from(self.baseline_samples),
                self.baseline_samples > 0,
            ),
            (
                "hit_threshold_rms",
                self.hit_threshold_rms,
                self.hit_threshold_rms > 0.0,
            ),
            (
                "hit_min_threshold_phd",
                self.hit_min_threshold_phd,
                self.hit_min_threshold_phd >= 0.0,
            ),
            ("pulse_gap_ns", self.pulse_gap_ns, self.pulse_gap_ns >= 0.0),
            (
                "split_min_ratio",
                self.split_min_ratio,
                (0.0..=1.0).contains(&self.split_min_ratio),
            ),
            (
                "split_n_sigma",
                self.split_n_sigma,
                self.split_n_sigma >= 0.0,
            ),
            (
                "split_max_bin_ns",
                self.split_max_bin_ns,
                self.split_max_bin_ns > 0.0,
            ),
            (
                "se_max_area_phd",
                self.se_max_area_phd,
                self.se_max_area_phd >= self.se_min_area_phd,
            ),
            ("el_width_ns", self.el_width_ns, self.el_width_ns >= 0.0),
            (
                "xy_tolerance_mm",
                self.xy_tolerance_mm,
                self.xy_tolerance_mm > 0.0,
            ),
        ];
        for (field, value, ok) in checks {
            if !ok || !value.is_finite() {
                return Err(RecoError::BadConfig { field, value });
            }
        }
        Ok(())
    }
}
