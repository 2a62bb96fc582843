//! S2 top fraction: the share of an S2's light that reaches the top array,
//! in the measured gains' scale, from the Kr83m main S2s.
//!
//! Neither the per-channel gains nor the learned light response carries the
//! scale of the top array's areas against the bottom's: each gain is
//! measured with its own error (a few % rms from a short run, so the mean
//! over an array is off by a few 0.1 %), and the response's efficiencies
//! are normalised to mean 1 over the live top PMTs. Salt made with a tag
//! (`sim::told_detector`) sends each S2 photon to the top array with
//! probability `s2_top_fraction`; with the nominal value its S2 area
//! fraction top is off that of real events reconstructed with the same tag
//! by ~0.001-0.002, which a two-sample test of 1000 events sees. Measured
//! here in the tag's scale, the two agree.
//!
//! ```text
//! T_i, B_i   main-S2 areas on the top / bottom channels, measured gains' scale
//! l_t, l_b   shares of the light lost on dead channels at the event's xy, as the
//!            tag's detector loses it (`told_detector::dead_losses`)
//! T_i = p (1 - l_t) S_i,  B_i = (1 - p) (1 - l_b) S_i
//!   => R = p / (1 - p) = sum T_i / sum B'_i,   B'_i = B_i (1 - l_t) / (1 - l_b)
//! p = R / (1 + R);  sigma_R = sqrt(sum (T_i - R B'_i)^2) / sum B'_i  (ratio estimator),
//! sigma_p = sigma_R / (1 + R)^2
//! ```
//! Summed areas weight bright S2s more, as photon statistics do.

use super::CalibrateError;

/// One Kr83m main S2 for the fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct S2Split {
    /// Area on the top array [phd].
    pub top_phd: f64,
    /// Area on the bottom array [phd].
    pub bottom_phd: f64,
    /// Share of the top array's light lost on dead channels at the event's xy.
    pub top_loss: f64,
    /// Share of the bottom array's light lost on dead channels.
    pub bottom_loss: f64,
}

/// The measured S2 top fraction.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopFraction {
    /// Share of an S2's light that reaches the top array (before dead channels).
    pub s2_top_fraction: f64,
    /// Its uncertainty.
    pub sigma: f64,
    /// Summed top area over summed top and bottom area, as recorded (dead channels missing).
    pub recorded_aft: f64,
    /// S2s used.
    pub n_events: usize,
}

/// Fit the S2 top fraction.
///
/// # Errors
/// [`CalibrateError::TooFew`] with fewer than 50 S2s with light on both
/// arrays; [`CalibrateError::Fit`] when the losses leave no light to compare.
pub fn fit_s2_top_fraction(s2s: &[S2Split]) -> Result<TopFraction, CalibrateError> {
    let used: Vec<(f64, f64, f64)> = s2s
        .iter()
        .filter(|s| {
            s.top_phd > 0.0
                && s.bottom_phd > 0.0
                && (0.0..1.0).contains(&s.top_loss)
                && (0.0..1.0).contains(&s.bottom_loss)
        })
        .map(|s| {
            (
                s.top_phd,
                s.bottom_phd * (1.0 - s.top_loss) / (1.0 - s.bottom_loss),
                s.bottom_phd,
            )
        })
        .collect();
    if used.len() < 50 {
        return Err(CalibrateError::TooFew {
            product: "S2 top fraction",
            what: "Kr83m main S2s with light on both arrays",
            got: used.len(),
            need: 50,
        });
    }
    let top: f64 = used.iter().map(|u| u.0).sum();
    let bottom_eq: f64 = used.iter().map(|u| u.1).sum();
    let bottom: f64 = used.iter().map(|u| u.2).sum();
    let r = top / bottom_eq;
    if !r.is_finite() || r <= 0.0 {
        return Err(CalibrateError::Fit {
            product: "S2 top fraction",
            why: format!("top / bottom area ratio {r}"),
        });
    }
    let sigma_r = used
        .iter()
        .map(|u| (u.0 - r * u.1).powi(2))
        .sum::<f64>()
        .sqrt()
        / bottom_eq;
    Ok(TopFraction {
        s2_top_fraction: r / (1.0 + r),
        sigma: sigma_r / (1.0 + r).powi(2),
        recorded_aft: top / (top + bottom),
        n_events: used.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Binomial, Distribution};

    /// S2s of `n` events split binomially with top fraction `p`, losing
    /// `top_loss(i)` of the top light and 1 % of the bottom's.
    fn draw(seed: u64, n: usize, p: f64, top_loss: impl Fn(usize) -> f64) -> Vec<S2Split> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let photons: u64 = rng.random_range(2000..20000);
                let to_top = Binomial::new(photons, p).unwrap().sample(&mut rng);
                let (lt, lb) = (top_loss(i), 0.01);
                let top = Binomial::new(to_top, 1.0 - lt).unwrap().sample(&mut rng);
                let bottom = Binomial::new(photons - to_top, 1.0 - lb)
                    .unwrap()
                    .sample(&mut rng);
                S2Split {
                    top_phd: top as f64,
                    bottom_phd: bottom as f64,
                    top_loss: lt,
                    bottom_loss: lb,
                }
            })
            .collect()
    }

    #[test]
    fn recovers_the_fraction_before_dead_channels_with_a_pull_of_width_one() {
        // A dead top PMT takes 20 % of the top light of one event in ten.
        let loss = |i: usize| if i.is_multiple_of(10) { 0.2 } else { 0.003 };
        let pulls: Vec<f64> = (0..40)
            .map(|seed| {
                let f = fit_s2_top_fraction(&draw(seed, 1000, 0.641, loss)).unwrap();
                // The dead channels pull the recorded fraction ~0.003 down.
                assert!(f.recorded_aft < 0.641 - 0.002, "{f:?}");
                (f.s2_top_fraction - 0.641) / f.sigma
            })
            .collect();
        let mean = pulls.iter().sum::<f64>() / pulls.len() as f64;
        let sd = (pulls.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (pulls.len() - 1) as f64)
            .sqrt();
        assert!(mean.abs() < 0.5, "pull mean {mean}");
        assert!((0.7..1.35).contains(&sd), "pull width {sd}");
    }

    #[test]
    fn too_few_s2s_name_the_product() {
        let e = fit_s2_top_fraction(&draw(1, 49, 0.64, |_| 0.0)).unwrap_err();
        assert!(e.to_string().contains("S2 top fraction"), "{e}");
    }
}
