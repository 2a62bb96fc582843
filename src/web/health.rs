//! Detector health across runs, from the conditions tags the calibration
//! runs made (`/api/health`, drawn by `/health`).
//!
//! ```text
//! trends   one point per tag with a calibration run, by run: electron
//!          lifetime, single-electron gain, Kr83m energy peak and width,
//!          event and single-electron rates, S2 width at the gate, liquid-
//!          surface tilt (each with its uncertainty), dead and noisy channel
//!          counts, its state, the runs whose outputs used it, and the prompt
//!          latency of its products (newest file of its run written at SURF
//!          -> tag published)
//! maps     of one calibration (?tag=, default the newest): the gas-gap map
//!          with the fitted tilt, the per-channel gains on the PMT layout
//!          with their uncertainties, dead and noisy channels, and the gains
//!          of the conditions it was measured on (when in the catalog)
//! in force the tag valid for the newest run
//! ```
//!
//! Every value is read from the tag's TOML (`[detector]`) and its
//! `[provenance]` as `tpcflow calibrate` writes them; a value a tag does not
//! carry is `null` (the page shows "n/a"), never 0.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use tpcflow_reco::detector::XyMap;

use super::params::Params;
use super::WebError;
use crate::catalog::{Catalog, ConditionsState, ConditionsTagRow};
use crate::conditions::Conditions;

/// Parameters of `/api/health` and `/health`.
pub(crate) const HEALTH_PARAMS: &[&str] = &["tag"];

/// A measured value and its uncertainty; either may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Measured {
    /// Value.
    pub value: Option<f64>,
    /// Its uncertainty (one standard deviation).
    pub sigma: Option<f64>,
}

impl Measured {
    fn new(value: Option<f64>, sigma: Option<f64>) -> Self {
        let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
        Self {
            value: finite(value),
            sigma: finite(sigma).filter(|s| *s >= 0.0),
        }
    }
}

/// One calibration's products.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthPoint {
    /// Conditions tag.
    pub tag: String,
    /// Its state.
    pub state: ConditionsState,
    /// Calibration run it was made from.
    pub source_run: u32,
    /// First run it is valid for, when published.
    pub first_run: Option<u32>,
    /// When it was published [s since the Unix epoch].
    pub published_at: Option<f64>,
    /// Electron lifetime [us].
    pub electron_lifetime_us: Measured,
    /// Single-electron gain [phd].
    pub se_gain_phd: Measured,
    /// Kr83m energy peak position (measured corrections) [keV].
    pub kr83m_peak_kev: Measured,
    /// Kr83m energy peak width (Gaussian sigma) [keV].
    pub kr83m_width_kev: Measured,
    /// Trigger rate of the calibration run [Hz].
    pub event_rate_hz: Measured,
    /// Lone single-electron rate [Hz].
    pub se_rate_hz: Measured,
    /// 50 % width of an S2 from the gate [ns].
    pub s2_width_at_gate_ns: Measured,
    /// Liquid-surface tilt [mrad].
    pub tilt_mrad: Measured,
    /// Direction in which the gas gap grows [degrees from +x].
    pub tilt_direction_deg: Option<f64>,
    /// Dead channels (None: the tag has no channel calibration).
    pub dead_channels: Option<usize>,
    /// Noisy channels.
    pub noisy_channels: Option<usize>,
    /// Kr83m single scatters the products came from.
    pub kr83m_single_scatters: Option<u64>,
    /// Runs whose catalogued outputs were made with this tag.
    pub used_by_runs: Vec<u32>,
    /// Newest file of the calibration run written at SURF -> tag published [s].
    pub products_latency_s: Option<f64>,
}

