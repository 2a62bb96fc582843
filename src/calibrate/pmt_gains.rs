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
//! f(q) = (1 - p2) N(q; 1, s) + p2 N(q; 2, s sqrt 2)
//! rho_k maximises  sum_i ln f(u_i / rho) - n ln rho - n ln F(rho),
//!     F(rho) = integral of f over [lo / rho, hi / rho]   (u_i in [lo, hi] = [0.6, 3.5])
//!     (golden-section search over rho in [0.5, 2])
//! sigma(rho_k) = (-d^2 lnL / d rho^2)^(-1/2)          (numerical curvature)
//! g_k = rho_k g_k^told
//! dead:  count_k < 0.1 median(count)          (no signal at all)
//! noisy: count_k > 1.5 median(count) + 10 sqrt(median(count)),
//!        or the sd of u / rho_k in [0.6, 1.6] above 1.5 x its median over channels
//! ```
//! The lower edge stays above the hit threshold's loss of small pulses, the
//! upper one below the single-phe classification cut; dead channels keep the
//! told gain.

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
}

const LO: f64 = 0.6;
const HI: f64 = 1.6;
const FIT_LO: f64 = 0.6;
const FIT_HI: f64 = 3.5;

fn normal_cdf(x: f64) -> f64 {
    0.5 * super::liquid_level::erfc(-x / std::f64::consts::SQRT_2)
}

fn log_likelihood(u: &[f64], rho: f64, s: f64, p2: f64) -> f64 {
    let s2 = s * std::f64::consts::SQRT_2;
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

/// Maximum-likelihood scale of the single-photon response and its uncertainty.
fn fit_scale(u: &[f64], s: f64, p2: f64) -> (f64, f64) {
    let (mut a, mut b) = (0.5f64, 2.0f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (log_likelihood(u, c, s, p2), log_likelihood(u, d, s, p2));
    for _ in 0..60 {
        if fc > fd {
            b = d;
            (d, fd) = (c, fc);
            c = b - g * (b - a);
            fc = log_likelihood(u, c, s, p2);
        } else {
            a = c;
            (c, fc) = (d, fd);
            d = a + g * (b - a);
            fd = log_likelihood(u, d, s, p2);
        }
    }
    let rho = 0.5 * (a + b);
    let h = 1e-3 * rho;
    let curv = (log_likelihood(u, rho + h, s, p2) - 2.0 * log_likelihood(u, rho, s, p2)
        + log_likelihood(u, rho - h, s, p2))
        / (h * h);
    let sigma = if curv < 0.0 {
        (-1.0 / curv).sqrt()
    } else {
        f64::NAN
    };
    (rho, sigma)
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
    let mut channels = Vec::with_capacity(n);
    let mut widths = Vec::with_capacity(n);
    let mut dead = Vec::new();
    for (k, u) in per.iter().enumerate() {
        let ch = k as u16;
        if (u.len() as f64) < 0.1 * median_count {
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
        let in_range: Vec<f64> = u
            .iter()
            .copied()
            .filter(|v| (FIT_LO..=FIT_HI).contains(v))
            .collect();
        let (rho, sigma_rho) = fit_scale(&in_range, spe_resolution, double_phe_prob);
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
        .collect();
    Ok(PmtGains {
        channels,
        dead,
        noisy,
        median_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (rho, sigma) = fit_scale(&u, 0.338, 0.214);
        assert!((rho - 1.05).abs() < 3.0 * sigma, "rho {rho} +- {sigma}");
        assert!(sigma > 0.0005 && sigma < 0.005, "sigma {sigma}");
    }
}
