//! Detector health across runs, from the conditions tags the calibration
//! runs made (`/api/health`): for each tag with a calibration run, the
//! electron lifetime and single-electron gain with their uncertainties, the
//! dead- and noisy-channel counts, the liquid-surface tilt, the Kr83m
//! statistics, and its state; and the tag in force for the newest run.
//!
//! Every value is read from the tag's TOML (`[detector]`) and its
//! `[provenance]` as `tpcflow calibrate` writes them; a value a tag does not
//! carry is `null`.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::WebError;
use crate::catalog::{Catalog, ConditionsState};
use crate::conditions::Conditions;

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
    /// Electron lifetime [us].
    pub electron_lifetime_us: f64,
    /// Its uncertainty [us].
    pub electron_lifetime_sigma_us: Option<f64>,
    /// Single-electron gain [phd].
    pub se_gain_phd: f64,
    /// Its uncertainty [phd].
    pub se_gain_sigma_phd: Option<f64>,
    /// Dead channels.
    pub dead_channels: usize,
    /// Noisy channels.
    pub noisy_channels: usize,
    /// Liquid-surface tilt [mrad].
    pub tilt_mrad: Option<f64>,
    /// Kr83m single scatters the products came from.
    pub kr83m_single_scatters: Option<u64>,
}

/// `/api/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthPage {
    /// Newest run in the catalog.
    pub newest_run: Option<u32>,
    /// Tag in force for it.
    pub tag_in_force: Option<String>,
    /// One point per calibration, by run.
    pub trends: Vec<HealthPoint>,
}

/// The health page's data.
///
/// # Errors
/// [`WebError::Catalog`]; a tag whose TOML does not load is [`WebError::Internal`]
/// naming it.
pub fn detector_health(catalog: &Catalog) -> Result<HealthPage, WebError> {
    let newest_run = catalog.runs()?.iter().map(|r| r.number).max();
    let tag_in_force = match newest_run {
        Some(r) => catalog.conditions_for_run(r)?.map(|t| t.tag),
        None => None,
    };
    let mut trends = Vec::new();
    for t in catalog.conditions_tags()? {
        let Some(source_run) = t.source_run else {
            continue;
        };
        let text = catalog.conditions_content(&t.tag)?;
        let c = Conditions::parse(&text, Path::new(&format!("catalog:{}", t.tag)))
            .map_err(|e| WebError::Internal(format!("conditions {}: {e}", t.tag)))?;
        let p = &c.detector.params;
        let f = |path: &str| t.provenance.pointer(path).and_then(Value::as_f64);
        trends.push(HealthPoint {
            tag: t.tag.clone(),
            state: t.state,
            source_run,
            first_run: t.first_run,
            electron_lifetime_us: p.tpc.electron_lifetime_us,
            electron_lifetime_sigma_us: f("/uncertainty/electron_lifetime_us"),
            se_gain_phd: p.light.se_gain_phd,
            se_gain_sigma_phd: f("/uncertainty/se_gain_phd"),
            dead_channels: p.calibration.dead_channels.len(),
            noisy_channels: p.calibration.noisy_channels.len(),
            tilt_mrad: f("/liquid_level/tilt_mrad"),
            kr83m_single_scatters: t
                .provenance
                .get("kr83m_single_scatters")
                .and_then(Value::as_u64),
        });
    }
    trends.sort_by_key(|p| p.source_run);
    Ok(HealthPage {
        newest_run,
        tag_in_force,
        trends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{NewConditions, RunInfo, RunType};

    #[test]
    fn health_points_are_the_catalogued_calibration_products() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::init(&dir.path().join("c.sqlite")).unwrap();
        let v1 = include_str!("../../conditions/v1.toml");
        let cal = v1.replace("tag = \"v1\"", "tag = \"cal-000004\"").replace(
            "electron_lifetime_us = 9000.0",
            "electron_lifetime_us = 3239.0",
        ) + "\n[provenance]\nruns = [4]\nkr83m_single_scatters = 1312\n\
               [provenance.uncertainty]\nelectron_lifetime_us = 310.5\nse_gain_phd = 0.4\n";
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
        let page = detector_health(&c).unwrap();
        assert_eq!(page.newest_run, Some(5));
        assert_eq!(page.tag_in_force.as_deref(), Some("v1"));
        assert_eq!(page.trends.len(), 1, "nominal tags are no calibration");
        let p = &page.trends[0];
        assert_eq!(
            (p.tag.as_str(), p.state, p.source_run),
            ("cal-000004", ConditionsState::Candidate, 4)
        );
        assert_eq!(p.electron_lifetime_us, 3239.0);
        assert_eq!(p.electron_lifetime_sigma_us, Some(310.5));
        assert_eq!(p.se_gain_sigma_phd, Some(0.4));
        assert_eq!(p.kr83m_single_scatters, Some(1312));
        assert_eq!(p.tilt_mrad, None);
        c.publish_conditions("cal-000004", 4, "t", "t").unwrap();
        assert_eq!(
            detector_health(&c).unwrap().tag_in_force.as_deref(),
            Some("cal-000004")
        );
    }
}
