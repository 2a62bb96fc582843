//! Liquid level: the gas gap (liquid surface to anode) vs xy, from the S2
//! width extrapolated to zero drift.
//!
//! An S2 is the electroluminescence of electrons crossing the gas gap, each
//! for T = d_gas / v_gas, smeared by longitudinal diffusion in the liquid:
//!
//! ```text
//! S2 time profile = box(T) (x) N(0, sigma_t),   sigma_t^2 = 2 D_L t_drift / v_d^2
//! 50 % width w50(T, sigma_t): the half-width h with P(|X| < h) = 1/4 each side, i.e.
//!   (1/T) [sigma G((h + T/2)/sigma) - sigma G((h - T/2)/sigma)
//!          - sigma G((T/2 - h)/sigma) + sigma G((-h - T/2)/sigma)] = 1/2,
//!   G(u) = u Phi(u) + phi(u)          (the integral of the normal cdf), w50 = 2h
//! 1. D_L and T_0: least squares of the median w50 in 12 drift-time slices
//!    against w50(T_0, sigma_t(D_L)) (grid search, then refinement)
//! 2. per event (t_drift < 500 us): T_i = the T whose w50(T, sigma_t) matches
//!    its width, d_i = T_i v_gas,  v_gas = nominal gap / nominal EL duration
//!    (anode - liquid surface of the conditions, el_width_ns); its weight is
//!    k_i^2, k_i = d ln w50 / d ln T at (T_0, sigma_t(t_i)): the relative
//!    width resolution is about the same at every depth (1.8 % at 0-100 us,
//!    4 % beyond 400 us on the realistic truth), but k falls from ~0.5 at
//!    the surface to ~0.06 at 500 us, so the shallowest events carry the
//!    measurement (events with k < 0.05 are left out)
//! 3. surface d_gas = a + b x + c y + d x^2 + e xy + f y^2 (x, y in m; robust
//!    weighted least squares, rejection at 4 sigma): the map is the surface
//!    at the 6 x 6 bin centres (held at the wall beyond it); a liquid surface
//!    is a tilted plane with a sag, which this form holds exactly
//! 4. tilt angle atan(sqrt(b^2 + c^2)), direction of the deepest gas
//!    atan2(c, b); the gap at the centre is a
//! 5. S2 width at the gate (zero drift, no diffusion): w50(T_0, 0) = T_0 / 2;
//!    sigma(T_0) from the slice fit, cov(T_0, D_L) = s^2 (J^T J)^-1 with
//!    s^2 = sum of squared slice residuals / (slices - 2) and J the
//!    derivatives of the model widths (central differences)
//! ```
//! Per-bin medians of the shallow events alone hold ~5 % of the events
//! (t < 100 us) in each of 32 bins; the surface uses all of them at once.

use tpcflow_reco::detector::XyMap;

use super::inputs::KrEvent;
use super::linear_fit::robust_least_squares;
use super::CalibrateError;

/// Bins of the gas-gap map along x and y.
pub const GAP_BINS: usize = 6;

/// Events deeper than this [ns] say little about T (diffusion swamps it).
const MAX_DRIFT_NS: f64 = 500e3;

/// Events whose width changes by less than this fraction per fraction of T are left out.
const MIN_SENSITIVITY: f64 = 0.05;

/// The gas-gap surface: 1, x, y, x^2, xy, y^2 (x, y in m).
fn surface_features(u: f64, v: f64) -> [f64; 6] {
    [1.0, u, v, u * u, u * v, v * v]
}

/// The gas-gap measurement.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LiquidLevel {
    /// EL duration at the centre from all events [ns].
    pub el_duration_ns: f64,
    /// Longitudinal diffusion constant [mm^2/us].
    pub diffusion_mm2_per_us: f64,
    /// Gas gap at the bin centres, from the fitted surface [mm].
    #[serde(skip)]
    pub map: XyMap,
    /// Events used per bin.
    pub counts: Vec<usize>,
    /// Surface: gap at the centre [mm].
    pub plane_gap_mm: f64,
    /// Plane slopes [mm/mm] along x and y.
    pub plane_slope: (f64, f64),
    /// Tilt angle [mrad].
    pub tilt_mrad: f64,
    /// Uncertainty of the tilt angle [mrad].
    pub sigma_tilt_mrad: f64,
    /// Direction of increasing gas gap [degrees from +x].
    pub tilt_direction_deg: f64,
    /// Gas drift speed used [mm/us].
    pub gas_speed_mm_per_us: f64,
    /// 50 % width of an S2 from the gate (no diffusion) [ns].
    pub s2_width_at_gate_ns: f64,
    /// Its uncertainty [ns] (None with fewer than 3 drift-time slices).
    pub sigma_s2_width_at_gate_ns: Option<f64>,
}

/// Complementary error function (Numerical Recipes' erfcc, |error| < 1.2e-7).
pub(super) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

