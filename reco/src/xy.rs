//! Horizontal position from the top-array hit pattern of an S2.
//!
//! Model: mu_k(x, y, N) = N p_k(x, y), p_k the normalised LRF pattern of the
//! detector model (sum_k p_k = 1). Each phd's area has relative second moment
//! F (SPE smearing and double phe), so the likelihood is Poisson-like with
//! the counts scaled by 1/F:
//!
//! ```text
//! -ln L = sum_k (mu_k - n_k ln mu_k) / F
//! N-hat = sum_k n_k                            (profile over N, closed form)
//! l(x,y) = sum_k n_k ln eta_k - N ln S,  S = sum_k eta_k
//! Fisher J_ab = N sum_k (d_a p_k)(d_b p_k) / p_k   (a, b in {x, y}; the N row decouples
//!                                                  because sum_k d_a p_k = 0)
//! cov(x, y) = F J^-1
//! seed = the likelier of the global centroid and the brightest PMT's local centroid
//! step = J^-1 grad l        (Fisher scoring, backtracking, projected into r <= R)
//! GoF = 2 sum_k [n_k ln(n_k / mu_k) - (n_k - mu_k)] / F / (n_top - 3)
//! F = ((1 + p2) s^2 + 1 + 3 p2) / (1 + p2)^2    (s = SPE resolution, p2 = P(double phe))
//! ```
//!
//! With a learned light response in the conditions ([`crate::lrf`]) the
//! pattern is `p_k = e_k f(rho_k) / sum_j e_j f(rho_j)` from its table; without
//! one, the nominal closed form of [`DetectorModel::lrf`].
//!
//! Channels listed dead in the conditions are left out of every sum (the
//! pattern is renormalised over the live channels): a dead PMT's zero is not
//! a measurement of no light.
//!
//! The Cramer-Rao bound of PHYSICS.md is `sqrt(F J^-1)` evaluated at the true
//! position, see [`cramer_rao_xy`].

use crate::detector::DetectorModel;
use crate::lrf::ResponseTable;
use crate::threshold_scan::ScanPath;

/// Result of the xy fit.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct XyFit {
    /// Fitted x [mm].
    pub x_mm: f64,
    /// Fitted y [mm].
    pub y_mm: f64,
    /// Uncertainty of x from the Fisher information [mm].
    pub sigma_x_mm: f64,
    /// Uncertainty of y from the Fisher information [mm].
    pub sigma_y_mm: f64,
    /// Covariance of x and y [mm^2].
    pub cov_xy_mm2: f64,
    /// Top-array light used [phd].
    pub n_top_phd: f64,
    /// Goodness of fit: deviance per degree of freedom.
    pub gof: f64,
    /// Area-weighted centroid of all top PMTs, x [mm] (one of the two seeds).
    pub centroid_x_mm: f64,
    /// Area-weighted centroid of all top PMTs, y [mm].
    pub centroid_y_mm: f64,
    /// Iterations used.
    pub iterations: u32,
    /// True when the last step was shorter than the tolerance; false when
    /// the line search found no point at least as likely, the Fisher matrix
    /// was singular or the iterations ran out.
    pub converged: bool,
}

/// Excess-variance factor of one detected photon's area (relative second moment).
pub fn excess_variance_factor(model: &DetectorModel) -> f64 {
    let s = model.params.pmts.spe_resolution;
    let p = model.params.pmts.double_phe_prob;
    ((1.0 + p) * s * s + 1.0 + 3.0 * p) / ((1.0 + p) * (1.0 + p))
}

/// The light response of each top PMT and its gradient in (x, y).
trait Response {
    /// (eta_k, d eta_k / dx, d eta_k / dy) of the PMTs `k` at the offsets
    /// (dx, dy) = (x - x_k, y - y_k) from them, one lane per PMT. Written
    /// one array at a time, the same operations on every lane, so that a
    /// vector build computes several PMTs per instruction and gives the
    /// same bits as one PMT at a time (`N = 1`).
    fn at_offsets<const N: usize>(&self, k: &[usize; N], dx: [f64; N], dy: [f64; N]) -> Lanes<N>;

    /// [`Response::at_offsets`] of one PMT.
    #[cfg(test)]
    fn at_offset(&self, k: usize, dx: f64, dy: f64) -> (f64, f64, f64) {
        let (e, ex, ey) = self.at_offsets(&[k], [dx], [dy]);
        (e[0], ex[0], ey[0])
    }
}

/// (eta, d eta / dx, d eta / dy) of `N` PMTs.
type Lanes<const N: usize> = ([f64; N], [f64; N], [f64; N]);

/// The nominal closed form of [`DetectorModel::lrf`], differentiated.
struct Nominal<'a>(&'a DetectorModel);

impl Response for Nominal<'_> {
    #[inline(always)]
    fn at_offsets<const N: usize>(&self, _k: &[usize; N], dx: [f64; N], dy: [f64; N]) -> Lanes<N> {
        use std::array::from_fn;
        let lrf = &self.0.params.light.lrf;
        let inv_r02 = 1.0 / (lrf.r0_mm * lrf.r0_mm);
        let u: [f64; N] = from_fn(|j| 1.0 + (dx[j] * dx[j] + dy[j] * dy[j]) * inv_r02);
        let g: [f64; N] = from_fn(|j| 1.0 / (u[j] * u[j].sqrt()));
        let dg: [f64; N] = from_fn(|j| -3.0 * inv_r02 * g[j] / u[j]);
        (
            g.map(|g| g + lrf.flat),
            from_fn(|j| dg[j] * dx[j]),
            from_fn(|j| dg[j] * dy[j]),
        )
    }
}

/// The learned response of the conditions: e_k f(rho_k^2) from its table.
struct Learned<'a> {
    table: &'a ResponseTable,
    efficiency: &'a [f64],
}

