//! Light response of the top array other than the nominal closed form: an
//! axially symmetric shape of the distance to each PMT times one relative
//! efficiency per top PMT. The conditions carry it when `tpcflow calibrate`
//! has learned it (`[detector.calibration.lrf]`); a detector truth carries the
//! simulated one in the same form.
//!
//! ```text
//! eta_k(x, y) = e_k f(rho_k),   rho_k = |(x, y) - (x_k, y_k)|,   p_k = eta_k / sum_j eta_j
//! analytic shape:  f(rho) = (1 + (rho / r0)^2)^(-3/2) + a (1 + (rho / L)^2)^(-3/2) + flat
//!                  (the second term, L > r0: light reflected once, a wider halo)
//! spline shape:    f(rho) = sum_b c_b B_b(u),  u = ln(1 + rho^2 / lambda^2)
//!                  B_b: cubic B-splines on n uniform intervals of [0, u(rho_max)]
//! ```
//!
//! The compressed distance u is quadratic in rho near a PMT (the shape is
//! flat on axis, so the pattern has no cusp) and logarithmic far from it, so
//! uniform knots in u put resolution where the response changes fastest, as
//! ANTS2's compressed-distance LRFs do.
//!
//! Evaluation in the xy fit uses a [`ResponseTable`]: cubic Hermite
//! interpolation in t = s / (s + c), s = rho^2, c = (100 mm)^2, with values
//! and slopes at 2048 uniform nodes. It needs no square root, logarithm or
//! power per PMT, so the learned response costs the fit no more than the
//! nominal closed form.

use serde::{Deserialize, Serialize};

use crate::detector::ModelError;

/// Radial shape of the response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrfShape {
    /// Closed form with a reflection halo.
    Analytic {
        /// Scale of the solid-angle-like fall-off [mm].
        r0_mm: f64,
        /// Amplitude of the reflection halo, relative to the direct light on axis.
        tail_amplitude: f64,
        /// Scale of the reflection halo [mm].
        tail_length_mm: f64,
        /// Flat term, relative to the on-axis value.
        flat: f64,
    },
    /// Cubic B-spline in the compressed distance u = ln(1 + rho^2 / lambda^2).
    Spline {
        /// lambda [mm].
        compression_mm: f64,
        /// Distance of the last knot [mm]; beyond it the value there holds.
        rho_max_mm: f64,
        /// One coefficient per B-spline (intervals + 3).
        coefficients: Vec<f64>,
    },
}

/// A light response: shape and per-top-PMT relative efficiencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightResponse {
    /// Radial shape.
    pub shape: LrfShape,
    /// Relative efficiency of each top PMT (mean 1 over the live ones).
    pub relative_efficiency: Vec<f64>,
}

