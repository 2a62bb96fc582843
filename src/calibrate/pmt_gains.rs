//! Per-channel single-phe gain from lone single-phe pulses (one channel, area
//! below the single-phe cut: dark counts), and dead and noisy channels.
//!
//! The RQ areas are in phd of the gains the reconstruction was told (g_k^told,
//! ADC counts x samples per photoelectron). One photoelectron is
//! 1 / (1 + p2) phd there, so u = a (1 + p2) is the area in told
//! photoelectrons, and a channel whose true gain is rho_k g_k^told shows
//! u = rho_k q, q the single-photon response (1 phe ~ N(1, s), with
//! probability p2 a second one).
//!
//! ```text
//! f(q) = (1 - p2) N(q; 1, w1) + p2 N(q; 2, w2),   w1^2 = s^2 + e^2,  w2^2 = 2 s^2 + e^2
//! rho_k maximises  L_k(rho, e) = sum_i ln f(u_i / rho) - n ln rho - n ln F(rho),
//!     F(rho) = integral of f over [lo / rho, hi / rho]   (u_i in [lo, hi] = [0.6, 3.5])
//!     (golden-section search over rho in [0.5, 2])
//! e: the area noise of a single-phe pulse [phe] (baseline noise over the hit),
//!     common to every channel: first rho_k^0 with e = 0, then (c, e) maximise
//!     sum_k L_k(c rho_k^0, e) over the live channels (coordinate ascent), then
//!     each rho_k is fitted again with e. Without e the noise-broadened peak
//!     reads as a larger scale (+1.5 % on the realistic truth, e ~ 0.12 phe)
//! sigma(rho_k) = (-d^2 lnL / d rho^2)^(-1/2)          (numerical curvature)
//! g_k = rho_k g_k^told
//! dead:  count_k < 0.1 median(count)          (no signal at all)
//! noisy: count_k > 1.5 median(count) + 10 sqrt(median(count)),
//!        or the sd of u / rho_k in [0.6, 1.6] above 1.5 x its median over channels
//! noisy rate: R_dark max(0, n_k / n_ref - 1)   [Hz], R_dark: the conditions'
//!        dark-count rate, n_k the channel's lone single phe, n_ref the mean
//!        over the channels neither dead nor noisy of their lone single phe
//!        plus their single phe paired with a noisy channel's in one pulse.
//!        Those channels see dark counts only, so the share of single phe
//!        found as lone pulses (hit threshold, ~93 %) cancels; without the
//!        pairs it would not: a noisy channel's single phe take the others'
//!        dark counts into two-channel pulses (~1.5 % of them at 10 kHz),
//!        and the rate would read that much high
//! ```
//! The lower edge stays above the hit threshold's loss of small pulses, the
//! upper one below the single-phe classification cut; dead channels keep the
//! told gain.
//!
//! The hit threshold itself is measured from the same pulses, pooled over the
//! channels neither dead nor noisy in each channel's own scale (q = u / rho_k,
//! 0.01 phe bins over [0.1, 3.5]): a turn-on eps(q) = Phi((q - t) / w_t) on
//! the fitted response, (t, w_t) by binned maximum likelihood (coordinate
//! ascent). A photoelectron alone on its channel in a pulse is found with
//! probability eps; the share of single-phe area the threshold loses is
//!
//! ```text
//! area_loss = 1 - int q f0(q) Phi((q - t) / sqrt(w_t^2 + e^2)) dq / int q f0(q) dq
//! ```
//! in true area q (f0: the response without the area noise e, which the
//! turn-on of the measured area is smeared by).
//! Large pulses lose none of it (many photoelectrons share a hit); a single
//! electron's ~50 photons mostly land alone on their channels, so its area
//! reads low by about this share (0.7 % on v1: t ~ 0.35 phe), which
//! [`super::se_gain`] puts back.

use super::CalibrateError;

/// One channel's measured single-phe response.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChannelGain {
    /// Channel.
    pub channel: u16,
    /// Gain [ADC counts x samples per photoelectron].
    pub gain_adc: f64,
    /// Uncertainty of the gain.
    pub sigma_gain_adc: f64,
    /// Lone single-phe pulses seen.
    pub count: usize,
}

