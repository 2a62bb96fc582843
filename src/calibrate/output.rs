//! The calibration's conditions file: the base conditions' content with the
//! measured values replaced, the `[detector.calibration]` table added, a new
//! tag and a `[provenance]` table (runs, files, event counts, software
//! version, each quantity's uncertainty, the liquid-level plane and the S2
//! width at the gate, the Kr83m energy peak and its uniformity with the base
//! and the measured corrections, the event and single-electron rates). It is parsed back with the
//! project's loader before it is written, so a file under its final name
//! always loads with `tpcflow reco --conditions FILE`.

use std::path::Path;

use toml::{Table, Value};
use tpcflow_reco::detector::Calibration;

use super::{write_atomic, CalibrateError, Options, Products};
use crate::conditions::{text_of, Conditions};

fn table<'a>(doc: &'a mut Table, path: &[&str]) -> &'a mut Table {
    let mut t = doc;
    for key in path {
        t = t
            .entry(key.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("conditions tables are tables");
    }
    t
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// The new conditions' text.
///
/// # Errors
/// [`CalibrateError::Conditions`] when the base is unreadable or the result does not load.
pub fn conditions_text(opts: &Options, p: &Products) -> Result<String, CalibrateError> {
    let base_text = text_of(&opts.base_conditions)?;
    let mut doc: Table = base_text
        .parse()
        .map_err(|e: toml::de::Error| CalibrateError::Fit {
            product: "conditions output",
            why: format!("base conditions {}: {e}", opts.base_conditions),
        })?;
    doc.insert("tag".into(), Value::String(opts.tag.clone()));
    doc.insert(
        "description".into(),
        Value::String(format!(
            "measured by tpcflow calibrate from runs {:?} on top of {}",
            opts.runs, p.base.tag
        )),
    );
    table(&mut doc, &["detector", "tpc"]).insert(
        "electron_lifetime_us".into(),
        Value::Float(round(p.lifetime.lifetime_us, 1)),
    );
    let light = table(&mut doc, &["detector", "light"]);
    light.insert("se_gain_phd".into(), Value::Float(round(p.se.gain_phd, 3)));
    light.insert(
        "energy_scale".into(),
        Value::Float(round(p.energy_scale.factor, 5)),
    );
    light.insert(
        "se_resolution".into(),
        Value::Float(round(p.se.resolution, 4)),
    );
    light.insert(
        "s2_top_fraction".into(),
        Value::Float(round(p.s2_top.s2_top_fraction, 5)),
    );
    table(&mut doc, &["detector", "pmts"]).insert(
        "spe_area_adc".into(),
        Value::Array(
            p.gains
                .channels
                .iter()
                .map(|c| Value::Float(round(c.gain_adc, 3)))
                .collect(),
        ),
    );
    let calibration = Calibration {
        dead_channels: p.gains.dead.clone(),
        noisy_channels: p.gains.noisy.clone(),
        noisy_rate_hz: super::pmt_gains::noisy_rates_hz(
            &p.gains,
            &p.inputs.spe_pairs,
            p.base.sim.dark_rate_hz,
        )
        .into_iter()
        .map(|r| round(r, 1))
        .collect(),
        kr_s2_xy: Some(p.maps.s2_xy.clone()),
        kr_s1_xyz: Some(p.maps.s1_xyz.clone()),
        gas_gap_mm: p.liquid.as_ref().ok().map(|l| l.map.clone()),
        lrf: p.lrf.as_ref().ok().map(|l| l.response.clone()),
    };
    let cal = Value::try_from(&calibration).map_err(|e| CalibrateError::Fit {
        product: "conditions output",
        why: e.to_string(),
    })?;
    table(&mut doc, &["detector"]).insert("calibration".into(), cal);
    doc.insert("provenance".into(), Value::Table(provenance(opts, p)));
    let text = format!(
        "# Detector conditions {}: written by tpcflow calibrate {} (see [provenance]).\n{}",
        opts.tag,
        crate::SOFTWARE_VERSION,
        toml::to_string(&doc).map_err(|e| CalibrateError::Fit {
            product: "conditions output",
            why: e.to_string(),
        })?
    );
    Conditions::parse(&text, &opts.out.join("conditions.toml"))?;
    Ok(text)
}

fn provenance(opts: &Options, p: &Products) -> Table {
    let mut t = Table::new();
    let i = |v: usize| Value::Integer(v as i64);
    t.insert(
        "software_version".into(),
        Value::String(crate::SOFTWARE_VERSION.into()),
    );
    t.insert("base_conditions".into(), Value::String(p.base.tag.clone()));
    t.insert(
        "base_conditions_sha256".into(),
        Value::String(p.base.sha256.clone()),
    );
    t.insert(
        "runs".into(),
        Value::Array(
            opts.runs
                .iter()
                .map(|r| Value::Integer(i64::from(*r)))
                .collect(),
        ),
    );
    t.insert(
        "rq_files".into(),
        Value::Array(
            p.inputs
                .files
                .iter()
                .map(|f| Value::String(f.file_name().unwrap_or_default().to_string_lossy().into()))
                .collect(),
        ),
    );
    t.insert("events".into(), Value::Integer(p.inputs.n_events as i64));
    t.insert("kr83m_single_scatters".into(), i(p.inputs.kr.len()));
    t.insert("lone_se_pulses".into(), i(p.se.n_pulses));
    t.insert("lone_spe_pulses".into(), i(p.inputs.spe_channel.len()));
    t.insert(
        "spe_threshold_area_loss".into(),
        Value::Float(p.gains.threshold.area_loss),
    );
    let mut u = Table::new();
    u.insert(
        "inverse_electron_lifetime_per_ms".into(),
        Value::Float(p.lifetime.sigma_inverse_lifetime_per_ms),
    );
    u.insert(
        "electron_lifetime_us".into(),
        Value::Float(
            p.lifetime.lifetime_us * p.lifetime.sigma_inverse_lifetime_per_ms
                / p.lifetime.inverse_lifetime_per_ms,
        ),
    );
    u.insert("se_gain_phd".into(), Value::Float(p.se.sigma_gain_phd));
    u.insert("s2_top_fraction".into(), Value::Float(p.s2_top.sigma));
    u.insert(
        "energy_scale".into(),
        Value::Float(p.energy_scale.sigma_factor),
    );
    u.insert(
        "spe_area_adc".into(),
        Value::Array(
            p.gains
                .channels
                .iter()
                .map(|c| {
                    Value::Float(if c.sigma_gain_adc.is_finite() {
                        round(c.sigma_gain_adc, 4)
                    } else {
                        -1.0
                    })
                })
                .collect(),
        ),
    );
    if let Ok(l) = &p.liquid {
        u.insert("tilt_mrad".into(), Value::Float(l.sigma_tilt_mrad));
        if let Some(s) = l.sigma_s2_width_at_gate_ns {
            u.insert("s2_width_at_gate_ns".into(), Value::Float(s));
        }
    }
    u.insert(
        "kr83m_peak_energy_kev".into(),
        Value::Float(p.kr_peak.sigma_mean),
    );
    u.insert(
        "kr83m_peak_width_kev".into(),
        Value::Float(p.kr_peak.sigma_width),
    );
    for (key, v) in [
        ("event_rate_hz", p.rates.sigma_event_rate_hz),
        ("se_rate_hz", p.rates.sigma_se_rate_hz),
    ] {
        if let Some(v) = v {
            u.insert(key.into(), Value::Float(v));
        }
    }
    u.insert(
        "kr_s2_xy_residual_sd".into(),
        Value::Float(p.maps.residual_sd.0),
    );
    u.insert(
        "kr_s1_xyz_residual_sd".into(),
        Value::Float(p.maps.residual_sd.1),
    );
    t.insert("uncertainty".into(), Value::Table(u));
    let mut k = Table::new();
    k.insert(
        "measured_rms".into(),
        Value::Float(p.uniformity_measured.rms),
    );
    k.insert("base_rms".into(), Value::Float(p.uniformity_base.rms));
    k.insert(
        "statistical_rms".into(),
        Value::Float(p.uniformity_measured.statistical_rms),
    );
    k.insert("cells".into(), i(p.uniformity_measured.cells));
    t.insert("kr83m_uniformity".into(), Value::Table(k));
    let mut e = Table::new();
    e.insert("factor".into(), Value::Float(p.energy_scale.factor));
    e.insert(
        "sigma_factor".into(),
        Value::Float(p.energy_scale.sigma_factor),
    );
    e.insert(
        "kr83m_peak_without_kev".into(),
        Value::Float(p.energy_scale.peak_before_kev),
    );
    e.insert("events".into(), i(p.energy_scale.events));
    t.insert("energy_scale".into(), Value::Table(e));
    let mut peak = Table::new();
    peak.insert("energy_kev".into(), Value::Float(p.kr_peak.mean));
    peak.insert("width_kev".into(), Value::Float(p.kr_peak.width));
    peak.insert("events".into(), i(p.kr_peak.n));
    t.insert("kr83m_peak".into(), Value::Table(peak));
    let mut rates = Table::new();
    for (key, v) in [
        ("event_rate_hz", p.rates.event_rate_hz),
        ("se_rate_hz", p.rates.se_rate_hz),
    ] {
        if let Some(v) = v {
            rates.insert(key.into(), Value::Float(v));
        }
    }
    rates.insert(
        "trigger_span_s".into(),
        Value::Float(p.rates.trigger_span_s),
    );
    t.insert("rates".into(), Value::Table(rates));
    if let Ok(l) = &p.liquid {
        let mut g = Table::new();
        g.insert("tilt_mrad".into(), Value::Float(l.tilt_mrad));
        g.insert(
            "tilt_direction_deg".into(),
            Value::Float(l.tilt_direction_deg),
        );
        g.insert(
            "plane_gap_at_centre_mm".into(),
            Value::Float(l.plane_gap_mm),
        );
        g.insert(
            "s2_width_at_gate_ns".into(),
            Value::Float(l.s2_width_at_gate_ns),
        );
        t.insert("liquid_level".into(), Value::Table(g));
    }
    t
}

/// Write DIR/conditions.toml.
///
/// # Errors
/// [`CalibrateError`] when the text cannot be built or written.
pub fn write_conditions(opts: &Options, p: &Products) -> Result<(), CalibrateError> {
    let text = conditions_text(opts, p)?;
    write_atomic(&Path::new(&opts.out).join("conditions.toml"), &text)
}
