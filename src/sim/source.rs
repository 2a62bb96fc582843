//! Event sources: energy spectra, recoil types and vertex placement.

use rand::Rng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;
use tpcflow_reco::DetectorModel;

use super::quanta::Recoil;
use crate::conditions::SimParams;

/// What the simulated detector sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Electron recoils, flat 0.5-20 keV (tritium-like band calibration).
    ErFlat,
    /// Nuclear recoils, flat 1-60 keV (neutron-like).
    NrFlat,
    /// 83mKr: 41.5 keV electron-recoil line (the 32.1 + 9.4 keV pair, 154 ns apart, as one deposit).
    Kr83m,
    /// WIMP-like nuclear recoils: falling exponential, 1.5-60 keV, E0 = 12 keV.
    Wimp,
    /// A mix: 40% er-flat, 20% nr-flat, 20% kr83m, 20% wimp.
    Mixed,
}

impl Source {
    /// Code stored in truth files.
    pub fn code(self) -> u8 {
        match self {
            Source::ErFlat => 0,
            Source::NrFlat => 1,
            Source::Kr83m => 2,
            Source::Wimp => 3,
            Source::Mixed => 4,
        }
    }

    /// Resolve `Mixed` to one of the pure sources.
    pub fn pick<R: Rng>(self, rng: &mut R) -> Source {
        if self != Source::Mixed {
            return self;
        }
        let u: f64 = rng.random();
        if u < 0.4 {
            Source::ErFlat
        } else if u < 0.6 {
            Source::NrFlat
        } else if u < 0.8 {
            Source::Kr83m
        } else {
            Source::Wimp
        }
    }

    /// Recoil type and total energy [keV] of one event of a pure source.
    pub fn draw_energy<R: Rng>(self, rng: &mut R) -> (Recoil, f64) {
        match self {
            Source::ErFlat | Source::Mixed => (Recoil::Er, rng.random_range(0.5..20.0)),
            Source::NrFlat => (Recoil::Nr, rng.random_range(1.0..60.0)),
            Source::Kr83m => (Recoil::Er, 41.5),
            Source::Wimp => {
                let exp = Exp::new(1.0 / 12.0).expect("positive rate");
                loop {
                    let e = 1.5 + exp.sample(rng);
                    if e < 60.0 {
                        return (Recoil::Nr, e);
                    }
                }
            }
        }
    }
}

/// One energy deposit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vertex {
    /// x [mm].
    pub x: f64,
    /// y [mm].
    pub y: f64,
    /// z [mm] (cathode at 0).
    pub z: f64,
    /// Deposited energy [keV].
    pub energy_kev: f64,
    /// Recoil type.
    pub recoil: Recoil,
}

/// A point uniform in the active volume (cylinder between cathode and gate).
pub fn uniform_point<R: Rng>(rng: &mut R, m: &DetectorModel) -> (f64, f64, f64) {
    let t = &m.params.tpc;
    let r = t.radius_mm * rng.random::<f64>().sqrt();
    let phi = rng.random_range(0.0..std::f64::consts::TAU);
    let z = rng.random_range(t.cathode_z_mm..t.gate_z_mm);
    (r * phi.cos(), r * phi.sin(), z)
}

fn inside(m: &DetectorModel, x: f64, y: f64, z: f64) -> bool {
    let t = &m.params.tpc;
    x * x + y * y < t.radius_mm * t.radius_mm && z > t.cathode_z_mm && z < t.gate_z_mm
}

/// Vertices of one event: one, or 2-3 for the multiple-scatter fraction,
/// sharing the energy and spread by `scatter_length_mm`.
pub fn draw_vertices<R: Rng>(
    rng: &mut R,
    m: &DetectorModel,
    p: &SimParams,
    recoil: Recoil,
    energy: f64,
) -> Vec<Vertex> {
    let (x, y, z) = uniform_point(rng, m);
    let n = if rng.random::<f64>() < p.multiple_scatter_fraction {
        rng.random_range(2..=3)
    } else {
        1
    };
    let mut pts = vec![(x, y, z)];
    let step = Exp::new(1.0 / p.scatter_length_mm).expect("positive length");
    let mut tries = 0;
    while pts.len() < n && tries < 100 {
        tries += 1;
        let (x0, y0, z0) = *pts.last().expect("one point");
        let d = step.sample(rng).max(1.0);
        let cos_t: f64 = rng.random_range(-1.0..1.0);
        let sin_t = (1.0 - cos_t * cos_t).sqrt();
        let phi = rng.random_range(0.0..std::f64::consts::TAU);
        let (nx, ny, nz) = (
            x0 + d * sin_t * phi.cos(),
            y0 + d * sin_t * phi.sin(),
            z0 + d * cos_t,
        );
        if inside(m, nx, ny, nz) {
            pts.push((nx, ny, nz));
        }
    }
    // Split the energy with uniform random weights.
    let w: Vec<f64> = (0..pts.len()).map(|_| rng.random_range(0.2..1.0)).collect();
    let sum: f64 = w.iter().sum();
    pts.iter()
        .zip(&w)
        .map(|(&(x, y, z), wi)| Vertex {
            x,
            y,
            z,
            energy_kev: energy * wi / sum,
            recoil,
        })
        .collect()
}