/// All channels.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PmtGains {
    /// Per channel, in channel order.
    pub channels: Vec<ChannelGain>,
    /// Channels without signal.
    pub dead: Vec<u16>,
    /// Channels with excess rate or width.
    pub noisy: Vec<u16>,
    /// Median lone single-phe pulses per channel.
    pub median_count: f64,
    /// Area noise of a single-phe pulse, common to all channels [phe].
    pub area_noise_phe: f64,
    /// The hit threshold's turn-on, common to the channels.
    pub threshold: Threshold,
}

/// Where the hit threshold cuts the single-phe spectrum.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Threshold {
    /// Area at which half of the single phe are found [phe].
    pub at_phe: f64,
    /// Width of the turn-on [phe].
    pub width_phe: f64,
    /// Share of single-phe area lost below it.
    pub area_loss: f64,
}

/// Pooled spectrum's bins [phe]: from, to, width.
const POOL_LO: f64 = 0.1;
const POOL_BIN: f64 = 0.01;

/// Fit the threshold's turn-on to the pooled spectrum `q` (each channel's
/// areas over its fitted scale) and the area it loses.
fn fit_threshold(q: &[f64], spe_resolution: f64, area_noise: f64, p2: f64) -> Threshold {
    let w = Widths::new(spe_resolution, area_noise);
    let n_bins = ((FIT_HI - POOL_LO) / POOL_BIN).round() as usize;
    let mut counts = vec![0.0f64; n_bins];
    for &v in q {
        let b = ((v - POOL_LO) / POOL_BIN).floor();
        if b >= 0.0 && (b as usize) < n_bins {
            counts[b as usize] += 1.0;
        }
    }
    let centre = |b: usize| POOL_LO + (b as f64 + 0.5) * POOL_BIN;
    let response = |x: f64| (1.0 - p2) * normal_pdf(x, 1.0, w.one) + p2 * normal_pdf(x, 2.0, w.two);
    let f: Vec<f64> = (0..n_bins).map(|b| response(centre(b))).collect();
    let eps = |x: f64, t: f64, wt: f64| normal_cdf((x - t) / wt);
    let log_l = |t: f64, wt: f64| -> f64 {
        let p: Vec<f64> = (0..n_bins).map(|b| f[b] * eps(centre(b), t, wt)).collect();
        let total: f64 = p.iter().sum();
        counts
            .iter()
            .zip(&p)
            .filter(|(c, _)| **c > 0.0)
            .map(|(c, p)| c * (p / total).max(1e-300).ln())
            .sum()
    };
    let (mut t, mut wt) = (0.3, 0.1);
    for _ in 0..4 {
        t = golden_max(0.0, 0.6, 40, |t| log_l(t, wt));
        wt = golden_max(0.005, 0.3, 40, |wt| log_l(t, wt));
    }
    // int q f0 and int q f0 eps_true over [-2, 6] (f0 is negligible outside).
    let w0 = Widths::new(spe_resolution, 0.0);
    let wt_true = wt.hypot(area_noise);
    let (mut all, mut kept) = (0.0, 0.0);
    let steps = 8000;
    for i in 0..steps {
        let x = -2.0 + (f64::from(i) + 0.5) * 8.0 / f64::from(steps);
        let qf = x * ((1.0 - p2) * normal_pdf(x, 1.0, w0.one) + p2 * normal_pdf(x, 2.0, w0.two));
        all += qf;
        kept += qf * eps(x, t, wt_true);
    }
    Threshold {
        at_phe: t,
        width_phe: wt,
        area_loss: 1.0 - kept / all,
    }
}

const LO: f64 = 0.6;
const HI: f64 = 1.6;
const FIT_LO: f64 = 0.6;
const FIT_HI: f64 = 3.5;

fn normal_cdf(x: f64) -> f64 {
    0.5 * super::liquid_level::erfc(-x / std::f64::consts::SQRT_2)
}

