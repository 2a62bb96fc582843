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
//! m(lo, hi) = E[q | lo <= q <= hi]     (numerically, from s and p2 of the conditions)
//! repeat:    rho_k <- rho_k mean(u / rho_k in [lo, hi]) / m(lo, hi),   lo = 0.6, hi = 1.6
//! g_k = rho_k g_k^told,  sigma(g_k) = g_k sd(window) / (m sqrt(n_window))
//! dead:  count_k < 0.1 median(count)          (no signal at all)
//! noisy: count_k > 1.5 median(count) + 10 sqrt(median(count)),
//!        or window sd / m above 1.5 x its median over channels
//! ```
//! The window stays above the hit threshold's loss of small pulses and below
//! most double-phe areas; dead channels keep the told gain.

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
        let mut rho = 1.0;
        let (mut sd, mut nw) = (0.0, 0usize);
        for _ in 0..30 {
            let (mut s, mut s2, mut c) = (0.0, 0.0, 0usize);
            for v in u.iter().map(|x| x / rho).filter(|v| (LO..=HI).contains(v)) {
                s += v;
                s2 += v * v;
                c += 1;
            }
            if c == 0 {
                break;
            }
            let mean = s / c as f64;
            sd = (s2 / c as f64 - mean * mean).max(0.0).sqrt();
            nw = c;
            let next = rho * mean / m;
            let done = (next - rho).abs() < 1e-7;
            rho = next;
            if done {
                break;
            }
        }
        let gain = rho * told_gain_adc[k];
        channels.push(ChannelGain {
            channel: ch,
            gain_adc: gain,
            sigma_gain_adc: gain * sd / (m * (nw.max(1) as f64).sqrt()),
            count: u.len(),
        });
        widths.push(sd / m);
    }
    let mut live_widths: Vec<f64> = widths.iter().copied().filter(|w| w.is_finite()).collect();
    live_widths.sort_by(f64::total_cmp);
    let median_width = live_widths.get(live_widths.len() / 2).copied().unwrap_or(f64::NAN);
    let rate_limit = 1.5 * median_count + 10.0 * median_count.sqrt();
    let noisy = channels
        .iter()
        .zip(&widths)
        .filter(|(c, w)| {
            !dead.contains(&c.channel)
                && (c.count as f64 > rate_limit || **w > 1.5 * median_width)
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
}
