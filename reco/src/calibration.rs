//! Detector-health products measured from calibration runs, as the
//! conditions carry them (`[detector.calibration]`, every field optional):
//! dead and noisy channels, the Kr83m correction maps, the gas-gap map and
//! the learned light response of the top array ([`crate::lrf`]).
//!
//! Maps are regular grids of bin centres; a value between centres is the
//! bilinear (trilinear) interpolation, and outside the outermost centres the
//! edge value holds:
//!
//! ```text
//! xy grid:  x_i = -h + (i + 1/2) 2h / nx,  y_j = -h + (j + 1/2) 2h / ny,   values[j nx + i]
//! xyz grid: the xy grid times z_k = z_min + (k + 1/2) (z_max - z_min) / nz, values[(k ny + j) nx + i]
//! ```
//!
//! The Kr83m maps are relative to the centre of the TPC (value 1 at x = y = 0
//! and, for S1, half the drift length): the reconstruction scales them by the
//! nominal map's value at the centre (see `DetectorModel::s1_correction_map`).

use serde::{Deserialize, Serialize};

use crate::detector::ModelError;
use crate::lrf::LightResponse;

/// A map over a square grid in xy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XyMap {
    /// Half width of the square the grid covers [mm] (usually the TPC radius).
    pub half_width_mm: f64,
    /// Bins along x.
    pub nx: usize,
    /// Bins along y.
    pub ny: usize,
    /// Value of each bin, row by row (`values[j * nx + i]`).
    pub values: Vec<f64>,
}

/// A map over a grid in xyz.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XyzMap {
    /// Half width of the square the grid covers in xy [mm].
    pub half_width_mm: f64,
    /// Lower end of the grid in z [mm].
    pub z_min_mm: f64,
    /// Upper end of the grid in z [mm].
    pub z_max_mm: f64,
    /// Bins along x.
    pub nx: usize,
    /// Bins along y.
    pub ny: usize,
    /// Bins along z.
    pub nz: usize,
    /// Value of each bin (`values[(k * ny + j) * nx + i]`).
    pub values: Vec<f64>,
}

/// Products of `tpcflow calibrate` the reconstruction uses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Channels without signal: left out of the xy likelihood.
    #[serde(default)]
    pub dead_channels: Vec<u16>,
    /// Channels with excess single-phe rate or width (flagged for people; kept in the fits).
    #[serde(default)]
    pub noisy_channels: Vec<u16>,
    /// Excess single-phe rate of each noisy channel, in the order of
    /// `noisy_channels` [Hz] (empty: not measured). The simulator adds it to
    /// salt events; the reconstruction does not read it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noisy_rate_hz: Vec<f64>,
    /// Kr83m S2 (lifetime-corrected) vs xy, relative to the centre.
    #[serde(default)]
    pub kr_s2_xy: Option<XyMap>,
    /// Kr83m S1 vs xyz, relative to the centre.
    #[serde(default)]
    pub kr_s1_xyz: Option<XyzMap>,
    /// Gas gap (liquid surface to anode) vs xy [mm].
    #[serde(default)]
    pub gas_gap_mm: Option<XyMap>,
    /// Light response of the top array learned from Kr83m single scatters;
    /// without it the xy fit uses the nominal closed form of `light.lrf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lrf: Option<LightResponse>,
}

impl Calibration {
    /// True when nothing is set (the nominal detector).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Check channel numbers and map sizes.
    ///
    /// # Errors
    /// [`ModelError::BadValue`] naming the field.
    pub fn validate(&self, n_channels: usize) -> Result<(), ModelError> {
        for (field, list) in [
            ("calibration.dead_channels", &self.dead_channels),
            ("calibration.noisy_channels", &self.noisy_channels),
        ] {
            if let Some(c) = list.iter().find(|&&c| usize::from(c) >= n_channels) {
                return Err(ModelError::BadValue {
                    field,
                    value: f64::from(*c),
                    why: "channel beyond the PMT count",
                });
            }
        }
        if !self.noisy_rate_hz.is_empty() && self.noisy_rate_hz.len() != self.noisy_channels.len() {
            return Err(ModelError::BadValue {
                field: "calibration.noisy_rate_hz",
                value: self.noisy_rate_hz.len() as f64,
                why: "needs one rate per noisy channel (or none)",
            });
        }
        if let Some(r) = self
            .noisy_rate_hz
            .iter()
            .find(|r| !(r.is_finite() && **r >= 0.0))
        {
            return Err(ModelError::BadValue {
                field: "calibration.noisy_rate_hz",
                value: *r,
                why: "must be finite and >= 0",
            });
        }
        for (field, map) in [
            ("calibration.kr_s2_xy", &self.kr_s2_xy),
            ("calibration.gas_gap_mm", &self.gas_gap_mm),
        ] {
            if let Some(m) = map {
                m.check(field)?;
            }
        }
        if let Some(m) = &self.kr_s1_xyz {
            m.check("calibration.kr_s1_xyz")?;
        }
        Ok(())
    }
}

/// Position of `v` on a grid of `n` bins over [lo, hi]: (lower bin, weight of the upper one).
fn grid_index(v: f64, lo: f64, hi: f64, n: usize) -> (usize, f64) {
    if n <= 1 || !v.is_finite() {
        return (0, 0.0);
    }
    let u = (v - lo) / (hi - lo) * n as f64 - 0.5;
    let u = u.clamp(0.0, (n - 1) as f64);
    let i = (u.floor() as usize).min(n - 2);
    (i, u - i as f64)
}

