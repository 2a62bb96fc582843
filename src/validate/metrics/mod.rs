//! The numbers of the validation report: pure functions of matched events and
//! the detector conditions (no I/O). Definitions follow
//! `tests/it/reco_accuracy.rs`; see the module docs of [`super`].
//!
//! Split by what they measure: `efficiency` (S1, S2 finding), `classification`
//! (pulse kinds, SS/MS), `drift` (drift time and z), `xy` (position against
//! the Cramer-Rao bound), `energy` (kr83m peak, er-flat scale), `targets` (the
//! targets judged), `stats` (quantiles, clipped mean and sd). This module holds
//! the report, the truth-to-pulse matching they share (`Physics`,
//! `s1_pulse`) and [`compute`].

mod classification;
mod drift;
mod efficiency;
mod energy;
mod stats;
mod targets;
mod xy;

use serde::Serialize;

use super::{FileMatch, MatchedEvent, RecoEvent, RecoPulse};
use crate::conditions::Conditions;
use crate::sim::signals::VertexTruth;
pub use classification::{Confusion, INTERACTION_NAMES, KIND_NAMES};
pub(crate) use drift::drift_residuals;
pub use drift::{DriftBin, DriftReport};
pub use efficiency::{EffBin, Efficiency, S1_EDGES, S2_EDGES};
pub(crate) use energy::ss_energies;
pub use energy::{EnergyBin, EnergyReport, PeakReport, KR83M_KEV};
pub use stats::{clipped_mean_sd, mean_sd, quantile};
pub use targets::TargetCheck;
pub(crate) use xy::xy_rows;
pub use xy::{
    norm_rms, xy_report, xy_truth, LuxPoint, XyBaseline, XyBin, XyReport, XyRow, XyTruthReport,
    XY_CURVE_PHD, XY_EDGES,
};

/// Smallest sample for which a target is judged.
pub const MIN_EVENTS: usize = 20;

/// Everything the report says, as numbers.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ValidationReport {
    /// Software version.
    pub software_version: String,
    /// Detector conditions of the RQ files.
    pub conditions_tag: String,
    /// The file pairs and how they matched.
    pub files: Vec<FileMatch>,
    /// Remarks (skipped files, sample restrictions).
    pub notes: Vec<String>,
    /// Events matched to truth.
    pub matched_events: usize,
    /// Matched events with one truth vertex (used for efficiencies, drift and xy).
    pub single_vertex_events: usize,
    /// The reconstruction targets, computed.
    pub targets: Vec<TargetCheck>,
    /// S1 finding efficiency vs truth S1 [phd].
    pub s1_efficiency: Efficiency,
    /// S2 finding efficiency vs extracted electrons.
    pub s2_efficiency: Efficiency,
    /// Truth signal vs reconstructed pulse kind.
    pub classification: Confusion,
    /// Drift time and z residuals of single scatters.
    pub drift: DriftReport,
    /// xy residuals against the Cramer-Rao bound.
    pub xy: XyReport,
    /// The same against the bound of the true detector (its light response,
    /// efficiencies and dead channels), when the runs' detector truth is
    /// beside their truth files.
    pub xy_truth: Option<XyTruthReport>,
    /// The same inputs reconstructed with other conditions (`--baseline`,
    /// e.g. the nominal light response), for comparison.
    pub xy_baseline: Option<XyBaseline>,
    /// Truth multiplicity vs reconstructed interaction.
    pub scatter: Confusion,
    /// SS fraction of clear single scatters.
    pub ss_fraction_singles: f64,
    /// MS fraction of clear multiple scatters with dz >= 10 mm.
    pub ms_fraction_dz10: f64,
    /// kr83m peak.
    pub kr83m: PeakReport,
    /// er-flat (tritium-like) reconstructed vs true energy.
    pub er_energy: EnergyReport,
    /// SVG files written (names in the output directory).
    pub figures: Vec<String>,
    /// Calibration products against the simulated detector truth (with `--calibration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::calibrate::truth_check::CalibrationVsTruth>,
}

/// Diffusion and timing of the conditions.
pub(crate) struct Physics<'a> {
    pub(crate) cond: &'a Conditions,
}

