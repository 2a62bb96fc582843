//! Detector truth apart from the conditions: the detector the simulator
//! builds, which the reconstruction is not told.
//!
//! A truth file (TOML) names a base conditions tag and how the real detector
//! differs from it; `tpcflow sim --detector-truth FILE` (or a name compiled in
//! from `conditions/truth-NAME.toml`, e.g. `realistic`) uses it. It is resolved
//! per run into an [`EffectiveTruth`], which the simulator applies and writes
//! beside the data as `{run:06}/{run:06}.detector-truth.json` (see
//! [`EffectiveTruth::write_for_run`], [`load_for_run`]).
//!
//! ```text
//! electron lifetime   tau(run) = (first_us + drift_us_per_run (run - first_run))
//!                                x prod(step.factor for steps with step.run <= run)
//! SPE gain            g_c(run) = g_c,nominal exp(dev_c + rate_c (run - first_run)),
//!                     dev_c ~ N(0, rms), rate_c ~ N(0, drift_rms_per_run), seeded
//! dead channel        records nothing (its photons are lost, no pods)
//! noisy channel       extra single phe at noisy_rate_hz, uniform in the window
//! ```
//!
//! The true light response of the top array (another radial shape than the
//! nominal one and a relative efficiency per top PMT, the optional `[lrf]`
//! table) is in [`super::truth_lrf`]; the simulator draws the top pattern of
//! every S2 from it, and the run's truth carries it as `lrf`.
//!
//! The liquid surface and the light collection are in [`super::truth_maps`]:
//! the local gas gap sets the electroluminescence (EL) duration and the
//! single-electron (SE) gain, and S1/S2 light collection follow maps that
//! differ from the nominal ones.
//!
//! The JSON file holds every field of [`EffectiveTruth`] (serde names =
//! the Rust field names, units in the names). Without a truth file the
//! simulated detector is the nominal one of the conditions, bit for bit.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::truth_lrf::LrfSpec;
use super::truth_maps::{GasGap, LightCollection, LightSpec, LiquidSpec};
use crate::conditions::{hex, Conditions, ConditionsError};
use tpcflow_reco::lrf::LightResponse;

/// Truth files compiled into the binary, by name.
const BUILTIN: &[(&str, &str)] = &[(
    "realistic",
    include_str!("../../conditions/truth-realistic.toml"),
)];

/// Version of the per-run JSON layout.
pub const FORMAT_VERSION: u32 = 1;

/// Errors reading, resolving or writing detector truth.
#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    /// Neither a known name nor a readable file.
    #[error("detector truth `{spec}`: no such name (known: {known}) and cannot read it as a file: {source}")]
    NotFound {
        /// What the user gave.
        spec: String,
        /// Names compiled in.
        known: String,
        /// Why the file could not be read.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown/missing fields.
    #[error("detector truth file {path}: {source}")]
    Parse {
        /// File (or `builtin:NAME`).
        path: PathBuf,
        /// Parser message with line and column.
        source: Box<toml::de::Error>,
    },
    /// The base conditions cannot be loaded.
    #[error("detector truth file {path}: base conditions: {source}")]
    Base {
        /// File (or `builtin:NAME`).
        path: PathBuf,
        /// Why.
        source: Box<ConditionsError>,
    },
    /// A value is outside its range.
    #[error("detector truth file {path}: field `{field}` = {value}: {why}")]
    Invalid {
        /// File (or `builtin:NAME`).
        path: PathBuf,
        /// Dotted field name.
        field: String,
        /// Offending value.
        value: f64,
        /// What is wrong.
        why: String,
    },
    /// Reading or writing a per-run truth file failed.
    #[error("detector truth {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A per-run truth file is not valid JSON of this layout.
    #[error("detector truth {path}: {source}")]
    Json {
        /// File.
        path: PathBuf,
        /// Parser message.
        source: serde_json::Error,
    },
}

