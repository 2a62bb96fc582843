//! The detector model shared by the simulator and the reconstruction:
//! geometry, PMT map, gains, light collection and the light response
//! function (LRF) of the top array.
//!
//! The parameters come from a tagged conditions file (TOML, read in the
//! `tpcflow` crate); [`DetectorModel::new`] validates them and builds the PMT map.
//!
//! ```text
//! LRF of top PMT k for light made at (x, y) just below the liquid surface:
//!     eta(rho) = 1 / (1 + (rho / r0)^2)^(3/2) + flat,    rho = |(x, y) - (x_k, y_k)|
//! top pattern (sums to 1):  p_k(x, y) = eta(rho_k) / sum_j eta(rho_j)
//! ```
//!
//! When the conditions carry a learned light response
//! (`calibration.lrf`, [`crate::lrf`]), the pattern is
//! `p_k = e_k f(rho_k) / sum_j e_j f(rho_j)` with its shape and efficiencies.

use serde::{Deserialize, Serialize};

pub use crate::calibration::{Calibration, XyMap, XyzMap};
use crate::lrf::ResponseTable;

/// TPC geometry and drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tpc {
    /// Radius of the active volume [mm].
    pub radius_mm: f64,
    /// Cathode height [mm] (bottom of the drift region, z = 0).
    pub cathode_z_mm: f64,
    /// Gate height [mm].
    pub gate_z_mm: f64,
    /// Liquid surface height [mm].
    pub liquid_z_mm: f64,
    /// Anode height [mm].
    pub anode_z_mm: f64,
    /// Height of the top PMT faces [mm].
    pub top_array_z_mm: f64,
    /// Height of the bottom PMT faces [mm].
    pub bottom_array_z_mm: f64,
    /// Drift field [V/cm].
    pub drift_field_v_per_cm: f64,
    /// Electron drift velocity in the liquid [mm/us].
    pub drift_velocity_mm_per_us: f64,
    /// Electron lifetime [us].
    pub electron_lifetime_us: f64,
}

/// PMT arrays: hexagonal lattices, channels 0..n_top on top, then the bottom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pmts {
    /// Number of top-array PMTs.
    pub n_top: usize,
    /// Number of bottom-array PMTs.
    pub n_bottom: usize,
    /// Hexagonal lattice pitch [mm].
    pub pitch_mm: f64,
    /// Mean area of one photoelectron per channel [ADC counts x samples].
    pub spe_area_adc: Vec<f64>,
    /// Relative width of the single-phe area distribution.
    pub spe_resolution: f64,
    /// Probability that a detected photon yields a second photoelectron.
    pub double_phe_prob: f64,
}

/// Top-array light response function parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lrf {
    /// Scale of the solid-angle-like fall-off [mm] (height of the light source above... the PMT plane).
    pub r0_mm: f64,
    /// Flat term for reflections, relative to the on-axis value.
    pub flat: f64,
}

fn unit_scale() -> f64 {
    1.0
}

/// Light and charge gains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Light {
    /// Mean photon detection efficiency for S1 [phd/photon].
    pub g1: f64,
    /// Probability that an electron is extracted into the gas.
    pub extraction_efficiency: f64,
    /// Mean single-electron S2 size [phd].
    pub se_gain_phd: f64,
    /// Relative width of the single-electron S2 size.
    pub se_resolution: f64,
    /// Mean energy per quantum [eV].
    pub w_ev: f64,
    /// Factor on the combined energy, from a mono-energetic line (Kr83m:
    /// `tpcflow calibrate`); 1 when the conditions do not carry one.
    #[serde(default = "unit_scale")]
    pub energy_scale: f64,
    /// S1 area fraction top at mid height.
    pub s1_top_fraction: f64,
    /// Change of the S1 area fraction top from cathode to gate.
    pub s1_top_fraction_slope: f64,
    /// S1 light collection: relative change from cathode to gate (negative: more light at the bottom).
    pub s1_lce_z_slope: f64,
    /// S1 light collection: relative loss term in (r/R)^2.
    pub s1_lce_r2: f64,
    /// S2 area fraction top.
    pub s2_top_fraction: f64,
    /// S2 light collection: relative loss term in (r/R)^2.
    pub s2_lce_r2: f64,
    /// Top-array LRF.
    pub lrf: Lrf,
}

/// Digitiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daq {
    /// Sample period [ns].
    pub sample_ns: f64,
    /// ADC resolution [bits].
    pub adc_bits: u32,
    /// Mean baseline [ADC counts]; pulses go negative from it.
    pub baseline_adc: f64,
    /// Electronic noise rms [ADC counts].
    pub noise_adc: f64,
    /// Samples recorded before a pod trigger.
    pub pre_samples: u32,
    /// Samples recorded after the signal falls below threshold.
    pub post_samples: u32,
    /// Pod trigger threshold [ADC counts below baseline].
    pub pod_threshold_adc: f64,
    /// Event window before the S2 trigger [ns].
    pub window_before_ns: f64,
    /// Event window after the S2 trigger [ns].
    pub window_after_ns: f64,
}

/// Everything the conditions file says about the detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorParams {
    /// TPC geometry and drift.
    pub tpc: Tpc,
    /// PMT arrays.
    pub pmts: Pmts,
    /// Light and charge gains.
    pub light: Light,
    /// Digitiser.
    pub daq: Daq,
    /// Products measured from calibration runs (absent in nominal conditions:
    /// then every channel is live and the nominal light-collection maps apply).
    #[serde(default, skip_serializing_if = "Calibration::is_empty")]
    pub calibration: Calibration,
}

/// PMT positions, computed from the lattice parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PmtMap {
    /// x of each channel [mm].
    pub x: Vec<f64>,
    /// y of each channel [mm].
    pub y: Vec<f64>,
    /// Number of top channels (channels 0..n_top).
    pub n_top: usize,
    /// False for channels listed dead in the conditions.
    pub live: Vec<bool>,
}

impl PmtMap {
    /// Build the two hexagonal arrays: the `n` lattice points nearest the axis,
    /// ordered by radius then angle.
    pub fn hexagonal(n_top: usize, n_bottom: usize, pitch_mm: f64) -> Self {
        let top = hex_points(n_top, pitch_mm);
        let bottom = hex_points(n_bottom, pitch_mm);
        let (mut x, mut y): (Vec<f64>, Vec<f64>) = top.into_iter().unzip();
        let (bx, by): (Vec<f64>, Vec<f64>) = bottom.into_iter().unzip();
        x.extend(bx);
        y.extend(by);
        let live = vec![true; x.len()];
        Self { x, y, n_top, live }
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// True when there are no channels.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// True for channels of the top array.
    pub fn is_top(&self, channel: usize) -> bool {
        channel < self.n_top
    }
}

fn hex_points(n: usize, pitch: f64) -> Vec<(f64, f64)> {
    // Enough rings to hold n points: a hexagon of k rings holds 3k(k+1)+1.
    let mut k = 0i64;
    while 3 * k * (k + 1) + 1 < (n as i64) * 2 {
        k += 1;
    }
    let mut pts = Vec::new();
    for j in -k..=k {
        for i in -k..=k {
            let x = (i as f64 + j as f64 / 2.0) * pitch;
            let y = j as f64 * pitch * 3f64.sqrt() / 2.0;
            pts.push((x, y));
        }
    }
    // Sort by radius (rounded to remove float noise), then angle: deterministic.
    pts.sort_by(|a, b| {
        let ra = ((a.0 * a.0 + a.1 * a.1).sqrt() * 1e6).round();
        let rb = ((b.0 * b.0 + b.1 * b.1).sqrt() * 1e6).round();
        ra.total_cmp(&rb)
            .then(a.1.atan2(a.0).total_cmp(&b.1.atan2(b.0)))
    });
    pts.truncate(n);
    pts
}

/// The conditions file's content is not a usable detector.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A parameter is outside its physical range.
    #[error("conditions field `{field}` = {value}: {why}")]
    BadValue {
        /// Dotted field name, e.g. `light.g1`.
        field: &'static str,
        /// Offending value.
        value: f64,
        /// What is wrong.
        why: &'static str,
    },
    /// The per-channel gain list has the wrong length.
    #[error("conditions field `pmts.spe_area_adc` has {got} entries, expected n_top + n_bottom = {expected}")]
    GainCount {
        /// Entries found.
        got: usize,
        /// Entries expected.
        expected: usize,
    },
}

/// The validated detector model with its PMT map.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorModel {
    /// Conditions tag, e.g. `v1`.
    pub tag: String,
    /// Parameters from the conditions file.
    pub params: DetectorParams,
    /// PMT positions.
    pub pmts: PmtMap,
    /// The conditions' learned light response tabulated for the xy fit
    /// (None: the nominal closed form).
    pub response: Option<ResponseTable>,
}

fn check(field: &'static str, value: f64, ok: bool, why: &'static str) -> Result<(), ModelError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(ModelError::BadValue { field, value, why })
    }
}