fn check_grid(
    field: &'static str,
    half_width: f64,
    dims: &[usize],
    values: &[f64],
) -> Result<(), ModelError> {
    let bad = |value: f64, why: &'static str| Err(ModelError::BadValue { field, value, why });
    if half_width.is_nan() || half_width <= 0.0 || half_width.is_infinite() {
        return bad(half_width, "half_width_mm must be finite and > 0");
    }
    if dims.contains(&0) {
        return bad(0.0, "every dimension needs at least one bin");
    }
    if values.len() != dims.iter().product::<usize>() {
        return bad(
            values.len() as f64,
            "number of values is not the product of the bin counts",
        );
    }
    match values.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        Some(&v) => bad(v, "map values must be finite and > 0"),
        None => Ok(()),
    }
}

impl XyMap {
    fn check(&self, field: &'static str) -> Result<(), ModelError> {
        check_grid(field, self.half_width_mm, &[self.nx, self.ny], &self.values)
    }

    /// Centre of bin (i, j) [mm].
    pub fn bin_centre(&self, i: usize, j: usize) -> (f64, f64) {
        let h = self.half_width_mm;
        (
            -h + (i as f64 + 0.5) * 2.0 * h / self.nx as f64,
            -h + (j as f64 + 0.5) * 2.0 * h / self.ny as f64,
        )
    }

    /// Bilinear interpolation at (x, y); the edge value beyond the outer centres.
    pub fn at(&self, x: f64, y: f64) -> f64 {
        let h = self.half_width_mm;
        let (i, fx) = grid_index(x, -h, h, self.nx);
        let (j, fy) = grid_index(y, -h, h, self.ny);
        let v = |i: usize, j: usize| self.values[j.min(self.ny - 1) * self.nx + i.min(self.nx - 1)];
        let lo = v(i, j) * (1.0 - fx) + v(i + 1, j) * fx;
        let hi = v(i, j + 1) * (1.0 - fx) + v(i + 1, j + 1) * fx;
        lo * (1.0 - fy) + hi * fy
    }
}

impl XyzMap {
    fn check(&self, field: &'static str) -> Result<(), ModelError> {
        if self.z_max_mm.is_nan() || self.z_min_mm.is_nan() || self.z_max_mm <= self.z_min_mm {
            return Err(ModelError::BadValue {
                field,
                value: self.z_max_mm,
                why: "z_max_mm must be above z_min_mm",
            });
        }
        check_grid(
            field,
            self.half_width_mm,
            &[self.nx, self.ny, self.nz],
            &self.values,
        )
    }

    /// Trilinear interpolation at (x, y, z); the edge value beyond the outer centres.
    pub fn at(&self, x: f64, y: f64, z: f64) -> f64 {
        let h = self.half_width_mm;
        let (i, fx) = grid_index(x, -h, h, self.nx);
        let (j, fy) = grid_index(y, -h, h, self.ny);
        let (k, fz) = grid_index(z, self.z_min_mm, self.z_max_mm, self.nz);
        let v = |i: usize, j: usize, k: usize| {
            let (i, j, k) = (i.min(self.nx - 1), j.min(self.ny - 1), k.min(self.nz - 1));
            self.values[(k * self.ny + j) * self.nx + i]
        };
        let plane = |k: usize| {
            let lo = v(i, j, k) * (1.0 - fx) + v(i + 1, j, k) * fx;
            let hi = v(i, j + 1, k) * (1.0 - fx) + v(i + 1, j + 1, k) * fx;
            lo * (1.0 - fy) + hi * fy
        };
        plane(k) * (1.0 - fz) + plane(k + 1) * fz
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_interpolate_between_centres_and_hold_the_edge_value() {
        let m = XyMap {
            half_width_mm: 100.0,
            nx: 2,
            ny: 1,
            values: vec![1.0, 3.0],
        };
        // Centres at x = -50 and +50.
        assert!((m.at(-50.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((m.at(0.0, 7.0) - 2.0).abs() < 1e-12);
        assert!((m.at(90.0, -90.0) - 3.0).abs() < 1e-12);
        assert!((m.at(-500.0, 0.0) - 1.0).abs() < 1e-12);
        let z = XyzMap {
            half_width_mm: 100.0,
            z_min_mm: 0.0,
            z_max_mm: 100.0,
            nx: 1,
            ny: 1,
            nz: 2,
            values: vec![2.0, 4.0],
        };
        assert!((z.at(0.0, 0.0, 50.0) - 3.0).abs() < 1e-12);
        assert!((z.at(0.0, 0.0, 0.0) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn bad_tables_are_named() {
        let c = Calibration {
            dead_channels: vec![3, 600],
            ..Calibration::default()
        };
        let e = c.validate(494).unwrap_err().to_string();
        assert!(e.contains("dead_channels") && e.contains("600"), "{e}");
        let c = Calibration {
            kr_s2_xy: Some(XyMap {
                half_width_mm: 728.0,
                nx: 2,
                ny: 2,
                values: vec![1.0; 3],
            }),
            ..Calibration::default()
        };
        let e = c.validate(494).unwrap_err().to_string();
        assert!(
            e.contains("calibration.kr_s2_xy") && e.contains("= 3"),
            "{e}"
        );
        let c = Calibration {
            noisy_channels: vec![233],
            noisy_rate_hz: vec![1e4, 5.0],
            ..Calibration::default()
        };
        let e = c.validate(494).unwrap_err().to_string();
        assert!(e.contains("noisy_rate_hz"), "{e}");
        let c = Calibration {
            noisy_channels: vec![233],
            noisy_rate_hz: vec![f64::NAN],
            ..Calibration::default()
        };
        assert!(c.validate(494).is_err());
    }
}
