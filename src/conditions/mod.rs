//! Tagged detector conditions (TOML): the detector model shared with the
//! reconstruction, and the simulator's physics parameters.
//!
//! `--conditions v1` finds `conditions/v1.toml` (the built-in copy is compiled
//! into the binary, so a tag works from any directory); `--conditions
//! path/to/file.toml` reads that file. The SHA-256 of the file's bytes is kept
//! so that outputs can record exactly which conditions made them.

pub mod cli;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tpcflow_reco::detector::{DetectorModel, DetectorParams, ModelError};

/// Conditions files compiled into the binary, by tag.
const BUILTIN: &[(&str, &str)] = &[("v1", include_str!("../../conditions/v1.toml"))];

/// Errors loading conditions.
#[derive(Debug, thiserror::Error)]
pub enum ConditionsError {
    /// Neither a known tag nor a readable file.
    #[error(
        "conditions `{spec}`: no such tag (known: {known}) and cannot read it as a file: {source}"
    )]
    NotFound {
        /// What the user gave.
        spec: String,
        /// Tags compiled in.
        known: String,
        /// Why the file could not be read.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown/missing fields.
    #[error("conditions file {path}: {source}")]
    Parse {
        /// File (or `builtin:TAG`).
        path: PathBuf,
        /// Parser message with line and column.
        source: toml::de::Error,
    },
    /// A value is outside its physical range.
    #[error("conditions file {path}: {source}")]
    Invalid {
        /// File (or `builtin:TAG`).
        path: PathBuf,
        /// Which field, and why.
        source: ModelError,
    },
}

/// (energy keV, photons/keV, electrons/keV) rows.
pub type YieldTable = Vec<[f64; 3]>;

/// Simulator physics parameters (the `[simulation]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimParams {
    /// ER mean yields (not read by the simulator: it draws NEST's means, `sim::quanta`).
    pub er_yields: YieldTable,
    /// NR mean yields (not read by the simulator: it draws NEST's means, `sim::quanta`).
    pub nr_yields: YieldTable,
    /// Nex/Ni for ER.
    pub er_exciton_ratio: f64,
    /// Nex/Ni for NR.
    pub nr_exciton_ratio: f64,
    /// Recombination fluctuation (rms of r) for ER.
    pub er_recombination_sigma: f64,
    /// Recombination fluctuation (rms of r) for NR.
    pub nr_recombination_sigma: f64,
    /// Fano-like factor of total quanta, ER.
    pub er_fano: f64,
    /// Fano-like factor of total quanta, NR.
    pub nr_fano: f64,
    /// Singlet decay time [ns].
    pub singlet_ns: f64,
    /// Triplet decay time [ns].
    pub triplet_ns: f64,
    /// Singlet fraction for ER.
    pub er_singlet_fraction: f64,
    /// Singlet fraction for NR.
    pub nr_singlet_fraction: f64,
    /// Photon transit-time spread [ns].
    pub transit_sigma_ns: f64,
    /// Electroluminescence duration [ns].
    pub el_width_ns: f64,
    /// Longitudinal diffusion constant [mm^2/us].
    pub diffusion_long_mm2_per_us: f64,
    /// Transverse diffusion constant [mm^2/us].
    pub diffusion_trans_mm2_per_us: f64,
    /// Dark count rate per PMT [Hz].
    pub dark_rate_hz: f64,
    /// Rate of random single electrons [Hz].
    pub single_electron_rate_hz: f64,
    /// Fraction of events with 2-3 vertices.
    pub multiple_scatter_fraction: f64,
    /// Mean distance between vertices of a multiple scatter [mm].
    pub scatter_length_mm: f64,
    /// DAQ event rate [Hz].
    pub event_rate_hz: f64,
    /// Per-channel baseline spread [ADC counts].
    pub baseline_spread_adc: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionsFile {
    tag: String,
    #[serde(default)]
    description: String,
    detector: DetectorParams,
    simulation: SimParams,
    /// Where measured values came from (written by `tpcflow calibrate`).
    #[serde(default)]
    provenance: Option<toml::Table>,
}

/// Loaded, validated conditions.
#[derive(Debug, Clone)]
pub struct Conditions {
    /// Tag, e.g. `v1`.
    pub tag: String,
    /// Free text.
    pub description: String,
    /// Detector model (shared with reco).
    pub detector: DetectorModel,
    /// Simulator physics.
    pub sim: SimParams,
    /// SHA-256 of the file's bytes (hex).
    pub sha256: String,
    /// Where it came from (`builtin:v1` or a path).
    pub source: PathBuf,
    /// Runs, counts and uncertainties of measured values (conditions written
    /// by `tpcflow calibrate`; None for nominal conditions).
    pub provenance: Option<toml::Table>,
}

impl Conditions {
    /// Load by tag (built-in) or by path.
    ///
    /// # Errors
    /// [`ConditionsError`] naming the file and the field.
    pub fn load(spec: &str) -> Result<Self, ConditionsError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(tag, _)| *tag == spec) {
            return Self::parse(text, &PathBuf::from(format!("builtin:{spec}")));
        }
        let path = Path::new(spec);
        let text = std::fs::read_to_string(path).map_err(|source| ConditionsError::NotFound {
            spec: spec.to_string(),
            known: BUILTIN
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse conditions from TOML text.
    ///
    /// # Errors
    /// [`ConditionsError::Parse`] or [`ConditionsError::Invalid`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConditionsError> {
        let file: ConditionsFile =
            toml::from_str(text).map_err(|source| ConditionsError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let detector = DetectorModel::new(file.tag.clone(), file.detector).map_err(|source| {
            ConditionsError::Invalid {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let sha256 = hex(&Sha256::digest(text.as_bytes()));
        Ok(Self {
            tag: file.tag,
            description: file.description,
            detector,
            sim: file.simulation,
            sha256,
            source: path.to_path_buf(),
            provenance: file.provenance,
        })
    }
}

/// The text of a built-in conditions tag.
pub fn builtin_text(tag: &str) -> Option<&'static str> {
    BUILTIN
        .iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, text)| *text)
}

/// The text of conditions given as a tag or a file path.
///
/// # Errors
/// [`ConditionsError::NotFound`] when it is neither.
pub fn text_of(spec: &str) -> Result<String, ConditionsError> {
    if let Some(text) = builtin_text(spec) {
        return Ok(text.to_string());
    }
    std::fs::read_to_string(spec).map_err(|source| ConditionsError::NotFound {
        spec: spec.to_string(),
        known: BUILTIN
            .iter()
            .map(|(t, _)| *t)
            .collect::<Vec<_>>()
            .join(", "),
        source,
    })
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_v1_loads_with_lz_like_values() {
        let c = Conditions::load("v1").unwrap();
        assert_eq!(c.tag, "v1");
        assert_eq!(c.detector.n_channels(), 494);
        assert!((c.detector.g2() - 0.726 * 47.0).abs() < 1e-12);
        assert_eq!(c.sha256.len(), 64);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let text = include_str!("../../conditions/v1.toml").replace("g1 = 0.112", "g1 = 2.0");
        let e = Conditions::parse(&text, Path::new("bad.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("bad.toml") && msg.contains("light.g1"),
            "{msg}"
        );

        let text =
            include_str!("../../conditions/v1.toml").replace("g1 = 0.112", "g1 = 0.112\ng3 = 1");
        let msg = Conditions::parse(&text, Path::new("bad.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("g3"), "{msg}");

        let msg = Conditions::load("no-such-tag").unwrap_err().to_string();
        assert!(msg.contains("no-such-tag") && msg.contains("v1"), "{msg}");
    }
}
