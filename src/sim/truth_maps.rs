//! The true liquid surface and light collection of a detector truth
//! ([`super::detector_truth`]): what the `[liquid]` and `[light]` tables say,
//! and functions that evaluate them at any point.
//!
//! Liquid surface and gas gap (gate at z_gate, anode at z_anode, all in mm):
//!
//! ```text
//! d_gas(x, y) = d_gas,nom + offset + s_x x + s_y y + sag (1 - r^2 / R^2)
//!     (s_x, s_y) = tilt (cos az, sin az): the gas gap grows along azimuth az;
//!     sag > 0: the surface is lower at the centre than the plane says
//! d_liq(x, y) = (z_anode - z_gate) - d_gas(x, y)
//! E_gas       = V / (d_gas + d_liq / eps_r)        eps_r = eps_liq / eps_gas = 1.96
//! Y           = a (E_gas / p - b) p d_gas          photons per electron
//!     a = 140 photons / (electron kV), b = 0.83 kV / (cm bar) (Y/p = 140 E/p - 116:
//!     C.M.B. Monteiro et al., "Secondary scintillation yield in pure xenon",
//!     JINST 2 (2007) P05001; the form LUX and LZ use for their S2 gain),
//!     p: gas pressure as the density-equivalent pressure at 293 K
//!     (the saturated vapour at ~175 K and 1.8 bar has the density of ~3 bar at 293 K)
//! SE gain     = se_gain_phd(conditions) x Y(x, y) / Y(d_gas,nom)
//! EL duration = d_gas / v_gas,   v_gas = d_gas,nom / el_width_ns(conditions) unless given
//! ```
//!
//! Light collection (R: TPC radius, h = (z - z_cathode) / drift length, u = r^2 / R^2):
//!
//! ```text
//! S1: lce(x, y, z) = (1 + a1 (h - 1/2)) (1 + b1 (1/2 - u)) (1 + d1 (x cos p1 + y sin p1) / R)
//! S2: lce(x, y)    = 1 + b2 (1/2 - u) + c2 (u^2 - 1/3) + d2 (x cos p2 + y sin p2) / R
//! ```
//!
//! The nominal maps of the conditions are these forms with d1 = c2 = d2 = 0;
//! a1, b1, b2 default to the conditions' values. Each term but the product
//! averages to zero over the TPC, so the maps stay close to 1 on average.

use serde::{Deserialize, Serialize};

use crate::conditions::Conditions;

/// Monteiro et al. (2007): photons per electron, per cm of gas gap, per kV/cm of field.
pub const MONTEIRO_A: f64 = 140.0;
/// Monteiro et al. (2007): threshold of reduced field [kV / (cm bar)] (116 / 140).
pub const MONTEIRO_B: f64 = 116.0 / 140.0;

/// (field, value, why) of a value out of range.
pub type FieldError = (String, f64, String);

fn field_error(field: &str, value: f64, why: &str) -> FieldError {
    (field.to_string(), value, why.to_string())
}

/// The `[liquid]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiquidSpec {
    /// Slope of the gas gap across xy [mrad = mm per m].
    pub tilt_mrad: f64,
    /// Direction in xy along which the gas gap grows [deg from +x].
    pub tilt_azimuth_deg: f64,
    /// Gas gap at the centre minus at the wall, from a sagging surface [mm].
    pub sag_mm: f64,
    /// Gas gap of the plane at the centre minus the nominal gap [mm].
    pub gas_gap_offset_mm: f64,
    /// Anode - gate voltage [kV].
    pub anode_gate_kv: f64,
    /// Gas pressure, as the density-equivalent pressure at 293 K [bar].
    pub gas_pressure_bar: f64,
    /// Permittivity of the liquid over the gas.
    pub permittivity_ratio: f64,
    /// Electron drift velocity in the gas [mm/us] (default: nominal gap / EL width).
    pub el_drift_velocity_mm_per_us: Option<f64>,
}

impl Default for LiquidSpec {
    fn default() -> Self {
        Self {
            tilt_mrad: 0.0,
            tilt_azimuth_deg: 0.0,
            sag_mm: 0.0,
            gas_gap_offset_mm: 0.0,
            anode_gate_kv: 8.5,
            gas_pressure_bar: 3.0,
            permittivity_ratio: 1.96,
            el_drift_velocity_mm_per_us: None,
        }
    }
}

