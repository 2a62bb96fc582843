//! Event-level reconstruction: one pure kernel, [`reconstruct_event_with`],
//! and two drivers over it, serial and rayon, that give bit-identical results.
//!
//! ```text
//! pods -> baseline, hits (per channel) -> pulses (clustered, split, measured)
//!      -> classification -> interaction (main S1/S2, drift, z)
//!      -> xy fit of the main S2's top pattern -> corrections -> EventRq
//! ```
//!
//! Missing quantities in [`EventRq`] are NaN (floats) or -1 (pulse indices),
//! the convention of the RQ files.
//!
//! ```
//! use tpcflow_reco::{reconstruct_event, DetectorModel, EventView, PodRecord, RecoConfig};
//!
//! let model = DetectorModel::default_lz_like();
//! let mut samples = vec![15000i16; 60];
//! samples[25] -= 20; // one photoelectron on channel 3
//! samples[26] -= 12;
//! let pods = [PodRecord { channel: 3, start_sample: 1000, length: 60, offset: 0 }];
//! let event = EventView { event_id: 7, trigger_time_ns: 0, pods: &pods, samples: &samples };
//! let recon = reconstruct_event(&event, &model, &RecoConfig::default()).unwrap();
//! assert_eq!(recon.pulses.len(), 1);
//! assert_eq!(recon.event.n_pulses, 1);
//! ```

use rayon::prelude::*;

use crate::baseline::{estimate_baseline_with, PodBaseline};
use crate::classify::classify;
use crate::config::RecoConfig;
use crate::corrections::{correct_s1, correct_s2, energy_kev};
use crate::detector::DetectorModel;
use crate::error::RecoError;
use crate::event::{EventView, PodRecord};
#[cfg(target_arch = "x86_64")]
use crate::hits::PodRuns;
use crate::hits::{find_hits_in, sort_by_start, Hit, HitScratch, HitSearch};
use crate::interactions::{find_interaction, InteractionKind};
use crate::pulses::{
    build_pulses, ChannelArea, PodCalibration, PulseInput, PulseKind, PulseParams, PulseRq,
    PulseScratch,
};
use crate::split::SplitParams;
use crate::threshold_scan::ScanPath;
use crate::xy::{excess_variance_factor, fit_xy_on};

#[cfg(test)]
pub(crate) mod synthetic;
#[cfg(test)]
mod tests;

/// Event-level reduced quantities.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct EventRq {
    /// Event number.
    pub event_id: u64,
    /// S2 trigger time since the run start [ns].
    pub trigger_time_ns: i64,
    /// Pods in the event.
    pub n_pods: u32,
    /// Hits found.
    pub n_hits: u32,
    /// Pulses found.
    pub n_pulses: u32,
    /// Pulses classified S1.
    pub n_s1: u32,
    /// Pulses classified S2.
    pub n_s2: u32,
    /// Pulses classified single electron.
    pub n_se: u32,
    /// Pulses classified single phe.
    pub n_spe: u32,
    /// Interaction kind.
    pub kind: InteractionKind,
    /// Index of the main S1 in the event's pulses (-1: none).
    pub main_s1: i32,
    /// Index of the main S2 (-1: none).
    pub main_s2: i32,
    /// Index of the second largest significant S2 (-1: none).
    pub second_s2: i32,
    /// Significant S2s, the main one included.
    pub n_significant_s2: u32,
    /// Main S1 area [phd].
    pub s1_area_phd: f64,
    /// Main S2 area [phd].
    pub s2_area_phd: f64,
    /// Second S2 area [phd].
    pub second_s2_area_phd: f64,
    /// Main S1 area fraction top.
    pub s1_aft: f64,
    /// Main S2 area fraction top.
    pub s2_aft: f64,
    /// Interaction time from the S1, from the window start [ns].
    pub s1_time_ns: f64,
    /// Mean electron arrival time from the S2, from the window start [ns].
    pub s2_time_ns: f64,
    /// Drift time [ns].
    pub drift_time_ns: f64,
    /// Position [mm].
    pub x_mm: f64,
    /// Position [mm].
    pub y_mm: f64,
    /// Height above the cathode from the drift time [mm].
    pub z_mm: f64,
    /// Uncertainty of x [mm].
    pub sigma_x_mm: f64,
    /// Uncertainty of y [mm].
    pub sigma_y_mm: f64,
    /// xy fit deviance per degree of freedom.
    pub xy_gof: f64,
    /// xy fit outcome: [`XY_FITTED`], [`XY_NO_S2`] or [`XY_FAILED`].
    pub xy_flag: u8,
    /// Corrected S1 [phd].
    pub s1c_phd: f64,
    /// Corrected S2 [phd].
    pub s2c_phd: f64,
    /// Combined energy [keV].
    pub energy_kev: f64,
    /// Area of all pulses [phd].
    pub total_area_phd: f64,
}

