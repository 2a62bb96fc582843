//! The detector a conditions tag describes, as the simulator builds it: the
//! bridge from the pipeline's measurement of the detector (a tag made by
//! `tpcflow calibrate`) to the simulator, so that salt events are made with
//! the conditions in force for their run rather than the nominal model.
//!
//! The simulator's other detector is the truth ([`super::detector_truth`]),
//! which the pipeline never sees. Both answer the same questions
//! ([`super::response::DetectorResponse`]); the tag's model carries the rest
//! (electron lifetime, per-channel gains, the learned light response of the
//! top array with its per-PMT efficiencies, the SE width).
//!
//! ```text
//! S1 light collection  model.s1_correction_map(x, y, z)     (Kr83m S1 map x nominal centre;
//!                                                            the nominal map without one)
//! SE size              with a Kr83m S2 map:  se_gain_phd kr_s2(x, y) / <kr_s2 (1 - loss)>
//!                      without:              se_gain_phd s2_lce_nominal(x, y)
//!     loss(x, y) = AFT_S2 sum_{dead top k} pattern_k(x, y)
//!                + (1 - AFT_S2) sum_{dead bottom k} w_k / sum_k w_k    (w: solid angle)
//!     <.>: mean over the TPC's area (a 20 mm grid). The Kr83m map is relative to
//!     the centre and the tag's SE gain is what lone SEs (uniform in xy) showed,
//!     light on dead channels missing; the SE size here is what is emitted.
//! EL duration          gas_gap_mm(x, y) / v_gas,  v_gas = nominal gap / el_width_ns
//!                      (calibrate's liquid level inverted); el_width_ns without the map
//! dead channels        calibration.dead_channels: their light is lost, no pods
//! noisy channels       calibration.noisy_channels at calibration.noisy_rate_hz (0 when absent)
//! ```
//!
//! Nominal conditions (no calibration products) give the nominal simulator
//! bit for bit.

use tpcflow_reco::detector::{solid_angle_weight, XyMap};

use super::response::DetectorResponse;
use crate::conditions::Conditions;

/// Grid step of the area averages [mm].
const AVERAGE_GRID_MM: f64 = 20.0;

/// Where the SE size comes from.
#[derive(Debug, Clone)]
enum SeSize {
    /// `se_gain_phd` times the nominal S2 light collection.
    Nominal,
    /// The Kr83m S2 map times the emitted SE size at the map's centre [phd].
    Map { centre_phd: f64, map: XyMap },
}

/// Where the EL duration comes from.
#[derive(Debug, Clone)]
enum ElWidth {
    /// The conditions' `el_width_ns` everywhere.
    Nominal(f64),
    /// The measured gas gap over the drift speed in the gas [mm/ns].
    Map { gap: XyMap, speed_mm_per_ns: f64 },
}

/// A conditions tag as a detector the simulator can build.
#[derive(Debug, Clone)]
pub struct ToldDetector {
    /// The tag: its model is the one the simulator runs (lifetime, gains,
    /// light response), its `[simulation]` the physics.
    pub conditions: Conditions,
    dead: Vec<bool>,
    noisy: Vec<u16>,
    noisy_rate_hz: Vec<f64>,
    se: SeSize,
    el: ElWidth,
}

impl ToldDetector {
    /// The detector `conditions` describe.
    pub fn new(conditions: Conditions) -> Self {
        let m = &conditions.detector;
        let cal = &m.params.calibration;
        let mut dead = vec![false; m.n_channels()];
        for &c in &cal.dead_channels {
            dead[usize::from(c)] = true;
        }
        let noisy_rate_hz = (0..cal.noisy_channels.len())
            .map(|i| cal.noisy_rate_hz.get(i).copied().unwrap_or(0.0))
            .collect();
        let se = match &cal.kr_s2_xy {
            None => SeSize::Nominal,
            Some(map) => {
                let detected = area_mean(m.params.tpc.radius_mm, |x, y| {
                    map.at(x, y) * (1.0 - dead_loss(&conditions.detector, &dead, x, y))
                });
                SeSize::Map {
                    centre_phd: m.params.light.se_gain_phd / detected,
                    map: map.clone(),
                }
            }
        };
        let el = match &cal.gas_gap_mm {
            None => ElWidth::Nominal(conditions.sim.el_width_ns),
            Some(gap) => {
                let t = &m.params.tpc;
                ElWidth::Map {
                    gap: gap.clone(),
                    speed_mm_per_ns: (t.anode_z_mm - t.liquid_z_mm) / conditions.sim.el_width_ns,
                }
            }
        };
        Self {
            noisy: cal.noisy_channels.clone(),
            noisy_rate_hz,
            conditions,
            dead,
            se,
            el,
        }
    }

