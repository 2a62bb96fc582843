//! Kr83m correction maps (S2 vs xy, S1 vs xyz, relative to the centre) and
//! the uniformity of the Kr83m energy peak they give.
//!
//! Smooth polynomial fits of the log signal (robust least squares, see
//! `linear_fit`), evaluated on grids of bin centres:
//!
//! ```text
//! u = x/R, v = y/R, w = 2 (z - z_mid) / H,  rho = u^2 + v^2
//! ln(S2 exp(t/tau)) = sum c_j f_j(u, v),  f = 1, u, v, u^2, uv, v^2, u^3, u^2 v, u v^2, v^3
//! ln S1             = sum d_j g_j(u, v, w), g = 1, u, v, u^2, uv, v^2, w, w^2, w^3,
//!                                               w rho, w^2 rho, u w, v w, rho^2
//! map(x, y[, z]) = exp(fit(x, y[, z]) - fit(0, 0[, z_mid]))
//! ```
//! Peak uniformity: the median Kr83m energy in 4 x 4 xy cells (of the square
//! around the TPC, cells with >= 20 events) times 5 z slices, relative to the
//! median of all events: the rms and the largest deviation over the cells.

use tpcflow_reco::detector::{XyMap, XyzMap};

use super::inputs::KrEvent;
use super::linear_fit::robust_least_squares;
use super::CalibrateError;

/// Bins of the S2 map along x and y.
pub const S2_BINS: usize = 12;
/// Bins of the S1 map along x and y.
pub const S1_BINS_XY: usize = 8;
/// Bins of the S1 map along z.
pub const S1_BINS_Z: usize = 10;

fn s2_features(u: f64, v: f64) -> Vec<f64> {
    vec![
        1.0,
        u,
        v,
        u * u,
        u * v,
        v * v,
        u * u * u,
        u * u * v,
        u * v * v,
        v * v * v,
    ]
}

