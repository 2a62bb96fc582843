//! The digitiser: photoelectron deposits -> pulse-only-digitised pods.
//!
//! ```text
//! signal[s] = sum over deposits of area * SPE_SHAPE[s - s_dep]      (ADC counts)
//! pod       = samples where signal > pod_threshold, plus pre/post samples, merged
//! adc[s]    = clip(round(baseline_ch - signal[s] + noise), 0, 2^bits - 1)
//! ```

use rand::Rng;
use rand_distr::{Distribution, Normal};
use tpcflow_reco::{DetectorModel, PodRecord};

use super::signals::Deposits;

/// Single-photoelectron pulse shape: fraction of the area in consecutive samples.
pub const SPE_SHAPE: [f32; 4] = [0.10, 0.45, 0.30, 0.15];

/// Baseline of a channel [ADC counts]: the mean plus a fixed per-channel offset.
pub fn channel_baseline(model: &DetectorModel, spread: f64, channel: usize) -> f64 {
    let h = (channel as u64).wrapping_mul(2_654_435_761) % 1000;
    model.params.daq.baseline_adc + spread * (h as f64 / 500.0 - 1.0)
}

/// Reusable buffers of the digitiser.
#[derive(Debug, Default)]
pub struct Digitiser {
    signal: Vec<f32>,
    regions: Vec<(usize, usize)>,
}

impl Digitiser {
    /// Digitise `dep` into pods (sorted by channel, then start) and their samples.
    #[allow(clippy::too_many_arguments)]
    pub fn digitise<R: Rng>(
        &mut self,
        rng: &mut R,
        model: &DetectorModel,
        baseline_spread: f64,
        window_samples: u32,
        dep: &mut Deposits,
        pods: &mut Vec<PodRecord>,
        samples: &mut Vec<i16>,
    ) {
        let daq = &model.params.daq;
        let (pre, post) = (daq.pre_samples as usize, daq.post_samples as usize);
        let thr = daq.pod_threshold_adc as f32;
        let adc_max = ((1u32 << daq.adc_bits) - 1) as f64;
        let noise = Normal::new(0.0, daq.noise_adc).expect("valid noise");
        let window = window_samples as usize;
        let margin = pre + post + SPE_SHAPE.len();
        for (ch, list) in dep.per_channel.iter_mut().enumerate() {
            if list.is_empty() {
                continue;
            }
            list.sort_unstable_by_key(|d| d.0);
            let baseline = channel_baseline(model, baseline_spread, ch);
            let mut i = 0;
            while i < list.len() {
                // A cluster: deposits closer than the pod margins.
                let mut j = i + 1;
                while j < list.len() && (list[j].0 - list[j - 1].0) as usize <= margin {
                    j += 1;
                }
                let lo = (list[i].0 as usize).saturating_sub(pre);
                let hi = (list[j - 1].0 as usize + SPE_SHAPE.len() + post).min(window);
                self.signal.clear();
                self.signal.resize(hi - lo, 0.0);
                for &(s, a) in &list[i..j] {
                    let at = s as usize - lo;
                    for (k, w) in SPE_SHAPE.iter().enumerate() {
                        if let Some(v) = self.signal.get_mut(at + k) {
                            *v += a * w;
                        }
                    }
                }
                // Regions above threshold, with pre/post samples, merged.
                self.regions.clear();
                let mut s = 0;
                while s < self.signal.len() {
                    if self.signal[s] > thr {
                        let mut e = s;
                        while e < self.signal.len() && self.signal[e] > thr {
                            e += 1;
                        }
                        let (a, b) = (s.saturating_sub(pre), (e + post).min(self.signal.len()));
                        match self.regions.last_mut() {
                            Some(last) if a <= last.1 => last.1 = b,
                            _ => self.regions.push((a, b)),
                        }
                        s = e;
                    } else {
                        s += 1;
                    }
                }
                for &(a, b) in &self.regions {
                    pods.push(PodRecord {
                        channel: ch as u16,
                        start_sample: (lo + a) as i32,
                        length: (b - a) as u32,
                        offset: samples.len() as u64,
                    });
                    for &v in &self.signal[a..b] {
                        let x = (baseline - f64::from(v) + noise.sample(rng))
                            .round()
                            .clamp(0.0, adc_max);
                        samples.push(x as i16);
                    }
                }
                i = j;
            }
        }
    }
}