impl Response for Learned<'_> {
    #[inline(always)]
    fn at_offsets<const N: usize>(&self, k: &[usize; N], dx: [f64; N], dy: [f64; N]) -> Lanes<N> {
        use std::array::from_fn;
        let s: [f64; N] = from_fn(|j| dx[j] * dx[j] + dy[j] * dy[j]);
        let (f, df_ds) = self.table.values_and_slopes(s);
        let e: [f64; N] = from_fn(|j| self.efficiency[k[j]]);
        let g: [f64; N] = from_fn(|j| 2.0 * e[j] * df_ds[j]);
        (
            from_fn(|j| e[j] * f[j]),
            from_fn(|j| g[j] * dx[j]),
            from_fn(|j| g[j] * dy[j]),
        )
    }
}

/// Log-likelihood l(x, y) (up to constants and the factor 1/F), gradient and
/// Fisher matrix [[Jxx, Jxy], [Jxy, Jyy]] per unit N.
struct Eval {
    l: f64,
    gx: f64,
    gy: f64,
    jxx: f64,
    jxy: f64,
    jyy: f64,
}

/// [`Eval`] at (x, y) in one pass over the live PMTs (one response, one
/// reciprocal and, where there is light, one log each):
///
/// ```text
/// S = sum_k eta_k,  S_a = sum_k d_a eta_k,  A_ab = sum_k (d_a eta_k)(d_b eta_k) / eta_k
/// l = sum_k n_k ln eta_k - N ln S,   d_a l = sum_k n_k d_a eta_k / eta_k - N S_a / S
/// J_ab = sum_k (d_a p_k)(d_b p_k) / p_k = (A_ab - S_a S_b / S) / S
/// ```
///
/// (the last line is the sum over p_k = eta_k / S expanded; each term of
/// the two sides is non-negative, so the difference loses nothing a fit
/// needs).
///
/// The sums over PMTs are taken in [`LANES`] lanes, the i-th live PMT in
/// lane i % LANES, and the lanes added in one fixed order ([`Sums::total`]):
/// the same operations in the same order on every path, so the AVX2 build of
/// the pass (four PMTs per instruction) and the portable one (two with
/// x86-64's SSE2, one elsewhere) give bit-identical results.
#[allow(unsafe_code)]
fn evaluate<R: Response>(resp: &R, lit: &mut Lit, x: f64, y: f64, path: ScanPath) -> Eval {
    #[cfg(target_arch = "x86_64")]
    if matches!(path, ScanPath::Avx2 | ScanPath::Avx512) && ScanPath::Avx2.is_available() {
        // SAFETY: AVX2 was detected just above.
        let sums = unsafe { accumulate_avx2(resp, lit, x, y) };
        // SAFETY: as above.
        unsafe { lit_logs_avx2(lit) };
        return finish(&sums, lit);
    }
    let _ = path;
    let sums = accumulate(resp, lit, x, y);
    lit_logs(lit);
    finish(&sums, lit)
}

/// `lit.ln_eta[j] = ln(eta)` of the j-th PMT with light ([`ln`]), in a
/// loop the compiler vectorises.
#[inline(always)]
fn lit_logs(lit: &mut Lit) {
    lit.ln_eta.clear();
    lit.ln_eta.extend(lit.lit.iter().map(|&i| lit.eta[i]));
    let mut all_normal = true;
    for v in &mut lit.ln_eta {
        all_normal &= is_positive_normal(*v);
        *v = ln_positive_normal(*v);
    }
    if !all_normal {
        // Never with a light response (floored above 0); libm's answer
        // for whatever is not a positive normal number.
        for (v, &i) in lit.ln_eta.iter_mut().zip(&lit.lit) {
            *v = ln(lit.eta[i]);
        }
    }
}

/// [`lit_logs`] compiled for AVX2 (four logs per instruction; the same
/// operations, so the same bits).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn lit_logs_avx2(lit: &mut Lit) {
    lit_logs(lit);
}

/// Natural logarithm of a positive normal number, within 1 ulp (the
/// fdlibm/musl algorithm: `x = 2^k (1 + f)` with `1 + f` in [sqrt(2)/2,
/// sqrt(2)), `ln(1 + f) = 2 atanh(s)`, `s = f / (2 + f)`, as a degree-14
/// odd polynomial in `s`). Only `+ - * /` and bit operations, with no
/// branch, so a loop of it vectorises and gives the same bits on every
/// path. The fit takes one per PMT with light per evaluation, where the
/// libm call cost as much as the rest of the evaluation. Garbage for other
/// inputs ([`ln`] sends those to `f64::ln`).
#[inline(always)]
fn ln_positive_normal(x: f64) -> f64 {
    // fdlibm's constants, bit for bit: ln 2 in two parts, and the
    // polynomial's coefficients.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const LG1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
    const LG2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
    const LG3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
    const LG4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
    const LG5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
    const LG6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
    const LG7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);
    let bits = x.to_bits();
    // Move 1 + f into [sqrt(2)/2, sqrt(2)): shift the high word so that the
    // exponent steps at sqrt(2)/2 (0x3fe6a09e) rather than at 1.
    let hx = (bits >> 32) + (0x3ff0_0000 - 0x3fe6_a09e);
    // k = (hx >> 20) - 1023, taken to f64 exactly without an integer
    // conversion (which AVX2 lacks for 64-bit lanes).
    let k = f64::from_bits(0x4330_0000_0000_0000 | (hx >> 20)) - (4_503_599_627_370_496.0 + 1023.0);
    let m = f64::from_bits((((hx & 0x000f_ffff) + 0x3fe6_a09e) << 32) | (bits & 0xffff_ffff));
    let f = m - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    s * (hfsq + r) + k * LN2_LO - hfsq + f + k * LN2_HI
}

/// Whether `x` is a positive normal number (what [`ln_positive_normal`]
/// takes), as one integer comparison.
#[inline(always)]
fn is_positive_normal(x: f64) -> bool {
    x.to_bits().wrapping_sub(1 << 52) < 0x7fe0_0000_0000_0000
}