/// A step of the electron lifetime (e.g. a purification change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeStep {
    /// First run with the step.
    pub run: u32,
    /// Factor applied to the lifetime from that run on.
    pub factor: f64,
}

/// The `[lifetime]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeSpec {
    /// Lifetime at `first_run` [us].
    pub first_us: f64,
    /// Linear change per run [us/run].
    #[serde(default)]
    pub drift_us_per_run: f64,
    /// Steps, applied from their run on.
    #[serde(default)]
    pub steps: Vec<LifetimeStep>,
}

/// The `[gains]` table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GainSpec {
    /// Seed of the per-channel deviations.
    #[serde(default)]
    pub seed: u64,
    /// rms of ln(gain / nominal) at `first_run`.
    #[serde(default)]
    pub rms: f64,
    /// rms over channels of the drift of ln(gain) per run.
    #[serde(default)]
    pub drift_rms_per_run: f64,
    /// Channels that record nothing.
    #[serde(default)]
    pub dead_channels: Vec<u16>,
    /// Channels with a large rate of single phe.
    #[serde(default)]
    pub noisy_channels: Vec<u16>,
    /// Single-phe rate of each noisy channel [Hz].
    #[serde(default)]
    pub noisy_rate_hz: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TruthFile {
    name: String,
    #[serde(default)]
    description: String,
    base: String,
    #[serde(default)]
    first_run: u32,
    lifetime: Option<LifetimeSpec>,
    #[serde(default)]
    gains: GainSpec,
    #[serde(default)]
    liquid: LiquidSpec,
    #[serde(default)]
    light: LightSpec,
    lrf: Option<LrfSpec>,
}

/// A loaded, validated truth description (all runs).
#[derive(Debug, Clone)]
pub struct DetectorTruth {
    /// Name, e.g. `realistic`.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Where it came from (`builtin:realistic` or a path).
    pub source: PathBuf,
    /// SHA-256 of the file's bytes (hex).
    pub sha256: String,
    /// The nominal detector the deviations apply to.
    pub base: Conditions,
    /// Reference run of every drift.
    pub first_run: u32,
    /// Electron lifetime schedule (None: the base's lifetime in every run).
    pub lifetime: Option<LifetimeSpec>,
    /// PMT gains, dead and noisy channels.
    pub gains: GainSpec,
    /// Liquid surface.
    pub liquid: LiquidSpec,
    /// Light collection.
    pub light: LightSpec,
    /// Light response of the top array (None: the nominal one of the base).
    pub lrf: Option<LrfSpec>,
}

/// The truth of one run: what the simulator used, written beside the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectiveTruth {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// Truth name.
    pub name: String,
    /// Truth file (`builtin:NAME` or a path).
    pub source: String,
    /// SHA-256 of the truth file.
    pub sha256: String,
    /// Base conditions tag.
    pub base: String,
    /// SHA-256 of the base conditions file.
    pub base_sha256: String,
    /// Run.
    pub run: u32,
    /// Electron lifetime [us].
    pub electron_lifetime_us: f64,
    /// Mean single-phe area per channel [ADC counts x samples] (as conditions'
    /// `spe_area_adc`); a dead channel keeps a value here but records nothing.
    pub spe_area_adc: Vec<f64>,
    /// Channels that record nothing.
    pub dead_channels: Vec<u16>,
    /// Channels with a large single-phe rate.
    pub noisy_channels: Vec<u16>,
    /// Single-phe rate of each noisy channel [Hz].
    pub noisy_rate_hz: f64,
    /// Dark count rate of every channel [Hz].
    pub dark_rate_hz: f64,
    /// Liquid surface, gas gap, EL duration and SE gain vs (x, y).
    pub gas_gap: GasGap,
    /// S1 and S2 light collection vs position.
    pub light: LightCollection,
    /// Gas gap at the centre [mm].
    pub gas_gap_centre_mm: f64,
    /// SE gain at the centre, gas-gap part times S2 light collection [phd per extracted electron].
    pub se_gain_centre_phd: f64,
    /// EL duration at the centre [ns].
    pub el_width_centre_ns: f64,
    /// Light response of the top array the S2 patterns were drawn from
    /// (absent: the nominal response of the base conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lrf: Option<LightResponse>,
}