/// `xy_flag`: the xy fit converged; the position is in `x_mm`, `y_mm`.
pub const XY_FITTED: u8 = 0;
/// `xy_flag`: no main S2, no fit attempted.
pub const XY_NO_S2: u8 = 1;
/// `xy_flag`: the fit failed (no top-array light or no convergence): NaN position.
pub const XY_FAILED: u8 = 2;

/// Everything reconstructed for one event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventRecon {
    /// Event-level quantities.
    pub event: EventRq,
    /// Pulses in time order.
    pub pulses: Vec<PulseRq>,
    /// Per-channel areas of all pulses (each pulse points at its slice).
    pub channel_areas: Vec<ChannelArea>,
}

impl EventRecon {
    /// The per-channel areas of pulse `i`.
    ///
    /// # Panics
    /// When `i` is not a pulse index.
    pub fn pulse_channel_areas(&self, i: usize) -> &[ChannelArea] {
        let p = &self.pulses[i];
        let a = p.channel_area_start as usize;
        &self.channel_areas[a..a + p.channel_area_count as usize]
    }
}

/// Reusable per-thread buffers; results never depend on their content.
#[derive(Debug, Default, Clone)]
pub struct RecoScratch {
    calib: Vec<PodCalibration>,
    hits: Vec<Hit>,
    hits_tmp: Vec<Hit>,
    hit_scan: HitScratch,
    pulse: PulseScratch,
    top: Vec<f64>,
}

impl RecoScratch {
    /// Scratch whose hit finder scans with `path` (the default is the widest
    /// this CPU runs; every path gives bit-identical results).
    pub fn with_scan_path(path: ScanPath) -> Self {
        Self {
            hit_scan: HitScratch::with_path(path),
            ..Self::default()
        }
    }
}

fn window_samples(model: &DetectorModel) -> u32 {
    let d = &model.params.daq;
    ((d.window_before_ns + d.window_after_ns) / d.sample_ns).round() as u32
}

/// Check the pods against the detector and the event (never panics);
/// returns whether they come sorted by (channel, start).
///
/// Pods of one channel must not overlap in time, whatever order they come
/// in. The DAQ writes them sorted by (channel, start): then comparing each
/// pod with the one before it is enough, and that is all this pass does; a
/// pod out of that order sends the event to [`first_overlap`], which sorts.
fn validate_pods(ev: &EventView<'_>, model: &DetectorModel) -> Result<bool, RecoError> {
    let n_channels = model.n_channels();
    let window = window_samples(model);
    let mut prev: Option<(u16, i64, i64)> = None;
    let mut sorted = true;
    for (i, pod) in ev.pods.iter().enumerate() {
        if usize::from(pod.channel) >= n_channels {
            return Err(RecoError::BadChannel {
                event: ev.event_id,
                pod: i,
                channel: pod.channel,
                n_channels,
            });
        }
        let fits = pod
            .offset
            .checked_add(u64::from(pod.length))
            .is_some_and(|end| end <= ev.samples.len() as u64);
        if !fits {
            return Err(RecoError::PodOutOfBounds {
                event: ev.event_id,
                pod: i,
                offset: pod.offset,
                length: pod.length,
                n_samples: ev.samples.len(),
            });
        }
        let end = i64::from(pod.start_sample) + i64::from(pod.length);
        if pod.start_sample < 0 || end > i64::from(window) {
            return Err(RecoError::PodOutsideWindow {
                event: ev.event_id,
                pod: i,
                start_sample: pod.start_sample,
                length: pod.length,
                window_samples: window,
            });
        }
        let start = i64::from(pod.start_sample);
        if let Some((ch, prev_start, prev_end)) = prev {
            let in_order = (ch, prev_start) <= (pod.channel, start);
            sorted &= in_order;
            if in_order && ch == pod.channel && start < prev_end {
                return Err(RecoError::OverlappingPods {
                    event: ev.event_id,
                    previous: i - 1,
                    pod: i,
                    channel: pod.channel,
                });
            }
        }
        prev = Some((pod.channel, start, end));
    }
    if sorted {
        return Ok(true);
    }
    match first_overlap(ev.pods) {
        Some((previous, pod)) => Err(RecoError::OverlappingPods {
            event: ev.event_id,
            previous,
            pod,
            channel: ev.pods[pod].channel,
        }),
        None => Ok(false),
    }
}