/// Natural logarithm within 1 ulp ([`ln_positive_normal`]; `f64::ln` for
/// what is not a positive normal number).
fn ln(x: f64) -> f64 {
    if is_positive_normal(x) {
        ln_positive_normal(x)
    } else {
        x.ln()
    }
}

/// Lanes of [`evaluate`]'s sums.
const LANES: usize = 4;

/// Per-lane running sums of [`evaluate`].
#[derive(Default)]
struct Sums {
    s: [f64; LANES],
    sx: [f64; LANES],
    sy: [f64; LANES],
    axx: [f64; LANES],
    axy: [f64; LANES],
    ayy: [f64; LANES],
    gx: [f64; LANES],
    gy: [f64; LANES],
}

impl Sums {
    /// The lanes added in one fixed order.
    #[inline(always)]
    fn total(v: &[f64; LANES]) -> f64 {
        (v[0] + v[1]) + (v[2] + v[3])
    }

    /// Add `N` live PMTs' responses and counts to lanes `first..first + N`
    /// (one array at a time, as [`Response::at_offsets`]).
    #[inline(always)]
    fn add<const N: usize>(&mut self, first: usize, (e, ex, ey): Lanes<N>, n: [f64; N]) {
        use std::array::from_fn;
        let inv: [f64; N] = from_fn(|j| 1.0 / e[j]);
        let ux: [f64; N] = from_fn(|j| ex[j] * inv[j]);
        let uy: [f64; N] = from_fn(|j| ey[j] * inv[j]);
        for j in 0..N {
            let l = first + j;
            self.s[l] += e[j];
            self.sx[l] += ex[j];
            self.sy[l] += ey[j];
            self.axx[l] += ex[j] * ux[j];
            self.axy[l] += ex[j] * uy[j];
            self.ayy[l] += ey[j] * uy[j];
            // A PMT without light adds n_k d_a eta_k / eta_k = +-0, which
            // leaves the gradient as it was.
            self.gx[l] += n[j] * ux[j];
            self.gy[l] += n[j] * uy[j];
        }
    }
}

/// The lane sums of [`evaluate`] at (x, y), each live PMT's response kept in
/// `lit.eta`: whole groups of [`LANES`] PMTs (no call and no bounds check
/// inside, so a group is one vector step), then the rest one by one, each
/// in its lane.
#[inline(always)]
fn accumulate<R: Response>(resp: &R, lit: &mut Lit, x: f64, y: f64) -> Sums {
    let mut sums = Sums::default();
    let groups = lit
        .live
        .chunks_exact(LANES)
        .zip(lit.px.chunks_exact(LANES))
        .zip(lit.py.chunks_exact(LANES))
        .zip(lit.n_live.chunks_exact(LANES))
        .zip(lit.eta.chunks_exact_mut(LANES));
    for ((((k, px), py), n), eta) in groups {
        let k: &[usize; LANES] = k.try_into().expect("a group");
        let dx: [f64; LANES] = std::array::from_fn(|j| x - px[j]);
        let dy: [f64; LANES] = std::array::from_fn(|j| y - py[j]);
        let r = resp.at_offsets(k, dx, dy);
        eta.copy_from_slice(&r.0);
        sums.add(0, r, std::array::from_fn(|j| n[j]));
    }
    let done = lit.live.len() / LANES * LANES;
    for i in done..lit.live.len() {
        let r = resp.at_offsets(&[lit.live[i]], [x - lit.px[i]], [y - lit.py[i]]);
        lit.eta[i] = r.0[0];
        sums.add(i % LANES, r, [lit.n_live[i]]);
    }
    sums
}

/// [`accumulate`] compiled for AVX2 (the same source and operations: only
/// the instructions differ).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn accumulate_avx2<R: Response>(resp: &R, lit: &mut Lit, x: f64, y: f64) -> Sums {
    accumulate(resp, lit, x, y)
}

/// [`Eval`] from the lane sums and the responses in `lit.eta`.
fn finish(sums: &Sums, lit: &Lit) -> Eval {
    let s = Sums::total(&sums.s);
    let sx = Sums::total(&sums.sx);
    let sy = Sums::total(&sums.sy);
    let (axx, axy, ayy) = (
        Sums::total(&sums.axx),
        Sums::total(&sums.axy),
        Sums::total(&sums.ayy),
    );
    let n_tot = lit.n_tot;
    let mut l = 0.0;
    for (&i, &ln_eta) in lit.lit.iter().zip(&lit.ln_eta) {
        l += lit.n_live[i] * ln_eta;
    }
    l -= n_tot * s.ln();
    Eval {
        l,
        gx: Sums::total(&sums.gx) - n_tot * sx / s,
        gy: Sums::total(&sums.gy) - n_tot * sy / s,
        jxx: (axx - sx * sx / s) / s,
        jxy: (axy - sx * sy / s) / s,
        jyy: (ayy - sy * sy / s) / s,
    }
}

/// The counts of a fit, their sum, the live PMTs (ascending) with their
/// positions and counts side by side, which of those have light and room
/// for each one's response at a point: what every evaluation of one fit
/// shares.
struct Lit {
    /// Count of each top PMT (0 where dead).
    n: Vec<f64>,
    n_tot: f64,
    /// The live top PMTs.
    live: Vec<usize>,
    /// Their positions [mm] and counts.
    px: Vec<f64>,
    py: Vec<f64>,
    n_live: Vec<f64>,
    /// Indices into `live` of those with `n > 0`.
    lit: Vec<usize>,
    /// Their responses at the last point evaluated.
    eta: Vec<f64>,
    /// ln of the responses of those with light ([`lit_logs`]).
    ln_eta: Vec<f64>,
}

impl Lit {
    fn new(model: &DetectorModel, n: Vec<f64>) -> Self {
        let live: Vec<usize> = (0..n.len()).filter(|&k| model.pmts.live[k]).collect();
        let px = live.iter().map(|&k| model.pmts.x[k]).collect();
        let py = live.iter().map(|&k| model.pmts.y[k]).collect();
        let n_live: Vec<f64> = live.iter().map(|&k| n[k]).collect();
        let lit = (0..live.len()).filter(|&i| n_live[i] > 0.0).collect();
        let eta = vec![0.0; live.len()];
        let n_tot = n.iter().sum();
        Self {
            n,
            n_tot,
            live,
            px,
            py,
            n_live,
            lit,
            eta,
            ln_eta: Vec::new(),
        }
    }
}

