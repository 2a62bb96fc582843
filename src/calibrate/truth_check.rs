//! Each product against the detector a simulation really had (the conditions
//! file given to `tpcflow sim --conditions`): what `calibrate --truth FILE`
//! adds to the report.
//!
//! ```text
//! lifetime:  pull = (1/tau_measured - 1/tau_true) / sigma(1/tau)
//! SE gain:   measured / (SE_true x mean_live(g_true / g_told)) - 1
//!            (RQ areas are in phd of the told gains)
//! gains:     rms over live channels of g_measured / g_true - 1 (and of g_told / g_true - 1)
//! dead:      true channels found, missed, and live channels called dead
//! ```
//! A simulated channel is dead when its true gain is below 1 % of the median
//! (no pulse reaches the pod threshold).

use std::fmt::Write as _;

use tpcflow_reco::detector::XyMap;

use crate::conditions::Conditions;
use crate::sim::truth_maps::GasGap;

use super::Products;

/// The comparison, one line per product.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TruthComparison {
    /// Pull of 1/tau.
    pub lifetime_pull: f64,
    /// True lifetime [us].
    pub lifetime_true_us: f64,
    /// Relative SE gain error (in the told phd scale).
    pub se_gain_error: f64,
    /// rms of measured / true gain - 1 over live channels.
    pub gain_rms: f64,
    /// The same for the told gains.
    pub gain_rms_told: f64,
    /// Dead channels in the truth.
    pub dead_true: Vec<u16>,
    /// True dead channels not found.
    pub dead_missed: Vec<u16>,
    /// Live channels called dead.
    pub dead_false: Vec<u16>,
}

/// Compare the products with the truth.
pub fn compare(p: &Products, truth: &Conditions) -> TruthComparison {
    let told = &p.base.detector.params;
    let t = &truth.detector.params;
    let tg = &t.pmts.spe_area_adc;
    let mut sorted = tg.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let dead_true: Vec<u16> = (0..tg.len())
        .filter(|&k| tg[k] < 0.01 * median || t.calibration.dead_channels.contains(&(k as u16)))
        .map(|k| k as u16)
        .collect();
    let live: Vec<usize> = (0..tg.len())
        .filter(|&k| !dead_true.contains(&(k as u16)))
        .collect();
    let rms = |g: &dyn Fn(usize) -> f64| {
        (live
            .iter()
            .map(|&k| (g(k) / tg[k] - 1.0).powi(2))
            .sum::<f64>()
            / live.len() as f64)
            .sqrt()
    };
    let ratio = live
        .iter()
        .map(|&k| tg[k] / told.pmts.spe_area_adc[k])
        .sum::<f64>()
        / live.len() as f64;
    let l = &p.lifetime;
    TruthComparison {
        lifetime_pull: (l.inverse_lifetime_per_ms - 1e3 / t.tpc.electron_lifetime_us)
            / l.sigma_inverse_lifetime_per_ms,
        lifetime_true_us: t.tpc.electron_lifetime_us,
        se_gain_error: p.se.gain_phd / (t.light.se_gain_phd * ratio) - 1.0,
        gain_rms: rms(&|k| p.gains.channels[k].gain_adc),
        gain_rms_told: rms(&|k| told.pmts.spe_area_adc[k]),
        dead_missed: dead_true
            .iter()
            .copied()
            .filter(|c| !p.gains.dead.contains(c))
            .collect(),
        dead_false: p
            .gains
            .dead
            .iter()
            .copied()
            .filter(|c| !dead_true.contains(c))
            .collect(),
        dead_true,
    }
}

/// rms over the bins whose centre lies inside the TPC of the measured gas
/// gap minus the true one at the bin centre [mm].
pub fn gas_gap_rms(map: &XyMap, truth: &GasGap) -> f64 {
    let (mut ss, mut n) = (0.0, 0usize);
    for j in 0..map.ny {
        for i in 0..map.nx {
            let (x, y) = map.bin_centre(i, j);
            if x.hypot(y) < truth.radius_mm {
                ss += (map.values[j * map.nx + i] - truth.gas_gap_mm(x, y)).powi(2);
                n += 1;
            }
        }
    }
    (ss / n.max(1) as f64).sqrt()
}

/// The report's section.
pub fn markdown(c: &TruthComparison, truth_tag: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Against the simulated truth (`{truth_tag}`)\n\n| product | figure |\n|---|---|"
    );
    let _ = writeln!(
        s,
        "| electron lifetime | truth {:.0} us, pull of 1/tau {:+.2} |",
        c.lifetime_true_us, c.lifetime_pull
    );
    let _ = writeln!(
        s,
        "| single-electron gain | {:+.2} % |",
        100.0 * c.se_gain_error
    );
    let _ = writeln!(
        s,
        "| per-channel gains | rms {:.2} % (told: {:.2} %) |",
        100.0 * c.gain_rms,
        100.0 * c.gain_rms_told
    );
    let _ = writeln!(
        s,
        "| dead channels | truth {:?}, missed {:?}, live called dead {:?} |",
        c.dead_true, c.dead_missed, c.dead_false
    );
    s
}