/// The true gas gap, EL duration and SE gain vs (x, y) (serialised in the per-run truth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GasGap {
    /// TPC radius [mm].
    pub radius_mm: f64,
    /// Anode - gate distance [mm].
    pub anode_gate_mm: f64,
    /// Nominal gas gap (anode - liquid surface of the conditions) [mm].
    pub nominal_gas_gap_mm: f64,
    /// Gas gap of the plane at the centre minus the nominal gap [mm].
    pub gas_gap_offset_mm: f64,
    /// d(d_gas)/dx.
    pub slope_x: f64,
    /// d(d_gas)/dy.
    pub slope_y: f64,
    /// |grad d_gas| [mrad].
    pub tilt_mrad: f64,
    /// Direction along which the gas gap grows [deg from +x].
    pub tilt_azimuth_deg: f64,
    /// Gas gap at the centre minus at the wall from the sag [mm].
    pub sag_mm: f64,
    /// Anode - gate voltage [kV].
    pub anode_gate_kv: f64,
    /// Density-equivalent gas pressure at 293 K [bar].
    pub gas_pressure_bar: f64,
    /// Permittivity of the liquid over the gas.
    pub permittivity_ratio: f64,
    /// Electron drift velocity in the gas [mm/us].
    pub el_drift_velocity_mm_per_us: f64,
    /// SE gain at the nominal gap, as the conditions say [phd per electron].
    pub se_gain_nominal_phd: f64,
}

impl LiquidSpec {
    fn plane(&self) -> (f64, f64) {
        let az = self.tilt_azimuth_deg.to_radians();
        let s = self.tilt_mrad * 1e-3;
        (s * az.cos(), s * az.sin())
    }

    /// The gas gap of this table on a base detector.
    pub fn resolve(&self, base: &Conditions) -> GasGap {
        let t = &base.detector.params.tpc;
        let nominal = t.anode_z_mm - t.liquid_z_mm;
        let (slope_x, slope_y) = self.plane();
        GasGap {
            radius_mm: t.radius_mm,
            anode_gate_mm: t.anode_z_mm - t.gate_z_mm,
            nominal_gas_gap_mm: nominal,
            gas_gap_offset_mm: self.gas_gap_offset_mm,
            slope_x,
            slope_y,
            tilt_mrad: self.tilt_mrad,
            tilt_azimuth_deg: self.tilt_azimuth_deg,
            sag_mm: self.sag_mm,
            anode_gate_kv: self.anode_gate_kv,
            gas_pressure_bar: self.gas_pressure_bar,
            permittivity_ratio: self.permittivity_ratio,
            el_drift_velocity_mm_per_us: self
                .el_drift_velocity_mm_per_us
                .unwrap_or(nominal / (base.sim.el_width_ns * 1e-3)),
            se_gain_nominal_phd: base.detector.params.light.se_gain_phd,
        }
    }

    /// Check the values and that the gap stays physical across the TPC.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self, base: &Conditions) -> Result<(), FieldError> {
        for (field, v) in [
            ("liquid.tilt_mrad", self.tilt_mrad),
            ("liquid.tilt_azimuth_deg", self.tilt_azimuth_deg),
            ("liquid.sag_mm", self.sag_mm),
            ("liquid.gas_gap_offset_mm", self.gas_gap_offset_mm),
        ] {
            if !v.is_finite() {
                return Err(field_error(field, v, "must be finite"));
            }
        }
        for (field, v) in [
            ("liquid.anode_gate_kv", self.anode_gate_kv),
            ("liquid.gas_pressure_bar", self.gas_pressure_bar),
            ("liquid.permittivity_ratio", self.permittivity_ratio),
            (
                "liquid.el_drift_velocity_mm_per_us",
                self.el_drift_velocity_mm_per_us.unwrap_or(1.0),
            ),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(field_error(field, v, "must be > 0"));
            }
        }
        let g = self.resolve(base);
        let r = g.radius_mm;
        let points = (0..=20)
            .flat_map(|i| (0..=20).map(move |j| (i, j)))
            .map(|(i, j)| {
                (
                    r * (f64::from(i) / 10.0 - 1.0),
                    r * (f64::from(j) / 10.0 - 1.0),
                )
            })
            .filter(|(x, y)| x.hypot(*y) <= r)
            .chain((0..72).map(|k| {
                let phi = f64::from(k) * 5f64.to_radians();
                (r * phi.cos(), r * phi.sin())
            }));
        for (x, y) in points {
            let d = g.gas_gap_mm(x, y);
            if !(d > 0.5 && d < g.anode_gate_mm) {
                let why = format!(
                    "gives a gas gap of {d:.3} mm at (x, y) = ({x:.0}, {y:.0}) mm; it must stay \
                     in (0.5, {:.1}) mm (anode - gate) across the TPC",
                    g.anode_gate_mm
                );
                return Err(field_error("liquid", d, &why));
            }
            let reduced = g.gas_field_kv_per_cm(x, y) / g.gas_pressure_bar;
            if reduced <= MONTEIRO_B {
                let why = format!(
                    "E_gas / p = {reduced:.3} kV/(cm bar) at ({x:.0}, {y:.0}) mm is below the \
                     EL threshold {MONTEIRO_B:.3}: no S2"
                );
                return Err(field_error(
                    "liquid.anode_gate_kv",
                    self.anode_gate_kv,
                    &why,
                ));
            }
        }
        Ok(())
    }
}