fn invalid(path: &Path, field: &str, value: f64, why: &str) -> TruthError {
    TruthError::Invalid {
        path: path.to_path_buf(),
        field: field.to_string(),
        value,
        why: why.to_string(),
    }
}

impl DetectorTruth {
    /// Load by name (built-in) or by path; the base conditions by their tag or path.
    ///
    /// # Errors
    /// [`TruthError`] naming the file and the field.
    pub fn load(spec: &str) -> Result<Self, TruthError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(name, _)| *name == spec) {
            return Self::parse(text, &PathBuf::from(format!("builtin:{spec}")));
        }
        let path = Path::new(spec);
        let text = std::fs::read_to_string(path).map_err(|source| TruthError::NotFound {
            spec: spec.to_string(),
            known: BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse and validate a truth file's text.
    ///
    /// # Errors
    /// [`TruthError::Parse`], [`TruthError::Base`] or [`TruthError::Invalid`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, TruthError> {
        let f: TruthFile = toml::from_str(text).map_err(|source| TruthError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let base = Conditions::load(&f.base).map_err(|source| TruthError::Base {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let t = Self {
            name: f.name,
            description: f.description,
            source: path.to_path_buf(),
            sha256: hex(&Sha256::digest(text.as_bytes())),
            base,
            first_run: f.first_run,
            lifetime: f.lifetime,
            gains: f.gains,
            liquid: f.liquid,
            light: f.light,
            lrf: f.lrf,
        };
        t.validate()?;
        Ok(t)
    }

    fn validate(&self) -> Result<(), TruthError> {
        let p = &self.source;
        let n = self.base.detector.n_channels();
        let g = &self.gains;
        for (field, v) in [
            ("gains.rms", g.rms),
            ("gains.drift_rms_per_run", g.drift_rms_per_run),
            ("gains.noisy_rate_hz", g.noisy_rate_hz),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(p, field, v, "must be finite and >= 0"));
            }
        }
        for (field, list) in [
            ("gains.dead_channels", &g.dead_channels),
            ("gains.noisy_channels", &g.noisy_channels),
        ] {
            if let Some(&c) = list.iter().find(|&&c| usize::from(c) >= n) {
                let why = format!("channel {c} does not exist (the detector has {n} channels)");
                return Err(invalid(p, field, f64::from(c), &why));
            }
        }
        if let Some(&c) = g
            .noisy_channels
            .iter()
            .find(|c| g.dead_channels.contains(c))
        {
            return Err(invalid(
                p,
                "gains.noisy_channels",
                f64::from(c),
                "a channel cannot be both dead and noisy",
            ));
        }
        if let Some(l) = &self.lifetime {
            if !(l.first_us.is_finite() && l.first_us > 0.0) {
                return Err(invalid(p, "lifetime.first_us", l.first_us, "must be > 0"));
            }
            if !l.drift_us_per_run.is_finite() {
                return Err(invalid(
                    p,
                    "lifetime.drift_us_per_run",
                    l.drift_us_per_run,
                    "must be finite",
                ));
            }
            if let Some(s) = l
                .steps
                .iter()
                .find(|s| !(s.factor.is_finite() && s.factor > 0.0))
            {
                return Err(invalid(p, "lifetime.steps.factor", s.factor, "must be > 0"));
            }
        }
        self.liquid
            .validate(&self.base)
            .map_err(|(field, value, why)| invalid(p, &field, value, &why))?;
        self.light
            .validate()
            .map_err(|(field, value, why)| invalid(p, &field, value, &why))?;
        match &self.lrf {
            Some(l) => l
                .validate()
                .map_err(|(field, value, why)| invalid(p, &field, value, &why)),
            None => Ok(()),
        }
    }

    /// Electron lifetime of a run [us].
    ///
    /// # Errors
    /// [`TruthError::Invalid`] when the schedule gives a lifetime <= 0 at `run`.
    pub fn lifetime_us(&self, run: u32) -> Result<f64, TruthError> {
        let Some(l) = &self.lifetime else {
            return Ok(self.base.detector.params.tpc.electron_lifetime_us);
        };
        let dr = f64::from(run) - f64::from(self.first_run);
        let steps: f64 = l
            .steps
            .iter()
            .filter(|s| s.run <= run)
            .map(|s| s.factor)
            .product();
        let tau = (l.first_us + l.drift_us_per_run * dr) * steps;
        if tau.is_finite() && tau > 0.0 {
            Ok(tau)
        } else {
            Err(invalid(
                &self.source,
                "lifetime",
                tau,
                &format!("the schedule gives this lifetime at run {run}; it must be > 0"),
            ))
        }
    }

    /// Per-channel SPE areas of a run [ADC counts x samples].
    pub fn spe_area_adc(&self, run: u32) -> Vec<f64> {
        let g = &self.gains;
        let nominal = &self.base.detector.params.pmts.spe_area_adc;
        let dr = f64::from(run) - f64::from(self.first_run);
        let mut rng = ChaCha8Rng::seed_from_u64(g.seed);
        let dev = Normal::new(0.0, g.rms).expect("validated rms");
        let rate = Normal::new(0.0, g.drift_rms_per_run).expect("validated rms");
        nominal
            .iter()
            .map(|&g0| {
                let d = dev.sample(&mut rng);
                let r = rate.sample(&mut rng);
                g0 * (d + r * dr).exp()
            })
            .collect()
    }

    /// Resolve the truth of one run.
    ///
    /// # Errors
    /// [`TruthError::Invalid`] when the run's values are out of range.
    pub fn resolve(&self, run: u32) -> Result<EffectiveTruth, TruthError> {
        let base = &self.base;
        let gas_gap = self.liquid.resolve(base);
        let light = self.light.resolve(base);
        Ok(EffectiveTruth {
            format: FORMAT_VERSION,
            name: self.name.clone(),
            source: self.source.display().to_string(),
            sha256: self.sha256.clone(),
            base: base.tag.clone(),
            base_sha256: base.sha256.clone(),
            run,
            electron_lifetime_us: self.lifetime_us(run)?,
            spe_area_adc: self.spe_area_adc(run),
            dead_channels: self.gains.dead_channels.clone(),
            noisy_channels: self.gains.noisy_channels.clone(),
            noisy_rate_hz: self.gains.noisy_rate_hz,
            dark_rate_hz: base.sim.dark_rate_hz,
            gas_gap_centre_mm: gas_gap.gas_gap_mm(0.0, 0.0),
            se_gain_centre_phd: gas_gap.se_gain_phd(0.0, 0.0) * light.s2_light_collection(0.0, 0.0),
            el_width_centre_ns: gas_gap.el_width_ns(0.0, 0.0),
            gas_gap,
            light,
            lrf: self
                .lrf
                .as_ref()
                .map(|l| l.resolve(base.detector.pmts.n_top)),
        })
    }

    /// The conditions the simulator runs with for `run`: the base with the
    /// run's lifetime, gains and light response, plus the run's effective truth.
    ///
    /// # Errors
    /// As [`DetectorTruth::resolve`].
    pub fn simulated_detector(&self, run: u32) -> Result<SimulatedDetector, TruthError> {
        let truth = self.resolve(run)?;
        let mut conditions = self.base.clone();
        conditions.detector.params.tpc.electron_lifetime_us = truth.electron_lifetime_us;
        conditions
            .detector
            .params
            .pmts
            .spe_area_adc
            .clone_from(&truth.spe_area_adc);
        if let Some(lrf) = &truth.lrf {
            // The model tabulates the response when it is built.
            let mut params = conditions.detector.params.clone();
            params.calibration.lrf = Some(lrf.clone());
            conditions.detector =
                tpcflow_reco::DetectorModel::new(conditions.detector.tag.clone(), params)
                    .map_err(|e| invalid(&self.source, "lrf", f64::NAN, &e.to_string()))?;
        }
        Ok(SimulatedDetector { conditions, truth })
    }
}

/// What the simulator needs to build the true detector of one run.
#[derive(Debug, Clone)]
pub struct SimulatedDetector {
    /// Base conditions with the run's true lifetime and gains.
    pub conditions: Conditions,
    /// The run's effective truth (dead and noisy channels, gas gap, light).
    pub truth: EffectiveTruth,
}

impl EffectiveTruth {
    /// True when `channel` records nothing.
    pub fn is_dead(&self, channel: usize) -> bool {
        self.dead_channels
            .iter()
            .any(|&c| usize::from(c) == channel)
    }

    /// Mean phd of one extracted electron at (x, y): the SE gain of the local
    /// gas gap times the S2 light collection.
    pub fn se_size_phd(&self, x: f64, y: f64) -> f64 {
        self.gas_gap.se_gain_phd(x, y) * self.light.s2_light_collection(x, y)
    }

    /// The detector the run's S2 patterns were drawn from, as the xy fit and
    /// its Cramer-Rao bound see it: the base conditions with the true light
    /// response (shape and per-PMT efficiencies) and the dead channels left
    /// out. `validate` computes the bound of the true detector with it.
    ///
    /// # Errors
    /// [`TruthError::Base`] when the base conditions cannot be loaded,
    /// [`TruthError::Invalid`] when the model cannot be built from them.
    pub fn true_model(&self) -> Result<tpcflow_reco::DetectorModel, TruthError> {
        let source = PathBuf::from(&self.source);
        let base = Conditions::load(&self.base).map_err(|e| TruthError::Base {
            path: source.clone(),
            source: Box::new(e),
        })?;
        let mut params = base.detector.params.clone();
        if let Some(lrf) = &self.lrf {
            params.calibration.lrf = Some(lrf.clone());
        }
        params
            .calibration
            .dead_channels
            .clone_from(&self.dead_channels);
        params.pmts.spe_area_adc.clone_from(&self.spe_area_adc);
        tpcflow_reco::DetectorModel::new(base.detector.tag.clone(), params)
            .map_err(|e| invalid(&source, "lrf", f64::NAN, &e.to_string()))
    }

    /// Write `{root}/{run:06}/{run:06}.detector-truth.json` atomically; returns its path.
    ///
    /// # Errors
    /// [`TruthError::Io`] naming the file.
    pub fn write_for_run(&self, root: &Path) -> Result<PathBuf, TruthError> {
        let path = path_for_run(root, self.run);
        let io = |source| TruthError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|source| TruthError::Json {
            path: path.clone(),
            source,
        })?;
        crate::atomic_file::write(&path, text.as_bytes())
            .map_err(|e| io(std::io::Error::new(e.source.kind(), e.to_string())))?;
        Ok(path)
    }
}

/// Where the truth of `run` is written under a site root.
pub fn path_for_run(root: &Path, run: u32) -> PathBuf {
    root.join(format!("{run:06}"))
        .join(format!("{run:06}.detector-truth.json"))
}

/// Read the truth of `run` written beside the data under `root`.
///
/// # Errors
/// [`TruthError::Io`] when missing or unreadable, [`TruthError::Json`] when malformed.
pub fn load_for_run(root: &Path, run: u32) -> Result<EffectiveTruth, TruthError> {
    load_path(&path_for_run(root, run))
}

/// Read a run's truth (`*.detector-truth.json`) from `path`.
///
/// # Errors
/// [`TruthError::Io`] when missing or unreadable, [`TruthError::Json`] when malformed.
pub fn load_path(path: &Path) -> Result<EffectiveTruth, TruthError> {
    let text = std::fs::read_to_string(path).map_err(|source| TruthError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| TruthError::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