/// Area-weighted centroid of the top PMTs [mm]; (0, 0) without light.
///
/// # Panics
/// When `top_areas` is longer than the number of channels.
pub fn centroid(model: &DetectorModel, top_areas: &[f64]) -> (f64, f64) {
    let (mut s, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (k, &a) in top_areas.iter().enumerate() {
        let a = a.max(0.0);
        s += a;
        sx += a * model.pmts.x[k];
        sy += a * model.pmts.y[k];
    }
    if s > 0.0 {
        (sx / s, sy / s)
    } else {
        (0.0, 0.0)
    }
}

/// Area-weighted centroid of the brightest top PMT and its neighbours within
/// 1.5 pitches [mm]; (0, 0) without light.
fn local_centroid(model: &DetectorModel, top_areas: &[f64]) -> (f64, f64) {
    let Some((kmax, _)) = top_areas
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
    else {
        return (0.0, 0.0);
    };
    let reach = 1.5 * model.params.pmts.pitch_mm;
    let (x0, y0) = (model.pmts.x[kmax], model.pmts.y[kmax]);
    let (mut s, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (k, &a) in top_areas.iter().enumerate() {
        let (px, py) = (model.pmts.x[k], model.pmts.y[k]);
        let (dx, dy) = (px - x0, py - y0);
        if dx * dx + dy * dy <= reach * reach {
            let a = a.max(0.0);
            s += a;
            sx += a * px;
            sy += a * py;
        }
    }
    if s > 0.0 {
        (sx / s, sy / s)
    } else {
        (0.0, 0.0)
    }
}

fn clamp_to_radius(x: f64, y: f64, r_max: f64) -> (f64, f64) {
    let r = x.hypot(y);
    if r > r_max {
        (x * r_max / r, y * r_max / r)
    } else {
        (x, y)
    }
}

fn inverse_2x2(a: f64, b: f64, d: f64) -> Option<(f64, f64, f64)> {
    let det = a * d - b * b;
    (det > 0.0 && det.is_finite()).then(|| (d / det, -b / det, a / det))
}

/// Maximum-likelihood fit of the top-PMT areas [phd] (one entry per top
/// PMT; negative entries count as 0). `None` when there is no light.
/// [`fit_xy_on`] the widest path this CPU runs.
///
/// # Panics
/// When `top_areas` is not `model.pmts.n_top` long.
pub fn fit_xy(
    model: &DetectorModel,
    top_areas: &[f64],
    max_iterations: u32,
    tolerance_mm: f64,
) -> Option<XyFit> {
    fit_xy_on(
        model,
        top_areas,
        max_iterations,
        tolerance_mm,
        ScanPath::detect(),
    )
}

/// [`fit_xy`] with the likelihood's sums taken by `path` (AVX2 and
/// AVX-512 CPUs take four PMTs per instruction, the others the portable
/// build; a path this CPU cannot run falls back to it): the same result,
/// bit for bit, whatever the path.
///
/// # Panics
/// When `top_areas` is not `model.pmts.n_top` long.
pub fn fit_xy_on(
    model: &DetectorModel,
    top_areas: &[f64],
    max_iterations: u32,
    tolerance_mm: f64,
    path: ScanPath,
) -> Option<XyFit> {
    assert_eq!(top_areas.len(), model.pmts.n_top, "one area per top PMT");
    let limits = (max_iterations, tolerance_mm, path);
    match (&model.response, &model.params.calibration.lrf) {
        (Some(table), Some(r)) => {
            let resp = Learned {
                table,
                efficiency: &r.relative_efficiency,
            };
            fit_xy_with(model, &resp, top_areas, limits)
        }
        _ => fit_xy_with(model, &Nominal(model), top_areas, limits),
    }
}

fn fit_xy_with<R: Response>(
    model: &DetectorModel,
    resp: &R,
    top_areas: &[f64],
    (max_iterations, tolerance_mm, path): (u32, f64, ScanPath),
) -> Option<XyFit> {
    // Clamp negative noise; a stack array would be nicer but n_top is a runtime value.
    let n: Vec<f64> = top_areas
        .iter()
        .zip(&model.pmts.live)
        .map(|(&a, &live)| if live { a.max(0.0) } else { 0.0 })
        .collect();
    let n_tot: f64 = n.iter().sum();
    if !(n_tot > 0.0 && n_tot.is_finite()) {
        return None;
    }
    let r_max = model.params.tpc.radius_mm;
    let (cx0, cy0) = centroid(model, &n);
    let (cx, cy) = clamp_to_radius(cx0, cy0, r_max);
    // The global centroid is pulled toward the array centre (by the flat LRF
    // term and the one-sided array near the wall) and can start the fit next
    // to a spurious maximum; the brightest PMT's neighbourhood is not. Start
    // from the likelier of the two.
    let (lx0, ly0) = local_centroid(model, &n);
    let (lx, ly) = clamp_to_radius(lx0, ly0, r_max);
    let (mut x, mut y) = (cx, cy);
    let mut lit = Lit::new(model, n);
    let mut cur = evaluate(resp, &mut lit, x, y, path);
    let local = evaluate(resp, &mut lit, lx, ly, path);
    if local.l > cur.l {
        (x, y, cur) = (lx, ly, local);
    }
    let ascent = maximise(
        (x, y, cur),
        n_tot,
        r_max,
        max_iterations,
        tolerance_mm,
        |x, y| evaluate(resp, &mut lit, x, y, path),
    );
    let (x, y, cur) = (ascent.x, ascent.y, ascent.at);
    let (iterations, converged) = (ascent.iterations, ascent.converged);
    let f = excess_variance_factor(model);
    let (ixx, ixy, iyy) = inverse_2x2(cur.jxx * n_tot, cur.jxy * n_tot, cur.jyy * n_tot)
        .unwrap_or((f64::INFINITY, 0.0, f64::INFINITY));
    // Deviance with mu_k = N p_k over the live PMTs: sum_k (n_k - mu_k) = 0
    // and sum_k n_k ln(n_k / mu_k) = sum_k n_k ln n_k - N ln N - l, so it
    // comes from the likelihood at the fitted point without another pass.
    let mut n_ln_n = 0.0;
    let mut n_live = 0usize;
    for (&nk, &live) in lit.n.iter().zip(&model.pmts.live) {
        n_live += usize::from(live);
        if nk > 0.0 {
            n_ln_n += nk * nk.ln();
        }
    }
    let dev = n_ln_n - n_tot * n_tot.ln() - cur.l;
    let ndf = (n_live as f64 - 3.0).max(1.0);
    Some(XyFit {
        x_mm: x,
        y_mm: y,
        sigma_x_mm: (f * ixx).sqrt(),
        sigma_y_mm: (f * iyy).sqrt(),
        cov_xy_mm2: f * ixy,
        n_top_phd: n_tot,
        gof: 2.0 * dev / f / ndf,
        centroid_x_mm: cx,
        centroid_y_mm: cy,
        iterations,
        converged,
    })
}

/// Where [`maximise`] stopped.
struct Ascent {
    x: f64,
    y: f64,
    /// The likelihood, gradient and Fisher matrix there.
    at: Eval,
    iterations: u32,
    /// True only when an accepted step was shorter than the tolerance: a
    /// line search that finds no point at least as likely within 30 halvings,
    /// a singular Fisher matrix or running out of iterations is not
    /// convergence.
    converged: bool,
}

/// Fisher scoring from `start` (its evaluation): each step `J^-1 grad l`
/// (J per unit N, times `n_tot`) is halved until the likelihood does not
/// decrease, the trial points projected into r <= `r_max`; an accepted
/// trial's evaluation is the next step's.
fn maximise(
    start: (f64, f64, Eval),
    n_tot: f64,
    r_max: f64,
    max_iterations: u32,
    tolerance_mm: f64,
    mut eval: impl FnMut(f64, f64) -> Eval,
) -> Ascent {
    let (mut x, mut y, mut cur) = start;
    let mut iterations = 0;
    let mut converged = false;
    while iterations < max_iterations {
        iterations += 1;
        let Some((ixx, ixy, iyy)) = inverse_2x2(cur.jxx * n_tot, cur.jxy * n_tot, cur.jyy * n_tot)
        else {
            break;
        };
        let mut dx = ixx * cur.gx + ixy * cur.gy;
        let mut dy = ixy * cur.gx + iyy * cur.gy;
        let mut accepted = false;
        for _ in 0..30 {
            let (nx, ny) = clamp_to_radius(x + dx, y + dy, r_max);
            let trial = eval(nx, ny);
            if trial.l >= cur.l {
                let step = (nx - x).hypot(ny - y);
                x = nx;
                y = ny;
                cur = trial;
                accepted = true;
                converged = step < tolerance_mm;
                break;
            }
            dx *= 0.5;
            dy *= 0.5;
        }
        if !accepted || converged {
            break;
        }
    }
    Ascent {
        x,
        y,
        at: cur,
        iterations,
        converged,
    }
}

/// Cramer-Rao bound (sigma_x, sigma_y) [mm] for an S2 at (x, y) with `n_top_phd`
/// detected on the top array and excess-variance factor `f`
/// (e.g. [`excess_variance_factor`]): `sqrt(diag(F J^-1))`.
pub fn cramer_rao_xy(
    model: &DetectorModel,
    x_mm: f64,
    y_mm: f64,
    n_top_phd: f64,
    f: f64,
) -> (f64, f64) {
    let ones = vec![0.0; model.pmts.n_top];
    let e = match (&model.response, &model.params.calibration.lrf) {
        (Some(table), Some(r)) => {
            let resp = Learned {
                table,
                efficiency: &r.relative_efficiency,
            };
            evaluate(
                &resp,
                &mut Lit::new(model, ones),
                x_mm,
                y_mm,
                ScanPath::detect(),
            )
        }
        _ => evaluate(
            &Nominal(model),
            &mut Lit::new(model, ones),
            x_mm,
            y_mm,
            ScanPath::detect(),
        ),
    };
    match inverse_2x2(e.jxx * n_top_phd, e.jxy * n_top_phd, e.jyy * n_top_phd) {
        Some((ixx, _, iyy)) => ((f * ixx).sqrt(), (f * iyy).sqrt()),
        None => (f64::INFINITY, f64::INFINITY),
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal, Poisson};

    use super::*;

    #[test]
    fn ln_is_within_an_ulp_of_libm() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(41);
        let mut values = vec![
            1.0,
            2.0,
            0.5,
            std::f64::consts::E,
            std::f64::consts::SQRT_2,
            std::f64::consts::FRAC_1_SQRT_2,
            1.0 + f64::EPSILON,
            1.0 - f64::EPSILON / 2.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            1e-300,
            1e300,
        ];
        values.extend((0..200_000).map(|_| 10f64.powf(rng.random_range(-30.0..30.0))));
        values.extend((0..100_000).map(|_| rng.random_range(0.5..2.0)));
        for x in values {
            let (got, want) = (ln(x), x.ln());
            // Adjacent doubles of one sign are adjacent integers.
            let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(
                ulps <= 1 && got.is_sign_negative() == want.is_sign_negative() || got == want,
                "ln({x:e}) = {got:e}, libm {want:e}"
            );
        }
        // Outside the positive normals: libm's answer.
        for x in [0.0, -0.0, -1.0, 1e-310, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(ln(x).to_bits(), x.ln().to_bits(), "{x:e}");
        }
        assert!(ln(f64::NAN).is_nan());
    }

    /// Top areas [phd] for N phd at (x, y), each phd's area smeared like the PMTs.
    fn draw(model: &DetectorModel, rng: &mut ChaCha8Rng, x: f64, y: f64, n: f64) -> Vec<f64> {
        let mut p = vec![0.0; model.pmts.n_top];
        model.top_pattern(x, y, &mut p);
        let res = Normal::new(1.0, model.params.pmts.spe_resolution).unwrap();
        let q = model.params.pmts.double_phe_prob;
        p.iter()
            .map(|&pk| {
                let k = Poisson::new(n * pk).unwrap().sample(rng) as u64;
                let mut a = 0.0;
                for _ in 0..k {
                    let phe = if rng.random::<f64>() < q { 2 } else { 1 };
                    for _ in 0..phe {
                        a += f64::max(res.sample(rng), 0.02);
                    }
                }
                a / (1.0 + q)
            })
            .collect()
    }

    #[test]
    fn dead_channels_are_left_out_not_read_as_zeros() {
        let nominal = DetectorModel::default_lz_like();
        let mut params = nominal.params.clone();
        // The PMT under the source and one neighbour give no signal.
        params.calibration.dead_channels = vec![40, 41];
        let told = DetectorModel::new("dead", params).unwrap();
        let (x, y) = (nominal.pmts.x[40] + 20.0, nominal.pmts.y[40] - 15.0);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut bias_told, mut bias_nominal) = (0.0, 0.0);
        let events = 100;
        for _ in 0..events {
            let mut areas = draw(&nominal, &mut rng, x, y, 3.0e3);
            areas[40] = 0.0;
            areas[41] = 0.0;
            let a = fit_xy(&told, &areas, 50, 1e-3).unwrap();
            let b = fit_xy(&nominal, &areas, 50, 1e-3).unwrap();
            bias_told += (a.x_mm - x).hypot(a.y_mm - y) / f64::from(events);
            bias_nominal += (b.x_mm - x).hypot(b.y_mm - y) / f64::from(events);
        }
        assert!(
            bias_told < 8.0,
            "mean distance with the dead list {bias_told:.1} mm"
        );
        assert!(
            bias_nominal > 2.0 * bias_told,
            "zeros read as no light pull the fit away: {bias_nominal:.1} mm"
        );
    }

    #[test]
    fn one_pass_fisher_and_deviance_are_their_definitions() {
        let models = [DetectorModel::default_lz_like(), with_response()];
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for m in &models {
            for &(x, y) in &[(0.0, 0.0), (310.0, -205.0), (-690.0, 120.0)] {
                let areas = draw(m, &mut rng, x, y, 5.0e3);
                let fit = fit_xy(m, &areas, 50, 1e-3).unwrap();
                let (fx, fy) = (fit.x_mm, fit.y_mm);
                // The definitions, term by term, at the fitted point.
                let mut p = vec![0.0; m.pmts.n_top];
                let mut px = vec![0.0; m.pmts.n_top];
                let mut py = vec![0.0; m.pmts.n_top];
                let h = 1e-3;
                let pattern = |x: f64, y: f64, out: &mut Vec<f64>| match (
                    &m.response,
                    &m.params.calibration.lrf,
                ) {
                    (Some(table), Some(r)) => {
                        let resp = Learned {
                            table,
                            efficiency: &r.relative_efficiency,
                        };
                        for (k, o) in out.iter_mut().enumerate() {
                            *o = resp.at_offset(k, x - m.pmts.x[k], y - m.pmts.y[k]).0;
                        }
                        let s: f64 = out.iter().sum();
                        out.iter_mut().for_each(|o| *o /= s);
                    }
                    _ => m.top_pattern(x, y, out),
                };
                pattern(fx, fy, &mut p);
                let (mut a, mut b) = (vec![0.0; p.len()], vec![0.0; p.len()]);
                pattern(fx + h, fy, &mut a);
                pattern(fx - h, fy, &mut b);
                for k in 0..p.len() {
                    px[k] = (a[k] - b[k]) / (2.0 * h);
                }
                pattern(fx, fy + h, &mut a);
                pattern(fx, fy - h, &mut b);
                for k in 0..p.len() {
                    py[k] = (a[k] - b[k]) / (2.0 * h);
                }
                let n_tot: f64 = areas.iter().map(|&a| a.max(0.0)).sum();
                let (mut jxx, mut jxy, mut jyy, mut dev) = (0.0, 0.0, 0.0, 0.0);
                for k in 0..p.len() {
                    jxx += px[k] * px[k] / p[k];
                    jxy += px[k] * py[k] / p[k];
                    jyy += py[k] * py[k] / p[k];
                    let (nk, mu) = (areas[k].max(0.0), n_tot * p[k]);
                    dev += if nk > 0.0 { nk * (nk / mu).ln() } else { 0.0 } - (nk - mu);
                }
                let f = excess_variance_factor(m);
                let det = jxx * jyy - jxy * jxy;
                let sx = (f * jyy / det / n_tot).sqrt();
                let cov = -f * jxy / det / n_tot;
                let gof = 2.0 * dev / f / (p.len() as f64 - 3.0);
                let close = |got: f64, want: f64, tol: f64| {
                    (got - want).abs() <= tol * want.abs().max(1e-9)
                };
                assert!(
                    close(fit.sigma_x_mm, sx, 1e-5),
                    "sigma_x {} vs {sx}",
                    fit.sigma_x_mm
                );
                assert!(
                    close(fit.cov_xy_mm2, cov, 1e-3)
                        || (fit.cov_xy_mm2 - cov).abs() < 1e-6 * sx * sx,
                    "cov {} vs {cov}",
                    fit.cov_xy_mm2
                );
                assert!(close(fit.gof, gof, 1e-6), "gof {} vs {gof}", fit.gof);
            }
        }
    }

    #[test]
    fn lrf_gradient_matches_the_model() {
        let m = DetectorModel::default_lz_like();
        for &(x, y, k) in &[(0.0, 0.0, 0usize), (100.0, -30.0, 5), (-500.0, 300.0, 200)] {
            let (e, ex, ey) = Nominal(&m).at_offset(k, x - m.pmts.x[k], y - m.pmts.y[k]);
            let rho = |x: f64, y: f64| (x - m.pmts.x[k]).hypot(y - m.pmts.y[k]);
            assert!((e - m.lrf(rho(x, y))).abs() < 1e-12);
            let h = 1e-4;
            let nx = (m.lrf(rho(x + h, y)) - m.lrf(rho(x - h, y))) / (2.0 * h);
            let ny = (m.lrf(rho(x, y + h)) - m.lrf(rho(x, y - h))) / (2.0 * h);
            assert!(
                (ex - nx).abs() < 1e-7 && (ey - ny).abs() < 1e-7,
                "{ex} {nx} {ey} {ny}"
            );
        }
    }

    #[test]
    fn fit_recovers_positions_with_sane_pulls() {
        let m = DetectorModel::default_lz_like();
        let f = excess_variance_factor(&m);
        assert!((f - 1.208).abs() < 0.002, "F = {f}");
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        // (x, y, N) table: centre, between PMTs, mid radius, near the wall.
        let cases = [(0.0, 0.0), (43.5, 25.0), (310.0, -205.0), (-600.0, 250.0)];
        for &(x, y) in &cases {
            let n = 1.0e4;
            let (crb_x, crb_y) = cramer_rao_xy(&m, x, y, n, f);
            let (mut px, mut py) = (Vec::new(), Vec::new());
            for _ in 0..200 {
                let areas = draw(&m, &mut rng, x, y, n);
                let fit = fit_xy(&m, &areas, 50, 1e-3).unwrap();
                assert!(fit.converged && fit.x_mm.hypot(fit.y_mm) <= m.params.tpc.radius_mm + 1e-9);
                assert!(
                    (fit.x_mm - x).abs() < 5.0 * fit.sigma_x_mm,
                    "{fit:?} at {x} {y}"
                );
                assert!(
                    (fit.sigma_x_mm / crb_x - 1.0).abs() < 0.2,
                    "{fit:?} vs CRB {crb_x}"
                );
                assert!(fit.gof > 0.5 && fit.gof < 2.0, "{fit:?}");
                px.push((fit.x_mm - x) / fit.sigma_x_mm);
                py.push((fit.y_mm - y) / fit.sigma_y_mm);
            }
            for pulls in [&px, &py] {
                let mean = pulls.iter().sum::<f64>() / pulls.len() as f64;
                let sd = (pulls.iter().map(|p| (p - mean).powi(2)).sum::<f64>()
                    / (pulls.len() - 1) as f64)
                    .sqrt();
                eprintln!("({x}, {y}) N=1e4: pull mean {mean:.3} sd {sd:.3}, CRB ({crb_x:.2}, {crb_y:.2}) mm");
                assert!(
                    mean.abs() < 0.25 && (sd - 1.0).abs() < 0.15,
                    "({x}, {y}): pull mean {mean} sd {sd}"
                );
            }
            assert!(
                crb_x > 0.3 && crb_x < 5.0 && crb_y > 0.3 && crb_y < 5.0,
                "CRB {crb_x} {crb_y}"
            );
        }
    }

    /// The v1 model with a light response of another shape and efficiencies.
    fn with_response() -> DetectorModel {
        let mut p = DetectorModel::default_lz_like().params;
        let efficiency = (0..p.pmts.n_top)
            .map(|k| 1.0 + 0.15 * ((k as f64) * 0.7).sin())
            .collect();
        p.calibration.lrf = Some(crate::lrf::LightResponse {
            shape: crate::lrf::LrfShape::Analytic {
                r0_mm: 66.0,
                tail_amplitude: 0.03,
                tail_length_mm: 200.0,
                flat: 0.004,
            },
            relative_efficiency: efficiency,
        });
        DetectorModel::new("learned", p).unwrap()
    }

    #[test]
    fn every_path_fits_the_same_bits() {
        let mut dead = DetectorModel::default_lz_like().params;
        // 2 of the live PMTs gone: a count of them that is not a multiple of
        // the lanes either way.
        dead.calibration.dead_channels = vec![3, 100];
        let models = [
            DetectorModel::default_lz_like(),
            with_response(),
            DetectorModel::new("dead", dead).unwrap(),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for m in &models {
            for _ in 0..40 {
                let r = m.params.tpc.radius_mm * rng.random::<f64>().sqrt();
                let phi = rng.random_range(0.0..std::f64::consts::TAU);
                let n = 10f64.powf(rng.random_range(2.0..4.5));
                let areas = draw(m, &mut rng, r * phi.cos(), r * phi.sin(), n);
                let want = fit_xy_on(m, &areas, 50, 1e-3, ScanPath::Portable);
                for path in ScanPath::available() {
                    let got = fit_xy_on(m, &areas, 50, 1e-3, path);
                    let bits = |f: &Option<XyFit>| {
                        f.map(|f| {
                            [
                                f.x_mm,
                                f.y_mm,
                                f.sigma_x_mm,
                                f.sigma_y_mm,
                                f.cov_xy_mm2,
                                f.gof,
                            ]
                            .map(f64::to_bits)
                        })
                    };
                    assert_eq!(bits(&got), bits(&want), "{path:?}, {}", m.tag);
                    assert_eq!(got.map(|f| f.iterations), want.map(|f| f.iterations));
                }
            }
        }
    }

    /// A response to [`LANES`] PMTs at once, as [`Response::at_offsets`].
    type GroupFn<'a> = dyn Fn(&[usize; LANES], [f64; LANES], [f64; LANES]) -> Lanes<LANES> + 'a;

    #[test]
    fn a_group_of_responses_is_each_response() {
        let models = [DetectorModel::default_lz_like(), with_response()];
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for m in &models {
            let check = |resp: &GroupFn<'_>,
                         one: &dyn Fn(usize, f64, f64) -> (f64, f64, f64),
                         rng: &mut ChaCha8Rng| {
                for _ in 0..500 {
                    let k: [usize; LANES] =
                        std::array::from_fn(|_| rng.random_range(0..m.pmts.n_top));
                    // Offsets out to past the table's reach, and 0.
                    let dx: [f64; LANES] = std::array::from_fn(|j| {
                        if j == 0 {
                            0.0
                        } else {
                            rng.random_range(-2000.0..2000.0)
                        }
                    });
                    let dy: [f64; LANES] =
                        std::array::from_fn(|_| rng.random_range(-2000.0..2000.0));
                    let (e, ex, ey) = resp(&k, dx, dy);
                    for j in 0..LANES {
                        let (e1, ex1, ey1) = one(k[j], dx[j], dy[j]);
                        assert_eq!(
                            [e[j], ex[j], ey[j]].map(f64::to_bits),
                            [e1, ex1, ey1].map(f64::to_bits),
                            "{}: lane {j}",
                            m.tag
                        );
                    }
                }
            };
            match (&m.response, &m.params.calibration.lrf) {
                (Some(table), Some(r)) => {
                    let resp = Learned {
                        table,
                        efficiency: &r.relative_efficiency,
                    };
                    check(
                        &|k, dx, dy| resp.at_offsets(k, dx, dy),
                        &|k, dx, dy| resp.at_offset(k, dx, dy),
                        &mut rng,
                    );
                }
                _ => {
                    let resp = Nominal(m);
                    check(
                        &|k, dx, dy| resp.at_offsets(k, dx, dy),
                        &|k, dx, dy| resp.at_offset(k, dx, dy),
                        &mut rng,
                    );
                }
            }
        }
    }

    #[test]
    fn the_fit_uses_the_conditions_light_response() {
        let truth = with_response();
        let nominal = DetectorModel::default_lz_like();
        let f = excess_variance_factor(&truth);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (x, y) = (310.0, -205.0);
        let n = 1.0e4;
        let (crb_x, _) = cramer_rao_xy(&truth, x, y, n, f);
        let (mut pulls, mut bx, mut by) = (Vec::new(), 0.0, 0.0);
        for _ in 0..100 {
            let areas = draw(&truth, &mut rng, x, y, n);
            let a = fit_xy(&truth, &areas, 50, 1e-3).unwrap();
            assert!(a.converged && a.gof < 2.0, "{a:?}");
            assert!((a.sigma_x_mm / crb_x - 1.0).abs() < 0.2, "{a:?} vs {crb_x}");
            pulls.push((a.x_mm - x) / a.sigma_x_mm);
            let b = fit_xy(&nominal, &areas, 50, 1e-3).unwrap();
            bx += (b.x_mm - x) / 100.0;
            by += (b.y_mm - y) / 100.0;
        }
        let mean = pulls.iter().sum::<f64>() / 100.0;
        let sd = (pulls.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / 99.0).sqrt();
        assert!(
            mean.abs() < 0.3 && (sd - 1.0).abs() < 0.2,
            "pull {mean} {sd}"
        );
        // The nominal form's mean offset, against its standard error CRB / 10.
        let bias_nominal = bx.hypot(by);
        assert!(
            bias_nominal > 0.5 * crb_x,
            "the nominal form misplaces this light: {bias_nominal} mm vs CRB {crb_x}"
        );
    }

    /// l = -(x^2 + y^2) with unit Fisher matrix; `sign` -1 reports the
    /// gradient reversed, so every step leads downhill.
    fn paraboloid(x: f64, y: f64, sign: f64) -> Eval {
        Eval {
            l: -(x * x + y * y),
            gx: sign * -2.0 * x,
            gy: sign * -2.0 * y,
            jxx: 1.0,
            jxy: 0.0,
            jyy: 1.0,
        }
    }

    #[test]
    fn a_failed_line_search_is_not_convergence() {
        let start = (30.0, -40.0, paraboloid(30.0, -40.0, -1.0));
        let a = maximise(start, 1.0, 728.0, 50, 1e-3, |x, y| paraboloid(x, y, -1.0));
        assert!(!a.converged, "the line search failed");
        assert_eq!((a.x, a.y, a.iterations), (30.0, -40.0, 1));
        // The same surface with its true gradient converges to the top.
        let start = (30.0, -40.0, paraboloid(30.0, -40.0, 1.0));
        let a = maximise(start, 2.0, 728.0, 50, 1e-3, |x, y| paraboloid(x, y, 1.0));
        assert!(a.converged && a.x.hypot(a.y) < 1e-3, "{} {}", a.x, a.y);
    }

    #[test]
    fn fit_stays_inside_the_tpc_and_handles_no_light() {
        let m = DetectorModel::default_lz_like();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Light only on the outermost PMT, and a source beyond the wall.
        let mut areas = vec![0.0; m.pmts.n_top];
        areas[m.pmts.n_top - 1] = 500.0;
        let fit = fit_xy(&m, &areas, 50, 1e-3).unwrap();
        assert!(fit.x_mm.hypot(fit.y_mm) <= 728.0 + 1e-9, "{fit:?}");
        for _ in 0..20 {
            let areas = draw(&m, &mut rng, 760.0, 0.0, 300.0);
            let fit = fit_xy(&m, &areas, 50, 1e-3).unwrap();
            assert!(fit.x_mm.hypot(fit.y_mm) <= 728.0 + 1e-9, "{fit:?}");
        }
        assert!(fit_xy(&m, &vec![0.0; m.pmts.n_top], 50, 1e-3).is_none());
        assert!(fit_xy(&m, &vec![-1.0; m.pmts.n_top], 50, 1e-3).is_none());
        // The bound scales as 1/sqrt(N).
        let f = excess_variance_factor(&m);
        let (a, _) = cramer_rao_xy(&m, 100.0, 0.0, 100.0, f);
        let (b, _) = cramer_rao_xy(&m, 100.0, 0.0, 10_000.0, f);
        assert!((a / b - 10.0).abs() < 1e-9);
    }
}
