//! Drift time and z of single scatters: residuals against truth, binned by
//! extracted electrons, with pulls against the irreducible spread of
//! diffusion and photon statistics (`Physics::drift_spread_ns`).

use serde::Serialize;

use super::{clipped_mean_sd, hi_edge, quantile, ratio, singles, Physics};
use crate::sim::signals::VertexTruth;
use crate::validate::MatchedEvent;

/// Drift-time residuals of single scatters in one electron bin.
#[derive(Debug, Clone, Serialize)]
pub struct DriftBin {
    /// Extracted electrons, lower edge.
    pub lo: u64,
    /// Upper edge (None = no limit).
    pub hi: Option<u64>,
    /// Events.
    pub events: usize,
    /// Median residual [ns].
    pub median_ns: f64,
    /// 68 % of |residual - median| [ns].
    pub r68_ns: f64,
    /// The same in z [mm].
    pub z_r68_mm: f64,
    /// Fraction with |residual| < 100 ns.
    pub within_100ns: f64,
    /// sd of the pulls (clipped at 4 sd).
    pub pull_sd: f64,
    /// Median expected spread [ns].
    pub expected_spread_ns: f64,
}

/// Drift-time and z residuals.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DriftReport {
    /// Single scatters (truth one vertex, reco SS) with >= 5 extracted electrons.
    pub events: usize,
    /// Their fraction with |drift residual| < 100 ns.
    pub within_100ns: f64,
    /// Of them, those whose expected spread is below 100 / 2.576 ns.
    pub resolvable_events: usize,
    /// Their fraction within 100 ns (the target).
    pub within_100ns_resolvable: f64,
    /// 68 % of |drift residual| [ns].
    pub abs_68_ns: f64,
    /// 95 % of |drift residual| [ns].
    pub abs_95_ns: f64,
    /// 68 % of |z residual| [mm].
    pub z_abs_68_mm: f64,
    /// 95 % of |z residual| [mm].
    pub z_abs_95_mm: f64,
    /// Pull mean (clipped at 4 sd).
    pub pull_mean: f64,
    /// Pull sd (clipped at 4 sd).
    pub pull_sd: f64,
    /// By extracted electrons.
    pub bins: Vec<DriftBin>,
}

/// (truth vertex, drift residual [ns], z residual [mm]) of single scatters.
pub(crate) fn drift_residuals(events: &[MatchedEvent]) -> Vec<(&VertexTruth, f64, f64)> {
    singles(events)
        .filter(|e| e.reco.interaction == 1 && e.reco.drift_time_ns.is_finite())
        .map(|e| {
            let v = &e.truth.vertices[0];
            (v, e.reco.drift_time_ns - v.drift_ns, e.reco.z_mm - v.z)
        })
        .collect()
}

pub(super) fn drift(events: &[MatchedEvent], ph: &Physics<'_>) -> DriftReport {
    let v_d = ph.cond.detector.params.tpc.drift_velocity_mm_per_us;
    let ss: Vec<(&VertexTruth, f64, f64)> = drift_residuals(events)
        .into_iter()
        .filter(|(v, _, _)| v.n_extracted >= 5)
        .collect();
    let within = |set: &[&(&VertexTruth, f64, f64)]| {
        ratio(
            set.iter().filter(|(_, d, _)| d.abs() < 100.0).count(),
            set.len(),
        )
    };
    let all: Vec<&(&VertexTruth, f64, f64)> = ss.iter().collect();
    let mut bins = Vec::new();
    let edges = [5u64, 20, 100, 300, 1000, 3000, u64::MAX];
    for w in edges.windows(2) {
        let set: Vec<&(&VertexTruth, f64, f64)> = all
            .iter()
            .copied()
            .filter(|(v, _, _)| v.n_extracted >= w[0] && v.n_extracted < w[1])
            .collect();
        if set.is_empty() {
            continue;
        }
        let mut d: Vec<f64> = set.iter().map(|s| s.1).collect();
        let med = quantile(&mut d, 0.5);
        let mut ad: Vec<f64> = d.iter().map(|x| (x - med).abs()).collect();
        let r68 = quantile(&mut ad, 0.68);
        let pulls: Vec<f64> = set
            .iter()
            .map(|(v, d, _)| d / ph.drift_spread_ns(v))
            .collect();
        let mut spread: Vec<f64> = set.iter().map(|(v, _, _)| ph.drift_spread_ns(v)).collect();
        bins.push(DriftBin {
            lo: w[0],
            hi: hi_edge(w[1]),
            events: set.len(),
            median_ns: med,
            r68_ns: r68,
            z_r68_mm: r68 * v_d * 1e-3,
            within_100ns: within(&set),
            pull_sd: clipped_mean_sd(&pulls, 4.0).1,
            expected_spread_ns: quantile(&mut spread, 0.5),
        });
    }
    let resolvable: Vec<&(&VertexTruth, f64, f64)> = all
        .iter()
        .copied()
        .filter(|(v, _, _)| ph.drift_spread_ns(v) < 100.0 / 2.576)
        .collect();
    let pulls: Vec<f64> = all
        .iter()
        .map(|(v, d, _)| d / ph.drift_spread_ns(v))
        .collect();
    let (pull_mean, pull_sd, _) = clipped_mean_sd(&pulls, 4.0);
    let mut ad: Vec<f64> = all.iter().map(|s| s.1.abs()).collect();
    let mut az: Vec<f64> = all.iter().map(|s| s.2.abs()).collect();
    DriftReport {
        events: all.len(),
        within_100ns: within(&all),
        resolvable_events: resolvable.len(),
        within_100ns_resolvable: within(&resolvable),
        abs_68_ns: quantile(&mut ad, 0.68),
        abs_95_ns: quantile(&mut ad, 0.95),
        z_abs_68_mm: quantile(&mut az, 0.68),
        z_abs_95_mm: quantile(&mut az, 0.95),
        pull_mean,
        pull_sd,
        bins,
    }
}