impl DetectorModel {
    /// Validate the parameters and build the PMT map.
    ///
    /// # Errors
    /// [`ModelError`] naming the first field out of range.
    pub fn new(tag: impl Into<String>, params: DetectorParams) -> Result<Self, ModelError> {
        let p = &params;
        check(
            "tpc.radius_mm",
            p.tpc.radius_mm,
            p.tpc.radius_mm > 0.0,
            "must be > 0",
        )?;
        check(
            "tpc.gate_z_mm",
            p.tpc.gate_z_mm,
            p.tpc.gate_z_mm > p.tpc.cathode_z_mm,
            "must be above the cathode",
        )?;
        check(
            "tpc.liquid_z_mm",
            p.tpc.liquid_z_mm,
            p.tpc.liquid_z_mm >= p.tpc.gate_z_mm,
            "must be at or above the gate",
        )?;
        check(
            "tpc.anode_z_mm",
            p.tpc.anode_z_mm,
            p.tpc.anode_z_mm > p.tpc.liquid_z_mm,
            "must be above the liquid surface",
        )?;
        check(
            "tpc.top_array_z_mm",
            p.tpc.top_array_z_mm,
            p.tpc.top_array_z_mm > p.tpc.anode_z_mm,
            "must be above the anode",
        )?;
        check(
            "tpc.bottom_array_z_mm",
            p.tpc.bottom_array_z_mm,
            p.tpc.bottom_array_z_mm < p.tpc.cathode_z_mm,
            "must be below the cathode",
        )?;
        check(
            "tpc.drift_velocity_mm_per_us",
            p.tpc.drift_velocity_mm_per_us,
            p.tpc.drift_velocity_mm_per_us > 0.0,
            "must be > 0",
        )?;
        check(
            "tpc.electron_lifetime_us",
            p.tpc.electron_lifetime_us,
            p.tpc.electron_lifetime_us > 0.0,
            "must be > 0",
        )?;
        check(
            "pmts.pitch_mm",
            p.pmts.pitch_mm,
            p.pmts.pitch_mm > 0.0,
            "must be > 0",
        )?;
        check(
            "pmts.n_top",
            p.pmts.n_top as f64,
            p.pmts.n_top > 0 && p.pmts.n_top + p.pmts.n_bottom <= u16::MAX as usize,
            "must be > 0 and fit a u16 channel number",
        )?;
        let n = p.pmts.n_top + p.pmts.n_bottom;
        if p.pmts.spe_area_adc.len() != n {
            return Err(ModelError::GainCount {
                got: p.pmts.spe_area_adc.len(),
                expected: n,
            });
        }
        for &g in &p.pmts.spe_area_adc {
            check("pmts.spe_area_adc", g, g > 0.0, "every gain must be > 0")?;
        }
        check(
            "pmts.spe_resolution",
            p.pmts.spe_resolution,
            (0.0..1.0).contains(&p.pmts.spe_resolution),
            "must be in [0, 1)",
        )?;
        check(
            "pmts.double_phe_prob",
            p.pmts.double_phe_prob,
            (0.0..1.0).contains(&p.pmts.double_phe_prob),
            "must be in [0, 1)",
        )?;
        check(
            "light.g1",
            p.light.g1,
            p.light.g1 > 0.0 && p.light.g1 <= 1.0,
            "must be in (0, 1]",
        )?;
        check(
            "light.energy_scale",
            p.light.energy_scale,
            p.light.energy_scale > 0.5 && p.light.energy_scale < 2.0,
            "must be in (0.5, 2)",
        )?;
        check(
            "light.extraction_efficiency",
            p.light.extraction_efficiency,
            p.light.extraction_efficiency > 0.0 && p.light.extraction_efficiency <= 1.0,
            "must be in (0, 1]",
        )?;
        check(
            "light.se_gain_phd",
            p.light.se_gain_phd,
            p.light.se_gain_phd > 0.0,
            "must be > 0",
        )?;
        check(
            "light.w_ev",
            p.light.w_ev,
            p.light.w_ev > 0.0,
            "must be > 0",
        )?;
        check(
            "light.s1_top_fraction",
            p.light.s1_top_fraction,
            (0.0..1.0).contains(&p.light.s1_top_fraction),
            "must be in [0, 1)",
        )?;
        check(
            "light.s2_top_fraction",
            p.light.s2_top_fraction,
            (0.0..1.0).contains(&p.light.s2_top_fraction),
            "must be in [0, 1)",
        )?;
        check(
            "light.lrf.r0_mm",
            p.light.lrf.r0_mm,
            p.light.lrf.r0_mm > 0.0,
            "must be > 0",
        )?;
        check(
            "light.lrf.flat",
            p.light.lrf.flat,
            p.light.lrf.flat >= 0.0,
            "must be >= 0",
        )?;
        check(
            "daq.sample_ns",
            p.daq.sample_ns,
            p.daq.sample_ns > 0.0,
            "must be > 0",
        )?;
        check(
            "daq.adc_bits",
            f64::from(p.daq.adc_bits),
            (8..=16).contains(&p.daq.adc_bits),
            "must be 8..=16",
        )?;
        check(
            "daq.baseline_adc",
            p.daq.baseline_adc,
            p.daq.baseline_adc > 0.0 && p.daq.baseline_adc < f64::from(1u32 << p.daq.adc_bits),
            "must be inside the ADC range",
        )?;
        check(
            "daq.noise_adc",
            p.daq.noise_adc,
            p.daq.noise_adc >= 0.0,
            "must be >= 0",
        )?;
        check(
            "daq.window_before_ns",
            p.daq.window_before_ns,
            p.daq.window_before_ns > 0.0,
            "must be > 0",
        )?;
        check(
            "daq.window_after_ns",
            p.daq.window_after_ns,
            p.daq.window_after_ns > 0.0,
            "must be > 0",
        )?;
        let mut pmts = PmtMap::hexagonal(p.pmts.n_top, p.pmts.n_bottom, p.pmts.pitch_mm);
        p.calibration.validate(n)?;
        for &c in &p.calibration.dead_channels {
            pmts.live[usize::from(c)] = false;
        }
        let response = match &p.calibration.lrf {
            Some(r) => {
                r.validate(p.pmts.n_top)?;
                Some(ResponseTable::new(&r.shape))
            }
            None => None,
        };
        Ok(Self {
            tag: tag.into(),
            params,
            pmts,
            response,
        })
    }

