//! Light and charge: vertices -> detected photons on PMT channels, as
//! photoelectron deposits (sample, area) ready for the digitiser.
//!
//! ```text
//! S1: phd ~ Binomial(Nph, g1 lce(x,y,z)); top share ~ AFT_S1(z);
//!     channel ~ solid angle from the vertex; time = t0 + singlet/triplet decay + transit jitter
//! S2: electrons survive exp(-t_d / tau_e), are extracted with eps_ext, arrive with
//!     sigma_t = sqrt(2 D_L t_d) / v_d, sigma_xy = sqrt(2 D_T t_d); each makes
//!     N(SE, SE res) lce_S2(x,y) phd emitted uniformly over the EL width; top share
//!     AFT_S2, top channel ~ LRF pattern at the electron's (x, y), bottom ~ solid angle
//! PMT: each phd gives 1 phe, or 2 with P(double phe); phe area ~ gain N(1, spe_res)
//! ```
//!
//! With a detector response ([`super::response`]: a detector truth, or the
//! detector a conditions tag describes) the S1 and S2 light collection, the
//! SE size and the EL width follow its maps at the vertex or electron
//! position, a dead channel loses its photons and a noisy channel adds single
//! phe; without one, the nominal model above is used.

use rand::distr::weighted::WeightedIndex;
use rand::Rng;
use rand_distr::{Binomial, Distribution, Exp, Normal, Poisson};
use tpcflow_reco::detector::solid_angle_weight;
use tpcflow_reco::DetectorModel;

use super::quanta::{draw_quanta, Recoil};
use super::response::DetectorResponse;
use super::source::Vertex;
use crate::conditions::SimParams;

/// Photoelectron deposits per channel: (sample index in the window, area [ADC x samples]).
#[derive(Debug, Default, Clone)]
pub struct Deposits {
    /// One list per channel.
    pub per_channel: Vec<Vec<(u32, f32)>>,
}

impl Deposits {
    /// Empty lists for `n` channels (reusing allocations).
    pub fn reset(&mut self, n: usize) {
        self.per_channel.resize_with(n, Vec::new);
        for c in &mut self.per_channel {
            c.clear();
        }
    }
}

/// Truth of one vertex.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VertexTruth {
    /// Position [mm].
    pub x: f64,
    /// Position [mm].
    pub y: f64,
    /// Position [mm].
    pub z: f64,
    /// Energy [keV].
    pub energy_kev: f64,
    /// 0 = ER, 1 = NR.
    pub recoil: u8,
    /// Photons produced.
    pub n_photons: u64,
    /// Electrons escaping recombination.
    pub n_electrons: u64,
    /// Electrons extracted into the gas.
    pub n_extracted: u64,
    /// Detected S1 photons [phd].
    pub s1_phd: u64,
    /// Detected S2 photons [phd].
    pub s2_phd: u64,
    /// Interaction time in the window [ns].
    pub t_s1_ns: f64,
    /// Mean electron arrival time at the surface in the window [ns].
    pub t_s2_ns: f64,
    /// Drift time [ns].
    pub drift_ns: f64,
}

/// Everything needed to turn detected photons into deposits.
struct Pmt<'a> {
    model: &'a DetectorModel,
    window_samples: u32,
    sample_ns: f64,
    spe_res: Normal<f64>,
    truth: Option<&'a dyn DetectorResponse>,
}

impl Pmt<'_> {
    /// Add one detected photon at `t_ns` on `channel`; false when outside the window.
    fn photon<R: Rng>(&self, rng: &mut R, dep: &mut Deposits, channel: usize, t_ns: f64) -> bool {
        if !(0.0..self.window_samples as f64 * self.sample_ns).contains(&t_ns) {
            return false;
        }
        if self.truth.is_some_and(|t| t.is_dead(channel)) {
            return false;
        }
        let sample = (t_ns / self.sample_ns) as u32;
        let gain = self.model.params.pmts.spe_area_adc[channel];
        let n_phe = if rng.random::<f64>() < self.model.params.pmts.double_phe_prob {
            2
        } else {
            1
        };
        for _ in 0..n_phe {
            let a = self.spe_res.sample(rng).max(0.02);
            dep.per_channel[channel].push((sample, (a * gain) as f32));
        }
        true
    }
}