impl GasGap {
    /// Gas gap (liquid surface to anode) at (x, y) [mm].
    pub fn gas_gap_mm(&self, x: f64, y: f64) -> f64 {
        let u = (x * x + y * y) / (self.radius_mm * self.radius_mm);
        self.nominal_gas_gap_mm
            + self.gas_gap_offset_mm
            + self.slope_x * x
            + self.slope_y * y
            + self.sag_mm * (1.0 - u)
    }

    /// Liquid above the gate at (x, y) [mm].
    pub fn liquid_gap_mm(&self, x: f64, y: f64) -> f64 {
        self.anode_gate_mm - self.gas_gap_mm(x, y)
    }

    /// Field in the gas at (x, y) [kV/cm].
    pub fn gas_field_kv_per_cm(&self, x: f64, y: f64) -> f64 {
        let d = self.gas_gap_mm(x, y);
        let l = self.anode_gate_mm - d;
        self.anode_gate_kv / ((d + l / self.permittivity_ratio) * 0.1)
    }

    fn yield_for_gap(&self, d_gas_mm: f64) -> f64 {
        let l = self.anode_gate_mm - d_gas_mm;
        let e = self.anode_gate_kv / ((d_gas_mm + l / self.permittivity_ratio) * 0.1);
        let p = self.gas_pressure_bar;
        MONTEIRO_A * (e / p - MONTEIRO_B) * p * d_gas_mm * 0.1
    }

    /// EL photons emitted per electron at (x, y) (Monteiro et al.).
    pub fn el_photons_per_electron(&self, x: f64, y: f64) -> f64 {
        self.yield_for_gap(self.gas_gap_mm(x, y))
    }

    /// SE gain from the local gas gap, before the S2 light collection [phd per electron].
    pub fn se_gain_phd(&self, x: f64, y: f64) -> f64 {
        self.se_gain_nominal_phd * self.el_photons_per_electron(x, y)
            / self.yield_for_gap(self.nominal_gas_gap_mm)
    }

    /// EL duration at (x, y) [ns].
    pub fn el_width_ns(&self, x: f64, y: f64) -> f64 {
        self.gas_gap_mm(x, y) / self.el_drift_velocity_mm_per_us * 1e3
    }
}

/// The `[light]` table: coefficients of the true maps (None: the conditions' value).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LightSpec {
    /// S1: relative change from cathode to gate (a1).
    pub s1_lce_z_slope: Option<f64>,
    /// S1: (r/R)^2 term (b1).
    pub s1_lce_r2: Option<f64>,
    /// S1: dipole across xy (d1).
    pub s1_dipole: f64,
    /// S1: direction of the dipole [deg from +x] (p1).
    pub s1_dipole_azimuth_deg: f64,
    /// S2: (r/R)^2 term (b2).
    pub s2_lce_r2: Option<f64>,
    /// S2: (r/R)^4 term (c2).
    pub s2_lce_r4: f64,
    /// S2: dipole across xy (d2).
    pub s2_dipole: f64,
    /// S2: direction of the dipole [deg from +x] (p2).
    pub s2_dipole_azimuth_deg: f64,
}

/// True S1 and S2 light collection (serialised in the per-run truth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightCollection {
    /// TPC radius [mm].
    pub radius_mm: f64,
    /// Cathode height [mm].
    pub cathode_z_mm: f64,
    /// Cathode to gate [mm].
    pub drift_length_mm: f64,
    /// a1.
    pub s1_lce_z_slope: f64,
    /// b1.
    pub s1_lce_r2: f64,
    /// d1.
    pub s1_dipole: f64,
    /// p1 [deg].
    pub s1_dipole_azimuth_deg: f64,
    /// b2.
    pub s2_lce_r2: f64,
    /// c2.
    pub s2_lce_r4: f64,
    /// d2.
    pub s2_dipole: f64,
    /// p2 [deg].
    pub s2_dipole_azimuth_deg: f64,
}