/// Widths of the one- and two-phe peaks [phe].
#[derive(Debug, Clone, Copy)]
struct Widths {
    one: f64,
    two: f64,
}

impl Widths {
    /// SPE resolution `s` and area noise `e`.
    fn new(s: f64, e: f64) -> Self {
        Self {
            one: (s * s + e * e).sqrt(),
            two: (2.0 * s * s + e * e).sqrt(),
        }
    }
}

fn log_likelihood(u: &[f64], rho: f64, w: Widths, p2: f64) -> f64 {
    let (s, s2) = (w.one, w.two);
    let (lo, hi) = (FIT_LO / rho, FIT_HI / rho);
    let norm = (1.0 - p2) * (normal_cdf((hi - 1.0) / s) - normal_cdf((lo - 1.0) / s))
        + p2 * (normal_cdf((hi - 2.0) / s2) - normal_cdf((lo - 2.0) / s2));
    let n = u.len() as f64;
    let sum: f64 = u
        .iter()
        .map(|&v| {
            let q = v / rho;
            ((1.0 - p2) * normal_pdf(q, 1.0, s) + p2 * normal_pdf(q, 2.0, s2))
                .max(1e-300)
                .ln()
        })
        .sum();
    sum - n * rho.ln() - n * norm.max(1e-300).ln()
}

