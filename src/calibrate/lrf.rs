//! The top array's light response learned from Kr83m single scatters, as
//! LUX's Mercury and ANTS2's adaptive LRFs do: start from the nominal
//! response of the conditions and alternate
//!
//! ```text
//! (a) the xy fit of every event with the current response (tpcflow_reco::fit_xy)
//! (b) a fit of the shape f(rho) and the per-PMT efficiencies e_k to all
//!     (position, per-PMT area) pairs, positions held ([`super::lrf_fit`])
//! ```
//!
//! until the positions and the pattern stop moving:
//!
//! ```text
//! position shift   rms over events of |(x, y)_it - (x, y)_it-1|                 < 0.05 mm
//! pattern change   pattern_difference(response_it, response_it-1)               < 0.2 %
//! ```
//!
//! or 8 iterations. Channels dead in the conditions or found dead by the
//! calibration take no part. Each iteration's figures (events, mean
//! goodness of fit, shift, change) go to the report.
//!
//! The pattern difference, also the accuracy figure against the truth:
//!
//! ```text
//! d = rms over points (x, y) of a 20 mm grid with r < 0.9 R and over live top PMTs k with
//!     p_k,ref(x, y) >= 0.1 %   of   p_k(x, y) / p_k,ref(x, y) - 1
//! ```
//!
//! (PMTs that see less than 0.1 % of the top light carry little position
//! information and are left out of the figure, not of the fit.)

use rayon::prelude::*;
use tpcflow_reco::lrf::{LightResponse, LrfShape};
use tpcflow_reco::{fit_xy, DetectorModel};

use super::lrf_fit::{fit_response, normalise, Pairs, SplineSettings};
use super::CalibrateError;

/// Iterations at most.
pub const MAX_ITERATIONS: usize = 8;
/// Convergence: rms position shift between iterations [mm].
pub const SHIFT_TOLERANCE_MM: f64 = 0.05;
/// Convergence: pattern change between iterations.
pub const PATTERN_TOLERANCE: f64 = 0.002;
/// Fewest Kr83m events to learn from.
pub const MIN_EVENTS: usize = 1000;

/// One iteration's figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Iteration {
    /// 1, 2, ...
    pub iteration: usize,
    /// Events whose xy fit converged (used in the response fit).
    pub events: usize,
    /// Mean goodness of fit of the position fits (with the previous response).
    pub mean_gof: f64,
    /// rms shift of the positions from the previous iteration [mm] (NaN in the first).
    pub position_shift_rms_mm: f64,
    /// Pattern difference of the new response from the previous one.
    pub pattern_change: f64,
}

/// The learned response and how it got there.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LearnedLrf {
    /// Shape and efficiencies, in the areas' gain scale.
    pub response: LightResponse,
    /// Figures of each iteration.
    pub iterations: Vec<Iteration>,
    /// True when the tolerances were met before [`MAX_ITERATIONS`].
    pub converged: bool,
}

/// The response a model's conditions describe: its learned one, or the
/// nominal closed form with every efficiency 1.
pub fn response_of(model: &DetectorModel) -> LightResponse {
    if let Some(r) = &model.params.calibration.lrf {
        return r.clone();
    }
    let l = &model.params.light.lrf;
    LightResponse {
        shape: LrfShape::Analytic {
            r0_mm: l.r0_mm,
            tail_amplitude: 0.0,
            tail_length_mm: 200.0,
            flat: l.flat,
        },
        relative_efficiency: vec![1.0; model.pmts.n_top],
    }
}

/// `model` with `response` as its conditions' light response.
///
/// # Errors
/// [`CalibrateError::Fit`] when the response is not valid for the model.
pub fn with_response(
    model: &DetectorModel,
    response: &LightResponse,
) -> Result<DetectorModel, CalibrateError> {
    let mut params = model.params.clone();
    params.calibration.lrf = Some(response.clone());
    DetectorModel::new(model.tag.clone(), params).map_err(|e| CalibrateError::Fit {
        product: "light response",
        why: e.to_string(),
    })
}

