//! Energy scale and resolution: the kr83m peak of single scatters, and
//! reconstructed vs true energy of the er-flat source by true energy.

use serde::Serialize;

use super::stats::CLIP_25_SD;
use super::{clipped_mean_sd, quantile};
use crate::validate::MatchedEvent;

/// The kr83m line [keV].
pub const KR83M_KEV: f64 = 41.5;

/// A mono-energetic peak.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PeakReport {
    /// Truth events of the source.
    pub events: usize,
    /// Of which reconstructed as single scatters with a finite energy.
    pub ss_events: usize,
    /// Peak (clipped mean) [keV].
    pub peak_kev: f64,
    /// (peak / line - 1).
    pub deviation: f64,
    /// Median [keV].
    pub median_kev: f64,
    /// sigma [keV].
    pub sigma_kev: f64,
    /// sigma / peak.
    pub sigma_over_e: f64,
}

/// Reconstructed vs true energy in one bin of true energy.
#[derive(Debug, Clone, Serialize)]
pub struct EnergyBin {
    /// True energy, lower edge [keV].
    pub lo_kev: f64,
    /// Upper edge [keV].
    pub hi_kev: f64,
    /// Events.
    pub events: usize,
    /// Median reco / true.
    pub median_ratio: f64,
    /// sd of (reco - true) / true (clipped at 2.5 sd, corrected).
    pub resolution: f64,
}

/// er-flat energy scale and resolution.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EnergyReport {
    /// Single scatters of the er-flat source.
    pub events: usize,
    /// Median reco / true over all.
    pub median_ratio: f64,
    /// By true energy.
    pub bins: Vec<EnergyBin>,
}

/// Reco energies of single scatters of a truth source code.
pub(crate) fn ss_energies(events: &[MatchedEvent], source: u8) -> Vec<(f64, f64)> {
    events
        .iter()
        .filter(|e| e.truth.source == source && e.reco.interaction == 1)
        .filter(|e| e.reco.energy_kev.is_finite())
        .map(|e| {
            let true_kev: f64 = e.truth.vertices.iter().map(|v| v.energy_kev).sum();
            (true_kev, e.reco.energy_kev)
        })
        .collect()
}

pub(super) fn kr83m(events: &[MatchedEvent]) -> PeakReport {
    let e: Vec<f64> = ss_energies(events, 2).into_iter().map(|p| p.1).collect();
    let (peak, sd, _) = clipped_mean_sd(&e, 2.5);
    let sigma = sd / CLIP_25_SD;
    let mut sorted = e.clone();
    PeakReport {
        events: events.iter().filter(|e| e.truth.source == 2).count(),
        ss_events: e.len(),
        peak_kev: peak,
        deviation: peak / KR83M_KEV - 1.0,
        median_kev: quantile(&mut sorted, 0.5),
        sigma_kev: sigma,
        sigma_over_e: sigma / peak,
    }
}

pub(super) fn er_energy(events: &[MatchedEvent]) -> EnergyReport {
    let pairs = ss_energies(events, 0);
    let mut ratios: Vec<f64> = pairs.iter().map(|(t, r)| r / t).collect();
    let mut bins = Vec::new();
    for w in [0.5, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0].windows(2) {
        let mut rel: Vec<f64> = pairs
            .iter()
            .filter(|(t, _)| *t >= w[0] && *t < w[1])
            .map(|(t, r)| (r - t) / t)
            .collect();
        if rel.is_empty() {
            continue;
        }
        let (_, sd, _) = clipped_mean_sd(&rel, 2.5);
        let n = rel.len();
        bins.push(EnergyBin {
            lo_kev: w[0],
            hi_kev: w[1],
            events: n,
            median_ratio: 1.0 + quantile(&mut rel, 0.5),
            resolution: sd / CLIP_25_SD,
        });
    }
    EnergyReport {
        events: pairs.len(),
        median_ratio: quantile(&mut ratios, 0.5),
        bins,
    }
}