fn s1_features(u: f64, v: f64, w: f64) -> Vec<f64> {
    let rho = u * u + v * v;
    vec![
        1.0,
        u,
        v,
        u * u,
        u * v,
        v * v,
        w,
        w * w,
        w * w * w,
        w * rho,
        w * w * rho,
        u * w,
        v * w,
        rho * rho,
    ]
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The two maps.
#[derive(Debug, Clone, PartialEq)]
pub struct KrMaps {
    /// S2 (lifetime-corrected) vs xy, relative to the centre.
    pub s2_xy: XyMap,
    /// S1 vs xyz, relative to the centre.
    pub s1_xyz: XyzMap,
    /// Residual rms of ln S2 / ln S1 around the fits.
    pub residual_sd: (f64, f64),
}

/// Fit both maps; `lifetime_us` corrects S2 to zero drift first.
///
/// # Errors
/// [`CalibrateError::TooFew`] with fewer than 100 single scatters,
/// [`CalibrateError::Fit`] when a fit is singular.
pub fn fit_kr_maps(
    events: &[KrEvent],
    lifetime_us: f64,
    radius_mm: f64,
    z_range_mm: (f64, f64),
) -> Result<KrMaps, CalibrateError> {
    if events.len() < 100 {
        return Err(CalibrateError::TooFew {
            product: "Kr83m maps",
            what: "Kr83m single scatters",
            got: events.len(),
            need: 100,
        });
    }
    let (z0, z1) = z_range_mm;
    let zmid = 0.5 * (z0 + z1);
    let w_of = |z: f64| 2.0 * (z - zmid) / (z1 - z0);
    let ones = vec![1.0; events.len()];
    let rows2: Vec<Vec<f64>> = events
        .iter()
        .map(|e| s2_features(e.x_mm / radius_mm, e.y_mm / radius_mm))
        .collect();
    let y2: Vec<f64> = events
        .iter()
        .map(|e| (e.s2_phd * (e.drift_ns * 1e-3 / lifetime_us).exp()).ln())
        .collect();
    let singular = |what: &str| CalibrateError::Fit {
        product: "Kr83m maps",
        why: format!("{what}: singular fit (events all in one place?)"),
    };
    let f2 = robust_least_squares(&rows2, &y2, &ones, 3.5).ok_or_else(|| singular("S2 vs xy"))?;
    let rows1: Vec<Vec<f64>> = events
        .iter()
        .map(|e| s1_features(e.x_mm / radius_mm, e.y_mm / radius_mm, w_of(e.z_mm)))
        .collect();
    let y1: Vec<f64> = events.iter().map(|e| e.s1_phd.ln()).collect();
    let f1 = robust_least_squares(&rows1, &y1, &ones, 3.5).ok_or_else(|| singular("S1 vs xyz"))?;
    let c2 = dot(&s2_features(0.0, 0.0), &f2.coef);
    let c1 = dot(&s1_features(0.0, 0.0, 0.0), &f1.coef);
    let mut s2_xy = XyMap {
        half_width_mm: radius_mm,
        nx: S2_BINS,
        ny: S2_BINS,
        values: Vec::with_capacity(S2_BINS * S2_BINS),
    };
    for j in 0..S2_BINS {
        for i in 0..S2_BINS {
            let (x, y) = s2_xy.bin_centre(i, j);
            // Beyond the wall the fit is an extrapolation: hold the value at the wall.
            let (u, v) = clamp_unit(x / radius_mm, y / radius_mm);
            s2_xy
                .values
                .push((dot(&s2_features(u, v), &f2.coef) - c2).exp());
        }
    }
    let mut s1_xyz = XyzMap {
        half_width_mm: radius_mm,
        z_min_mm: z0,
        z_max_mm: z1,
        nx: S1_BINS_XY,
        ny: S1_BINS_XY,
        nz: S1_BINS_Z,
        values: Vec::with_capacity(S1_BINS_XY * S1_BINS_XY * S1_BINS_Z),
    };
    let xy = XyMap {
        half_width_mm: radius_mm,
        nx: S1_BINS_XY,
        ny: S1_BINS_XY,
        values: Vec::new(),
    };
    for k in 0..S1_BINS_Z {
        let z = z0 + (k as f64 + 0.5) * (z1 - z0) / S1_BINS_Z as f64;
        for j in 0..S1_BINS_XY {
            for i in 0..S1_BINS_XY {
                let (x, y) = xy.bin_centre(i, j);
                let (u, v) = clamp_unit(x / radius_mm, y / radius_mm);
                s1_xyz
                    .values
                    .push((dot(&s1_features(u, v, w_of(z)), &f1.coef) - c1).exp());
            }
        }
    }
    Ok(KrMaps {
        s2_xy,
        s1_xyz,
        residual_sd: (f2.residual_sd, f1.residual_sd),
    })
}

fn clamp_unit(u: f64, v: f64) -> (f64, f64) {
    let r = u.hypot(v);
    if r > 1.0 {
        (u / r, v / r)
    } else {
        (u, v)
    }
}

/// Uniformity of a peak over 4 x 4 xy cells x 5 z slices.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Uniformity {
    /// rms of the cell medians relative to the overall median.
    pub rms: f64,
    /// Largest |cell median / overall median - 1|.
    pub max_deviation: f64,
    /// Cells with >= 20 events.
    pub cells: usize,
    /// Expected rms from statistics alone (1.2533 sd / sqrt(n) per cell, averaged).
    pub statistical_rms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// Cell-median uniformity of `values` (one per event of `events`).
pub fn uniformity(
    events: &[KrEvent],
    values: &[f64],
    radius_mm: f64,
    z_range_mm: (f64, f64),
) -> Uniformity {
    let (z0, z1) = z_range_mm;
    let mut cells: Vec<Vec<f64>> = vec![Vec::new(); 80];
    let cell = |v: f64, lo: f64, hi: f64, n: usize| {
        (((v - lo) / (hi - lo) * n as f64).floor().max(0.0) as usize).min(n - 1)
    };
    for (e, &v) in events.iter().zip(values) {
        if !v.is_finite() {
            continue;
        }
        let i = cell(e.x_mm, -radius_mm, radius_mm, 4);
        let j = cell(e.y_mm, -radius_mm, radius_mm, 4);
        let k = cell(e.z_mm, z0, z1, 5);
        cells[(k * 4 + j) * 4 + i].push(v);
    }
    let all = median(values.iter().copied().filter(|v| v.is_finite()).collect());
    let (mut ss, mut max, mut n, mut stat) = (0.0, 0.0f64, 0usize, 0.0);
    for c in cells.into_iter().filter(|c| c.len() >= 20) {
        let len = c.len() as f64;
        let mean = c.iter().sum::<f64>() / len;
        let sd = (c.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / len).sqrt();
        let d = median(c) / all - 1.0;
        ss += d * d;
        max = max.max(d.abs());
        stat += (1.2533 * sd / all) * (1.2533 * sd / all) / len;
        n += 1;
    }
    let nf = n.max(1) as f64;
    Uniformity {
        rms: (ss / nf).sqrt(),
        max_deviation: max,
        cells: n,
        statistical_rms: (stat / nf).sqrt(),
    }
}