    /// Tag of the conditions.
    pub fn tag(&self) -> &str {
        &self.conditions.tag
    }

    /// SHA-256 of the conditions' text (hex).
    pub fn sha256(&self) -> &str {
        &self.conditions.sha256
    }

    /// Fraction of an S2 photon made at (x, y) that lands on a dead channel.
    pub fn dead_loss(&self, x: f64, y: f64) -> f64 {
        dead_loss(&self.conditions.detector, &self.dead, x, y)
    }
}

/// Mean of `f` over the disc of radius `r` (grid of [`AVERAGE_GRID_MM`]).
fn area_mean(r: f64, f: impl Fn(f64, f64) -> f64) -> f64 {
    let n = (r / AVERAGE_GRID_MM).ceil() as i64;
    let (mut sum, mut count) = (0.0, 0usize);
    for i in -n..=n {
        for j in -n..=n {
            let (x, y) = (i as f64 * AVERAGE_GRID_MM, j as f64 * AVERAGE_GRID_MM);
            if x.hypot(y) <= r {
                sum += f(x, y);
                count += 1;
            }
        }
    }
    sum / count.max(1) as f64
}

/// Share of the light of lone single electrons (uniform over the TPC's area,
/// each of size `se_size(x, y)`) that lands on the `dead` channels of a
/// detector whose light response is `m`'s: what their areas miss, and a
/// measured SE gain with them (light on dead channels is missing from every
/// S2 too, so the tag's SE gain keeps it missing).
pub fn dead_light_share(
    m: &tpcflow_reco::DetectorModel,
    dead: &[bool],
    se_size: impl Fn(f64, f64) -> f64,
) -> f64 {
    let r = m.params.tpc.radius_mm;
    let all = area_mean(r, &se_size);
    let lost = area_mean(r, |x, y| se_size(x, y) * dead_loss(m, dead, x, y));
    lost / all
}

fn dead_loss(m: &tpcflow_reco::DetectorModel, dead: &[bool], x: f64, y: f64) -> f64 {
    let (top, bottom) = dead_losses(m, dead, x, y);
    let aft = m.params.light.s2_top_fraction;
    aft * top + (1.0 - aft) * bottom
}

/// Shares of the S2 light made at (x, y) that reach each array and land on
/// its `dead` channels: (top, bottom). Top: the top pattern of `m` (its
/// learned light response when it has one) summed over the dead top
/// channels; bottom: the dead channels' share of the solid-angle weights.
pub fn dead_losses(m: &tpcflow_reco::DetectorModel, dead: &[bool], x: f64, y: f64) -> (f64, f64) {
    if !dead.contains(&true) {
        return (0.0, 0.0);
    }
    let n_top = m.pmts.n_top;
    let mut pattern = vec![0.0; n_top];
    m.top_pattern(x, y, &mut pattern);
    let top: f64 = (0..n_top).filter(|&k| dead[k]).map(|k| pattern[k]).sum();
    let t = &m.params.tpc;
    let h = t.liquid_z_mm - t.bottom_array_z_mm;
    let (mut all, mut lost) = (0.0, 0.0);
    for (k, &is_dead) in dead.iter().enumerate().skip(n_top) {
        let w = solid_angle_weight(h, (x - m.pmts.x[k]).hypot(y - m.pmts.y[k]));
        all += w;
        if is_dead {
            lost += w;
        }
    }
    (top, lost / all)
}

impl DetectorResponse for ToldDetector {
    fn s1_light_collection(&self, x: f64, y: f64, z: f64) -> f64 {
        self.conditions.detector.s1_correction_map(x, y, z)
    }

    fn se_size_phd(&self, x: f64, y: f64) -> f64 {
        match &self.se {
            SeSize::Nominal => {
                let m = &self.conditions.detector;
                m.params.light.se_gain_phd * m.s2_light_collection(x, y)
            }
            SeSize::Map { centre_phd, map } => centre_phd * map.at(x, y),
        }
    }

    fn el_width_ns(&self, x: f64, y: f64) -> f64 {
        match &self.el {
            ElWidth::Nominal(ns) => *ns,
            ElWidth::Map {
                gap,
                speed_mm_per_ns,
            } => gap.at(x, y) / speed_mm_per_ns,
        }
    }

    fn is_dead(&self, channel: usize) -> bool {
        self.dead.get(channel).copied().unwrap_or(false)
    }

    fn noisy_channels(&self) -> &[u16] {
        &self.noisy
    }

    fn noisy_rate_hz(&self, i: usize) -> f64 {
        self.noisy_rate_hz.get(i).copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests;