    /// The built-in LZ-like defaults (the same numbers as `conditions/v1.toml`,
    /// with every gain at 40 ADC counts x samples). For tests and examples.
    pub fn default_lz_like() -> Self {
        let n_top = 253;
        let n_bottom = 241;
        let params = DetectorParams {
            tpc: Tpc {
                radius_mm: 728.0,
                cathode_z_mm: 0.0,
                gate_z_mm: 1456.0,
                liquid_z_mm: 1461.0,
                anode_z_mm: 1469.0,
                top_array_z_mm: 1530.0,
                bottom_array_z_mm: -60.0,
                drift_field_v_per_cm: 96.5,
                drift_velocity_mm_per_us: 1.33,
                electron_lifetime_us: 9000.0,
            },
            pmts: Pmts {
                n_top,
                n_bottom,
                pitch_mm: 87.0,
                spe_area_adc: vec![40.0; n_top + n_bottom],
                spe_resolution: 0.338,
                double_phe_prob: 0.214,
            },
            light: Light {
                g1: 0.112,
                energy_scale: 1.0,
                extraction_efficiency: 0.726,
                se_gain_phd: 47.0,
                se_resolution: 0.25,
                w_ev: 13.7,
                s1_top_fraction: 0.4,
                s1_top_fraction_slope: 0.3,
                s1_lce_z_slope: -0.3,
                s1_lce_r2: 0.1,
                s2_top_fraction: 0.64,
                s2_lce_r2: 0.1,
                lrf: Lrf {
                    r0_mm: 60.0,
                    flat: 0.01,
                },
            },
            daq: Daq {
                sample_ns: 10.0,
                adc_bits: 14,
                baseline_adc: 15000.0,
                noise_adc: 1.5,
                pre_samples: 20,
                post_samples: 30,
                pod_threshold_adc: 3.0,
                window_before_ns: 2.0e6,
                window_after_ns: 2.5e6,
            },
            calibration: Calibration::default(),
        };
        Self::new("builtin", params).expect("built-in defaults are valid")
    }

    /// Number of PMT channels.
    pub fn n_channels(&self) -> usize {
        self.pmts.len()
    }

    /// Drift length from cathode to gate [mm].
    pub fn drift_length_mm(&self) -> f64 {
        self.params.tpc.gate_z_mm - self.params.tpc.cathode_z_mm
    }

    /// Mean S2 phd per electron leaving the interaction: g2 = extraction x SE size [phd/e].
    pub fn g2(&self) -> f64 {
        self.params.light.extraction_efficiency * self.params.light.se_gain_phd
    }

