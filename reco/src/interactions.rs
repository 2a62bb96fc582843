//! Interactions: pair the main S1 with the main S2, count scatters, and turn
//! the drift time into z.
//!
//! ```text
//! main S2   = largest S2 of the event
//! main S1   = largest S1 in [t_S2 - max_drift - margin, t_S2)
//! S1 time   = centre(S1) - spe_shape_delay - s1_mean_delay      (estimates the interaction time t0)
//! S2 time   = centre(S2) - spe_shape_delay - el_width / 2      (estimates the mean electron
//!                                                              arrival at the liquid surface)
//! drift     = S2 time - S1 time                                 [ns]
//! z         = liquid_z - v_d drift                              (DetectorModel::z_from_drift_ns)
//! ```
//!
//! The centre of a photon's digitised pulse lies `spe_shape_delay` (15 ns)
//! after the photon; S1 photons come on average `s1_mean_delay` after the
//! interaction and S2 photons `el_width / 2` after their electron arrives.
//! The S2 time then fluctuates only by the electrons' own spread,
//! sigma_t / sqrt(N_e) (e.g. 1.6 us / sqrt(180) = 120 ns at the cathode).
//!
//! Kinds: `SingleScatter` = a main S1 and exactly one significant S2 (area at
//! least `multiple_s2_min_fraction` of the main one, SEs never count) after
//! it; `MultipleScatter` = a main S1 and several; `S2Only`, `S1Only`,
//! `NoSignal`; `Other` when another S1 in the drift window before the main S2
//! has at least `other_s1_max_fraction` of the main S1.

use serde::{Deserialize, Serialize};

use crate::config::RecoConfig;
use crate::detector::DetectorModel;
use crate::pulses::PulseKind;
use crate::pulses::PulseRq;

/// Kind of an event's interaction; the discriminant is what RQ files store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[repr(u8)]
pub enum InteractionKind {
    /// Neither S1 nor S2.
    #[default]
    NoSignal = 0,
    /// One S1 and one significant S2.
    SingleScatter = 1,
    /// One S1 and several significant S2s.
    MultipleScatter = 2,
    /// An S2 without an S1 in the drift window before it.
    S2Only = 3,
    /// S1s but no S2.
    S1Only = 4,
    /// Ambiguous (several comparable S1s before the main S2).
    Other = 5,
}

impl InteractionKind {
    /// The numeric code stored in RQ files.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The interaction of one event.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Interaction {
    /// Kind.
    pub kind: InteractionKind,
    /// Index of the main S1 among the event's pulses.
    pub main_s1: Option<usize>,
    /// Index of the main S2.
    pub main_s2: Option<usize>,
    /// Index of the second largest significant S2 after the main S1.
    pub second_s2: Option<usize>,
    /// Significant S2s (the main S2 included).
    pub n_significant_s2: u32,
    /// Estimated interaction time, from the window start [ns].
    pub s1_time_ns: Option<f64>,
    /// Estimated mean electron arrival time, from the window start [ns].
    pub s2_time_ns: Option<f64>,
    /// Drift time [ns].
    pub drift_time_ns: Option<f64>,
    /// Height from the drift time [mm].
    pub z_mm: Option<f64>,
}

/// Interaction time estimated from an S1 pulse [ns from the window start].
pub fn s1_time_ns(p: &PulseRq, cfg: &RecoConfig) -> f64 {
    p.center_ns - cfg.spe_shape_delay_ns - cfg.s1_mean_delay_ns
}

/// Mean electron arrival time estimated from an S2 pulse [ns from the window start].
pub fn s2_time_ns(p: &PulseRq, cfg: &RecoConfig) -> f64 {
    p.center_ns - cfg.spe_shape_delay_ns - 0.5 * cfg.el_width_ns
}

fn largest(pulses: &[PulseRq], pick: impl Fn(usize, &PulseRq) -> bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, p) in pulses.iter().enumerate() {
        if pick(i, p) && best.is_none_or(|b| p.area_phd > pulses[b].area_phd) {
            best = Some(i);
        }
    }
    best
}

