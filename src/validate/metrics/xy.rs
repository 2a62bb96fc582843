//! xy position resolution against the Cramer-Rao bound: residuals of single
//! scatters binned by S2, over the bound of the reconstruction's conditions,
//! of the true detector (`xy_truth`), and LUX's published points beside it.

use serde::Serialize;
use tpcflow_reco::xy::{cramer_rao_xy, excess_variance_factor};
use tpcflow_reco::DetectorModel;

use super::{clipped_mean_sd, mean_sd, singles, Physics, MIN_EVENTS};
use crate::conditions::Conditions;
use crate::validate::MatchedEvent;

/// xy residuals in one S2 bin.
#[derive(Debug, Clone, Serialize)]
pub struct XyBin {
    /// S2 [phd], lower edge.
    pub lo: f64,
    /// Upper edge.
    pub hi: f64,
    /// Events.
    pub events: usize,
    /// rms of x and y residuals [mm].
    pub rms_mm: f64,
    /// sd of the core (clipped at 3 sd) [mm].
    pub core_sd_mm: f64,
    /// rms Cramer-Rao bound per axis [mm].
    pub crb_mm: f64,
    /// rms of the bound (+) the diffusion scatter [mm].
    pub crb_diff_mm: f64,
    /// rms of residual / bound.
    pub res_over_crb: f64,
    /// rms of residual / (bound (+) diffusion).
    pub res_over_crb_diff: f64,
    /// sd of the pulls (residual / reported sigma).
    pub pull_sd: f64,
}

/// The bound beside LUX's published resolution.
#[derive(Debug, Clone, Serialize)]
pub struct LuxPoint {
    /// Detected S2 photons.
    pub s2_phd: f64,
    /// LUX's resolution (arXiv:1710.02752) [mm].
    pub lux_mm: f64,
    /// Our bound at the centre [mm].
    pub crb_centre_mm: f64,
    /// Our bound at r = 400 mm [mm].
    pub crb_r400_mm: f64,
}

/// xy resolution against the Cramer-Rao bound.
#[derive(Debug, Clone, Serialize, Default)]
pub struct XyReport {
    /// Events whose main S2 is the truth S2, with a finite xy.
    pub events: usize,
    /// By S2 size.
    pub bins: Vec<XyBin>,
    /// Single scatters with 1e3 <= S2 < 1e5 phd.
    pub in_range_events: usize,
    /// Their rms residual / bound.
    pub ratio_crb: f64,
    /// Their rms residual / (bound (+) diffusion).
    pub ratio_crb_diff: f64,
    /// Worst bin within 1e3-1e5 phd (against bound (+) diffusion).
    pub worst_bin_ratio: f64,
    /// Their pull mean.
    pub pull_mean: f64,
    /// Their pull sd.
    pub pull_sd: f64,
    /// Bound at LUX's two points.
    pub lux: Vec<LuxPoint>,
}

/// xy resolution against the bound of the true detector.
#[derive(Debug, Clone, Serialize, Default)]
pub struct XyTruthReport {
    /// The detector truths used (name and runs).
    pub detector: String,
    /// The xy figures with every bound computed from the true detector
    /// (events of files without one left out).
    pub xy: XyReport,
    /// The true bound per axis at the centre on [`XY_CURVE_PHD`] [mm]
    /// (from the first run's truth).
    pub curve_centre_mm: Vec<f64>,
}

/// The xy figures of a baseline reconstruction of the same inputs.
#[derive(Debug, Clone, Serialize, Default)]
pub struct XyBaseline {
    /// Its conditions tag.
    pub conditions_tag: String,
    /// Against its own conditions' bound.
    pub xy: XyReport,
    /// Against the true detector's bound.
    pub truth: Option<XyTruthReport>,
}

/// S2 sizes of the bound curves in the xy plot and report [phd].
pub const XY_CURVE_PHD: [f64; 9] = [100.0, 200.0, 500.0, 1e3, 2e3, 4e3, 1e4, 1e5, 1e6];

/// xy figures against the bound of the true detector. `truth_of(file)` is
/// the true detector of a file pair (None: no truth beside it, the file's
/// events are left out). None when no file has one.
pub fn xy_truth<'m>(
    events: &[MatchedEvent],
    cond: &Conditions,
    detector: &str,
    truth_of: &dyn Fn(usize) -> Option<&'m DetectorModel>,
) -> Option<XyTruthReport> {
    let ph = Physics { cond };
    let first = events.iter().find_map(|e| truth_of(e.file))?;
    let rows: Vec<XyRow> = singles(events)
        .filter_map(|e| xy_row(e, &ph, truth_of(e.file)?))
        .collect();
    let f = excess_variance_factor(first);
    let aft = first.params.light.s2_top_fraction;
    let curve_centre_mm = XY_CURVE_PHD
        .iter()
        .map(|&n| {
            let (cx, cy) = cramer_rao_xy(first, 0.0, 0.0, n * aft, f);
            cx.hypot(cy) / std::f64::consts::SQRT_2
        })
        .collect();
    Some(XyTruthReport {
        detector: detector.to_string(),
        xy: xy_of_rows(&rows, first),
        curve_centre_mm,
    })
}

/// One event of the xy study.
#[derive(Debug, Clone, Copy)]
pub struct XyRow {
    /// Reconstructed as a single scatter.
    pub ss: bool,
    /// True S2 [phd].
    pub s2: f64,
    /// x and y residuals, reco - truth [mm].
    pub res: [f64; 2],
    /// Per-axis Cramer-Rao bound at the true position and top light [mm].
    pub crb: f64,
    /// Per-axis spread the simulated transverse diffusion adds [mm].
    pub diff: f64,
    /// x and y residuals over the reported uncertainties.
    pub pull: [f64; 2],
}