fn g(u: f64) -> f64 {
    let phi = (-0.5 * u * u).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let cdf = 0.5 * erfc(-u / std::f64::consts::SQRT_2);
    u * cdf + phi
}

/// P(|X| < h) for X = box(T) + N(0, sigma).
fn central_probability(h: f64, t: f64, sigma: f64) -> f64 {
    if sigma < 1e-9 * t.max(1.0) {
        return (2.0 * h / t).min(1.0);
    }
    if t < 1e-9 {
        return 1.0 - erfc(h / (sigma * std::f64::consts::SQRT_2));
    }
    let s = sigma;
    s / t
        * (g((h + t / 2.0) / s) - g((h - t / 2.0) / s) - g((t / 2.0 - h) / s)
            + g((-h - t / 2.0) / s))
}

/// 50 % width of box(T) convolved with N(0, sigma) [same units as T, sigma].
pub fn width_50(t: f64, sigma: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, t + 5.0 * sigma + 1e-9);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if central_probability(mid, t, sigma) < 0.5 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo + hi
}

/// T with width_50(T, sigma) = w (0 when the width is below the diffusion's alone).
fn invert_width(w: f64, sigma: f64) -> f64 {
    if w.is_nan() || w <= width_50(0.0, sigma) {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0, 2.0 * w + 1.0);
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if width_50(mid, sigma) < w {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// Measure the gas-gap map.
///
/// # Errors
/// [`CalibrateError::TooFew`] with fewer than 200 single scatters, or
/// [`CalibrateError::Fit`] when the surface fit is singular.
pub fn fit_liquid_level(
    events: &[KrEvent],
    radius_mm: f64,
    drift_speed_mm_per_us: f64,
    gas_speed_mm_per_us: f64,
) -> Result<LiquidLevel, CalibrateError> {
    let ev: Vec<&KrEvent> = events
        .iter()
        .filter(|e| e.s2_width_50_ns > 0.0 && e.drift_ns > 0.0)
        .collect();
    if ev.len() < 200 {
        return Err(CalibrateError::TooFew {
            product: "liquid level",
            what: "Kr83m single scatters with an S2 width",
            got: ev.len(),
            need: 200,
        });
    }
    let sigma_t = |d: f64, t_ns: f64| (2.0 * d * t_ns * 1e-3).sqrt() / drift_speed_mm_per_us * 1e3;
    // 1. Global T_0 and D_L from drift-time slices.
    let t_max = ev.iter().map(|e| e.drift_ns).fold(0.0, f64::max);
    let slices: Vec<(f64, f64)> = (0..12)
        .filter_map(|k| {
            let lo = t_max * f64::from(k) / 12.0;
            let hi = t_max * f64::from(k + 1) / 12.0;
            let sel: Vec<&&KrEvent> = ev
                .iter()
                .filter(|e| (lo..hi).contains(&e.drift_ns))
                .collect();
            (sel.len() >= 10).then(|| {
                (
                    median(sel.iter().map(|e| e.drift_ns).collect()),
                    median(sel.iter().map(|e| e.s2_width_50_ns).collect()),
                )
            })
        })
        .collect();
    let cost = |t0: f64, d: f64| -> f64 {
        slices
            .iter()
            .map(|&(t, w)| (width_50(t0, sigma_t(d, t)) - w).powi(2))
            .sum()
    };
    let (mut best_t, mut best_d, mut best) = (1000.0, 0.002, f64::INFINITY);
    for i in 0..40 {
        for j in 0..40 {
            let t0 = 100.0 + 75.0 * f64::from(i);
            let d = 0.0002 * f64::from(j + 1);
            let c = cost(t0, d);
            if c < best {
                (best_t, best_d, best) = (t0, d, c);
            }
        }
    }
    let (mut step_t, mut step_d) = (40.0, 0.0001);
    for _ in 0..40 {
        for (dt, dd) in [(step_t, 0.0), (-step_t, 0.0), (0.0, step_d), (0.0, -step_d)] {
            let (t0, d) = (best_t + dt, (best_d + dd).max(1e-6));
            let c = cost(t0, d);
            if c < best {
                (best_t, best_d, best) = (t0, d, c);
            }
        }
        step_t *= 0.7;
        step_d *= 0.7;
    }
    let sigma_t0 = slice_fit_sigma_t0(&slices, best_t, best_d, best, &sigma_t);
    // 2. Each event's gap, weighted by how much its width says about T.
    let mut per_bin: Vec<usize> = vec![0; GAP_BINS * GAP_BINS];
    let bin = |v: f64| {
        (((v + radius_mm) / (2.0 * radius_mm) * GAP_BINS as f64)
            .floor()
            .max(0.0) as usize)
            .min(GAP_BINS - 1)
    };
    let (mut rows, mut y) = (Vec::new(), Vec::new());
    for e in ev.iter().filter(|e| e.drift_ns < MAX_DRIFT_NS) {
        let s = sigma_t(best_d, e.drift_ns);
        let w0 = width_50(best_t, s);
        let sensitivity = (width_50(best_t * 1.01, s) - w0) / (0.01 * w0);
        if sensitivity < MIN_SENSITIVITY {
            continue;
        }
        let gap = invert_width(e.s2_width_50_ns, s) * 1e-3 * gas_speed_mm_per_us;
        let (u, v) = (e.x_mm * 1e-3, e.y_mm * 1e-3);
        rows.push(
            surface_features(u, v)
                .iter()
                .map(|f| f * sensitivity)
                .collect(),
        );
        y.push(gap * sensitivity);
        per_bin[bin(e.y_mm) * GAP_BINS + bin(e.x_mm)] += 1;
    }
    // 3. The surface through all of them, the map at the bin centres.
    let surface =
        robust_least_squares(&rows, &y, &vec![1.0; y.len()], 4.0).ok_or(CalibrateError::Fit {
            product: "liquid level",
            why: format!(
                "surface through {} shallow events is singular (all in one place?)",
                y.len()
            ),
        })?;
    let mut map = XyMap {
        half_width_mm: radius_mm,
        nx: GAP_BINS,
        ny: GAP_BINS,
        values: Vec::with_capacity(GAP_BINS * GAP_BINS),
    };
    for j in 0..GAP_BINS {
        for i in 0..GAP_BINS {
            let (x, yy) = map.bin_centre(i, j);
            // Beyond the wall the surface is an extrapolation: hold the value at the wall.
            let r = x.hypot(yy).max(radius_mm) / radius_mm;
            let f = surface_features(x * 1e-3 / r, yy * 1e-3 / r);
            map.values
                .push(f.iter().zip(&surface.coef).map(|(a, c)| a * c).sum());
        }
    }
    let counts = per_bin;
    // Slopes in mm per m: the tilt in mrad.
    let (b, c) = (surface.coef[1], surface.coef[2]);
    let slope = b.hypot(c);
    let cov = &surface.cov;
    let sigma_slope = if slope > 0.0 {
        ((b * b * cov[1][1] + c * c * cov[2][2] + 2.0 * b * c * cov[1][2]) / (slope * slope)).sqrt()
    } else {
        cov[1][1].sqrt()
    };
    let (b, c, slope, sigma_slope) = (b * 1e-3, c * 1e-3, slope * 1e-3, sigma_slope * 1e-3);
    Ok(LiquidLevel {
        el_duration_ns: best_t,
        diffusion_mm2_per_us: best_d,
        map,
        counts,
        plane_gap_mm: surface.coef[0],
        plane_slope: (b, c),
        tilt_mrad: slope.atan() * 1e3,
        sigma_tilt_mrad: sigma_slope * 1e3,
        tilt_direction_deg: c.atan2(b).to_degrees(),
        gas_speed_mm_per_us,
        s2_width_at_gate_ns: width_50(best_t, 0.0),
        sigma_s2_width_at_gate_ns: sigma_t0.map(|s| 0.5 * s),
    })
}

/// sigma(T_0) of the drift-time slice fit (step 5 of the module docs); None
/// with fewer than 3 slices or a singular fit.
fn slice_fit_sigma_t0(
    slices: &[(f64, f64)],
    t0: f64,
    d: f64,
    cost: f64,
    sigma_t: &dyn Fn(f64, f64) -> f64,
) -> Option<f64> {
    if slices.len() < 3 {
        return None;
    }
    let model = |t0: f64, d: f64, t: f64| width_50(t0, sigma_t(d, t));
    let (ht, hd) = (1.0, d * 1e-3);
    let mut jtj = [[0.0f64; 2]; 2];
    for &(t, _) in slices {
        let j0 = (model(t0 + ht, d, t) - model(t0 - ht, d, t)) / (2.0 * ht);
        let j1 = (model(t0, d + hd, t) - model(t0, d - hd, t)) / (2.0 * hd);
        jtj[0][0] += j0 * j0;
        jtj[0][1] += j0 * j1;
        jtj[1][1] += j1 * j1;
    }
    let det = jtj[0][0] * jtj[1][1] - jtj[0][1] * jtj[0][1];
    let s2 = cost / (slices.len() - 2) as f64;
    let var = s2 * jtj[1][1] / det;
    (det > 0.0 && var.is_finite()).then(|| var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_of_a_box_and_of_a_gaussian() {
        assert!((width_50(1000.0, 0.0) - 500.0).abs() < 1e-3);
        assert!((width_50(1000.0, 1e-12) - 500.0).abs() < 1e-3);
        assert!((width_50(0.0, 100.0) - 134.9).abs() < 0.1);
        let w = width_50(800.0, 300.0);
        assert!((invert_width(w, 300.0) - 800.0).abs() < 0.01);
    }
}