/// Weighted channel choice for light from a point `height` above/below an array.
fn array_weights(
    model: &DetectorModel,
    top: bool,
    x: f64,
    y: f64,
    height: f64,
) -> WeightedIndex<f64> {
    let n_top = model.pmts.n_top;
    let range = if top {
        0..n_top
    } else {
        n_top..model.n_channels()
    };
    let w: Vec<f64> = range
        .map(|k| solid_angle_weight(height, (x - model.pmts.x[k]).hypot(y - model.pmts.y[k])))
        .collect();
    WeightedIndex::new(w).expect("positive weights")
}

/// Simulates the detector response of one event.
#[derive(Debug)]
pub struct EventSimulator<'a> {
    model: &'a DetectorModel,
    p: &'a SimParams,
    window_samples: u32,
    pattern: Vec<f64>,
    truth: Option<&'a dyn DetectorResponse>,
}

impl<'a> EventSimulator<'a> {
    /// For a detector and its physics parameters.
    pub fn new(model: &'a DetectorModel, p: &'a SimParams) -> Self {
        let d = &model.params.daq;
        let window_samples =
            ((d.window_before_ns + d.window_after_ns) / d.sample_ns).round() as u32;
        Self {
            model,
            p,
            window_samples,
            pattern: vec![0.0; model.pmts.n_top],
            truth: None,
        }
    }

    /// Simulate the detector of a response (a truth or a conditions tag;
    /// `model` then carries its lifetime, gains and light response) instead
    /// of the nominal one.
    #[must_use]
    pub fn with_truth(mut self, truth: Option<&'a dyn DetectorResponse>) -> Self {
        self.truth = truth;
        self
    }

    /// Samples in the event window.
    pub fn window_samples(&self) -> u32 {
        self.window_samples
    }