/// The maximum of `f` over [a, b] (golden-section search, `steps` steps).
fn golden_max(mut a: f64, mut b: f64, steps: usize, f: impl Fn(f64) -> f64) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..steps {
        if fc > fd {
            b = d;
            (d, fd) = (c, fc);
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            (c, fc) = (d, fd);
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    0.5 * (a + b)
}

/// Maximum-likelihood scale of the single-photon response and its uncertainty.
fn fit_scale(u: &[f64], w: Widths, p2: f64) -> (f64, f64) {
    let rho = golden_max(0.5, 2.0, 60, |r| log_likelihood(u, r, w, p2));
    let h = 1e-3 * rho;
    let curv = (log_likelihood(u, rho + h, w, p2) - 2.0 * log_likelihood(u, rho, w, p2)
        + log_likelihood(u, rho - h, w, p2))
        / (h * h);
    let sigma = if curv < 0.0 {
        (-1.0 / curv).sqrt()
    } else {
        f64::NAN
    };
    (rho, sigma)
}

/// The area noise `e` [phe] common to the channels `(u_k, rho_k^0)`: with a
/// common scale c, (c, e) maximise sum_k L_k(c rho_k^0, e) (coordinate ascent).
fn fit_area_noise(channels: &[(&[f64], f64)], s: f64, p2: f64) -> f64 {
    let total = |c: f64, e: f64| -> f64 {
        channels
            .iter()
            .map(|(u, rho)| log_likelihood(u, c * rho, Widths::new(s, e), p2))
            .sum()
    };
    let (mut c, mut e) = (1.0, 0.0);
    for _ in 0..3 {
        e = golden_max(0.0, s, 30, |e| total(c, e));
        c = golden_max(0.9, 1.1, 30, |c| total(c, e));
    }
    e
}

fn normal_pdf(x: f64, mu: f64, s: f64) -> f64 {
    (-(x - mu) * (x - mu) / (2.0 * s * s)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt())
}

/// E[q | lo <= q <= hi] for the single-photon response (midpoint rule, 4000 steps).
pub fn window_mean(spe_resolution: f64, double_phe_prob: f64, lo: f64, hi: f64) -> f64 {
    let s = spe_resolution;
    let p2 = double_phe_prob;
    let steps = 4000;
    let dx = (hi - lo) / f64::from(steps);
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..steps {
        let x = lo + (f64::from(i) + 0.5) * dx;
        let f = (1.0 - p2) * normal_pdf(x, 1.0, s) + p2 * normal_pdf(x, 2.0, s * 2f64.sqrt());
        num += x * f;
        den += f;
    }
    num / den
}

/// Excess single-phe rate of each noisy channel, in the order of
/// `gains.noisy` [Hz]: its lone single-phe pulses beyond those of the
/// channels neither dead nor noisy (with their single phe that `pairs`, the
/// channels of two-channel single-phe pulses, put with a noisy channel's),
/// in units of their dark-count rate `dark_rate_hz`.
pub fn noisy_rates_hz(gains: &PmtGains, pairs: &[(u16, u16)], dark_rate_hz: f64) -> Vec<f64> {
    let is_noisy = |c: u16| gains.noisy.contains(&c);
    let quiet = |c: u16| !is_noisy(c) && !gains.dead.contains(&c);
    let lone: usize = gains
        .channels
        .iter()
        .filter(|g| quiet(g.channel))
        .map(|g| g.count)
        .sum();
    let with_noisy = pairs
        .iter()
        .filter(|&&(a, b)| (quiet(a) && is_noisy(b)) || (is_noisy(a) && quiet(b)))
        .count();
    let n_quiet = gains.channels.iter().filter(|g| quiet(g.channel)).count();
    let reference = (lone + with_noisy) as f64 / n_quiet.max(1) as f64;
    gains
        .noisy
        .iter()
        .map(|&c| {
            let count = gains
                .channels
                .get(usize::from(c))
                .map_or(0.0, |g| g.count as f64);
            if reference > 0.0 {
                dark_rate_hz * (count / reference - 1.0).max(0.0)
            } else {
                0.0
            }
        })
        .collect()
}

/// Measure every channel.
///
/// # Errors
/// [`CalibrateError::TooFew`] when the median channel has fewer than 20 pulses.
pub fn fit_pmt_gains(
    channel: &[u16],
    area_phd: &[f64],
    told_gain_adc: &[f64],
    spe_resolution: f64,
    double_phe_prob: f64,
) -> Result<PmtGains, CalibrateError> {
    let n = told_gain_adc.len();
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); n];
    for (&c, &a) in channel.iter().zip(area_phd) {
        if let Some(v) = per.get_mut(usize::from(c)) {
            v.push(a * (1.0 + double_phe_prob));
        }
    }
    let mut counts: Vec<usize> = per.iter().map(Vec::len).collect();
    counts.sort_unstable();
    let median_count = counts[n / 2] as f64;
    if median_count < 20.0 {
        return Err(CalibrateError::TooFew {
            product: "PMT gains",
            what: "lone single-phe pulses on the median channel",
            got: median_count as usize,
            need: 20,
        });
    }
    let m = window_mean(spe_resolution, double_phe_prob, LO, HI);
    let in_range: Vec<Vec<f64>> = per
        .iter()
        .map(|u| {
            u.iter()
                .copied()
                .filter(|v| (FIT_LO..=FIT_HI).contains(v))
                .collect()
        })
        .collect();
    let is_dead = |u: &[f64]| (u.len() as f64) < 0.1 * median_count;
    let first: Vec<(&[f64], f64)> = per
        .iter()
        .zip(&in_range)
        .filter(|(u, r)| !is_dead(u) && !r.is_empty())
        .map(|(_, r)| {
            let w = Widths::new(spe_resolution, 0.0);
            (r.as_slice(), fit_scale(r, w, double_phe_prob).0)
        })
        .collect();
    let area_noise_phe = fit_area_noise(&first, spe_resolution, double_phe_prob);
    let widths_fit = Widths::new(spe_resolution, area_noise_phe);
    let mut channels = Vec::with_capacity(n);
    let mut widths = Vec::with_capacity(n);
    let mut dead = Vec::new();
    for (k, u) in per.iter().enumerate() {
        let ch = k as u16;
        if is_dead(u) {
            dead.push(ch);
            channels.push(ChannelGain {
                channel: ch,
                gain_adc: told_gain_adc[k],
                sigma_gain_adc: f64::NAN,
                count: u.len(),
            });
            widths.push(f64::NAN);
            continue;
        }
        let (rho, sigma_rho) = fit_scale(&in_range[k], widths_fit, double_phe_prob);
        let (mut s, mut s2, mut nw) = (0.0, 0.0, 0usize);
        for v in u.iter().map(|x| x / rho).filter(|v| (LO..=HI).contains(v)) {
            s += v;
            s2 += v * v;
            nw += 1;
        }
        let mean = s / nw.max(1) as f64;
        let sd = (s2 / nw.max(1) as f64 - mean * mean).max(0.0).sqrt();
        let gain = rho * told_gain_adc[k];
        channels.push(ChannelGain {
            channel: ch,
            gain_adc: gain,
            sigma_gain_adc: sigma_rho * told_gain_adc[k],
            count: u.len(),
        });
        widths.push(sd / m);
    }
    let mut live_widths: Vec<f64> = widths.iter().copied().filter(|w| w.is_finite()).collect();
    live_widths.sort_by(f64::total_cmp);
    let median_width = live_widths
        .get(live_widths.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);
    let rate_limit = 1.5 * median_count + 10.0 * median_count.sqrt();
    let noisy = channels
        .iter()
        .zip(&widths)
        .filter(|(c, w)| {
            !dead.contains(&c.channel) && (c.count as f64 > rate_limit || **w > 1.5 * median_width)
        })
        .map(|(c, _)| c.channel)
        .collect::<Vec<u16>>();
    let pooled: Vec<f64> = channels
        .iter()
        .zip(&per)
        .filter(|(c, _)| !dead.contains(&c.channel) && !noisy.contains(&c.channel))
        .flat_map(|(c, u)| {
            let rho = c.gain_adc / told_gain_adc[usize::from(c.channel)];
            u.iter().map(move |v| v / rho)
        })
        .collect();
    let threshold = fit_threshold(&pooled, spe_resolution, area_noise_phe, double_phe_prob);
    Ok(PmtGains {
        channels,
        dead,
        noisy,
        median_count,
        area_noise_phe,
        threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noisy_channels_rate_is_its_excess_over_the_quiet_channels_in_dark_rates() {
        let channel = |channel: u16, count: usize| ChannelGain {
            channel,
            gain_adc: 10.0,
            sigma_gain_adc: 0.1,
            count,
        };
        let gains = PmtGains {
            channels: vec![
                channel(0, 98),
                channel(1, 5100),
                channel(2, 90),
                channel(3, 100),
                channel(4, 0),
            ],
            dead: vec![4],
            noisy: vec![1, 2],
            median_count: 98.0,
            area_noise_phe: 0.0,
            threshold: Threshold {
                at_phe: 0.3,
                width_phe: 0.1,
                area_loss: 0.0,
            },
        };
        // Channel 0 lost 2 single phe to pulses with noisy channel 1, channel
        // 3 none; a pair of quiet channels and one with the dead channel do
        // not count: the quiet channels saw 100 each. 50 times their dark
        // counts beyond them; below them: none.
        let pairs = [(0, 1), (1, 0), (0, 3), (3, 4)];
        assert_eq!(noisy_rates_hz(&gains, &pairs, 20.0), vec![1000.0, 0.0]);
    }

    #[test]
    fn the_common_area_noise_is_fitted_and_the_gains_are_unbiased_by_it() {
        use rand::{Rng, SeedableRng};
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (s, p2, e) = (0.338, 0.214, 0.12);
        let one = Normal::new(1.0, s).unwrap();
        let noise = Normal::new(0.0, e).unwrap();
        let n_ch = 40;
        let truth: Vec<f64> = (0..n_ch)
            .map(|k: u32| 1.0 + 0.05 * (f64::from(k) * 1.3).sin())
            .collect();
        let (mut channel, mut area) = (Vec::new(), Vec::new());
        for (k, rho) in truth.iter().enumerate() {
            for _ in 0..3000 {
                let mut q = one.sample(&mut rng);
                if rng.random::<f64>() < p2 {
                    q += one.sample(&mut rng);
                }
                channel.push(k as u16);
                area.push(rho * (q + noise.sample(&mut rng)) / (1.0 + p2));
            }
        }
        let told = vec![10.0; n_ch as usize];
        let g = fit_pmt_gains(&channel, &area, &told, s, p2).unwrap();
        assert!((g.area_noise_phe - e).abs() < 0.02, "{}", g.area_noise_phe);
        let bias = g
            .channels
            .iter()
            .zip(&truth)
            .map(|(c, t)| c.gain_adc / (10.0 * t) - 1.0)
            .sum::<f64>()
            / f64::from(n_ch);
        assert!(bias.abs() < 0.003, "mean gain bias {bias}");
        // Without the noise term the same data read high.
        let no_noise = (0..n_ch)
            .map(|k| {
                let u: Vec<f64> = area
                    .iter()
                    .zip(&channel)
                    .filter(|(_, &c)| u32::from(c) == k)
                    .map(|(a, _)| a * (1.0 + p2))
                    .filter(|v| (FIT_LO..=FIT_HI).contains(v))
                    .collect();
                fit_scale(&u, Widths::new(s, 0.0), p2).0 / truth[k as usize] - 1.0
            })
            .sum::<f64>()
            / f64::from(n_ch);
        assert!(
            no_noise > 0.005,
            "mean bias without the noise term {no_noise}"
        );
    }

    #[test]
    fn the_hit_thresholds_turn_on_and_the_area_it_loses_are_measured() {
        use rand::{Rng, SeedableRng};
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (s, p2, e) = (0.338, 0.214, 0.12);
        let (t, wt) = (0.35, 0.09);
        let one = Normal::new(1.0, s).unwrap();
        let noise = Normal::new(0.0, e).unwrap();
        let n_ch = 30u16;
        let (mut channel, mut area) = (Vec::new(), Vec::new());
        let (mut all, mut found) = (0.0, 0.0);
        for k in 0..n_ch {
            let rho = 1.0 + 0.04 * (f64::from(k) * 0.9).sin();
            for _ in 0..6000 {
                let mut q = one.sample(&mut rng);
                if rng.random::<f64>() < p2 {
                    q += one.sample(&mut rng);
                }
                let measured = q + noise.sample(&mut rng);
                all += q;
                // Found by a threshold on the measured area with a smeared edge.
                if rng.random::<f64>() < normal_cdf((measured - t) / wt) {
                    found += q;
                    channel.push(k);
                    area.push(rho * measured / (1.0 + p2));
                }
            }
        }
        let told = vec![10.0; usize::from(n_ch)];
        let g = fit_pmt_gains(&channel, &area, &told, s, p2).unwrap();
        let th = g.threshold;
        let truth_loss = 1.0 - found / all;
        assert!((th.at_phe - t).abs() < 0.02, "{th:?}");
        assert!((th.width_phe - wt).abs() < 0.03, "{th:?}");
        assert!(
            (th.area_loss - truth_loss).abs() < 0.002 && th.area_loss > 0.003,
            "{th:?} vs {truth_loss}"
        );
    }

    #[test]
    fn the_window_mean_of_a_narrow_single_phe_peak_is_near_one() {
        let m = window_mean(0.01, 0.0, 0.6, 1.6);
        assert!((m - 1.0).abs() < 1e-6, "{m}");
        // Double phe and a wide peak pull the window mean up, within the window.
        let m = window_mean(0.338, 0.214, 0.6, 1.6);
        assert!(m > 1.0 && m < 1.2, "{m}");
    }

    #[test]
    fn the_likelihood_scale_recovers_a_gain_off_by_five_percent() {
        use rand::{Rng, SeedableRng};
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let one = Normal::new(1.0, 0.338).unwrap();
        let u: Vec<f64> = (0..20_000)
            .map(|_| {
                let mut q = one.sample(&mut rng);
                if rng.random::<f64>() < 0.214 {
                    q += one.sample(&mut rng);
                }
                1.05 * q
            })
            .filter(|v| (FIT_LO..=FIT_HI).contains(v))
            .collect();
        let (rho, sigma) = fit_scale(&u, Widths::new(0.338, 0.0), 0.214);
        assert!((rho - 1.05).abs() < 3.0 * sigma, "rho {rho} +- {sigma}");
        assert!(sigma > 0.0005 && sigma < 0.005, "sigma {sigma}");
    }
}
