//! Synthetic events for tests, digitised the way the simulator does it:
//! photons -> photoelectrons (double phe with P = 0.214, area gain N(1, 0.338))
//! -> SPE shape [0.10, 0.45, 0.30, 0.15] from the photon's sample -> pods where
//! the noise-free signal exceeds 3 ADC plus 20 pre / 30 post samples ->
//! per-channel baseline offset, Gaussian noise 1.5 ADC, negative pulses, clipping.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Normal};

use crate::{DetectorModel, EventView, PodRecord};

const SPE_SHAPE: [f32; 4] = [0.10, 0.45, 0.30, 0.15];

/// An owned synthetic event.
#[derive(Debug, Clone, Default)]
pub(crate) struct SynthEvent {
    pub pods: Vec<PodRecord>,
    pub samples: Vec<i16>,
}

impl SynthEvent {
    pub fn view(&self, event_id: u64) -> EventView<'_> {
        EventView {
            event_id,
            trigger_time_ns: 0,
            pods: &self.pods,
            samples: &self.samples,
        }
    }
}

/// Builds one event from photons.
#[derive(Debug)]
pub(crate) struct Synth<'m> {
    pub model: &'m DetectorModel,
    pub rng: ChaCha8Rng,
    deposits: Vec<Vec<(u32, f32)>>,
    /// Detected photons added [phd].
    pub n_phd: u64,
    /// Sum of the photoelectron areas in phd units (area / phd_area_adc) [phd].
    pub true_area_phd: f64,
    /// S2 electrons: (arrival time [ns], phd made).
    pub electrons: Vec<(f64, usize)>,
}

impl<'m> Synth<'m> {
    pub fn new(model: &'m DetectorModel, seed: u64) -> Self {
        Self {
            model,
            rng: ChaCha8Rng::seed_from_u64(seed),
            deposits: vec![Vec::new(); model.n_channels()],
            n_phd: 0,
            true_area_phd: 0.0,
            electrons: Vec::new(),
        }
    }

    /// One detected photon on `ch` at `t_ns` from the window start.
    pub fn photon(&mut self, ch: usize, t_ns: f64) {
        let sample = (t_ns / self.model.params.daq.sample_ns) as u32;
        let gain = self.model.params.pmts.spe_area_adc[ch];
        let n_phe = if self.rng.random::<f64>() < self.model.params.pmts.double_phe_prob {
            2
        } else {
            1
        };
        let res = Normal::new(1.0, self.model.params.pmts.spe_resolution).unwrap();
        for _ in 0..n_phe {
            let a = res.sample(&mut self.rng).max(0.02);
            self.deposits[ch].push((sample, (a * gain) as f32));
            self.true_area_phd += f64::from((a * gain) as f32) / self.model.phd_area_adc(ch);
        }
        self.n_phd += 1;
    }

    /// An S1 of `n_phd` photons at interaction time `t0_ns` on the channels
    /// `channels` (ER time profile: 20 % singlet 3.1 ns, triplet 24 ns, transit 10 ns).
    pub fn s1(&mut self, n_phd: usize, t0_ns: f64, channels: &[usize]) {
        let singlet = Exp::new(1.0 / 3.1).unwrap();
        let triplet = Exp::new(1.0 / 24.0).unwrap();
        let transit = Normal::new(0.0, 10.0).unwrap();
        for _ in 0..n_phd {
            let decay = if self.rng.random::<f64>() < 0.2 {
                singlet.sample(&mut self.rng)
            } else {
                triplet.sample(&mut self.rng)
            };
            let t = t0_ns + decay + f64::abs(transit.sample(&mut self.rng));
            let ch = channels[self.rng.random_range(0..channels.len())];
            self.photon(ch, t);
        }
    }

