//! `tpcflow calibrate`: detector-health products from reconstructed Kr83m
//! calibration runs, written as a conditions file the reconstruction can load
//! (`tpcflow reco --conditions DIR/conditions.toml`) and a report for people.
//!
//! One module per product, each with its estimator in its docs:
//! [`lifetime`] (electron lifetime), [`se_gain`] (single-electron gain and
//! width), [`pmt_gains`] (per-channel gains, dead and noisy channels),
//! [`liquid_level`] (gas gap vs xy, plane tilt), [`kr_maps`] (S2 vs xy, S1 vs
//! xyz and the energy-peak uniformity), [`energy_scale`] (energy scale from
//! the Kr83m line), the Kr83m energy peak's position and width ([`peak`]), the event
//! and single-electron rates ([`rates`]), [`lrf`] (the top array's light
//! response learned from the Kr83m S2 patterns), [`top_fraction`] (the share
//! of S2 light on the top array, in the measured gains' scale); [`output`] writes the
//! conditions and [`report`] the Markdown report with its SVG figures.
//!
//! ```no_run
//! use std::path::PathBuf;
//! let opts = tpcflow::calibrate::Options {
//!     rq_files: vec![PathBuf::from("rq/000100_00000.abc.rq.h5")],
//!     out: PathBuf::from("calib-100"),
//!     base_conditions: "v1".into(),
//!     tag: "kr-100".into(),
//!     runs: vec![100],
//!     truth: None,
//! };
//! let products = tpcflow::calibrate::run(&opts).unwrap();
//! println!("electron lifetime {:.0} us", products.lifetime.lifetime_us);
//! ```

pub mod cli;
pub mod energy_scale;
pub mod inputs;
pub mod kr_maps;
pub mod lifetime;
pub mod linear_fit;
pub mod liquid_level;
pub mod lrf;
pub mod lrf_fit;
pub mod output;
pub mod peak;
pub mod pmt_gains;
pub mod rates;
pub mod report;
pub mod rq_lookup;
pub mod se_gain;
pub mod top_fraction;
pub mod truth_check;

use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;

use crate::conditions::Conditions;