pub(crate) fn xy_rows(events: &[MatchedEvent], ph: &Physics<'_>) -> Vec<XyRow> {
    singles(events)
        .filter_map(|e| xy_row(e, ph, &ph.cond.detector))
        .collect()
}

/// The xy row of a single-vertex event, its bound computed with model `m`
/// (the reconstruction's conditions, or the true detector).
fn xy_row(e: &MatchedEvent, ph: &Physics<'_>, m: &DetectorModel) -> Option<XyRow> {
    let f = excess_variance_factor(m);
    let aft = m.params.light.s2_top_fraction;
    let (rq, v) = (&e.reco, &e.truth.vertices[0]);
    let main_is_truth = ph
        .s2_pulse(rq, v)
        .is_some_and(|(i, _)| i as i64 == rq.main_s2);
    if !main_is_truth || !rq.x_mm.is_finite() || !rq.y_mm.is_finite() {
        return None;
    }
    let s2 = v.s2_phd as f64;
    let (cx, cy) = cramer_rao_xy(m, v.x, v.y, s2 * aft, f);
    let n_sub = v.n_extracted.max(1) as f64;
    Some(XyRow {
        ss: rq.interaction == 1,
        s2,
        res: [rq.x_mm - v.x, rq.y_mm - v.y],
        crb: cx.hypot(cy) / std::f64::consts::SQRT_2,
        diff: ph.sigma_xy_mm(v.drift_ns) / n_sub.sqrt(),
        pull: [
            (rq.x_mm - v.x) / rq.sigma_x_mm,
            (rq.y_mm - v.y) / rq.sigma_y_mm,
        ],
    })
}

/// rms of residual / bound (with or without the diffusion term, added in
/// quadrature): the resolution in units of the bound.
pub fn norm_rms(set: &[&XyRow], with_diff: bool) -> f64 {
    let z: Vec<f64> = set
        .iter()
        .flat_map(|r| {
            let b = if with_diff {
                r.crb.hypot(r.diff)
            } else {
                r.crb
            };
            r.res.map(|x| x / b)
        })
        .collect();
    (z.iter().map(|x| x * x).sum::<f64>() / z.len().max(1) as f64).sqrt()
}

/// S2 bins of the xy table [phd].
pub const XY_EDGES: [f64; 8] = [150.0, 250.0, 1e3, 3e3, 1e4, 3e4, 1e5, 1e7];

/// The xy figures alone (of a baseline reconstruction).
pub fn xy_report(events: &[MatchedEvent], cond: &Conditions) -> XyReport {
    xy(events, &Physics { cond })
}

pub(super) fn xy(events: &[MatchedEvent], ph: &Physics<'_>) -> XyReport {
    xy_of_rows(&xy_rows(events, ph), &ph.cond.detector)
}

/// The xy figures of `rows`, binned by S2; LUX's points beside the bound of `m`.
fn xy_of_rows(rows: &[XyRow], m: &DetectorModel) -> XyReport {
    let f = excess_variance_factor(m);
    let aft = m.params.light.s2_top_fraction;
    let mut bins = Vec::new();
    let mut in_range: Vec<&XyRow> = Vec::new();
    let mut worst: f64 = f64::NAN;
    for w in XY_EDGES.windows(2) {
        let set: Vec<&XyRow> = rows
            .iter()
            .filter(|r| r.s2 >= w[0] && r.s2 < w[1])
            .collect();
        if set.len() >= 3 {
            let res: Vec<f64> = set.iter().flat_map(|r| r.res).collect();
            let rms = (res.iter().map(|x| x * x).sum::<f64>() / res.len() as f64).sqrt();
            let n = set.len() as f64;
            let crb = (set.iter().map(|r| r.crb * r.crb).sum::<f64>() / n).sqrt();
            let crbd = (set
                .iter()
                .map(|r| r.crb * r.crb + r.diff * r.diff)
                .sum::<f64>()
                / n)
                .sqrt();
            let pulls: Vec<f64> = set.iter().flat_map(|r| r.pull).collect();
            let b = XyBin {
                lo: w[0],
                hi: w[1],
                events: set.len(),
                rms_mm: rms,
                core_sd_mm: clipped_mean_sd(&res, 3.0).1,
                crb_mm: crb,
                crb_diff_mm: crbd,
                res_over_crb: norm_rms(&set, false),
                res_over_crb_diff: norm_rms(&set, true),
                pull_sd: mean_sd(&pulls).1,
            };
            if w[0] >= 1e3 && w[1] <= 1e5 && set.len() >= MIN_EVENTS {
                worst = if worst.is_nan() {
                    b.res_over_crb_diff
                } else {
                    worst.max(b.res_over_crb_diff)
                };
            }
            bins.push(b);
        }
        if w[0] >= 1e3 && w[1] <= 1e5 {
            in_range.extend(set.into_iter().filter(|r| r.ss));
        }
    }
    let pulls: Vec<f64> = in_range.iter().flat_map(|r| r.pull).collect();
    let (pull_mean, pull_sd) = mean_sd(&pulls);
    let lux = [(200.0, 8.2), (4000.0, 1.7)]
        .into_iter()
        .map(|(n, lux_mm)| LuxPoint {
            s2_phd: n,
            lux_mm,
            crb_centre_mm: cramer_rao_xy(m, 0.0, 0.0, n * aft, f).0,
            crb_r400_mm: cramer_rao_xy(m, 400.0, 0.0, n * aft, f).0,
        })
        .collect();
    XyReport {
        events: rows.len(),
        bins,
        in_range_events: in_range.len(),
        ratio_crb: norm_rms(&in_range, false),
        ratio_crb_diff: norm_rms(&in_range, true),
        worst_bin_ratio: worst,
        pull_mean,
        pull_sd,
        lux,
    }
}