    fn pmt(&self) -> Pmt<'a> {
        Pmt {
            model: self.model,
            window_samples: self.window_samples,
            sample_ns: self.model.params.daq.sample_ns,
            spe_res: Normal::new(1.0, self.model.params.pmts.spe_resolution)
                .expect("valid resolution"),
            truth: self.truth,
        }
    }

    /// Electrons reaching the surface, on average, from a vertex (to pick the trigger S2).
    pub fn expected_s2_electrons(&self, v: &Vertex) -> f64 {
        let (_, e) = super::quanta::mean_quanta(self.p, v.recoil, v.energy_kev);
        let drift_us = self.model.drift_ns_from_z(v.z) * 1e-3;
        e * (-drift_us / self.model.params.tpc.electron_lifetime_us).exp()
    }

    /// Simulate the vertices (interaction at `t0_ns` in the window) and the
    /// backgrounds; fill `dep` and return the truth per vertex.
    pub fn simulate<R: Rng>(
        &mut self,
        rng: &mut R,
        vertices: &[Vertex],
        t0_ns: f64,
        dep: &mut Deposits,
    ) -> Vec<VertexTruth> {
        dep.reset(self.model.n_channels());
        let pmt = self.pmt();
        let mut truth = Vec::with_capacity(vertices.len());
        for v in vertices {
            let (n_ph, n_e) = draw_quanta(rng, self.p, v.recoil, v.energy_kev);
            let s1_phd = self.s1(rng, &pmt, v, n_ph, t0_ns, dep);
            let drift_ns = self.model.drift_ns_from_z(v.z);
            let (n_extracted, s2_phd) = self.s2(rng, &pmt, v, n_e, t0_ns, drift_ns, dep);
            truth.push(VertexTruth {
                x: v.x,
                y: v.y,
                z: v.z,
                energy_kev: v.energy_kev,
                recoil: v.recoil.code(),
                n_photons: n_ph,
                n_electrons: n_e,
                n_extracted,
                s1_phd,
                s2_phd,
                t_s1_ns: t0_ns,
                t_s2_ns: t0_ns + drift_ns,
                drift_ns,
            });
        }
        self.backgrounds(rng, &pmt, dep);
        truth
    }

    fn s1<R: Rng>(
        &self,
        rng: &mut R,
        pmt: &Pmt<'_>,
        v: &Vertex,
        n_ph: u64,
        t0: f64,
        dep: &mut Deposits,
    ) -> u64 {
        let m = self.model;
        let lce = match self.truth {
            Some(t) => t.s1_light_collection(v.x, v.y, v.z),
            None => m.s1_light_collection(v.x, v.y, v.z),
        };
        let p_det = (m.params.light.g1 * lce).clamp(0.0, 1.0);
        let n_det = Binomial::new(n_ph, p_det)
            .map(|d| d.sample(rng))
            .unwrap_or(0);
        if n_det == 0 {
            return 0;
        }
        let n_top = Binomial::new(n_det, m.s1_top_fraction(v.z))
            .map(|d| d.sample(rng))
            .unwrap_or(0);
        let top = array_weights(m, true, v.x, v.y, m.params.tpc.top_array_z_mm - v.z);
        let bottom = array_weights(m, false, v.x, v.y, v.z - m.params.tpc.bottom_array_z_mm);
        let singlet_fraction = match v.recoil {
            Recoil::Er => self.p.er_singlet_fraction,
            Recoil::Nr => self.p.nr_singlet_fraction,
        };
        let singlet = Exp::new(1.0 / self.p.singlet_ns).expect("positive");
        let triplet = Exp::new(1.0 / self.p.triplet_ns).expect("positive");
        let transit = Normal::new(0.0, self.p.transit_sigma_ns).expect("valid sigma");
        let mut lost = 0;
        for i in 0..n_det {
            let decay = if rng.random::<f64>() < singlet_fraction {
                singlet.sample(rng)
            } else {
                triplet.sample(rng)
            };
            let t = t0 + decay + transit.sample(rng).abs();
            let ch = if i < n_top {
                top.sample(rng)
            } else {
                m.pmts.n_top + bottom.sample(rng)
            };
            let kept = pmt.photon(rng, dep, ch, t);
            // Photons on a dead channel are not detected; those outside the
            // window are (the nominal count).
            if !kept && self.truth.is_some_and(|tr| tr.is_dead(ch)) {
                lost += 1;
            }
        }
        n_det - lost
    }

    #[allow(clippy::too_many_arguments)]
    fn s2<R: Rng>(
        &mut self,
        rng: &mut R,
        pmt: &Pmt<'_>,
        v: &Vertex,
        n_e: u64,
        t0: f64,
        drift_ns: f64,
        dep: &mut Deposits,
    ) -> (u64, u64) {
        let m = self.model;
        let drift_us = drift_ns * 1e-3;
        let survive = (-drift_us / m.params.tpc.electron_lifetime_us).exp();
        let n_alive = Binomial::new(n_e, survive)
            .map(|d| d.sample(rng))
            .unwrap_or(0);
        let n_ext = Binomial::new(n_alive, m.params.light.extraction_efficiency)
            .map(|d| d.sample(rng))
            .unwrap_or(0);
        if n_ext == 0 {
            return (0, 0);
        }
        let sigma_t_ns = (2.0 * self.p.diffusion_long_mm2_per_us * drift_us).sqrt()
            / m.params.tpc.drift_velocity_mm_per_us
            * 1e3;
        let sigma_xy = (2.0 * self.p.diffusion_trans_mm2_per_us * drift_us).sqrt();
        // Transverse diffusion: the cloud is drawn as up to 16 sub-positions,
        // each with its own top pattern (cheap). The sub-positions keep the
        // cloud's width, but are shifted so that their mean, the centroid the
        // light follows, is off the vertex by sigma_xy / sqrt(N_extracted) as
        // for N_extracted independent electrons, not by sigma_xy / sqrt(16).
        let n_sub = n_ext.min(16) as usize;
        let r_max = m.params.tpc.radius_mm;
        let diffuse = Normal::new(0.0, sigma_xy.max(1e-9)).expect("valid sigma");
        let offsets: Vec<(f64, f64)> = (0..n_sub)
            .map(|_| (diffuse.sample(rng), diffuse.sample(rng)))
            .collect();
        let centroid =
            Normal::new(0.0, (sigma_xy / (n_ext as f64).sqrt()).max(1e-9)).expect("valid sigma");
        let (cx, cy) = (centroid.sample(rng), centroid.sample(rng));
        let (mx, my) = offsets
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (mx / n_sub as f64, my / n_sub as f64);
        let mut subs = Vec::with_capacity(n_sub);
        for (dx, dy) in offsets {
            let (mut x, mut y) = (v.x + dx - mx + cx, v.y + dy - my + cy);
            let r = x.hypot(y);
            if r > r_max {
                x *= r_max / r;
                y *= r_max / r;
            }
            m.top_pattern(x, y, &mut self.pattern);
            let idx = WeightedIndex::new(self.pattern.iter().copied()).expect("positive pattern");
            subs.push((x, y, idx));
        }
        let bottom = array_weights(
            m,
            false,
            v.x,
            v.y,
            m.params.tpc.liquid_z_mm - m.params.tpc.bottom_array_z_mm,
        );
        let t_arrive = Normal::new(t0 + drift_ns, sigma_t_ns.max(1e-9)).expect("valid sigma");
        let mut n_phd = 0;
        for i in 0..n_ext {
            let (x, y, top) = &subs[i as usize % n_sub];
            let t = t_arrive.sample(rng);
            n_phd += self.electron(rng, pmt, *x, *y, t, top, &bottom, dep);
        }
        (n_ext, n_phd)
    }

    /// One extracted electron's electroluminescence; returns detected phd.
    #[allow(clippy::too_many_arguments)]
    fn electron<R: Rng>(
        &self,
        rng: &mut R,
        pmt: &Pmt<'_>,
        x: f64,
        y: f64,
        t: f64,
        top: &WeightedIndex<f64>,
        bottom: &WeightedIndex<f64>,
        dep: &mut Deposits,
    ) -> u64 {
        let m = self.model;
        let l = &m.params.light;
        let (mean, el_width_ns) = match self.truth {
            Some(tr) => (tr.se_size_phd(x, y), tr.el_width_ns(x, y)),
            None => (
                l.se_gain_phd * m.s2_light_collection(x, y),
                self.p.el_width_ns,
            ),
        };
        let n_det = Normal::new(mean, l.se_resolution * mean)
            .map(|d| d.sample(rng))
            .unwrap_or(mean)
            .round()
            .max(0.0) as u64;
        let mut kept = 0;
        for _ in 0..n_det {
            let te = t + rng.random::<f64>() * el_width_ns;
            let ch = if rng.random::<f64>() < l.s2_top_fraction {
                top.sample(rng)
            } else {
                m.pmts.n_top + bottom.sample(rng)
            };
            if pmt.photon(rng, dep, ch, te) {
                kept += 1;
            }
        }
        kept
    }

    fn backgrounds<R: Rng>(&mut self, rng: &mut R, pmt: &Pmt<'_>, dep: &mut Deposits) {
        let m = self.model;
        let window_ns = self.window_samples as f64 * m.params.daq.sample_ns;
        let n_ch = m.n_channels();
        let dark_mean = self.p.dark_rate_hz * window_ns * 1e-9 * n_ch as f64;
        let n_dark = Poisson::new(dark_mean.max(1e-9))
            .map(|d| d.sample(rng) as u64)
            .unwrap_or(0);
        for _ in 0..n_dark {
            let ch = rng.random_range(0..n_ch);
            let t = rng.random::<f64>() * window_ns;
            pmt.photon(rng, dep, ch, t);
        }
        if let Some(truth) = self.truth {
            for (i, &ch) in truth.noisy_channels().iter().enumerate() {
                let noisy_mean = truth.noisy_rate_hz(i) * window_ns * 1e-9;
                let n = Poisson::new(noisy_mean.max(1e-9))
                    .map(|d| d.sample(rng) as u64)
                    .unwrap_or(0);
                for _ in 0..n {
                    let t = rng.random::<f64>() * window_ns;
                    pmt.photon(rng, dep, usize::from(ch), t);
                }
            }
        }
        let se_mean = self.p.single_electron_rate_hz * window_ns * 1e-9;
        let n_se = Poisson::new(se_mean.max(1e-9))
            .map(|d| d.sample(rng) as u64)
            .unwrap_or(0);
        let bottom_h = m.params.tpc.liquid_z_mm - m.params.tpc.bottom_array_z_mm;
        for _ in 0..n_se {
            let (x, y, _) = super::source::uniform_point(rng, m);
            let t = rng.random::<f64>() * window_ns;
            m.top_pattern(x, y, &mut self.pattern);
            let top = WeightedIndex::new(self.pattern.iter().copied()).expect("positive pattern");
            let bottom = array_weights(m, false, x, y, bottom_h);
            self.electron(rng, pmt, x, y, t, &top, &bottom, dep);
        }
    }
}