/// Errors of the calibration.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// An RQ file or dataset cannot be read.
    #[error("{path}: {what}")]
    Rq {
        /// File.
        path: PathBuf,
        /// Dataset and HDF5's message.
        what: String,
    },
    /// An RQ file's index columns point outside its tables.
    #[error("{path}: {what}")]
    Inconsistent {
        /// File.
        path: PathBuf,
        /// What is inconsistent.
        what: String,
    },
    /// Not enough data for a product.
    #[error("{product}: {got} {what}, need at least {need}")]
    TooFew {
        /// Product.
        product: &'static str,
        /// What was counted.
        what: &'static str,
        /// Found.
        got: usize,
        /// Needed.
        need: usize,
    },
    /// A fit failed.
    #[error("{product}: {why}")]
    Fit {
        /// Product.
        product: &'static str,
        /// Why.
        why: String,
    },
    /// The base conditions cannot be loaded or the result is not valid conditions.
    #[error(transparent)]
    Conditions(#[from] crate::conditions::ConditionsError),
    /// Writing the outputs.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A `--runs` value is neither a run nor a range.
    #[error("--runs {value}: {why} (give runs as 17390 or 17390-17392)")]
    Runs {
        /// The value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// The catalog cannot be read, or lacks the campaign.
    #[error("catalog {path}: {why}")]
    Catalog {
        /// Catalog file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A run has no RQ file of the campaign in the catalog.
    #[error("run {run}: no RQ file of campaign `{campaign}` in catalog {catalog} (not reconstructed yet?)")]
    NoRq {
        /// Run.
        run: u32,
        /// Campaign whose outputs were looked for.
        campaign: String,
        /// Catalog file.
        catalog: PathBuf,
    },
    /// Drawing a figure.
    #[error("figure {name}: {why}")]
    Plot {
        /// Figure.
        name: String,
        /// plotters' message.
        why: String,
    },
}

/// What to calibrate.
#[derive(Debug, Clone)]
pub struct Options {
    /// RQ files of the calibration runs.
    pub rq_files: Vec<PathBuf>,
    /// Output directory (conditions.toml, report.md, figures).
    pub out: PathBuf,
    /// Conditions the RQ files were reconstructed with (tag or file): the
    /// base of the new conditions and the scale of the RQ areas.
    pub base_conditions: String,
    /// Tag of the new conditions.
    pub tag: String,
    /// Runs the files belong to (provenance).
    pub runs: Vec<u32>,
    /// For simulated runs: the conditions the simulator ran with, to report
    /// each product against.
    pub truth: Option<String>,
}

/// Every product, with what it was measured from.
#[derive(Debug, Clone)]
pub struct Products {
    /// The conditions the RQ files were made with.
    pub base: Conditions,
    /// Inputs' counts and files.
    pub inputs: inputs::Inputs,
    /// Electron lifetime.
    pub lifetime: lifetime::LifetimeFit,
    /// Single-electron gain.
    pub se: se_gain::SeGain,
    /// PMT gains, dead and noisy channels.
    pub gains: pmt_gains::PmtGains,
    /// Gas gap (None when the S2 widths do not allow it, with the reason).
    pub liquid: Result<liquid_level::LiquidLevel, String>,
    /// Kr83m maps.
    pub maps: kr_maps::KrMaps,
    /// Energy scale from the Kr83m line.
    pub energy_scale: energy_scale::EnergyScale,
    /// Kr83m energy-peak uniformity with the base conditions.
    pub uniformity_base: kr_maps::Uniformity,
    /// The same with the measured products.
    pub uniformity_measured: kr_maps::Uniformity,
    /// Kr83m energy peak with the measured products but without the energy scale [keV].
    pub kr_peak: peak::GaussianCore,
    /// Event and lone single-electron rates.
    pub rates: rates::Rates,
    /// Light response learned from the Kr83m S2 patterns, efficiencies in
    /// the measured gains' scale (Err: why it was not learned).
    pub lrf: Result<lrf::LearnedLrf, String>,
    /// S2 top fraction in the measured gains' scale.
    pub s2_top: top_fraction::TopFraction,
    /// Wall time of the measurement (reading included) [s].
    pub seconds: f64,
}

/// Kr83m energies [keV] of each event with a lifetime, SE gain and maps, as
/// (S1 part, S2 part) with the base g1: `W S1c / g1` and `W S2c / g2`.
fn energy_parts(
    base: &Conditions,
    ev: &[inputs::KrEvent],
    lifetime_us: f64,
    se_gain_phd: f64,
    s1_map: &dyn Fn(&inputs::KrEvent) -> f64,
    s2_map: &dyn Fn(&inputs::KrEvent) -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let l = &base.detector.params.light;
    let g2 = l.extraction_efficiency * se_gain_phd;
    ev.iter()
        .map(|e| {
            let s1c = e.s1_phd / s1_map(e);
            let s2c = e.s2_phd * (e.drift_ns * 1e-3 / lifetime_us).exp() / s2_map(e);
            (l.w_ev * s1c / l.g1 * 1e-3, l.w_ev * s2c / g2 * 1e-3)
        })
        .unzip()
}

/// The products measured from Kr83m single scatters alone.
#[derive(Debug, Clone)]
pub struct KrProducts {
    /// Electron lifetime.
    pub lifetime: lifetime::LifetimeFit,
    /// Gas gap (the reason when the S2 widths do not allow it).
    pub liquid: Result<liquid_level::LiquidLevel, String>,
    /// Kr83m maps.
    pub maps: kr_maps::KrMaps,
    /// Energy scale from the Kr83m line (with the measured lifetime, maps and SE gain).
    pub energy_scale: energy_scale::EnergyScale,
    /// Kr83m energy-peak uniformity with the base conditions.
    pub uniformity_base: kr_maps::Uniformity,
    /// The same with the measured lifetime, maps, `se_gain_phd` and energy scale.
    pub uniformity_measured: kr_maps::Uniformity,
    /// Kr83m energy peak with the measured lifetime, maps and `se_gain_phd`
    /// without the energy scale [keV].
    pub peak: peak::GaussianCore,
}

/// Measure the Kr83m products of `kr` (reconstructed with `base`); the
/// measured energies use `se_gain_phd`.
///
/// # Errors
/// [`CalibrateError`] naming the product.
pub fn measure_kr(
    base: &Conditions,
    kr: &[inputs::KrEvent],
    se_gain_phd: f64,
) -> Result<KrProducts, CalibrateError> {
    let det = &base.detector;
    let p = &det.params;
    let radius = p.tpc.radius_mm;
    let z_range = (p.tpc.cathode_z_mm, p.tpc.gate_z_mm);
    let lifetime = lifetime::fit_lifetime(kr, radius)?;
    let gas_speed = (p.tpc.anode_z_mm - p.tpc.liquid_z_mm) / (base.sim.el_width_ns * 1e-3);
    let liquid =
        liquid_level::fit_liquid_level(kr, radius, p.tpc.drift_velocity_mm_per_us, gas_speed)
            .map_err(|e| e.to_string());
    let maps = kr_maps::fit_kr_maps(kr, lifetime.lifetime_us, radius, z_range)?;
    let nominal_s1 = |e: &inputs::KrEvent| det.s1_light_collection(e.x_mm, e.y_mm, e.z_mm);
    let nominal_s2 = |e: &inputs::KrEvent| det.s2_light_collection(e.x_mm, e.y_mm);
    let mid = 0.5 * (z_range.0 + z_range.1);
    let s1_centre = det.s1_light_collection(0.0, 0.0, mid);
    let s2_centre = det.s2_light_collection(0.0, 0.0);
    let measured_s1 = |e: &inputs::KrEvent| maps.s1_xyz.at(e.x_mm, e.y_mm, e.z_mm) * s1_centre;
    let measured_s2 = |e: &inputs::KrEvent| maps.s2_xy.at(e.x_mm, e.y_mm) * s2_centre;
    let (a, b) = energy_parts(
        base,
        kr,
        p.tpc.electron_lifetime_us,
        p.light.se_gain_phd,
        &nominal_s1,
        &nominal_s2,
    );
    let e_base: Vec<f64> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
    let (a, b) = energy_parts(
        base,
        kr,
        lifetime.lifetime_us,
        se_gain_phd,
        &measured_s1,
        &measured_s2,
    );
    let e_unscaled: Vec<f64> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
    let energy_scale = energy_scale::fit_energy_scale(&e_unscaled)?;
    let e_measured: Vec<f64> = e_unscaled.iter().map(|e| e * energy_scale.factor).collect();
    let uniformity_base = kr_maps::uniformity(kr, &e_base, radius, z_range);
    let uniformity_measured = kr_maps::uniformity(kr, &e_measured, radius, z_range);
    // The peak without the energy scale: with it, it is 41.5 keV by
    // construction; without, it follows the light collection.
    let peak = peak::gaussian_core(&e_unscaled, "Kr83m energy peak", "Kr83m single scatters")?;
    Ok(KrProducts {
        lifetime,
        liquid,
        maps,
        energy_scale,
        uniformity_base,
        uniformity_measured,
        peak,
    })
}

/// Measure every product (no files written).
///
/// # Errors
/// [`CalibrateError`] naming the file, product or field.
pub fn measure(opts: &Options) -> Result<Products, CalibrateError> {
    let start = Instant::now();
    let base = Conditions::load(&opts.base_conditions)?;
    let inputs = inputs::Inputs::read(&opts.rq_files)?;
    let p = &base.detector.params;
    let gains = pmt_gains::fit_pmt_gains(
        &inputs.spe_channel,
        &inputs.spe_area_phd,
        &p.pmts.spe_area_adc,
        p.pmts.spe_resolution,
        p.pmts.double_phe_prob,
    )?;
    // The RQ areas are in the reconstruction's gain scale; the conditions
    // written carry the measured gains, so the products that are areas (SE
    // gain, maps, energy scale) are measured in that scale: each pulse's area
    // times the area-weighted ratio of told to measured gain of its channels.
    let ratio: Vec<f64> = gains
        .channels
        .iter()
        .zip(&p.pmts.spe_area_adc)
        .map(|(c, told)| {
            let r = told / c.gain_adc;
            if gains.dead.contains(&c.channel) || !r.is_finite() || r <= 0.0 {
                1.0
            } else {
                r
            }
        })
        .collect();
    let (kr_rescaled, se_areas) = inputs.in_gain_scale(&ratio);
    let se = se_gain::fit_se_gain(&se_areas, gains.threshold.area_loss)?;
    // The light response first: the Kr83m positions are re-fitted with it,
    // so that the maps, the gas gap and the energy scale are measured in the
    // coordinates the reconstruction with these conditions will give.
    let (lrf, kr_events) = match learn_light_response(&base.detector, &inputs, &kr_rescaled, &gains)
    {
        Ok((l, ev)) => (Ok(l), ev),
        Err(e) => (Err(e.to_string()), kr_rescaled),
    };
    let kr = measure_kr(&base, &kr_events, se.gain_phd)?;
    let s2_top =
        measure_s2_top_fraction(&base.detector, &inputs, &ratio, &gains, lrf.as_ref().ok())?;
    let event_rates = rates::measure_rates(&inputs);
    Ok(Products {
        base,
        inputs,
        lifetime: kr.lifetime,
        se,
        gains,
        liquid: kr.liquid,
        maps: kr.maps,
        energy_scale: kr.energy_scale,
        uniformity_base: kr.uniformity_base,
        uniformity_measured: kr.uniformity_measured,
        kr_peak: kr.peak,
        rates: event_rates,
        lrf,
        s2_top,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `det`'s parameters with the channels `gains` found dead added to its dead
/// channels (as the tag written will have them).
fn with_found_dead(
    det: &tpcflow_reco::DetectorModel,
    gains: &pmt_gains::PmtGains,
) -> tpcflow_reco::detector::DetectorParams {
    let mut params = det.params.clone();
    let dead = &mut params.calibration.dead_channels;
    dead.extend(
        gains
            .dead
            .iter()
            .filter(|c| !dead.contains(c))
            .collect::<Vec<_>>(),
    );
    params
}

/// The detector `params` describe under `det`'s tag; an error names `product`.
fn model_of(
    det: &tpcflow_reco::DetectorModel,
    params: tpcflow_reco::detector::DetectorParams,
    product: &'static str,
) -> Result<tpcflow_reco::DetectorModel, CalibrateError> {
    tpcflow_reco::DetectorModel::new(det.tag.clone(), params).map_err(|e| CalibrateError::Fit {
        product,
        why: e.to_string(),
    })
}

/// The S2 top fraction from the Kr83m main S2s: channel areas in the
/// measured gains' scale (`ratio`: told over measured gain), light lost on
/// dead channels as the tag's detector loses it (dead channels of the base
/// and found dead; the learned light response's top pattern when there is
/// one), at the RQ files' positions.
fn measure_s2_top_fraction(
    det: &tpcflow_reco::DetectorModel,
    inputs: &inputs::Inputs,
    ratio: &[f64],
    gains: &pmt_gains::PmtGains,
    learned: Option<&lrf::LearnedLrf>,
) -> Result<top_fraction::TopFraction, CalibrateError> {
    let mut params = with_found_dead(det, gains);
    params.calibration.lrf = learned.map(|l| l.response.clone());
    let model = model_of(det, params, "S2 top fraction")?;
    let mut dead_mask = vec![false; model.n_channels()];
    for &c in &model.params.calibration.dead_channels {
        dead_mask[usize::from(c)] = true;
    }
    let n_top = model.pmts.n_top;
    let s2s: Vec<top_fraction::S2Split> = inputs
        .kr
        .par_iter()
        .enumerate()
        .map(|(i, e)| {
            let (mut top, mut bottom) = (0.0, 0.0);
            for &(c, a) in &inputs.kr_s2_channels[inputs.kr_s2_first[i]..inputs.kr_s2_first[i + 1]]
            {
                let c = usize::from(c);
                let a = f64::from(a) * ratio.get(c).copied().unwrap_or(1.0);
                if c < n_top {
                    top += a;
                } else {
                    bottom += a;
                }
            }
            let (top_loss, bottom_loss) =
                crate::sim::told_detector::dead_losses(&model, &dead_mask, e.x_mm, e.y_mm);
            top_fraction::S2Split {
                top_phd: top,
                bottom_phd: bottom,
                top_loss,
                bottom_loss,
            }
        })
        .collect();
    top_fraction::fit_s2_top_fraction(&s2s)
}

/// The light response from the Kr83m main-S2 top areas, channels dead in
/// the base conditions or found dead left out; efficiencies rescaled from
/// the base gains (the areas' scale) to the measured ones. Also `kr` (the
/// Kr83m single scatters of `inputs`, in order) with xy re-fitted with it
/// (the RQ files' positions were fitted with the base response); an event
/// whose fit fails is left out.
fn learn_light_response(
    det: &tpcflow_reco::DetectorModel,
    inputs: &inputs::Inputs,
    kr: &[inputs::KrEvent],
    gains: &pmt_gains::PmtGains,
) -> Result<(lrf::LearnedLrf, Vec<inputs::KrEvent>), CalibrateError> {
    let mut params = with_found_dead(det, gains);
    let model_of = |params| model_of(det, params, "light response");
    let model = model_of(params.clone())?;
    let n_top = model.pmts.n_top;
    let areas: Vec<f64> = (0..inputs.kr.len())
        .flat_map(|i| inputs.kr_top_areas(i, n_top))
        .collect();
    let mut learned = lrf::learn_lrf(&model, &areas)?;
    params.calibration.lrf = Some(learned.response.clone());
    let with_lrf = model_of(params)?;
    let cfg = tpcflow_reco::RecoConfig::default();
    let refitted: Vec<inputs::KrEvent> = kr
        .par_iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let top = &areas[i * n_top..(i + 1) * n_top];
            let fit = tpcflow_reco::xy::fit_xy(
                &with_lrf,
                top,
                cfg.xy_max_iterations,
                cfg.xy_tolerance_mm,
            )?;
            (fit.x_mm.is_finite() && fit.y_mm.is_finite()).then_some(inputs::KrEvent {
                x_mm: fit.x_mm,
                y_mm: fit.y_mm,
                ..*e
            })
        })
        .collect();
    let new_gains: Vec<f64> = gains.channels.iter().map(|c| c.gain_adc).collect();
    learned.response = lrf::rescale_efficiencies(
        &learned.response,
        &det.params.pmts.spe_area_adc,
        &new_gains,
        &model.pmts.live[..n_top],
    );
    Ok((learned, refitted))
}

/// Measure and write DIR/conditions.toml, DIR/report.md and the figures.
///
/// # Errors
/// [`CalibrateError`] naming the file, product or field.
pub fn run(opts: &Options) -> Result<Products, CalibrateError> {
    let products = measure(opts)?;
    std::fs::create_dir_all(&opts.out).map_err(|source| CalibrateError::Io {
        path: opts.out.clone(),
        source,
    })?;
    output::write_conditions(opts, &products)?;
    let truth = match &opts.truth {
        Some(spec) => Some(Conditions::load(spec)?),
        None => None,
    };
    report::write_report(opts, &products, truth.as_ref())?;
    Ok(products)
}

/// Write `text` to `path` atomically (`atomic_file`: hidden temporary name,
/// fsync, rename, directory fsync; the temporary is removed on failure).
fn write_atomic(path: &std::path::Path, text: &str) -> Result<(), CalibrateError> {
    crate::atomic_file::write(path, text.as_bytes()).map_err(|e| CalibrateError::Io {
        path: e.path.clone(),
        source: std::io::Error::new(e.source.kind(), format!("{}: {}", e.op, e.source)),
    })
}
