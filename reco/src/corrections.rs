//! Position corrections and the combined energy scale.
//!
//! ```text
//! S1c = S1 / lce_S1(x, y, z)
//! S2c = S2 exp(t_drift / tau_e) / lce_S2(x, y)
//! lce_S1, lce_S2: the measured Kr83m maps when the conditions carry them
//!     (relative to the centre, times the nominal map's centre value), else
//!     the nominal maps (see DetectorModel::s1_correction_map)
//! E   = k W (S1c / g1 + S2c / g2) / 1000      [keV], W in eV, g2 = eps_ext * SE,
//!       k the conditions' energy scale (from the Kr83m line; 1 without one)
//! ```

use crate::detector::DetectorModel;

/// S1 corrected for light collection at (x, y, z) [phd]; `s1_phd` in phd, positions in mm.
pub fn correct_s1(model: &DetectorModel, s1_phd: f64, x_mm: f64, y_mm: f64, z_mm: f64) -> f64 {
    s1_phd / model.s1_correction_map(x_mm, y_mm, z_mm)
}

/// S2 corrected for electron lifetime and xy light collection [phd].
pub fn correct_s2(model: &DetectorModel, s2_phd: f64, x_mm: f64, y_mm: f64, drift_ns: f64) -> f64 {
    let lifetime_us = model.params.tpc.electron_lifetime_us;
    s2_phd * (drift_ns * 1e-3 / lifetime_us).exp() / model.s2_correction_map(x_mm, y_mm)
}

/// Combined energy [keV] from corrected S1 and S2 [phd].
pub fn energy_kev(model: &DetectorModel, s1c_phd: f64, s2c_phd: f64) -> f64 {
    let l = &model.params.light;
    l.energy_scale * l.w_ev * (s1c_phd / l.g1 + s2c_phd / model.g2()) * 1e-3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrections_table() {
        let m = DetectorModel::default_lz_like();
        // At the centre and mid height the S1 map is 1 + 0.1*0.5 = 1.05.
        let mid = m.drift_length_mm() / 2.0;
        assert!((correct_s1(&m, 105.0, 0.0, 0.0, mid) - 100.0).abs() < 1e-9);
        // One lifetime of drift doubles... no: multiplies by e.
        let s2c = correct_s2(&m, 1000.0, 0.0, 0.0, 9.0e6);
        assert!((s2c - 1000.0 * std::f64::consts::E / 1.05).abs() < 1e-6);
        // 10 keV ER mean quanta (488 ph, 254 e) at mean g1, g2 give back ~10 keV.
        let e = energy_kev(&m, 488.1 * m.params.light.g1, 253.9 * m.g2());
        assert!((e - 10.16).abs() < 0.05, "{e}");
    }
}