/// Pattern difference of `model` from `reference` (see the module docs).
#[allow(clippy::needless_range_loop)]
pub fn pattern_difference(
    model: &DetectorModel,
    reference: &DetectorModel,
    radius_frac: f64,
) -> f64 {
    let n_top = model.pmts.n_top;
    let r_max = radius_frac * model.params.tpc.radius_mm;
    let step = 20.0;
    let n = (r_max / step).ceil() as i64;
    let (mut p, mut q) = (vec![0.0; n_top], vec![0.0; n_top]);
    let (mut sum, mut count) = (0.0, 0usize);
    for i in -n..=n {
        for j in -n..=n {
            let (x, y) = (i as f64 * step, j as f64 * step);
            if x.hypot(y) > r_max {
                continue;
            }
            live_pattern(model, x, y, &mut p);
            live_pattern(reference, x, y, &mut q);
            for k in 0..n_top {
                if reference.pmts.live[k] && model.pmts.live[k] && q[k] >= 1e-3 {
                    sum += (p[k] / q[k] - 1.0).powi(2);
                    count += 1;
                }
            }
        }
    }
    (sum / count.max(1) as f64).sqrt()
}

/// Top pattern renormalised over the live channels (dead ones 0).
fn live_pattern(model: &DetectorModel, x: f64, y: f64, out: &mut [f64]) {
    model.top_pattern(x, y, out);
    let mut s = 0.0;
    for (k, o) in out.iter_mut().enumerate() {
        if !model.pmts.live[k] {
            *o = 0.0;
        }
        s += *o;
    }
    out.iter_mut().for_each(|o| *o /= s);
}

/// Learn the response from the main-S2 top areas of Kr83m events (`n_top`
/// per event, event after event [phd]), starting from `model`'s response;
/// `model` carries the dead channels to leave out.
///
/// # Errors
/// [`CalibrateError::TooFew`] with fewer than [`MIN_EVENTS`] fitted events,
/// [`CalibrateError::Fit`] when the shape fit is singular.
pub fn learn_lrf(model: &DetectorModel, areas: &[f64]) -> Result<LearnedLrf, CalibrateError> {
    let n_top = model.pmts.n_top;
    let n_events = areas.len() / n_top;
    let set = SplineSettings::default();
    let live: Vec<bool> = model.pmts.live[..n_top].to_vec();
    let mut current = model.clone();
    let mut response = response_of(model);
    normalise(&mut response.relative_efficiency, &live);
    let mut previous: Option<Vec<Option<(f64, f64)>>> = None;
    let mut iterations = Vec::new();
    let mut converged = false;
    for it in 1..=MAX_ITERATIONS {
        let fits: Vec<Option<(f64, f64, f64)>> = (0..n_events)
            .into_par_iter()
            .map(|i| {
                let a = &areas[i * n_top..(i + 1) * n_top];
                fit_xy(&current, a, 50, 1e-3)
                    .filter(|f| f.converged)
                    .map(|f| (f.x_mm, f.y_mm, f.gof))
            })
            .collect();
        let mut positions = Vec::new();
        let mut used = Vec::new();
        let mut gof = 0.0;
        for (i, f) in fits.iter().enumerate() {
            if let Some((x, y, g)) = f {
                positions.push((*x, *y));
                used.extend_from_slice(&areas[i * n_top..(i + 1) * n_top]);
                gof += g;
            }
        }
        if positions.len() < MIN_EVENTS {
            return Err(CalibrateError::TooFew {
                product: "light response",
                what: "Kr83m single scatters with a converged xy fit",
                got: positions.len(),
                need: MIN_EVENTS,
            });
        }
        let shift = previous.as_ref().map_or(f64::NAN, |prev| {
            let (mut s, mut n) = (0.0, 0usize);
            for (a, b) in prev.iter().zip(&fits) {
                if let (Some((x0, y0)), Some((x1, y1, _))) = (a, b) {
                    s += (x1 - x0).powi(2) + (y1 - y0).powi(2);
                    n += 1;
                }
            }
            (s / n.max(1) as f64).sqrt()
        });
        let pairs = Pairs {
            pmt_x: &model.pmts.x[..n_top],
            pmt_y: &model.pmts.y[..n_top],
            live: &live,
            positions: &positions,
            areas: &used,
        };
        let next = fit_response(&pairs, &response, &set).ok_or_else(|| CalibrateError::Fit {
            product: "light response",
            why: format!(
                "singular normal equations of the shape fit ({} events)",
                positions.len()
            ),
        })?;
        let next_model = with_response(model, &next)?;
        let change = pattern_difference(&next_model, &current, 0.9);
        iterations.push(Iteration {
            iteration: it,
            events: positions.len(),
            mean_gof: gof / positions.len() as f64,
            position_shift_rms_mm: shift,
            pattern_change: change,
        });
        tracing::info!(
            iteration = it,
            events = positions.len(),
            shift_mm = shift,
            pattern_change = change,
            "light response iteration"
        );
        previous = Some(fits.iter().map(|f| f.map(|(x, y, _)| (x, y))).collect());
        response = next;
        current = next_model;
        if shift < SHIFT_TOLERANCE_MM && change < PATTERN_TOLERANCE {
            converged = true;
            break;
        }
    }
    Ok(LearnedLrf {
        response,
        iterations,
        converged,
    })
}

