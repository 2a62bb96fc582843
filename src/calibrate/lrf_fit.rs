//! One fit of the top array's light response to (position, per-PMT area)
//! pairs: an axially symmetric shape (cubic B-spline in a compressed
//! distance, [`tpcflow_reco::lrf`]) and one relative efficiency per live top
//! PMT, the positions held fixed. [`super::lrf`] alternates it with position
//! fits.
//!
//! ```text
//! mu_ik = A_i e_k f(rho_ik),  f(rho) = sum_b c_b B_b(u),  u = ln(1 + rho^2 / lambda^2)
//! Poisson likelihood over events i and live top PMTs k, by blocks (each a maximum given the others):
//!   A_i = N_i / sum_k e_k f(rho_ik)                         (closed form)
//!   c   = argmin sum_ik (n_ik - A_i e_k f(rho_ik))^2 / mu_ik  (weighted least squares, weights from the
//!                                                           previous mu: one Fisher-scoring step in c,
//!                                                           with a small second-difference penalty)
//!   e_k = sum_i n_ik / sum_i A_i f(rho_ik)                  (closed form), then mean over live PMTs = 1
//! ```
//!
//! Dead channels take no part; their efficiency is written as 1 (unused).

use rayon::prelude::*;
use tpcflow_reco::lrf::{cubic_bspline_basis, LightResponse, LrfShape};

use super::linear_fit::cholesky_solve;

/// Spline settings of a learned shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplineSettings {
    /// lambda of the compressed distance [mm].
    pub compression_mm: f64,
    /// Distance of the last knot [mm] (beyond the farthest PMT from any point in the TPC).
    pub rho_max_mm: f64,
    /// Uniform intervals in the compressed distance.
    pub intervals: usize,
    /// Block passes per fit.
    pub passes: usize,
}

impl Default for SplineSettings {
    fn default() -> Self {
        Self {
            compression_mm: 60.0,
            rho_max_mm: 1500.0,
            intervals: 20,
            passes: 3,
        }
    }
}

/// The calibration sample: fitted positions and the top areas of each event.
#[derive(Debug, Clone, Copy)]
pub struct Pairs<'a> {
    /// PMT x of each top channel [mm].
    pub pmt_x: &'a [f64],
    /// PMT y of each top channel [mm].
    pub pmt_y: &'a [f64],
    /// False for channels left out.
    pub live: &'a [bool],
    /// Fitted position of each event [mm].
    pub positions: &'a [(f64, f64)],
    /// Top areas [phd], `n_top` per event in event order.
    pub areas: &'a [f64],
}

impl Pairs<'_> {
    fn n_top(&self) -> usize {
        self.pmt_x.len()
    }

    fn event(&self, i: usize) -> &[f64] {
        let n = self.n_top();
        &self.areas[i * n..(i + 1) * n]
    }

    fn rho(&self, i: usize, k: usize) -> f64 {
        let (x, y) = self.positions[i];
        (x - self.pmt_x[k]).hypot(y - self.pmt_y[k])
    }
}

/// Distance and spline position of every pair, computed once per fit
/// (the positions do not move within it): `[rho [mm], v [intervals]]`.
fn distances(p: &Pairs<'_>, set: &SplineSettings) -> Vec<[f32; 2]> {
    let n_top = p.n_top();
    (0..p.positions.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            (0..n_top).map(move |k| {
                let rho = p.rho(i, k);
                let v = LrfShape::spline_position(
                    set.compression_mm,
                    set.rho_max_mm,
                    set.intervals,
                    rho,
                );
                [rho as f32, v as f32]
            })
        })
        .collect()
}

/// f at a pair: a spline of these settings from the cached position, any
/// other shape from the distance.
#[inline]
fn shape_at(shape: &LrfShape, set: &SplineSettings, d: [f32; 2]) -> f64 {
    match shape {
        LrfShape::Spline { coefficients, .. } if coefficients.len() == set.intervals + 3 => {
            let (j, w) = cubic_bspline_basis(f64::from(d[1]), set.intervals);
            w[0] * coefficients[j]
                + w[1] * coefficients[j + 1]
                + w[2] * coefficients[j + 2]
                + w[3] * coefficients[j + 3]
        }
        _ => shape.value(f64::from(d[0])),
    }
}

/// Per-event scale A_i = N_i / sum_k e_k f(rho_ik) over live PMTs.
fn scales(
    p: &Pairs<'_>,
    dist: &[[f32; 2]],
    shape: &LrfShape,
    eff: &[f64],
    set: &SplineSettings,
) -> Vec<f64> {
    let n_top = p.n_top();
    (0..p.positions.len())
        .into_par_iter()
        .map(|i| {
            let a = p.event(i);
            let (mut n, mut s) = (0.0, 0.0);
            for k in (0..n_top).filter(|&k| p.live[k]) {
                n += a[k].max(0.0);
                s += eff[k] * shape_at(shape, set, dist[i * n_top + k]);
            }
            if s > 0.0 {
                n / s
            } else {
                0.0
            }
        })
        .collect()
}

