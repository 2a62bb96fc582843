//! Pulse classification from shape, area, coincidence and area fraction top.
//!
//! ```text
//! SinglePhe       area < spe_max_area and n_channels <= 1
//! S1              width_50 < s1_max_width50, rise < s1_max_rise, coincidence >= s1_min_coincidence
//! S2-like         width_50 >= s2_min_width50, then by area:
//!                     area >= se_max_area          -> S2
//!                     se_min_area <= area < se_max -> SingleElectron
//! Other           everything else
//! ```
//!
//! An S1 is tens of ns wide (scintillation decay 3/24 ns plus transit), an S2
//! at least the ~1 us electroluminescence (50 % width >= ~500 ns), a single
//! electron ~47 phd spread over ~1 us.

use crate::config::RecoConfig;
use crate::pulses::{PulseKind, PulseRq};

/// Classify one pulse.
pub fn classify(p: &PulseRq, cfg: &RecoConfig) -> PulseKind {
    let area = f64::from(p.area_phd);
    let w50 = f64::from(p.width_50_ns);
    if area < cfg.spe_max_area_phd && p.n_channels <= 1 {
        return PulseKind::SinglePhe;
    }
    if w50 < cfg.s1_max_width50_ns
        && f64::from(p.rise_time_ns) < cfg.s1_max_rise_time_ns
        && p.coincidence >= cfg.s1_min_coincidence
    {
        return PulseKind::S1;
    }
    if w50 >= cfg.s2_min_width50_ns {
        if area >= cfg.se_max_area_phd {
            return PulseKind::S2;
        }
        if area >= cfg.se_min_area_phd {
            return PulseKind::SingleElectron;
        }
    }
    PulseKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cfg = RecoConfig::default();
        // (area, width_50, rise, coincidence, n_channels, expected)
        let cases = [
            (1.0, 10.0, 5.0, 1, 1, PulseKind::SinglePhe),
            (2.2, 12.0, 5.0, 1, 1, PulseKind::SinglePhe),
            (20.0, 40.0, 15.0, 25, 30, PulseKind::S1),
            (2.0, 20.0, 10.0, 2, 2, PulseKind::Other),
            (5000.0, 600.0, 400.0, 200, 300, PulseKind::S2),
            (47.0, 500.0, 300.0, 20, 35, PulseKind::SingleElectron),
            (8.0, 500.0, 300.0, 3, 8, PulseKind::Other),
            (50.0, 170.0, 60.0, 20, 30, PulseKind::Other),
        ];
        for (area, w50, rise, coincidence, n_channels, want) in cases {
            let p = PulseRq {
                area_phd: area,
                width_50_ns: w50,
                rise_time_ns: rise,
                coincidence,
                n_channels,
                ..Default::default()
            };
            assert_eq!(classify(&p, &cfg), want, "{p:?}");
        }
    }
}