/// Express efficiencies learned from areas made with `gains_used` in the
/// scale of `gains_new` (per channel, the same units): areas are charge /
/// gain, so a PMT whose gain is measured higher than the reconstruction
/// assumed had its areas read too large by new / used, which the learned
/// efficiency absorbed; in the new scale it is `e_k used_k / new_k`.
pub fn rescale_efficiencies(
    response: &LightResponse,
    gains_used: &[f64],
    gains_new: &[f64],
    live: &[bool],
) -> LightResponse {
    let mut eff: Vec<f64> = response
        .relative_efficiency
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let r = gains_used[k] / gains_new[k];
            if r.is_finite() && r > 0.0 {
                e * r
            } else {
                *e
            }
        })
        .collect();
    normalise(&mut eff, live);
    LightResponse {
        shape: response.shape.clone(),
        relative_efficiency: eff,
    }
}

/// The report's section: each iteration's figures and the result.
pub fn markdown(learned: &Result<LearnedLrf, String>) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("\n## Light response of the top array\n\n");
    let l = match learned {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(
                s,
                "Not learned: {e}. The conditions keep the nominal response."
            );
            return s;
        }
    };
    let _ = writeln!(
        s,
        "Learned from the Kr83m main-S2 patterns, starting from the nominal response: xy fits with the current response, then a fit of the radial shape (cubic B-spline in ln(1 + rho^2 / 60^2)) and one efficiency per top PMT, repeated until the positions move by less than {SHIFT_TOLERANCE_MM} mm rms and the pattern by less than {:.1} %. {}.\n",
        100.0 * PATTERN_TOLERANCE,
        if l.converged {
            format!("Converged after {} iterations", l.iterations.len())
        } else {
            format!("Not converged after {MAX_ITERATIONS} iterations: the conditions carry the last one")
        }
    );
    let _ = writeln!(
        s,
        "| iteration | events | mean GoF (previous response) | position shift rms [mm] | pattern change |\n|---|---|---|---|---|"
    );
    for it in &l.iterations {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {} | {:.3} % |",
            it.iteration,
            it.events,
            it.mean_gof,
            if it.position_shift_rms_mm.is_finite() {
                format!("{:.3}", it.position_shift_rms_mm)
            } else {
                "-".into()
            },
            100.0 * it.pattern_change
        );
    }
    let live: Vec<f64> = l
        .response
        .relative_efficiency
        .iter()
        .copied()
        .filter(|e| *e != 1.0)
        .collect();
    let rms =
        (live.iter().map(|e| (e - 1.0).powi(2)).sum::<f64>() / live.len().max(1) as f64).sqrt();
    let _ = writeln!(
        s,
        "\nPer-PMT relative efficiencies (in the measured gains' scale): {:.1} % rms, from {:.3} to {:.3}.",
        100.0 * rms,
        live.iter().copied().fold(f64::INFINITY, f64::min),
        live.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    );
    s
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal, Poisson};

    use super::*;

    /// The v1 model with a true response of another shape and 10 % efficiencies.
    pub(crate) fn truth_model(nominal: &DetectorModel) -> DetectorModel {
        let mut rng = ChaCha8Rng::seed_from_u64(20);
        let d = Normal::new(0.0f64, 0.1).unwrap();
        let mut eff: Vec<f64> = (0..nominal.pmts.n_top)
            .map(|_| d.sample(&mut rng).exp())
            .collect();
        normalise(&mut eff, &nominal.pmts.live[..nominal.pmts.n_top]);
        let r = LightResponse {
            shape: LrfShape::Analytic {
                r0_mm: 66.0,
                tail_amplitude: 0.03,
                tail_length_mm: 200.0,
                flat: 0.004,
            },
            relative_efficiency: eff,
        };
        with_response(nominal, &r).unwrap()
    }

    /// Top areas of `n` events uniform in the TPC, ~`n_top_phd` each, drawn
    /// from `truth` (Poisson phd, each smeared like the PMTs).
    pub(crate) fn draw(
        truth: &DetectorModel,
        n: usize,
        n_top_phd: f64,
        seed: u64,
    ) -> Vec<(f64, f64, Vec<f64>)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let r = truth.params.tpc.radius_mm;
        let res = Normal::new(1.0, truth.params.pmts.spe_resolution).unwrap();
        let q = truth.params.pmts.double_phe_prob;
        let mut p = vec![0.0; truth.pmts.n_top];
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let (x, y) = (rng.random_range(-r..r), rng.random_range(-r..r));
            if x.hypot(y) > r {
                continue;
            }
            truth.top_pattern(x, y, &mut p);
            let areas = p
                .iter()
                .map(|&pk| {
                    let k = Poisson::new(n_top_phd * pk).unwrap().sample(&mut rng) as u64;
                    let mut a = 0.0;
                    for _ in 0..k {
                        let phe = if rng.random::<f64>() < q { 2 } else { 1 };
                        for _ in 0..phe {
                            a += f64::max(res.sample(&mut rng), 0.02);
                        }
                    }
                    a / (1.0 + q)
                })
                .collect();
            out.push((x, y, areas));
        }
        out
    }

    fn efficiency_rms(a: &LightResponse, b: &LightResponse, live: &[bool]) -> f64 {
        let d: Vec<f64> = a
            .relative_efficiency
            .iter()
            .zip(&b.relative_efficiency)
            .zip(live)
            .filter(|(_, l)| **l)
            .map(|((x, y), _)| x / y - 1.0)
            .collect();
        (d.iter().map(|v| v * v).sum::<f64>() / d.len() as f64).sqrt()
    }

    #[test]
    fn learning_recovers_a_response_the_conditions_do_not_know() {
        let mut p = DetectorModel::default_lz_like().params;
        p.calibration.dead_channels = vec![17, 102];
        let nominal = DetectorModel::new("v1", p).unwrap();
        let truth = truth_model(&nominal);
        let events = draw(&truth, 3000, 1.5e4, 5);
        let areas: Vec<f64> = events.iter().flat_map(|e| e.2.iter().copied()).collect();
        let learned = learn_lrf(&nominal, &areas).unwrap();
        for it in &learned.iterations {
            eprintln!("{it:?}");
        }
        let model = with_response(&nominal, &learned.response).unwrap();
        let d_learned = pattern_difference(&model, &truth, 0.9);
        let d_nominal = pattern_difference(&nominal, &truth, 0.9);
        let live = &nominal.pmts.live[..253];
        let truth_r = truth.params.calibration.lrf.as_ref().unwrap();
        let e_learned = efficiency_rms(&learned.response, truth_r, live);
        eprintln!(
            "pattern difference: learned {d_learned:.4}, nominal {d_nominal:.4}; efficiencies {e_learned:.4} rms"
        );
        assert!(learned.converged, "{:?}", learned.iterations);
        assert!(d_learned < 0.03, "learned pattern {d_learned}");
        assert!(d_nominal > 3.0 * d_learned, "nominal pattern {d_nominal}");
        assert!(e_learned < 0.02, "efficiencies {e_learned}");
        // Dead channels take no part: their efficiency stays the placeholder.
        assert_eq!(learned.response.relative_efficiency[17], 1.0);
    }

    #[test]
    fn efficiencies_follow_the_gain_scale() {
        let r = LightResponse {
            shape: LrfShape::Analytic {
                r0_mm: 60.0,
                tail_amplitude: 0.0,
                tail_length_mm: 200.0,
                flat: 0.01,
            },
            relative_efficiency: vec![1.1, 0.9, 1.0],
        };
        // PMT 0 measured 10 % above the gain the areas were made with.
        let out = rescale_efficiencies(&r, &[40.0; 3], &[44.0, 40.0, 40.0], &[true; 3]);
        let e = &out.relative_efficiency;
        assert!(
            (e[0] / e[2] - 1.0).abs() < 1e-12 && (e[1] / e[2] - 0.9).abs() < 1e-12,
            "{e:?}"
        );
    }
}