/// The PMT layout with one calibration's gains.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GainMap {
    /// Top array channels (0..n_top).
    pub n_top: usize,
    /// x of each channel [mm].
    pub x: Vec<f64>,
    /// y of each channel [mm].
    pub y: Vec<f64>,
    /// PMT pitch [mm].
    pub pitch_mm: f64,
    /// TPC radius [mm].
    pub radius_mm: f64,
    /// Gain of each channel [ADC counts x samples per photoelectron].
    pub gain_adc: Vec<f64>,
    /// Its uncertainty (None where not measured, e.g. a dead channel).
    pub gain_sigma_adc: Vec<Option<f64>>,
    /// Conditions the calibration was measured on (its reconstruction's).
    pub base_tag: Option<String>,
    /// Their gains, when that tag is in the catalog.
    pub base_gain_adc: Option<Vec<f64>>,
    /// Dead channels.
    pub dead: Vec<u16>,
    /// Noisy channels.
    pub noisy: Vec<u16>,
}

/// The maps of one calibration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthMaps {
    /// Conditions tag.
    pub tag: String,
    /// Its state.
    pub state: ConditionsState,
    /// Calibration run.
    pub source_run: u32,
    /// Gas gap (liquid surface to anode) on an xy grid [mm].
    pub gas_gap_mm: Option<XyMap>,
    /// Fitted tilt [mrad].
    pub tilt_mrad: Measured,
    /// Direction in which the gas gap grows [degrees from +x].
    pub tilt_direction_deg: Option<f64>,
    /// Gas gap of the fitted surface at the centre [mm].
    pub plane_gap_mm: Option<f64>,
    /// Per-channel gains on the PMT layout.
    pub gains: GainMap,
}

/// `/api/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthPage {
    /// Newest run in the catalog.
    pub newest_run: Option<u32>,
    /// Tag in force for it.
    pub tag_in_force: Option<String>,
    /// First run of that tag's interval of validity.
    pub in_force_from_run: Option<u32>,
    /// One point per calibration, by run.
    pub trends: Vec<HealthPoint>,
    /// Maps of the calibration asked for (default: the newest).
    pub maps: Option<HealthMaps>,
}