/// Two pods of one channel that overlap in time, as (earlier start, later
/// start) indices, in pods of any order: sorted by (channel, start), each
/// pod is compared with the latest end of the pods of its channel before it.
fn first_overlap(pods: &[PodRecord]) -> Option<(usize, usize)> {
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_unstable_by_key(|&i| (pods[i].channel, pods[i].start_sample, i));
    let end = |i: usize| i64::from(pods[i].start_sample) + i64::from(pods[i].length);
    let mut reach: Option<(u16, i64, usize)> = None;
    for &i in &order {
        let p = &pods[i];
        match reach {
            Some((ch, e, j)) if ch == p.channel && i64::from(p.start_sample) < e => {
                return Some((j, i));
            }
            Some((ch, e, _)) if ch == p.channel && e >= end(i) => {}
            _ => reach = Some((p.channel, end(i), i)),
        }
    }
    None
}

/// Baselines, calibrations (`scratch.calib`) and hits (`scratch.hits`, in
/// pod order) of every pod of the event. On AVX2 (and AVX-512) the whole
/// loop is compiled for AVX2, and with a baseline of at most 64 samples a
/// pod whose last 64-sample window lies in the event (every pod but, at
/// times, the event's last few) takes [`crate::hits::pod_baseline_avx2`]
/// and [`crate::hits::pod_hits_avx2`]; the others, and every pod on the
/// other paths, take [`estimate_baseline_with`] then [`find_hits_in`]. The
/// results are bit-identical either way.
fn pods_to_hits(
    ev: &EventView<'_>,
    model: &DetectorModel,
    cfg: &RecoConfig,
    scratch: &mut RecoScratch,
) {
    scratch.calib.clear();
    scratch.hits.clear();
    #[cfg(target_arch = "x86_64")]
    if scratch.hit_scan.path.runs_avx2() {
        // SAFETY: runs_avx2 detected AVX2.
        #[allow(unsafe_code)]
        unsafe {
            pods_to_hits_avx2(ev, model, cfg, scratch);
        }
        return;
    }
    pods_to_hits_on::<false>(ev, model, cfg, scratch);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pods_to_hits_avx2(
    ev: &EventView<'_>,
    model: &DetectorModel,
    cfg: &RecoConfig,
    scratch: &mut RecoScratch,
) {
    pods_to_hits_on::<true>(ev, model, cfg, scratch);
}

/// [`pods_to_hits`]' loop; `FUSED` only where AVX2 is enabled.
///
/// Each pod's baseline and level are worked out one pod ahead, before the
/// previous pod's hits are found: a baseline ends in a division and a
/// square root (~35 cycles of latency) on which the pod's threshold, mask
/// and hits all wait; taken ahead, that latency runs beside the previous
/// pod's hits instead of stalling them. What is carried from one pod to
/// the next is a few numbers ([`PodPlan`]), kept in registers. The order
/// of the results is the pods' order either way.
#[inline(always)]
fn pods_to_hits_on<const FUSED: bool>(
    ev: &EventView<'_>,
    model: &DetectorModel,
    cfg: &RecoConfig,
    scratch: &mut RecoScratch,
) {
    let path = scratch.hit_scan.path;
    let Some(first) = ev.pods.first() else {
        return;
    };
    let (left, right) = (cfg.hit_left_extension, cfg.hit_right_extension);
    let mut next = pod_plan::<FUSED>(ev, first, model, cfg, path);
    for (i, pod) in ev.pods.iter().enumerate() {
        let plan = next;
        if let Some(p) = ev.pods.get(i + 1) {
            next = pod_plan::<FUSED>(ev, p, model, cfg, path);
        }
        let (at, len) = (pod.offset as usize, pod.length as usize);
        scratch.calib.push(PodCalibration {
            baseline_adc: plan.baseline.baseline_adc,
            phd_per_adc: plan.phd_per_adc,
            shift: pod.offset as i64 - i64::from(pod.start_sample),
        });
        if plan.fused {
            // Only set on x86-64 (see `pod_plan`).
            #[cfg(target_arch = "x86_64")]
            let runs = PodRuns {
                level: plan.level,
                left,
                right,
                pod_start: pod.start_sample as u32,
                channel: pod.channel,
                pod: i as u32,
            };
            // SAFETY: FUSED is only set in pods_to_hits_avx2, whose caller
            // detected AVX2.
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            unsafe {
                crate::hits::pod_hits_avx2(
                    ev.samples,
                    at,
                    len,
                    &runs,
                    &mut scratch.hit_scan.below,
                    &mut scratch.hits,
                );
            }
        } else {
            let search = HitSearch {
                baseline: plan.baseline,
                threshold_adc: plan.threshold_adc,
                phd_per_adc: plan.phd_per_adc,
                left,
                right,
                pod_start: pod.start_sample as u32,
                channel: pod.channel,
                pod: i as u32,
            };
            find_hits_in(
                ev.samples,
                at..at + len,
                &search,
                &mut scratch.hit_scan,
                &mut scratch.hits,
            );
        }
    }
}

/// A pod's baseline, threshold and level, worked out one pod ahead by
/// [`pods_to_hits_on`].
#[derive(Clone, Copy)]
struct PodPlan {
    /// Baseline and rms.
    baseline: PodBaseline,
    /// Threshold above the baseline [ADC counts].
    threshold_adc: f32,
    /// Calibration [phd per ADC count x sample].
    phd_per_adc: f32,
    /// [`crate::hits::hit_level`] of the baseline and threshold (read by
    /// the fused steps, x86-64 only).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    level: i32,
    /// Whether it takes the fused AVX2 steps ([`crate::hits::fused_fits`];
    /// only with `FUSED`).
    fused: bool,
}

/// A pod's [`PodPlan`]. A function, not a closure: LLVM does not inline
/// such a closure into the AVX2 loop, nor the AVX2 baseline into the
/// closure, and the calls cost ~3 %.
#[inline(always)]
fn pod_plan<const FUSED: bool>(
    ev: &EventView<'_>,
    pod: &PodRecord,
    model: &DetectorModel,
    cfg: &RecoConfig,
    path: ScanPath,
) -> PodPlan {
    let n_pre = cfg.baseline_samples as usize;
    let max_rms = cfg.baseline_max_rms_adc as f32;
    let (at, len) = (pod.offset as usize, pod.length as usize);
    #[cfg(target_arch = "x86_64")]
    let fused = FUSED && crate::hits::fused_fits(ev.samples.len(), at, len, n_pre);
    #[cfg(not(target_arch = "x86_64"))]
    let fused = false;
    let baseline = if fused {
        // SAFETY: FUSED is only set in pods_to_hits_avx2, whose caller
        // detected AVX2.
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        unsafe {
            crate::hits::pod_baseline_avx2(ev.samples, at, len, n_pre, max_rms)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!()
    } else {
        estimate_baseline_with(&ev.samples[at..at + len], n_pre, max_rms, path)
    };
    let phd_adc = model.phd_area_adc(usize::from(pod.channel));
    let rms = f64::from(baseline.rms_adc).max(model.params.daq.noise_adc);
    let threshold = (cfg.hit_threshold_rms * rms).max(cfg.hit_min_threshold_phd * phd_adc);
    let threshold_adc = threshold as f32;
    PodPlan {
        baseline,
        threshold_adc,
        phd_per_adc: (1.0 / phd_adc) as f32,
        level: crate::hits::hit_level(baseline.baseline_adc, threshold_adc),
        fused,
    }
}

/// Reconstruct one event with fresh buffers (see [`reconstruct_event_with`]).
///
/// # Errors
/// As [`reconstruct_event_with`].
pub fn reconstruct_event(
    ev: &EventView<'_>,
    model: &DetectorModel,
    cfg: &RecoConfig,
) -> Result<EventRecon, RecoError> {
    reconstruct_event_with(ev, model, cfg, &mut RecoScratch::default())
}

/// How far [`reconstruct_event_until`] goes; each stage includes the ones
/// before it (the stages are timed by differences in `benches/reco.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Validation, baselines and hits: only `event.n_pods` and `event.n_hits` are set.
    Hits,
    /// Pulses clustered, split and measured (all `PulseKind::Other`).
    Pulses,
    /// Pulses classified and the interaction found; no xy fit, no corrections.
    Interaction,
    /// Everything: the same as [`reconstruct_event_with`].
    Full,
}

/// Reconstruct one event, reusing `scratch`.
///
/// # Errors
/// [`RecoError::BadConfig`] for an unusable config; [`RecoError::BadChannel`],
/// [`RecoError::PodOutOfBounds`], [`RecoError::PodOutsideWindow`] or
/// [`RecoError::OverlappingPods`] naming the event and pod for bad data.
pub fn reconstruct_event_with(
    ev: &EventView<'_>,
    model: &DetectorModel,
    cfg: &RecoConfig,
    scratch: &mut RecoScratch,
) -> Result<EventRecon, RecoError> {
    reconstruct_event_until(ev, model, cfg, scratch, Stage::Full)
}

/// Reconstruct one event up to and including `until` (the full kernel with
/// [`Stage::Full`]; earlier stages exist to time the pipeline's parts).
///
/// # Errors
/// As [`reconstruct_event_with`].
pub fn reconstruct_event_until(
    ev: &EventView<'_>,
    model: &DetectorModel,
    cfg: &RecoConfig,
    scratch: &mut RecoScratch,
    until: Stage,
) -> Result<EventRecon, RecoError> {
    cfg.validate()?;
    let pods_sorted = validate_pods(ev, model)?;
    let daq = &model.params.daq;
    pods_to_hits(ev, model, cfg, scratch);
    // Time, then channel order: a radix sort over the key's varying bytes
    // (the constant high bytes are skipped). Pods in the DAQ's (channel,
    // start) order give hits in channel order, each channel's in time order,
    // so a stable sort by start alone gives (start, channel) order with
    // fewer passes (3 bytes of a window of 450 000 samples, not 5).
    if pods_sorted {
        sort_by_start(&mut scratch.hits, &mut scratch.hits_tmp);
    } else {
        radsort::sort_by_key(&mut scratch.hits, |h| {
            (u64::from(h.start) << 16) | u64::from(h.channel)
        });
    }
    let mut recon = EventRecon::default();
    if until == Stage::Hits {
        recon.event.event_id = ev.event_id;
        recon.event.n_pods = ev.pods.len() as u32;
        recon.event.n_hits = scratch.hits.len() as u32;
        return Ok(recon);
    }
    let sample_ns = daq.sample_ns;
    let params = PulseParams {
        gap: (cfg.pulse_gap_ns / sample_ns).round() as u32,
        coincidence_half_window: (cfg.coincidence_half_window_ns / sample_ns).round() as u32,
        sample_ns,
        n_top: model.pmts.n_top,
        split: SplitParams {
            min_ratio: cfg.split_min_ratio as f32,
            n_sigma: cfg.split_n_sigma as f32,
            min_depth_phd: cfg.split_min_depth_phd as f32,
            max_bin: ((cfg.split_max_bin_ns / sample_ns).round() as usize).max(1),
            excess_variance: excess_variance_factor(model) as f32,
            se_phd_per_sample: (model.params.light.se_gain_phd * sample_ns
                / cfg.el_width_ns.max(sample_ns)) as f32,
            el_samples: (cfg.el_width_ns / sample_ns).max(1.0) as f32,
        },
        scan: scratch.hit_scan.path,
    };
    let input = PulseInput {
        samples: ev.samples,
        calib: &scratch.calib,
        hits: &scratch.hits,
    };
    build_pulses(
        &input,
        &params,
        model.n_channels(),
        &mut scratch.pulse,
        &mut recon.pulses,
        &mut recon.channel_areas,
    );
    if until == Stage::Pulses {
        recon.event.event_id = ev.event_id;
        recon.event.n_pods = ev.pods.len() as u32;
        recon.event.n_hits = scratch.hits.len() as u32;
        recon.event.n_pulses = recon.pulses.len() as u32;
        return Ok(recon);
    }
    for p in &mut recon.pulses {
        p.kind = classify(p, cfg);
    }
    recon.event = event_rq(ev, model, cfg, &recon, scratch, until == Stage::Full);
    Ok(recon)
}

fn event_rq(
    ev: &EventView<'_>,
    model: &DetectorModel,
    cfg: &RecoConfig,
    recon: &EventRecon,
    scratch: &mut RecoScratch,
    with_xy: bool,
) -> EventRq {
    let pulses = &recon.pulses;
    let count = |k: PulseKind| pulses.iter().filter(|p| p.kind == k).count() as u32;
    let it = find_interaction(pulses, model, cfg);
    let index = |i: Option<usize>| i.map_or(-1, |i| i as i32);
    let area = |i: Option<usize>| i.map_or(f64::NAN, |i| f64::from(pulses[i].area_phd));
    let aft = |i: Option<usize>| i.map_or(f64::NAN, |i| f64::from(pulses[i].area_fraction_top));
    let mut rq = EventRq {
        event_id: ev.event_id,
        trigger_time_ns: ev.trigger_time_ns,
        n_pods: ev.pods.len() as u32,
        n_hits: scratch.hits.len() as u32,
        n_pulses: pulses.len() as u32,
        n_s1: count(PulseKind::S1),
        n_s2: count(PulseKind::S2),
        n_se: count(PulseKind::SingleElectron),
        n_spe: count(PulseKind::SinglePhe),
        kind: it.kind,
        main_s1: index(it.main_s1),
        main_s2: index(it.main_s2),
        second_s2: index(it.second_s2),
        n_significant_s2: it.n_significant_s2,
        s1_area_phd: area(it.main_s1),
        s2_area_phd: area(it.main_s2),
        second_s2_area_phd: area(it.second_s2),
        s1_aft: aft(it.main_s1),
        s2_aft: aft(it.main_s2),
        s1_time_ns: it.s1_time_ns.unwrap_or(f64::NAN),
        s2_time_ns: it.s2_time_ns.unwrap_or(f64::NAN),
        drift_time_ns: it.drift_time_ns.unwrap_or(f64::NAN),
        x_mm: f64::NAN,
        y_mm: f64::NAN,
        z_mm: it.z_mm.unwrap_or(f64::NAN),
        sigma_x_mm: f64::NAN,
        sigma_y_mm: f64::NAN,
        xy_gof: f64::NAN,
        xy_flag: XY_NO_S2,
        s1c_phd: f64::NAN,
        s2c_phd: f64::NAN,
        energy_kev: f64::NAN,
        total_area_phd: pulses.iter().map(|p| f64::from(p.area_phd)).sum(),
    };
    if !with_xy {
        return rq;
    }
    if let Some(s2) = it.main_s2 {
        let n_top = model.pmts.n_top;
        scratch.top.clear();
        scratch.top.resize(n_top, 0.0);
        for c in recon.pulse_channel_areas(s2) {
            if usize::from(c.channel) < n_top {
                scratch.top[usize::from(c.channel)] = f64::from(c.area_phd);
            }
        }
        rq.xy_flag = XY_FAILED;
        if let Some(fit) = fit_xy_on(
            model,
            &scratch.top,
            cfg.xy_max_iterations,
            cfg.xy_tolerance_mm,
            scratch.hit_scan.path,
        ) {
            rq.xy_gof = fit.gof;
            if fit.converged {
                rq.x_mm = fit.x_mm;
                rq.y_mm = fit.y_mm;
                rq.sigma_x_mm = fit.sigma_x_mm;
                rq.sigma_y_mm = fit.sigma_y_mm;
                rq.xy_flag = XY_FITTED;
            }
        }
    }
    // Without a position the xy-dependent corrections are unknown: S1c, S2c
    // and the energy stay NaN rather than being corrected as at the centre.
    let (x, y) = (rq.x_mm, rq.y_mm);
    if rq.drift_time_ns.is_finite() && rq.xy_flag == XY_FITTED {
        rq.s1c_phd = correct_s1(model, rq.s1_area_phd, x, y, rq.z_mm);
        rq.s2c_phd = correct_s2(model, rq.s2_area_phd, x, y, rq.drift_time_ns);
        rq.energy_kev = energy_kev(model, rq.s1c_phd, rq.s2c_phd);
    }
    rq
}

/// Reconstruct events one after the other (the reference driver).
pub fn reconstruct_serial(
    events: &[EventView<'_>],
    model: &DetectorModel,
    cfg: &RecoConfig,
) -> Vec<Result<EventRecon, RecoError>> {
    let mut scratch = RecoScratch::default();
    events
        .iter()
        .map(|ev| reconstruct_event_with(ev, model, cfg, &mut scratch))
        .collect()
}

/// Reconstruct events in parallel on the current rayon pool (build it with an
/// explicit thread count and call this inside `pool.install`). The output is
/// in input order and bit-identical to [`reconstruct_serial`] whatever the
/// number of threads: each event is computed by the same pure kernel.
pub fn reconstruct_batch(
    events: &[EventView<'_>],
    model: &DetectorModel,
    cfg: &RecoConfig,
) -> Vec<Result<EventRecon, RecoError>> {
    events
        .par_iter()
        .map_init(RecoScratch::default, |scratch, ev| {
            reconstruct_event_with(ev, model, cfg, scratch)
        })
        .collect()
}