impl Physics<'_> {
    /// Longitudinal diffusion in time [ns] after `drift_ns`.
    pub(crate) fn sigma_t_ns(&self, drift_ns: f64) -> f64 {
        let c = self.cond;
        (2.0 * c.sim.diffusion_long_mm2_per_us * drift_ns.max(0.0) * 1e-3).sqrt()
            / c.detector.params.tpc.drift_velocity_mm_per_us
            * 1e3
    }

    /// Transverse diffusion [mm] after `drift_ns`.
    pub(crate) fn sigma_xy_mm(&self, drift_ns: f64) -> f64 {
        (2.0 * self.cond.sim.diffusion_trans_mm2_per_us * drift_ns.max(0.0) * 1e-3).sqrt()
    }

    /// Irreducible spread of (reco - truth) drift time [ns] (see the module docs).
    pub(crate) fn drift_spread_ns(&self, v: &VertexTruth) -> f64 {
        let el = self.cond.sim.el_width_ns;
        let n_e = v.n_extracted.max(1) as f64;
        let s2 =
            self.sigma_t_ns(v.drift_ns).powi(2) / n_e + el * el / 12.0 / (v.s2_phd.max(1) as f64);
        let s1 = 24.0f64.powi(2) / (v.s1_phd.max(1) as f64);
        (s2 + s1).sqrt()
    }

    /// The pulse holding a truth S2 and its index in the event.
    pub(crate) fn s2_pulse<'e>(
        &self,
        ev: &'e RecoEvent,
        v: &VertexTruth,
    ) -> Option<(usize, &'e RecoPulse)> {
        let el = self.cond.sim.el_width_ns;
        let s = self.sigma_t_ns(v.drift_ns);
        let (lo, hi) = (v.t_s2_ns - 2.0 * s, v.t_s2_ns + el + 2.0 * s);
        ev.pulses
            .iter()
            .enumerate()
            .filter(|(_, p)| p.end_ns > lo && p.start_ns < hi)
            .max_by(|a, b| a.1.area_phd.total_cmp(&b.1.area_phd))
    }
}

/// A pulse starting within [-50, +300] ns of the truth S1, an S1-classified one first.
pub(crate) fn s1_pulse(ev: &RecoEvent, t_s1_ns: f64) -> Option<&RecoPulse> {
    let near = |p: &&RecoPulse| (-50.0..300.0).contains(&(p.start_ns - t_s1_ns));
    let mut it = ev.pulses.iter().filter(near);
    it.clone().find(|p| p.kind == 1).or_else(|| it.next())
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

fn hi_edge(h: u64) -> Option<u64> {
    (h != u64::MAX).then_some(h)
}

/// Events with exactly one truth vertex.
fn singles(events: &[MatchedEvent]) -> impl Iterator<Item = &MatchedEvent> + Clone {
    events.iter().filter(|e| e.truth.vertices.len() == 1)
}

/// Compute every metric (the `files`, `figures`, `notes` and tag are filled by the caller).
pub fn compute(events: &[MatchedEvent], cond: &Conditions) -> ValidationReport {
    let ph = Physics { cond };
    let s1 = efficiency::efficiency(
        "truth S1 [phd]",
        &S1_EDGES,
        5,
        singles(events).map(|e| {
            let v = &e.truth.vertices[0];
            let p = s1_pulse(&e.reco, v.t_s1_ns);
            (v.s1_phd, p.is_some(), p.is_some_and(|p| p.kind == 1))
        }),
    );
    let s2 = efficiency::efficiency(
        "extracted electrons",
        &S2_EDGES,
        5,
        singles(events)
            .filter(|e| e.truth.vertices[0].n_extracted > 0)
            .map(|e| {
                let v = &e.truth.vertices[0];
                let p = ph.s2_pulse(&e.reco, v).map(|(_, p)| p);
                (v.n_extracted, p.is_some(), p.is_some_and(|p| p.kind == 2))
            }),
    );
    let (scatter, ss_fraction_singles, ms_fraction_dz10) = classification::scatter(events);
    let mut r = ValidationReport {
        software_version: crate::SOFTWARE_VERSION.to_string(),
        matched_events: events.len(),
        single_vertex_events: singles(events).count(),
        s1_efficiency: s1,
        s2_efficiency: s2,
        classification: classification::classification(events, &ph),
        drift: drift::drift(events, &ph),
        xy: xy::xy(events, &ph),
        scatter,
        ss_fraction_singles,
        ms_fraction_dz10,
        kr83m: energy::kr83m(events),
        er_energy: energy::er_energy(events),
        ..Default::default()
    };
    r.targets = targets::targets(&r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s1_pulse_prefers_the_s1() {
        let p = |kind, start_ns| RecoPulse {
            kind,
            area_phd: 1.0,
            start_ns,
            end_ns: start_ns + 10.0,
        };
        let ev = RecoEvent {
            pulses: vec![p(4, 1000.0), p(1, 1010.0), p(1, 5000.0)],
            ..Default::default()
        };
        assert_eq!(s1_pulse(&ev, 1000.0).map(|p| p.start_ns), Some(1010.0));
        assert!(s1_pulse(&ev, 3000.0).is_none());
    }
}
