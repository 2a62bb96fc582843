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
use crate::sim::detector_truth::EffectiveTruth;
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
    // Lone SEs miss the light on dead channels, and so does the measured gain.
    let dead_mask: Vec<bool> = (0..tg.len())
        .map(|k| dead_true.contains(&(k as u16)))
        .collect();
    let dead_share =
        crate::sim::told_detector::dead_light_share(&truth.detector, &dead_mask, |x, y| {
            truth.detector.s2_light_collection(x, y)
        });
    let l = &p.lifetime;
    TruthComparison {
        lifetime_pull: (l.inverse_lifetime_per_ms - 1e3 / t.tpc.electron_lifetime_us)
            / l.sigma_inverse_lifetime_per_ms,
        lifetime_true_us: t.tpc.electron_lifetime_us,
        se_gain_error: p.se.gain_phd / (t.light.se_gain_phd * ratio * (1.0 - dead_share)) - 1.0,
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

/// A calibration conditions file (written by `tpcflow calibrate`) against the
/// effective truth of a simulated run (`{run}.detector-truth.json`): what
/// `tpcflow validate --calibration FILE` reports.
///
/// ```text
/// lifetime:   pull = (1/tau_measured - 1/tau_true) / sigma(1/tau)   (sigma from [provenance])
/// SE gain:    measured / (mean over the TPC of the true SE size x mean_live(g_true / g_told)) - 1
/// gains:      rms over live channels of g_measured / g_true - 1 (and g_told / g_true - 1)
/// channels:   dead and noisy found, missed, and called so wrongly
/// gas gap:    rms of map - truth at bin centres inside the TPC; tilt and direction vs truth
/// Kr83m peak: cell rms with the measured products and with the base ([provenance])
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CalibrationVsTruth {
    /// Tag of the calibration conditions.
    pub calibration_tag: String,
    /// Truth name and run.
    pub truth: String,
    /// Measured electron lifetime [us].
    pub lifetime_us: f64,
    /// True electron lifetime [us].
    pub lifetime_true_us: f64,
    /// Pull of 1/tau (NaN without an uncertainty in the provenance).
    pub lifetime_pull: f64,
    /// Measured SE gain / true one - 1 (both in phd of the told gains).
    pub se_gain_error: f64,
    /// rms over live channels of measured / true gain - 1.
    pub gain_rms: f64,
    /// The same for the told gains.
    pub gain_rms_told: f64,
    /// True dead channels.
    pub dead_true: Vec<u16>,
    /// True dead channels not found.
    pub dead_missed: Vec<u16>,
    /// Live channels called dead.
    pub dead_false: Vec<u16>,
    /// True noisy channels.
    pub noisy_true: Vec<u16>,
    /// True noisy channels not flagged.
    pub noisy_missed: Vec<u16>,
    /// Channels flagged noisy that are not.
    pub noisy_false: Vec<u16>,
    /// rms of the gas-gap map from the truth [mm] (None without a map).
    pub gas_gap_rms_mm: Option<f64>,
    /// Measured tilt [mrad] (None without a liquid-level measurement).
    pub tilt_mrad: Option<f64>,
    /// True tilt [mrad].
    pub tilt_true_mrad: f64,
    /// Measured direction of increasing gas gap [deg].
    pub tilt_direction_deg: Option<f64>,
    /// True direction [deg].
    pub tilt_direction_true_deg: f64,
    /// Kr83m peak cell rms with the measured products (None: not in the provenance).
    pub kr_uniformity_rms: Option<f64>,
    /// The same with the base conditions.
    pub kr_uniformity_base_rms: Option<f64>,
    /// The cell rms expected from statistics alone.
    pub kr_uniformity_statistical_rms: Option<f64>,
}

fn prov_f64(prov: &toml::Table, path: &[&str]) -> Option<f64> {
    let (last, tables) = path.split_last()?;
    let mut t = prov;
    for k in tables {
        t = t.get(*k)?.as_table()?;
    }
    t.get(*last)
        .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
}

fn missed_and_false(truth: &[u16], found: &[u16]) -> (Vec<u16>, Vec<u16>) {
    (
        truth
            .iter()
            .copied()
            .filter(|c| !found.contains(c))
            .collect(),
        found
            .iter()
            .copied()
            .filter(|c| !truth.contains(c))
            .collect(),
    )
}

/// Why a calibration could not be compared with a truth.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The base conditions named in the provenance.
    #[error(transparent)]
    Conditions(#[from] crate::conditions::ConditionsError),
    /// The truth's detector model.
    #[error(transparent)]
    Truth(#[from] crate::sim::detector_truth::TruthError),
}

/// Compare calibration conditions with a run's truth.
///
/// # Errors
/// [`CompareError`] when the base conditions named in the provenance or the
/// truth's detector model cannot be loaded.
pub fn compare_conditions(
    measured: &Conditions,
    truth: &EffectiveTruth,
) -> Result<CalibrationVsTruth, CompareError> {
    let empty = toml::Table::new();
    let prov = measured.provenance.as_ref().unwrap_or(&empty);
    let base_tag = prov
        .get("base_conditions")
        .and_then(|v| v.as_str())
        .unwrap_or(&truth.base);
    let told = Conditions::load(base_tag)?;
    let m = &measured.detector.params;
    let tg = &truth.spe_area_adc;
    let tell = &told.detector.params.pmts.spe_area_adc;
    let live: Vec<usize> = (0..tg.len().min(tell.len()))
        .filter(|&k| !truth.is_dead(k))
        .collect();
    let rms = |g: &[f64]| {
        (live
            .iter()
            .map(|&k| (g[k] / tg[k] - 1.0).powi(2))
            .sum::<f64>()
            / live.len().max(1) as f64)
            .sqrt()
    };
    let ratio = live.iter().map(|&k| tg[k] / tell[k]).sum::<f64>() / live.len().max(1) as f64;
    // Mean SE size over the TPC (lone SEs come from everywhere).
    let r = truth.gas_gap.radius_mm;
    let (mut se_sum, mut se_n) = (0.0, 0usize);
    for i in 0..=40 {
        for j in 0..=40 {
            let (x, y) = (
                r * (f64::from(i) / 20.0 - 1.0),
                r * (f64::from(j) / 20.0 - 1.0),
            );
            if x.hypot(y) <= r {
                se_sum += truth.se_size_phd(x, y);
                se_n += 1;
            }
        }
    }
    // Lone SEs miss the light on dead channels, and so does the measured gain.
    let dead_mask: Vec<bool> = (0..tg.len()).map(|k| truth.is_dead(k)).collect();
    let dead_share =
        crate::sim::told_detector::dead_light_share(&truth.true_model()?, &dead_mask, |x, y| {
            truth.se_size_phd(x, y)
        });
    let se_true = se_sum / se_n as f64 * ratio * (1.0 - dead_share);
    let c = &m.calibration;
    let (dead_missed, dead_false) = missed_and_false(&truth.dead_channels, &c.dead_channels);
    let (noisy_missed, noisy_false) = missed_and_false(&truth.noisy_channels, &c.noisy_channels);
    let inv = 1e3 / m.tpc.electron_lifetime_us;
    let sigma_inv = prov_f64(prov, &["uncertainty", "inverse_electron_lifetime_per_ms"]);
    Ok(CalibrationVsTruth {
        calibration_tag: measured.tag.clone(),
        truth: format!("{} run {}", truth.name, truth.run),
        lifetime_us: m.tpc.electron_lifetime_us,
        lifetime_true_us: truth.electron_lifetime_us,
        lifetime_pull: sigma_inv.map_or(f64::NAN, |s| (inv - 1e3 / truth.electron_lifetime_us) / s),
        se_gain_error: m.light.se_gain_phd / se_true - 1.0,
        gain_rms: rms(&m.pmts.spe_area_adc),
        gain_rms_told: rms(tell),
        dead_true: truth.dead_channels.clone(),
        dead_missed,
        dead_false,
        noisy_true: truth.noisy_channels.clone(),
        noisy_missed,
        noisy_false,
        gas_gap_rms_mm: c
            .gas_gap_mm
            .as_ref()
            .map(|g| gas_gap_rms(g, &truth.gas_gap)),
        tilt_mrad: prov_f64(prov, &["liquid_level", "tilt_mrad"]),
        tilt_true_mrad: truth.gas_gap.tilt_mrad,
        tilt_direction_deg: prov_f64(prov, &["liquid_level", "tilt_direction_deg"]),
        tilt_direction_true_deg: truth.gas_gap.tilt_azimuth_deg,
        kr_uniformity_rms: prov_f64(prov, &["kr83m_uniformity", "measured_rms"]),
        kr_uniformity_base_rms: prov_f64(prov, &["kr83m_uniformity", "base_rms"]),
        kr_uniformity_statistical_rms: prov_f64(prov, &["kr83m_uniformity", "statistical_rms"]),
    })
}

fn opt(v: Option<f64>, scale: f64, digits: usize, unit: &str) -> String {
    v.map_or_else(
        || "not measured".to_string(),
        |v| format!("{:.*}{unit}", digits, v * scale),
    )
}

/// The validation report's section.
pub fn markdown_vs_truth(c: &CalibrationVsTruth) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Calibration `{}` against the simulated truth ({})\n\n| product | measured | truth |\n|---|---|---|",
        c.calibration_tag, c.truth
    );
    let _ = writeln!(
        s,
        "| electron lifetime | {:.0} us (pull of 1/tau {:+.2}) | {:.0} us |",
        c.lifetime_us, c.lifetime_pull, c.lifetime_true_us
    );
    let _ = writeln!(
        s,
        "| single-electron gain | {:+.2} % from truth | |",
        100.0 * c.se_gain_error
    );
    let _ = writeln!(
        s,
        "| per-channel gains | rms {:.2} % from truth (told: {:.2} %) | |",
        100.0 * c.gain_rms,
        100.0 * c.gain_rms_told
    );
    let _ = writeln!(
        s,
        "| dead channels | missed {:?}, live called dead {:?} | {:?} |",
        c.dead_missed, c.dead_false, c.dead_true
    );
    let _ = writeln!(
        s,
        "| noisy channels | missed {:?}, wrongly flagged {:?} | {:?} |",
        c.noisy_missed, c.noisy_false, c.noisy_true
    );
    let _ = writeln!(
        s,
        "| gas-gap map | rms {} from truth | |",
        opt(c.gas_gap_rms_mm, 1.0, 3, " mm")
    );
    let _ = writeln!(
        s,
        "| liquid tilt | {} toward {} | {:.3} mrad toward {:.1} deg |",
        opt(c.tilt_mrad, 1.0, 3, " mrad"),
        opt(c.tilt_direction_deg, 1.0, 1, " deg"),
        c.tilt_true_mrad,
        c.tilt_direction_true_deg
    );
    let _ = writeln!(
        s,
        "| Kr83m peak uniformity (cell rms) | {} (base conditions {}; statistics alone {}) | |",
        opt(c.kr_uniformity_rms, 100.0, 2, " %"),
        opt(c.kr_uniformity_base_rms, 100.0, 2, " %"),
        opt(c.kr_uniformity_statistical_rms, 100.0, 2, " %")
    );
    s
}