fn parse_tag(catalog: &Catalog, tag: &str) -> Result<(Conditions, toml::Table), WebError> {
    let text = catalog.conditions_content(tag)?;
    let bad = |e: String| WebError::Internal(format!("conditions {tag}: {e}"));
    let c = Conditions::parse(&text, Path::new(&format!("catalog:{tag}")))
        .map_err(|e| bad(e.to_string()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    Ok((c, doc))
}

/// True when the TOML has `[detector.calibration]` with `key`.
fn has_calibration_key(doc: &toml::Table, key: &str) -> bool {
    doc.get("detector")
        .and_then(|d| d.get("calibration"))
        .and_then(|c| c.get(key))
        .is_some()
}

fn point(
    catalog: &Catalog,
    t: &ConditionsTagRow,
    source_run: u32,
) -> Result<HealthPoint, WebError> {
    let (c, doc) = parse_tag(catalog, &t.tag)?;
    let p = &c.detector.params;
    let f = |path: &str| t.provenance.pointer(path).and_then(Value::as_f64);
    let count = |key: &str, n: usize| has_calibration_key(&doc, key).then_some(n);
    let latency = match t.published_at {
        Some(at) => catalog.run_last_file_at(source_run)?.map(|w| at - w),
        None => None,
    };
    Ok(HealthPoint {
        tag: t.tag.clone(),
        state: t.state,
        source_run,
        first_run: t.first_run,
        published_at: t.published_at,
        electron_lifetime_us: Measured::new(
            Some(p.tpc.electron_lifetime_us),
            f("/uncertainty/electron_lifetime_us"),
        ),
        se_gain_phd: Measured::new(Some(p.light.se_gain_phd), f("/uncertainty/se_gain_phd")),
        kr83m_peak_kev: Measured::new(
            f("/kr83m_peak/energy_kev"),
            f("/uncertainty/kr83m_peak_energy_kev"),
        ),
        kr83m_width_kev: Measured::new(
            f("/kr83m_peak/width_kev"),
            f("/uncertainty/kr83m_peak_width_kev"),
        ),
        event_rate_hz: Measured::new(f("/rates/event_rate_hz"), f("/uncertainty/event_rate_hz")),
        se_rate_hz: Measured::new(f("/rates/se_rate_hz"), f("/uncertainty/se_rate_hz")),
        s2_width_at_gate_ns: Measured::new(
            f("/liquid_level/s2_width_at_gate_ns"),
            f("/uncertainty/s2_width_at_gate_ns"),
        ),
        tilt_mrad: Measured::new(f("/liquid_level/tilt_mrad"), f("/uncertainty/tilt_mrad")),
        tilt_direction_deg: f("/liquid_level/tilt_direction_deg"),
        dead_channels: count("dead_channels", p.calibration.dead_channels.len()),
        noisy_channels: count("noisy_channels", p.calibration.noisy_channels.len()),
        kr83m_single_scatters: t
            .provenance
            .get("kr83m_single_scatters")
            .and_then(Value::as_u64),
        used_by_runs: catalog.runs_using_conditions(&t.tag)?,
        products_latency_s: latency,
    })
}

fn maps(catalog: &Catalog, t: &ConditionsTagRow, source_run: u32) -> Result<HealthMaps, WebError> {
    let (c, _) = parse_tag(catalog, &t.tag)?;
    let det = &c.detector;
    let p = &det.params;
    let f = |path: &str| t.provenance.pointer(path).and_then(Value::as_f64);
    let sigmas = t
        .provenance
        .pointer("/uncertainty/spe_area_adc")
        .and_then(Value::as_array);
    let gain_sigma_adc = (0..p.pmts.spe_area_adc.len())
        .map(|k| {
            sigmas
                .and_then(|s| s.get(k))
                .and_then(Value::as_f64)
                .filter(|s| s.is_finite() && *s >= 0.0)
        })
        .collect();
    let base_tag = t
        .provenance
        .get("base_conditions")
        .and_then(Value::as_str)
        .map(str::to_string);
    let base_gain_adc = match &base_tag {
        Some(b) if catalog.conditions_tag(b)?.is_some() => {
            Some(parse_tag(catalog, b)?.0.detector.params.pmts.spe_area_adc)
        }
        _ => None,
    };
    Ok(HealthMaps {
        tag: t.tag.clone(),
        state: t.state,
        source_run,
        gas_gap_mm: p.calibration.gas_gap_mm.clone(),
        tilt_mrad: Measured::new(f("/liquid_level/tilt_mrad"), f("/uncertainty/tilt_mrad")),
        tilt_direction_deg: f("/liquid_level/tilt_direction_deg"),
        plane_gap_mm: f("/liquid_level/plane_gap_at_centre_mm"),
        gains: GainMap {
            n_top: det.pmts.n_top,
            x: det.pmts.x.clone(),
            y: det.pmts.y.clone(),
            pitch_mm: p.pmts.pitch_mm,
            radius_mm: p.tpc.radius_mm,
            gain_adc: p.pmts.spe_area_adc.clone(),
            gain_sigma_adc,
            base_tag,
            base_gain_adc,
            dead: p.calibration.dead_channels.clone(),
            noisy: p.calibration.noisy_channels.clone(),
        },
    })
}

/// The health page's data; `?tag=` picks the calibration whose maps are shown.
///
/// # Errors
/// [`WebError::Catalog`]; [`WebError::UnknownConditions`] for a `tag` that
/// is not a calibration tag of the catalog; a tag whose TOML does not load
/// is [`WebError::Internal`] naming it.
pub fn detector_health(catalog: &Catalog, params: &Params) -> Result<HealthPage, WebError> {
    let asked = params.name("tag", "a conditions tag")?;
    let newest_run = catalog.runs()?.iter().map(|r| r.number).max();
    let in_force = match newest_run {
        Some(r) => catalog.conditions_for_run(r)?,
        None => None,
    };
    let mut tags: Vec<(ConditionsTagRow, u32)> = catalog
        .conditions_tags()?
        .into_iter()
        .filter_map(|t| t.source_run.map(|r| (t, r)))
        .collect();
    tags.sort_by(|a, b| (a.1, &a.0.tag).cmp(&(b.1, &b.0.tag)));
    let trends = tags
        .iter()
        .map(|(t, run)| point(catalog, t, *run))
        .collect::<Result<Vec<_>, _>>()?;
    let shown = match asked {
        Some(tag) => Some(tags.iter().find(|(t, _)| t.tag == tag).ok_or_else(|| {
            WebError::UnknownConditions {
                tag: tag.to_string(),
            }
        })?),
        None => tags.last(),
    };
    let maps = shown.map(|(t, run)| maps(catalog, t, *run)).transpose()?;
    Ok(HealthPage {
        newest_run,
        tag_in_force: in_force.as_ref().map(|t| t.tag.clone()),
        in_force_from_run: in_force.and_then(|t| t.first_run),
        trends,
        maps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{NewConditions, RunInfo, RunType};

    fn no_params() -> Params {
        Params::parse(None, HEALTH_PARAMS).unwrap()
    }

    #[test]
    fn health_points_are_the_catalogued_calibration_products() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::init(&dir.path().join("c.sqlite")).unwrap();
        let v1 = include_str!("../../conditions/v1.toml");
        let cal = v1.replace("tag = \"v1\"", "tag = \"cal-000004\"").replace(
            "electron_lifetime_us = 9000.0",
            "electron_lifetime_us = 3239.0",
        ) + "\n[provenance]\nruns = [4]\nkr83m_single_scatters = 1312\nbase_conditions = \"v1\"\n\
               [provenance.uncertainty]\nelectron_lifetime_us = 310.5\nse_gain_phd = 0.4\n\
               [provenance.kr83m_peak]\nenergy_kev = 41.2\nwidth_kev = 2.5\n";
        for (tag, text, run) in [("v1", v1.to_string(), None), ("cal-000004", cal, Some(4))] {
            c.add_conditions(&NewConditions {
                tag,
                content: &text,
                source_run: run,
                by: "t",
                reason: "t",
            })
            .unwrap();
        }
        c.publish_conditions("v1", 0, "t", "t").unwrap();
        c.upsert_run(
            &RunInfo {
                number: 5,
                run_type: RunType::Science,
                start_time: None,
                conditions: None,
            },
            false,
        )
        .unwrap();
        let page = detector_health(&c, &no_params()).unwrap();
        assert_eq!(page.newest_run, Some(5));
        assert_eq!(page.tag_in_force.as_deref(), Some("v1"));
        assert_eq!(page.in_force_from_run, Some(0));
        assert_eq!(page.trends.len(), 1, "nominal tags are no calibration");
        let p = &page.trends[0];
        assert_eq!(
            (p.tag.as_str(), p.state, p.source_run),
            ("cal-000004", ConditionsState::Candidate, 4)
        );
        assert_eq!(p.electron_lifetime_us.value, Some(3239.0));
        assert_eq!(p.electron_lifetime_us.sigma, Some(310.5));
        assert_eq!(p.se_gain_phd.sigma, Some(0.4));
        assert_eq!(p.kr83m_peak_kev, Measured::new(Some(41.2), None));
        assert_eq!(p.kr83m_width_kev.value, Some(2.5));
        assert_eq!(p.kr83m_single_scatters, Some(1312));
        // Not carried: null, never 0.
        assert_eq!(p.tilt_mrad, Measured::default());
        assert_eq!(p.event_rate_hz, Measured::default());
        assert_eq!((p.dead_channels, p.noisy_channels), (None, None));
        assert_eq!((p.products_latency_s, p.used_by_runs.len()), (None, 0));
        let m = page.maps.as_ref().expect("maps of the newest calibration");
        assert_eq!(m.tag, "cal-000004");
        assert_eq!(m.gas_gap_mm, None);
        assert_eq!(m.gains.gain_adc.len(), 494);
        assert_eq!(m.gains.base_gain_adc.as_ref().map(Vec::len), Some(494));
        assert!(m.gains.gain_sigma_adc.iter().all(Option::is_none));
        c.publish_conditions("cal-000004", 4, "t", "t").unwrap();
        let page = detector_health(&c, &no_params()).unwrap();
        assert_eq!(page.tag_in_force.as_deref(), Some("cal-000004"));
        assert!(page.trends[0].published_at.is_some());
        let other = Params::parse(Some("tag=v2"), HEALTH_PARAMS).unwrap();
        assert!(matches!(
            detector_health(&c, &other),
            Err(WebError::UnknownConditions { .. })
        ));
    }
}