    /// Mean phd area in ADC counts x samples for a channel: one phd is
    /// (1 + P(double phe)) photoelectrons on average.
    pub fn phd_area_adc(&self, channel: usize) -> f64 {
        self.params.pmts.spe_area_adc[channel] * (1.0 + self.params.pmts.double_phe_prob)
    }

    /// z of an interaction from its drift time [mm]:
    /// `z = liquid_z - v_d * t_drift` (drift time counted from the interaction
    /// to the electrons' arrival at the liquid surface, where the S2 starts).
    pub fn z_from_drift_ns(&self, drift_ns: f64) -> f64 {
        self.params.tpc.liquid_z_mm - self.params.tpc.drift_velocity_mm_per_us * drift_ns * 1e-3
    }

    /// Drift time of electrons from height z up to the liquid surface [ns]:
    /// `t_drift = (liquid_z - z) / v_d`.
    pub fn drift_ns_from_z(&self, z_mm: f64) -> f64 {
        (self.params.tpc.liquid_z_mm - z_mm) / self.params.tpc.drift_velocity_mm_per_us * 1e3
    }

    /// S1 light collection the reconstruction corrects for at (x, y, z): the
    /// measured Kr83m map (relative to the centre) scaled by the nominal value
    /// at the centre, so that S1c keeps the nominal map's normalisation (and
    /// g1 its meaning); the nominal map when no Kr83m map is in the conditions.
    pub fn s1_correction_map(&self, x: f64, y: f64, z: f64) -> f64 {
        match &self.params.calibration.kr_s1_xyz {
            Some(map) => {
                let mid = self.params.tpc.cathode_z_mm + self.drift_length_mm() / 2.0;
                map.at(x, y, z) * self.s1_light_collection(0.0, 0.0, mid)
            }
            None => self.s1_light_collection(x, y, z),
        }
    }

    /// S2 light collection the reconstruction corrects for at (x, y): the
    /// measured Kr83m map (relative to the centre) times the nominal value at
    /// the centre; the nominal map without one.
    pub fn s2_correction_map(&self, x: f64, y: f64) -> f64 {
        match &self.params.calibration.kr_s2_xy {
            Some(map) => map.at(x, y) * self.s2_light_collection(0.0, 0.0),
            None => self.s2_light_collection(x, y),
        }
    }

    /// True when the channel is live (not listed dead in the conditions).
    pub fn is_live(&self, channel: usize) -> bool {
        self.pmts.live[channel]
    }

    /// Relative S1 light collection at (x, y, z); averages to 1 over the volume.
    ///
    /// ```text
    /// lce(x,y,z) = (1 + a (z/H - 1/2)) (1 + b (1/2 - r^2/R^2))
    /// ```
    pub fn s1_light_collection(&self, x: f64, y: f64, z: f64) -> f64 {
        let t = &self.params.tpc;
        let l = &self.params.light;
        let h = (z - t.cathode_z_mm) / self.drift_length_mm();
        let r2 = (x * x + y * y) / (t.radius_mm * t.radius_mm);
        (1.0 + l.s1_lce_z_slope * (h - 0.5)) * (1.0 + l.s1_lce_r2 * (0.5 - r2))
    }

    /// S1 area fraction top at height z.
    pub fn s1_top_fraction(&self, z: f64) -> f64 {
        let h = (z - self.params.tpc.cathode_z_mm) / self.drift_length_mm();
        let l = &self.params.light;
        (l.s1_top_fraction + l.s1_top_fraction_slope * (h - 0.5)).clamp(0.0, 1.0)
    }

    /// Relative S2 light collection at (x, y); averages to 1 over the area.
    pub fn s2_light_collection(&self, x: f64, y: f64) -> f64 {
        let r = self.params.tpc.radius_mm;
        1.0 + self.params.light.s2_lce_r2 * (0.5 - (x * x + y * y) / (r * r))
    }

    /// Light response of one top PMT at horizontal distance `rho` [mm] (unnormalised).
    pub fn lrf(&self, rho_mm: f64) -> f64 {
        let lrf = &self.params.light.lrf;
        let u = rho_mm / lrf.r0_mm;
        (1.0 + u * u).powf(-1.5) + lrf.flat
    }