/// Uniform cubic B-spline basis at position `v` in units of intervals
/// (0 <= v <= n): the first coefficient index and the four weights.
pub fn cubic_bspline_basis(v: f64, n_intervals: usize) -> (usize, [f64; 4]) {
    let v = v.clamp(0.0, n_intervals as f64);
    let i = (v.floor() as usize).min(n_intervals - 1);
    let t = v - i as f64;
    let t2 = t * t;
    let t3 = t2 * t;
    let u = 1.0 - t;
    (
        i,
        [
            u * u * u / 6.0,
            (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
            (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
            t3 / 6.0,
        ],
    )
}

impl LrfShape {
    /// Number of intervals of a spline shape (0 for the closed form).
    pub fn intervals(&self) -> usize {
        match self {
            LrfShape::Analytic { .. } => 0,
            LrfShape::Spline { coefficients, .. } => coefficients.len().saturating_sub(3),
        }
    }

    /// Compressed distance of a spline shape in units of intervals.
    pub fn spline_position(compression_mm: f64, rho_max_mm: f64, n: usize, rho_mm: f64) -> f64 {
        let l2 = compression_mm * compression_mm;
        let u_max = (rho_max_mm * rho_max_mm / l2).ln_1p();
        (rho_mm * rho_mm / l2).ln_1p() / u_max * n as f64
    }

    /// f(rho) (unnormalised).
    pub fn value(&self, rho_mm: f64) -> f64 {
        match self {
            LrfShape::Analytic {
                r0_mm,
                tail_amplitude,
                tail_length_mm,
                flat,
            } => {
                let u = rho_mm / r0_mm;
                let w = rho_mm / tail_length_mm;
                (1.0 + u * u).powf(-1.5) + tail_amplitude * (1.0 + w * w).powf(-1.5) + flat
            }
            LrfShape::Spline {
                compression_mm,
                rho_max_mm,
                coefficients,
            } => {
                let n = coefficients.len() - 3;
                let v = Self::spline_position(*compression_mm, *rho_max_mm, n, rho_mm);
                let (i, w) = cubic_bspline_basis(v, n);
                (0..4).map(|b| w[b] * coefficients[i + b]).sum()
            }
        }
    }

    fn check(&self) -> Result<(), ModelError> {
        let bad = |field, value, why| Err(ModelError::BadValue { field, value, why });
        match self {
            LrfShape::Analytic {
                r0_mm,
                tail_amplitude,
                tail_length_mm,
                flat,
            } => {
                if !(r0_mm.is_finite() && *r0_mm > 0.0) {
                    return bad("calibration.lrf.shape.r0_mm", *r0_mm, "must be > 0");
                }
                if !(tail_length_mm.is_finite() && *tail_length_mm > 0.0) {
                    return bad(
                        "calibration.lrf.shape.tail_length_mm",
                        *tail_length_mm,
                        "must be > 0",
                    );
                }
                for (field, v) in [
                    ("calibration.lrf.shape.tail_amplitude", *tail_amplitude),
                    ("calibration.lrf.shape.flat", *flat),
                ] {
                    if !(v.is_finite() && v >= 0.0) {
                        return bad(field, v, "must be finite and >= 0");
                    }
                }
            }
            LrfShape::Spline {
                compression_mm,
                rho_max_mm,
                coefficients,
            } => {
                if !(compression_mm.is_finite() && *compression_mm > 0.0) {
                    return bad(
                        "calibration.lrf.shape.compression_mm",
                        *compression_mm,
                        "must be > 0",
                    );
                }
                if !(rho_max_mm.is_finite() && *rho_max_mm > 0.0) {
                    return bad(
                        "calibration.lrf.shape.rho_max_mm",
                        *rho_max_mm,
                        "must be > 0",
                    );
                }
                if coefficients.len() < 4 {
                    return bad(
                        "calibration.lrf.shape.coefficients",
                        coefficients.len() as f64,
                        "a cubic spline needs at least 4 coefficients",
                    );
                }
                if let Some(&c) = coefficients.iter().find(|c| !c.is_finite()) {
                    return bad(
                        "calibration.lrf.shape.coefficients",
                        c,
                        "every coefficient must be finite",
                    );
                }
                let on_axis = self.value(0.0);
                if on_axis.is_nan() || on_axis <= 0.0 {
                    return bad(
                        "calibration.lrf.shape.coefficients",
                        self.value(0.0),
                        "the response on axis must be > 0",
                    );
                }
            }
        }
        Ok(())
    }
}

impl LightResponse {
    /// Check the shape and that there is one positive efficiency per top PMT.
    ///
    /// # Errors
    /// [`ModelError::BadValue`] naming the field.
    pub fn validate(&self, n_top: usize) -> Result<(), ModelError> {
        self.shape.check()?;
        if self.relative_efficiency.len() != n_top {
            return Err(ModelError::BadValue {
                field: "calibration.lrf.relative_efficiency",
                value: self.relative_efficiency.len() as f64,
                why: "needs one entry per top PMT",
            });
        }
        match self
            .relative_efficiency
            .iter()
            .find(|e| !(e.is_finite() && **e > 0.0))
        {
            Some(&e) => Err(ModelError::BadValue {
                field: "calibration.lrf.relative_efficiency",
                value: e,
                why: "every efficiency must be finite and > 0",
            }),
            None => Ok(()),
        }
    }
}

/// Nodes of a [`ResponseTable`].
const TABLE_NODES: usize = 2048;
/// c of t = s / (s + c) [mm^2].
const TABLE_SCALE_MM2: f64 = 1.0e4;

/// A shape tabulated for fast evaluation with its gradient (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseTable {
    /// Per interval [t_i, t_i+1], t_i = i / (TABLE_NODES - 1): the cubic
    /// Hermite interpolant of (f, df/dt) at its ends as a polynomial in
    /// u in [0, 1], coefficients [a, b, c, d] of a u^3 + b u^2 + c u + d
    /// (fewer operations per evaluation than the Hermite basis).
    cubics: Vec<[f64; 4]>,
    inv_dt: f64,
}

/// Smallest value of a tabulated shape, relative to the on-axis value: keeps
/// every expected fraction positive where a learned spline undershoots.
const FLOOR: f64 = 1e-6;

impl ResponseTable {
    /// Tabulate a shape.
    pub fn new(shape: &LrfShape) -> Self {
        let n = TABLE_NODES;
        let dt = 1.0 / (n - 1) as f64;
        let floor = FLOOR * shape.value(0.0).abs().max(1e-300);
        // rho(t) = sqrt(c t / (1 - t)); the last node (t = 1) is infinitely far.
        let f = |t: f64| {
            let t = t.clamp(0.0, 1.0 - 1e-12);
            let rho = (TABLE_SCALE_MM2 * t / (1.0 - t)).sqrt();
            shape.value(rho).max(floor)
        };
        let h = 1e-6;
        let nodes: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let t = i as f64 * dt;
                let lo = (t - h).max(0.0);
                let hi = (t + h).min(1.0 - 1e-9);
                [f(t), (f(hi) - f(lo)) / (hi - lo)]
            })
            .collect();
        let cubics = nodes
            .windows(2)
            .map(|w| {
                let ([f0, d0], [f1, d1]) = (w[0], w[1]);
                let (m0, m1) = (d0 * dt, d1 * dt);
                [
                    2.0 * (f0 - f1) + m0 + m1,
                    3.0 * (f1 - f0) - 2.0 * m0 - m1,
                    m0,
                    f0,
                ]
            })
            .collect();
        Self {
            cubics,
            inv_dt: 1.0 / dt,
        }
    }

    /// f and df/ds at squared distance `s` [mm^2].
    #[inline(always)]
    pub fn value_and_slope(&self, s: f64) -> (f64, f64) {
        let (f, slope) = self.values_and_slopes([s]);
        (f[0], slope[0])
    }

    /// f and df/ds at `N` squared distances [mm^2], one array at a time
    /// (the same operations on each lane, so that a vector build gives the
    /// same bits as one distance at a time).
    #[inline(always)]
    pub fn values_and_slopes<const N: usize>(&self, s: [f64; N]) -> ([f64; N], [f64; N]) {
        use std::array::from_fn;
        let inv: [f64; N] = from_fn(|j| 1.0 / (s[j] + TABLE_SCALE_MM2));
        let v: [f64; N] = from_fn(|j| s[j] * inv[j] * self.inv_dt);
        let i: [usize; N] = from_fn(|j| (v[j] as usize).min(TABLE_NODES - 2));
        let u: [f64; N] = from_fn(|j| v[j] - i[j] as f64);
        let q: [[f64; 4]; N] = from_fn(|j| self.cubics[i[j]]);
        let f = from_fn(|j| ((q[j][0] * u[j] + q[j][1]) * u[j] + q[j][2]) * u[j] + q[j][3]);
        let df_du: [f64; N] = from_fn(|j| (3.0 * q[j][0] * u[j] + 2.0 * q[j][1]) * u[j] + q[j][2]);
        let slope = from_fn(|j| df_du[j] * self.inv_dt * TABLE_SCALE_MM2 * inv[j] * inv[j]);
        (f, slope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth_like() -> LrfShape {
        LrfShape::Analytic {
            r0_mm: 66.0,
            tail_amplitude: 0.03,
            tail_length_mm: 160.0,
            flat: 0.004,
        }
    }

    #[test]
    fn table_matches_the_shape_and_its_gradient() {
        let shape = truth_like();
        let table = ResponseTable::new(&shape);
        for rho in [0.0, 3.0, 20.0, 66.0, 150.0, 400.0, 900.0, 1450.0] {
            let (f, df_ds) = table.value_and_slope(rho * rho);
            let exact = shape.value(rho);
            assert!(
                (f / exact - 1.0).abs() < 1e-5,
                "rho {rho}: table {f} exact {exact}"
            );
            let h = 1e-3;
            let s = rho * rho;
            let num = if rho > 1.0 {
                (shape.value((s + h).sqrt()) - shape.value((s - h).sqrt())) / (2.0 * h)
            } else {
                (shape.value((s + h).sqrt()) - shape.value(s.sqrt())) / h
            };
            assert!(
                (df_ds - num).abs() < 1e-4 * num.abs() + 1e-12,
                "rho {rho}: slope {df_ds} vs {num}"
            );
        }
    }

    #[test]
    fn spline_basis_is_a_partition_of_unity() {
        for v in [0.0, 0.3, 1.0, 5.5, 7.999, 8.0] {
            let (i, w) = cubic_bspline_basis(v, 8);
            assert!(i <= 7);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{v}: {w:?}");
        }
        // Constant coefficients give a constant shape.
        let s = LrfShape::Spline {
            compression_mm: 60.0,
            rho_max_mm: 1500.0,
            coefficients: vec![2.0; 12],
        };
        assert!((s.value(0.0) - 2.0).abs() < 1e-12 && (s.value(800.0) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn bad_responses_are_named() {
        let r = LightResponse {
            shape: truth_like(),
            relative_efficiency: vec![1.0; 5],
        };
        assert!(r.validate(5).is_ok());
        let e = r.validate(6).unwrap_err().to_string();
        assert!(e.contains("relative_efficiency"), "{e}");
        let r = LightResponse {
            shape: LrfShape::Spline {
                compression_mm: 60.0,
                rho_max_mm: 1500.0,
                coefficients: vec![1.0, f64::NAN, 1.0, 1.0],
            },
            relative_efficiency: vec![1.0; 5],
        };
        let e = r.validate(5).unwrap_err().to_string();
        assert!(e.contains("coefficients"), "{e}");
    }
}