impl LightSpec {
    /// The maps of this table on a base detector.
    pub fn resolve(&self, base: &Conditions) -> LightCollection {
        let m = &base.detector;
        let l = &m.params.light;
        LightCollection {
            radius_mm: m.params.tpc.radius_mm,
            cathode_z_mm: m.params.tpc.cathode_z_mm,
            drift_length_mm: m.drift_length_mm(),
            s1_lce_z_slope: self.s1_lce_z_slope.unwrap_or(l.s1_lce_z_slope),
            s1_lce_r2: self.s1_lce_r2.unwrap_or(l.s1_lce_r2),
            s1_dipole: self.s1_dipole,
            s1_dipole_azimuth_deg: self.s1_dipole_azimuth_deg,
            s2_lce_r2: self.s2_lce_r2.unwrap_or(l.s2_lce_r2),
            s2_lce_r4: self.s2_lce_r4,
            s2_dipole: self.s2_dipole,
            s2_dipole_azimuth_deg: self.s2_dipole_azimuth_deg,
        }
    }

    /// Check that every coefficient is finite and the maps stay positive.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (field, v) in [
            ("light.s1_lce_z_slope", self.s1_lce_z_slope.unwrap_or(0.0)),
            ("light.s1_lce_r2", self.s1_lce_r2.unwrap_or(0.0)),
            ("light.s1_dipole", self.s1_dipole),
            ("light.s2_lce_r2", self.s2_lce_r2.unwrap_or(0.0)),
            ("light.s2_lce_r4", self.s2_lce_r4),
            ("light.s2_dipole", self.s2_dipole),
        ] {
            if !(v.is_finite() && v.abs() < 1.0) {
                return Err(field_error(field, v, "must be finite with |value| < 1"));
            }
        }
        for (field, v) in [
            ("light.s1_dipole_azimuth_deg", self.s1_dipole_azimuth_deg),
            ("light.s2_dipole_azimuth_deg", self.s2_dipole_azimuth_deg),
        ] {
            if !v.is_finite() {
                return Err(field_error(field, v, "must be finite"));
            }
        }
        Ok(())
    }
}

impl LightCollection {
    fn dipole(&self, amplitude: f64, azimuth_deg: f64, x: f64, y: f64) -> f64 {
        let a = azimuth_deg.to_radians();
        amplitude * (x * a.cos() + y * a.sin()) / self.radius_mm
    }

    /// Relative S1 light collection at (x, y, z).
    pub fn s1_light_collection(&self, x: f64, y: f64, z: f64) -> f64 {
        let h = (z - self.cathode_z_mm) / self.drift_length_mm;
        let u = (x * x + y * y) / (self.radius_mm * self.radius_mm);
        (1.0 + self.s1_lce_z_slope * (h - 0.5))
            * (1.0 + self.s1_lce_r2 * (0.5 - u))
            * (1.0 + self.dipole(self.s1_dipole, self.s1_dipole_azimuth_deg, x, y))
    }

