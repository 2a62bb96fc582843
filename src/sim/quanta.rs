//! Quanta: energy deposit -> photons and electrons, with recombination
//! fluctuations.
//!
//! ```text
//! mean photons, electrons per keV: table interpolated linearly in log(E)
//! Nq    ~ Normal(E (ph + e), sqrt(F E (ph + e)))         total quanta
//! Ni    ~ Binomial(Nq, 1 / (1 + alpha))                 ions (alpha = Nex/Ni)
//! r_mean = 1 - e_mean / (Nq_mean / (1 + alpha))          mean recombination
//! r     ~ Normal(r_mean, sigma_r), clamped to [0, 1]     beyond-binomial fluctuation
//! Ne    ~ Binomial(Ni, 1 - r);   Nph = Nq - Ne
//! ```

use rand::Rng;
use rand_distr::{Binomial, Distribution, Normal};
use serde::Serialize;

use crate::conditions::{SimParams, YieldTable};

/// Recoil type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Recoil {
    /// Electron recoil (betas, gammas).
    Er,
    /// Nuclear recoil (neutrons, WIMPs).
    Nr,
}

impl Recoil {
    /// Code stored in truth files: 0 = ER, 1 = NR.
    pub fn code(self) -> u8 {
        match self {
            Recoil::Er => 0,
            Recoil::Nr => 1,
        }
    }
}

/// Mean (photons, electrons) per keV at `energy_kev` from a yield table.
pub fn mean_yields_per_kev(table: &YieldTable, energy_kev: f64) -> (f64, f64) {
    let first = table.first().copied().unwrap_or([1.0, 0.0, 0.0]);
    let last = table.last().copied().unwrap_or(first);
    if energy_kev <= first[0] {
        return (first[1], first[2]);
    }
    if energy_kev >= last[0] {
        return (last[1], last[2]);
    }
    for w in table.windows(2) {
        let (a, b) = (w[0], w[1]);
        if energy_kev <= b[0] {
            let t = (energy_kev.ln() - a[0].ln()) / (b[0].ln() - a[0].ln());
            return (a[1] + t * (b[1] - a[1]), a[2] + t * (b[2] - a[2]));
        }
    }
    (last[1], last[2])
}

/// Mean (photons, electrons) for a deposit.
pub fn mean_quanta(p: &SimParams, recoil: Recoil, energy_kev: f64) -> (f64, f64) {
    let table = match recoil {
        Recoil::Er => &p.er_yields,
        Recoil::Nr => &p.nr_yields,
    };
    let (ph, e) = mean_yields_per_kev(table, energy_kev);
    (ph * energy_kev, e * energy_kev)
}

/// Draw (photons, electrons) for one deposit.
pub fn draw_quanta<R: Rng>(
    rng: &mut R,
    p: &SimParams,
    recoil: Recoil,
    energy_kev: f64,
) -> (u64, u64) {
    let (ph_mean, e_mean) = mean_quanta(p, recoil, energy_kev);
    let nq_mean = ph_mean + e_mean;
    if nq_mean <= 0.0 {
        return (0, 0);
    }
    let (alpha0, fano, sigma_r) = match recoil {
        Recoil::Er => (p.er_exciton_ratio, p.er_fano, p.er_recombination_sigma),
        Recoil::Nr => (p.nr_exciton_ratio, p.nr_fano, p.nr_recombination_sigma),
    };
    // Excitons cannot outnumber the photons: keep r >= 0 on average.
    let alpha = alpha0.min(0.95 * ph_mean / e_mean.max(1e-9));
    let nq = Normal::new(nq_mean, (fano * nq_mean).sqrt())
        .map(|d| d.sample(rng))
        .unwrap_or(nq_mean)
        .round()
        .max(0.0) as u64;
    let ni = Binomial::new(nq, 1.0 / (1.0 + alpha))
        .map(|d| d.sample(rng))
        .unwrap_or(0);
    let ni_mean = nq_mean / (1.0 + alpha);
    let r_mean = (1.0 - e_mean / ni_mean).clamp(0.0, 1.0);
    let r = Normal::new(r_mean, sigma_r)
        .map(|d| d.sample(rng))
        .unwrap_or(r_mean)
        .clamp(0.0, 1.0);
    let ne = Binomial::new(ni, 1.0 - r)
        .map(|d| d.sample(rng))
        .unwrap_or(0);
    (nq - ne, ne)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Conditions;
    use rand::SeedableRng;

    #[test]
    fn table_reproduces_nest_reference_means() {
        let c = Conditions::load("v1").unwrap();
        // DESIGN.md: NR 10 keV 78.7 ph / 52.6 e-, NR 30 keV 330.6 / 114.3,
        // beta 2 keV 55.3 / 93.1, beta 10 keV 488.1 / 253.9.
        for (recoil, e, ph, el) in [
            (Recoil::Nr, 10.0, 78.7, 52.6),
            (Recoil::Nr, 30.0, 330.6, 114.3),
            (Recoil::Er, 2.0, 55.3, 93.1),
            (Recoil::Er, 10.0, 488.1, 253.9),
        ] {
            let (mph, mel) = mean_quanta(&c.sim, recoil, e);
            assert!(
                (mph - ph).abs() / ph < 0.002,
                "{recoil:?} {e} keV photons {mph} vs {ph}"
            );
            assert!(
                (mel - el).abs() / el < 0.002,
                "{recoil:?} {e} keV electrons {mel} vs {el}"
            );
        }
    }

    #[test]
    fn drawn_quanta_average_to_the_means() {
        let c = Conditions::load("v1").unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (recoil, e) in [
            (Recoil::Nr, 10.0),
            (Recoil::Er, 2.0),
            (Recoil::Er, 10.0),
            (Recoil::Nr, 30.0),
        ] {
            let n = 20_000;
            let (mut sph, mut se) = (0.0, 0.0);
            for _ in 0..n {
                let (ph, el) = draw_quanta(&mut rng, &c.sim, recoil, e);
                sph += ph as f64;
                se += el as f64;
            }
            let (mph, mel) = mean_quanta(&c.sim, recoil, e);
            assert!(
                (sph / n as f64 - mph).abs() / mph < 0.03,
                "{recoil:?} {e}: ph {} vs {mph}",
                sph / n as f64
            );
            assert!(
                (se / n as f64 - mel).abs() / mel < 0.03,
                "{recoil:?} {e}: e {} vs {mel}",
                se / n as f64
            );
        }
    }
}