/// Find the interaction among classified pulses (sorted by start time).
pub fn find_interaction(
    pulses: &[PulseRq],
    model: &DetectorModel,
    cfg: &RecoConfig,
) -> Interaction {
    let main_s2 = largest(pulses, |_, p| p.kind == PulseKind::S2);
    let Some(s2) = main_s2 else {
        let main_s1 = largest(pulses, |_, p| p.kind == PulseKind::S1);
        return Interaction {
            kind: if main_s1.is_some() {
                InteractionKind::S1Only
            } else {
                InteractionKind::NoSignal
            },
            main_s1,
            s1_time_ns: main_s1.map(|i| s1_time_ns(&pulses[i], cfg)),
            ..Default::default()
        };
    };
    let t2 = s2_time_ns(&pulses[s2], cfg);
    let max_drift = model.drift_ns_from_z(model.params.tpc.cathode_z_mm) + cfg.drift_margin_ns;
    let in_window = |p: &PulseRq| {
        let t = s1_time_ns(p, cfg);
        p.kind == PulseKind::S1 && t < t2 && t >= t2 - max_drift && p.start_ns < pulses[s2].start_ns
    };
    let main_s1 = largest(pulses, |_, p| in_window(p));
    let s2_area = pulses[s2].area_phd;
    let after = main_s1.map_or(i64::MIN, |i| pulses[i].end_ns);
    let significant = |p: &PulseRq| {
        p.kind == PulseKind::S2
            && p.start_ns >= after
            && f64::from(p.area_phd) >= cfg.multiple_s2_min_fraction * f64::from(s2_area)
    };
    let n_significant_s2 = pulses.iter().filter(|p| significant(p)).count() as u32;
    let second_s2 = largest(pulses, |i, p| i != s2 && significant(p));
    let mut out = Interaction {
        main_s2,
        second_s2,
        n_significant_s2,
        s2_time_ns: Some(t2),
        ..Default::default()
    };
    let Some(s1) = main_s1 else {
        out.kind = InteractionKind::S2Only;
        return out;
    };
    let t1 = s1_time_ns(&pulses[s1], cfg);
    let drift = t2 - t1;
    out.main_s1 = Some(s1);
    out.s1_time_ns = Some(t1);
    out.drift_time_ns = Some(drift);
    out.z_mm = Some(model.z_from_drift_ns(drift));
    let s1_area = f64::from(pulses[s1].area_phd);
    let ambiguous = pulses.iter().enumerate().any(|(i, p)| {
        i != s1 && in_window(p) && f64::from(p.area_phd) >= cfg.other_s1_max_fraction * s1_area
    });
    out.kind = if ambiguous {
        InteractionKind::Other
    } else if n_significant_s2 > 1 {
        InteractionKind::MultipleScatter
    } else {
        InteractionKind::SingleScatter
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pulse(kind: PulseKind, start_ns: i64, area: f32) -> PulseRq {
        PulseRq {
            kind,
            start_ns,
            end_ns: start_ns + 100,
            center_ns: start_ns as f64 + 50.0,
            area_phd: area,
            ..Default::default()
        }
    }

    #[test]
    fn interaction_table() {
        use PulseKind::*;
        let m = DetectorModel::default_lz_like();
        let cfg = RecoConfig::default();
        // (pulses, kind, main S1, main S2, significant S2s)
        type Case = (
            Vec<PulseRq>,
            InteractionKind,
            Option<usize>,
            Option<usize>,
            u32,
        );
        let cases: Vec<Case> = vec![
            (vec![], InteractionKind::NoSignal, None, None, 0),
            (
                vec![pulse(S1, 1000, 20.0)],
                InteractionKind::S1Only,
                Some(0),
                None,
                0,
            ),
            (
                vec![pulse(S1, 1_000_000, 20.0), pulse(S2, 2_000_000, 5000.0)],
                InteractionKind::SingleScatter,
                Some(0),
                Some(1),
                1,
            ),
            (
                vec![
                    pulse(S1, 1_000_000, 20.0),
                    pulse(SingleElectron, 1_500_000, 50.0),
                    pulse(S2, 1_900_000, 800.0),
                    pulse(S2, 2_000_000, 5000.0),
                    pulse(S2, 2_100_000, 100.0),
                ],
                InteractionKind::MultipleScatter,
                Some(0),
                Some(3),
                2,
            ),
            // S1 too early for the maximum drift: S2 only.
            (
                vec![pulse(S1, 100_000, 20.0), pulse(S2, 2_000_000, 5000.0)],
                InteractionKind::S2Only,
                None,
                Some(1),
                1,
            ),
            (
                vec![
                    pulse(S1, 1_000_000, 20.0),
                    pulse(S1, 1_500_000, 15.0),
                    pulse(S2, 2_000_000, 5000.0),
                ],
                InteractionKind::Other,
                Some(0),
                Some(2),
                1,
            ),
        ];
        for (pulses, kind, s1, s2, n) in cases {
            let it = find_interaction(&pulses, &m, &cfg);
            assert_eq!(
                (it.kind, it.main_s1, it.main_s2, it.n_significant_s2),
                (kind, s1, s2, n),
                "{pulses:?}"
            );
        }
        // Drift time convention.
        let pulses = vec![pulse(S1, 1_000_000, 20.0), pulse(S2, 2_000_000, 5000.0)];
        let it = find_interaction(&pulses, &m, &cfg);
        let want = 1_000_000.0 - 500.0 + 24.0;
        assert!((it.drift_time_ns.unwrap() - want).abs() < 1e-9);
        assert!((it.z_mm.unwrap() - m.z_from_drift_ns(want)).abs() < 1e-9);
    }
}