    /// An S2 of `n_electrons` electrons arriving around `t_ns` (Gaussian
    /// sigma `sigma_ns`) at (x, y); each makes N(47, 25 %) phd uniform over
    /// 1 us, 64 % on top following the LRF, the rest on random bottom PMTs.
    pub fn s2(&mut self, n_electrons: usize, t_ns: f64, sigma_ns: f64, x: f64, y: f64) {
        let n_top = self.model.pmts.n_top;
        let mut cdf = vec![0.0; n_top];
        self.model.top_pattern(x, y, &mut cdf);
        for k in 1..n_top {
            cdf[k] += cdf[k - 1];
        }
        let arrive = Normal::new(t_ns, sigma_ns.max(1e-9)).unwrap();
        let se = Normal::<f64>::new(47.0, 0.25 * 47.0).unwrap();
        for _ in 0..n_electrons {
            let t = arrive.sample(&mut self.rng);
            let n = se.sample(&mut self.rng).round().max(0.0) as usize;
            self.electrons.push((t, n));
            for _ in 0..n {
                let te = t + self.rng.random::<f64>() * 1000.0;
                let ch = if self.rng.random::<f64>() < 0.64 {
                    let u = self.rng.random::<f64>() * cdf[n_top - 1];
                    cdf.partition_point(|&c| c < u).min(n_top - 1)
                } else {
                    self.rng.random_range(n_top..self.model.n_channels())
                };
                self.photon(ch, te);
            }
        }
    }

    /// Mean electron arrival time weighted by the phd each made [ns].
    pub fn mean_arrival_ns(&self) -> f64 {
        let n: usize = self.electrons.iter().map(|e| e.1).sum();
        self.electrons.iter().map(|e| e.0 * e.1 as f64).sum::<f64>() / n as f64
    }

    /// Digitise everything added so far.
    pub fn digitise(&mut self) -> SynthEvent {
        let daq = &self.model.params.daq;
        let (pre, post) = (daq.pre_samples as usize, daq.post_samples as usize);
        let window =
            ((daq.window_before_ns + daq.window_after_ns) / daq.sample_ns).round() as usize;
        let noise = Normal::new(0.0, daq.noise_adc).unwrap();
        let adc_max = f64::from((1u32 << daq.adc_bits) - 1);
        let mut ev = SynthEvent::default();
        let mut signal: Vec<f32> = Vec::new();
        for ch in 0..self.deposits.len() {
            let mut list = std::mem::take(&mut self.deposits[ch]);
            if list.is_empty() {
                continue;
            }
            list.sort_unstable_by_key(|d| d.0);
            let h = (ch as u64).wrapping_mul(2_654_435_761) % 1000;
            let baseline = daq.baseline_adc + 30.0 * (h as f64 / 500.0 - 1.0);
            let lo = (list[0].0 as usize).saturating_sub(pre);
            let hi = (list[list.len() - 1].0 as usize + SPE_SHAPE.len() + post).min(window);
            signal.clear();
            signal.resize(hi - lo, 0.0);
            for &(s, a) in &list {
                for (k, w) in SPE_SHAPE.iter().enumerate() {
                    if let Some(v) = signal.get_mut(s as usize - lo + k) {
                        *v += a * w;
                    }
                }
            }
            let mut regions: Vec<(usize, usize)> = Vec::new();
            let mut s = 0;
            while s < signal.len() {
                if signal[s] > daq.pod_threshold_adc as f32 {
                    let mut e = s;
                    while e < signal.len() && signal[e] > daq.pod_threshold_adc as f32 {
                        e += 1;
                    }
                    let (a, b) = (s.saturating_sub(pre), (e + post).min(signal.len()));
                    match regions.last_mut() {
                        Some(last) if a <= last.1 => last.1 = b,
                        _ => regions.push((a, b)),
                    }
                    s = e;
                } else {
                    s += 1;
                }
            }
            for &(a, b) in &regions {
                ev.pods.push(PodRecord {
                    channel: ch as u16,
                    start_sample: (lo + a) as i32,
                    length: (b - a) as u32,
                    offset: ev.samples.len() as u64,
                });
                for &v in &signal[a..b] {
                    let x = (baseline - f64::from(v) + noise.sample(&mut self.rng))
                        .round()
                        .clamp(0.0, adc_max);
                    ev.samples.push(x as i16);
                }
            }
        }
        ev
    }
}