/// Normal equations (upper triangle as a full matrix) of the shape step.
/// Index loops read as the formulas do.
#[allow(clippy::needless_range_loop)]
fn shape_normal_equations(
    p: &Pairs<'_>,
    dist: &[[f32; 2]],
    shape: &LrfShape,
    eff: &[f64],
    a: &[f64],
    set: &SplineSettings,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let nb = set.intervals + 3;
    let zero = || (vec![vec![0.0; nb]; nb], vec![0.0; nb]);
    // Fixed chunks summed in order: the same sums whatever the thread count
    // (a rayon fold/reduce splits where work stealing happens to).
    let n = p.positions.len();
    let partial: Vec<(Vec<Vec<f64>>, Vec<f64>)> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let (mut m, mut v) = zero();
            for i in c * CHUNK..n.min((c + 1) * CHUNK) {
                let areas = p.event(i);
                let n_top = p.n_top();
                for k in (0..n_top).filter(|&k| p.live[k]) {
                    let d = dist[i * n_top + k];
                    let scale = a[i] * eff[k];
                    let mu = (scale * shape_at(shape, set, d)).max(0.05);
                    let w = 1.0 / mu;
                    let (j, basis) = cubic_bspline_basis(f64::from(d[1]), set.intervals);
                    for r in 0..4 {
                        let xr = scale * basis[r];
                        v[j + r] += w * xr * areas[k].max(0.0);
                        for c in 0..4 {
                            m[j + r][j + c] += w * xr * scale * basis[c];
                        }
                    }
                }
            }
            (m, v)
        })
        .collect();
    partial
        .into_iter()
        .fold(zero(), |(mut m, mut v), (m2, v2)| {
            for (row, row2) in m.iter_mut().zip(&m2) {
                for (x, y) in row.iter_mut().zip(row2) {
                    *x += y;
                }
            }
            for (x, y) in v.iter_mut().zip(&v2) {
                *x += y;
            }
            (m, v)
        })
}

/// Events per partial sum of the parallel accumulations.
const CHUNK: usize = 512;

/// Fit shape and efficiencies to the pairs, starting from `start`.
/// `None` when the normal equations are singular (too few events).
#[allow(clippy::needless_range_loop)]
pub fn fit_response(
    p: &Pairs<'_>,
    start: &LightResponse,
    set: &SplineSettings,
) -> Option<LightResponse> {
    let n_top = p.n_top();
    let mut shape = start.shape.clone();
    let mut eff = start.relative_efficiency.clone();
    let dist = distances(p, set);
    for _ in 0..set.passes.max(1) {
        let a = scales(p, &dist, &shape, &eff, set);
        let (mut m, v) = shape_normal_equations(p, &dist, &shape, &eff, &a, set);
        // Second-difference penalty: keeps knots the data barely reach smooth.
        let nb = set.intervals + 3;
        let trace = (0..nb).map(|b| m[b][b]).sum::<f64>() / nb as f64;
        let pen = 1e-6 * trace;
        for b in 0..nb - 2 {
            let d = [1.0, -2.0, 1.0];
            for r in 0..3 {
                for c in 0..3 {
                    m[b + r][b + c] += pen * d[r] * d[c];
                }
            }
        }
        let coef = cholesky_solve(&m, &v)?;
        shape = LrfShape::Spline {
            compression_mm: set.compression_mm,
            rho_max_mm: set.rho_max_mm,
            coefficients: coef,
        };
        // Efficiencies with the new shape.
        let a = scales(p, &dist, &shape, &eff, set);
        let n = p.positions.len();
        let partial: Vec<(Vec<f64>, Vec<f64>)> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let (mut num, mut den) = (vec![0.0; n_top], vec![0.0; n_top]);
                for i in c * CHUNK..n.min((c + 1) * CHUNK) {
                    let areas = p.event(i);
                    for k in (0..n_top).filter(|&k| p.live[k]) {
                        num[k] += areas[k].max(0.0);
                        den[k] += a[i] * shape_at(&shape, set, dist[i * n_top + k]);
                    }
                }
                (num, den)
            })
            .collect();
        let (num, den) = partial.into_iter().fold(
            (vec![0.0; n_top], vec![0.0; n_top]),
            |(mut n1, mut d1), (n2, d2)| {
                n1.iter_mut().zip(&n2).for_each(|(x, y)| *x += y);
                d1.iter_mut().zip(&d2).for_each(|(x, y)| *x += y);
                (n1, d1)
            },
        );
        for k in 0..n_top {
            eff[k] = if p.live[k] && den[k] > 0.0 && num[k] > 0.0 {
                num[k] / den[k]
            } else {
                1.0
            };
        }
        normalise(&mut eff, p.live);
    }
    Some(LightResponse {
        shape,
        relative_efficiency: eff,
    })
}

/// Scale the live entries to mean 1; dead entries are 1.
pub fn normalise(eff: &mut [f64], live: &[bool]) {
    let (s, n) = eff
        .iter()
        .zip(live)
        .filter(|(_, &l)| l)
        .fold((0.0, 0usize), |(s, n), (e, _)| (s + e, n + 1));
    let mean = if n > 0 { s / n as f64 } else { 1.0 };
    for (e, &l) in eff.iter_mut().zip(live) {
        *e = if l { *e / mean } else { 1.0 };
    }
}