    /// Relative S2 light collection at (x, y).
    pub fn s2_light_collection(&self, x: f64, y: f64) -> f64 {
        let u = (x * x + y * y) / (self.radius_mm * self.radius_mm);
        1.0 + self.s2_lce_r2 * (0.5 - u)
            + self.s2_lce_r4 * (u * u - 1.0 / 3.0)
            + self.dipole(self.s2_dipole, self.s2_dipole_azimuth_deg, x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> Conditions {
        Conditions::load("v1").unwrap()
    }

    fn realistic() -> (GasGap, LightCollection) {
        let t = crate::sim::detector_truth::DetectorTruth::load("realistic").unwrap();
        (t.liquid.resolve(&t.base), t.light.resolve(&t.base))
    }

    /// Points on a grid inside the TPC.
    fn grid(r: f64) -> Vec<(f64, f64)> {
        let mut pts = Vec::new();
        for i in 0..=40 {
            for j in 0..=40 {
                let (x, y) = (
                    r * (f64::from(i) / 20.0 - 1.0),
                    r * (f64::from(j) / 20.0 - 1.0),
                );
                if x.hypot(y) <= r {
                    pts.push((x, y));
                }
            }
        }
        pts
    }

    #[test]
    fn a_level_surface_is_the_nominal_detector() {
        let c = v1();
        let g = LiquidSpec::default().resolve(&c);
        for (x, y) in [(0.0, 0.0), (500.0, -300.0)] {
            assert_eq!(g.gas_gap_mm(x, y), 8.0);
            assert_eq!(g.liquid_gap_mm(x, y), 5.0);
            assert_eq!(g.se_gain_phd(x, y), 47.0);
            assert!((g.el_width_ns(x, y) - 1000.0).abs() < 1e-9);
        }
        // LZ-like extraction: about 8 kV/cm in the gas, 4 kV/cm in the liquid.
        let e = g.gas_field_kv_per_cm(0.0, 0.0);
        assert!((7.5..8.5).contains(&e), "{e}");
        let l = LightSpec::default().resolve(&c);
        for (x, y, z) in [
            (0.0, 0.0, 700.0),
            (400.0, 300.0, 100.0),
            (-700.0, 10.0, 1400.0),
        ] {
            let s1 = c.detector.s1_light_collection(x, y, z);
            assert!((l.s1_light_collection(x, y, z) - s1).abs() < 1e-12);
            let s2 = c.detector.s2_light_collection(x, y);
            assert!((l.s2_light_collection(x, y) - s2).abs() < 1e-12);
        }
    }

    #[test]
    fn the_realistic_gas_gap_varies_by_about_a_millimetre() {
        let (g, _) = realistic();
        let d: Vec<f64> = grid(g.radius_mm)
            .iter()
            .map(|&(x, y)| g.gas_gap_mm(x, y))
            .collect();
        let lo = d.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!((0.8..1.3).contains(&(hi - lo)), "gap {lo:.3}..{hi:.3} mm");
        // The gap grows along the tilt azimuth (30 deg) ...
        let r = 600.0;
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        assert!(g.gas_gap_mm(r * c, r * s) - g.gas_gap_mm(-r * c, -r * s) > 0.6);
        // ... and so do the EL duration (d / v) and the SE gain (Monteiro).
        assert!(g.el_width_ns(r * c, r * s) > g.el_width_ns(-r * c, -r * s) * 1.07);
        let ratio = g.se_gain_phd(r * c, r * s) / g.se_gain_phd(-r * c, -r * s);
        assert!((1.02..1.08).contains(&ratio), "SE gain ratio {ratio}");
        // Y = a (E/p - b) p d at the nominal gap, by hand.
        let e = 8.5 / ((8.0 + 5.0 / 1.96) * 0.1);
        let y = 140.0 * (e / 3.0 - 116.0 / 140.0) * 3.0 * 0.8;
        let mut level = g.clone();
        (
            level.slope_x,
            level.slope_y,
            level.sag_mm,
            level.gas_gap_offset_mm,
        ) = (0.0, 0.0, 0.0, 0.0);
        assert!((level.el_photons_per_electron(1.0, 2.0) - y).abs() < 1e-9);
    }

    #[test]
    fn realistic_light_collection_differs_from_nominal_but_stays_near_one() {
        let c = v1();
        let (_, l) = realistic();
        let pts = grid(c.detector.params.tpc.radius_mm);
        let (mut s2, mut s1, mut max_dev) = (0.0, 0.0, 0.0f64);
        for &(x, y) in &pts {
            s2 += l.s2_light_collection(x, y);
            s1 += l.s1_light_collection(x, y, 728.0);
            let d = l.s2_light_collection(x, y) / c.detector.s2_light_collection(x, y) - 1.0;
            max_dev = max_dev.max(d.abs());
        }
        let n = pts.len() as f64;
        assert!((s2 / n - 1.0).abs() < 0.02 && (s1 / n - 1.0).abs() < 0.02);
        assert!(max_dev > 0.03, "S2 map off nominal by at most {max_dev}");
    }

    #[test]
    fn an_unphysical_surface_is_refused() {
        let c = v1();
        let spec = LiquidSpec {
            tilt_mrad: 8.0,
            ..LiquidSpec::default()
        };
        let (field, _, why) = spec.validate(&c).unwrap_err();
        assert_eq!(field, "liquid");
        assert!(why.contains("gas gap"), "{why}");
        let spec = LiquidSpec {
            anode_gate_kv: 1.0,
            ..LiquidSpec::default()
        };
        assert_eq!(spec.validate(&c).unwrap_err().0, "liquid.anode_gate_kv");
        assert!(LiquidSpec::default().validate(&c).is_ok());
    }
}