    /// Fraction of the top S2 light each top PMT sees for light made at (x, y).
    ///
    /// # Panics
    /// When `out` is not `n_top` long.
    pub fn top_pattern(&self, x: f64, y: f64, out: &mut [f64]) {
        assert_eq!(
            out.len(),
            self.pmts.n_top,
            "top_pattern needs one slot per top PMT"
        );
        let mut sum = 0.0;
        let learned = self
            .response
            .as_ref()
            .zip(self.params.calibration.lrf.as_ref());
        for (k, o) in out.iter_mut().enumerate() {
            let dx = x - self.pmts.x[k];
            let dy = y - self.pmts.y[k];
            *o = match learned {
                Some((table, r)) => {
                    r.relative_efficiency[k] * table.value_and_slope(dx * dx + dy * dy).0
                }
                None => self.lrf((dx * dx + dy * dy).sqrt()),
            };
            sum += *o;
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
    }
}

/// Relative light a PMT at horizontal distance `rho` sees from a point source
/// `height` above or below its face (solid angle, cos-weighted).
pub fn solid_angle_weight(height_mm: f64, rho_mm: f64) -> f64 {
    let h = height_mm.abs().max(1.0);
    h / (h * h + rho_mm * rho_mm).powf(1.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmt_arrays_have_the_lz_counts_and_fit_inside_the_tpc() {
        let m = DetectorModel::default_lz_like();
        assert_eq!(m.pmts.n_top, 253);
        assert_eq!(m.n_channels(), 494);
        let rmax = (0..253)
            .map(|k| m.pmts.x[k].hypot(m.pmts.y[k]))
            .fold(0.0, f64::max);
        assert!(
            rmax < 728.0 && rmax > 600.0,
            "outermost top PMT at r = {rmax}"
        );
        // Channel 0 is on the axis; neighbours are one pitch away.
        assert_eq!((m.pmts.x[0], m.pmts.y[0]), (0.0, 0.0));
        assert!((m.pmts.x[1].hypot(m.pmts.y[1]) - 87.0).abs() < 1e-9);
        // No two PMTs at the same place within an array.
        for a in 0..253 {
            for b in (a + 1)..253 {
                let d = (m.pmts.x[a] - m.pmts.x[b]).hypot(m.pmts.y[a] - m.pmts.y[b]);
                assert!(d > 86.9, "PMTs {a} and {b} are {d} mm apart");
            }
        }
    }

    #[test]
    fn top_pattern_sums_to_one_and_peaks_under_the_source() {
        let m = DetectorModel::default_lz_like();
        let mut p = vec![0.0; 253];
        m.top_pattern(m.pmts.x[40], m.pmts.y[40], &mut p);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let imax = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(imax, 40);
    }

    #[test]
    fn light_collection_maps_average_to_one() {
        let m = DetectorModel::default_lz_like();
        // Average over a grid uniform in the cylinder.
        let (mut s1, mut s2, mut n) = (0.0, 0.0, 0.0);
        let r = m.params.tpc.radius_mm;
        for i in 0..60 {
            for j in 0..60 {
                let x = -r + (i as f64 + 0.5) * 2.0 * r / 60.0;
                let y = -r + (j as f64 + 0.5) * 2.0 * r / 60.0;
                if x * x + y * y > r * r {
                    continue;
                }
                for k in 0..20 {
                    let z = (k as f64 + 0.5) * m.drift_length_mm() / 20.0;
                    s1 += m.s1_light_collection(x, y, z);
                    n += 1.0;
                }
                s2 += m.s2_light_collection(x, y) * 20.0;
            }
        }
        assert!((s1 / n - 1.0).abs() < 0.01, "mean S1 LCE {}", s1 / n);
        assert!((s2 / n - 1.0).abs() < 0.01, "mean S2 LCE {}", s2 / n);
    }

    #[test]
    fn bad_values_are_named() {
        let mut p = DetectorModel::default_lz_like().params;
        p.light.g1 = 1.5;
        let e = DetectorModel::new("x", p.clone()).unwrap_err();
        assert!(e.to_string().contains("light.g1"), "{e}");
        p.light.g1 = 0.1;
        p.pmts.spe_area_adc.pop();
        assert_eq!(
            DetectorModel::new("x", p).unwrap_err(),
            ModelError::GainCount {
                got: 493,
                expected: 494
            }
        );
    }

    #[test]
    fn drift_time_and_z_are_inverse() {
        let m = DetectorModel::default_lz_like();
        let t = m.drift_ns_from_z(500.0);
        assert!((m.z_from_drift_ns(t) - 500.0).abs() < 1e-9);
        assert!((m.drift_ns_from_z(0.0) - 1461.0 / 1.33 * 1e3).abs() < 1e-6);
    }
}
