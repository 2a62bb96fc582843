//! The report for people: `report.md` with SVG figures (the lifetime fit, the
//! gas-gap map with its fitted plane, the gain map on the PMT layout) and the
//! Kr83m peak uniformity with the base conditions and with the products.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::{energy_scale, write_atomic, CalibrateError, Options, Products};

const SIZE: (u32, u32) = (760, 560);

fn plot_err(name: &str) -> impl Fn(String) -> CalibrateError + '_ {
    move |why| CalibrateError::Plot {
        name: name.to_string(),
        why,
    }
}

fn e2s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Blue (low) to red (high) for t in [0, 1].
fn colour(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.5
    };
    RGBColor((255.0 * t) as u8, 60, (255.0 * (1.0 - t)) as u8)
}

fn lifetime_svg(p: &Products) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(e2s)?;
        let f = &p.lifetime;
        let t_max = f.profile.iter().map(|v| v.0).fold(1.0, f64::max) * 1.05;
        let (lo, hi) = f
            .profile
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v.1), b.max(v.1))
            });
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "electron lifetime {:.0} us (1/tau = {:.4} +- {:.4} /ms)",
                    f.lifetime_us, f.inverse_lifetime_per_ms, f.sigma_inverse_lifetime_per_ms
                ),
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, (lo - 0.05)..(hi + 0.05))
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("drift time [us]")
            .y_desc("median ln S2 (r^2 term removed)")
            .draw()
            .map_err(e2s)?;
        chart
            .draw_series(
                f.profile
                    .iter()
                    .map(|&(t, v)| Circle::new((t, v), 4, BLUE.filled())),
            )
            .map_err(e2s)?;
        let a = f.s2_at_zero_drift_phd.ln();
        chart
            .draw_series(LineSeries::new(
                [0.0, t_max].map(|t| (t, a - t * 1e-3 * f.inverse_lifetime_per_ms)),
                RED,
            ))
            .map_err(e2s)?;
    }
    Ok(buf)
}

fn gains_svg(p: &Products) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (1100, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(e2s)?;
        let det = &p.base.detector;
        let r = det.params.tpc.radius_mm;
        let halves = root.split_evenly((1, 2));
        for (side, area) in halves.iter().enumerate() {
            let mut chart = ChartBuilder::on(area)
                .caption(
                    if side == 0 {
                        "top array: gain / told (blue 0.9 .. red 1.1), x dead, o noisy"
                    } else {
                        "bottom array"
                    },
                    ("sans-serif", 14),
                )
                .margin(10)
                .build_cartesian_2d(-r..r, -r..r)
                .map_err(e2s)?;
            for c in &p.gains.channels {
                let k = usize::from(c.channel);
                if det.pmts.is_top(k) != (side == 0) {
                    continue;
                }
                let (x, y) = (det.pmts.x[k], det.pmts.y[k]);
                let ratio = c.gain_adc / det.params.pmts.spe_area_adc[k];
                let dead = p.gains.dead.contains(&c.channel);
                let col = if dead {
                    BLACK
                } else {
                    colour((ratio - 0.9) / 0.2)
                };
                chart
                    .draw_series([Circle::new((x, y), 9, col.filled())])
                    .map_err(e2s)?;
                if dead {
                    chart
                        .draw_series([Cross::new((x, y), 9, WHITE)])
                        .map_err(e2s)?;
                }
                if p.gains.noisy.contains(&c.channel) {
                    chart
                        .draw_series([Circle::new((x, y), 13, BLACK.stroke_width(2))])
                        .map_err(e2s)?;
                }
            }
        }
    }
    Ok(buf)
}

fn gap_svg(p: &Products, l: &super::liquid_level::LiquidLevel) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(e2s)?;
        let m = &l.map;
        let h = m.half_width_mm;
        let (lo, hi) = m
            .values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "gas gap {lo:.2}..{hi:.2} mm; plane tilt {:.2} +- {:.2} mrad toward {:.0} deg",
                    l.tilt_mrad, l.sigma_tilt_mrad, l.tilt_direction_deg
                ),
                ("sans-serif", 16),
            )
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(-h..h, -h..h)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("x [mm]")
            .y_desc("y [mm]")
            .draw()
            .map_err(e2s)?;
        let dx = 2.0 * h / m.nx as f64;
        let dy = 2.0 * h / m.ny as f64;
        for j in 0..m.ny {
            for i in 0..m.nx {
                let (x, y) = m.bin_centre(i, j);
                let v = m.values[j * m.nx + i];
                chart
                    .draw_series([Rectangle::new(
                        [(x - dx / 2.0, y - dy / 2.0), (x + dx / 2.0, y + dy / 2.0)],
                        colour((v - lo) / (hi - lo).max(1e-9)).filled(),
                    )])
                    .map_err(e2s)?;
            }
        }
        // The plane's direction of increasing gap, from the centre.
        let (b, c) = l.plane_slope;
        let n = b.hypot(c).max(1e-12);
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (0.6 * h * b / n, 0.6 * h * c / n)],
                BLACK.stroke_width(3),
            ))
            .map_err(e2s)?;
        let _ = p;
    }
    Ok(buf)
}

/// Write report.md and its figures into the output directory.
///
/// # Errors
/// [`CalibrateError::Plot`] or [`CalibrateError::Io`].
pub fn write_report(
    opts: &Options,
    p: &Products,
    truth: Option<&crate::conditions::Conditions>,
) -> Result<(), CalibrateError> {
    let dir = Path::new(&opts.out);
    write_atomic(
        &dir.join("lifetime.svg"),
        &lifetime_svg(p).map_err(plot_err("lifetime.svg"))?,
    )?;
    write_atomic(
        &dir.join("gains.svg"),
        &gains_svg(p).map_err(plot_err("gains.svg"))?,
    )?;
    if let Ok(l) = &p.liquid {
        write_atomic(
            &dir.join("gas_gap.svg"),
            &gap_svg(p, l).map_err(plot_err("gas_gap.svg"))?,
        )?;
    }
    let mut text = markdown(opts, p);
    if let Some(t) = truth {
        let c = super::truth_check::compare(p, t);
        text.push_str(&super::truth_check::markdown(&c, &t.tag));
    }
    write_atomic(&dir.join("report.md"), &text)
}

/// The Markdown text.
pub fn markdown(opts: &Options, p: &Products) -> String {
    let mut s = String::new();
    let l = &p.lifetime;
    let told = &p.base.detector.params;
    let _ = writeln!(s, "# Calibration {} (runs {:?})\n", opts.tag, opts.runs);
    let _ = writeln!(
        s,
        "From {} RQ files, {} events ({} Kr83m single scatters with a position), reconstructed with conditions `{}`. Products in `conditions.toml` (load with `tpcflow reco --conditions {}/conditions.toml`). Measured in {:.1} s.\n",
        p.inputs.files.len(),
        p.inputs.n_events,
        p.inputs.kr.len(),
        p.base.tag,
        opts.out.display(),
        p.seconds
    );
    let _ = writeln!(
        s,
        "| product | measured | uncertainty | told ({}) |\n|---|---|---|---|",
        p.base.tag
    );
    let _ = writeln!(
        s,
        "| electron lifetime [us] | {:.0} | {:.0} | {:.0} |",
        l.lifetime_us,
        l.lifetime_us * l.sigma_inverse_lifetime_per_ms / l.inverse_lifetime_per_ms,
        told.tpc.electron_lifetime_us
    );
    let _ = writeln!(
        s,
        "| 1/tau [1/ms] | {:.4} | {:.4} ({:.1} %) | {:.4} |",
        l.inverse_lifetime_per_ms,
        l.sigma_inverse_lifetime_per_ms,
        100.0 * l.sigma_inverse_lifetime_per_ms / l.inverse_lifetime_per_ms,
        1e3 / told.tpc.electron_lifetime_us
    );
    let _ = writeln!(
        s,
        "| single-electron gain [phd] | {:.2} | {:.2} | {:.2} |",
        p.se.gain_phd, p.se.sigma_gain_phd, told.light.se_gain_phd
    );
    let _ = writeln!(
        s,
        "| single-electron width (sigma/mean) | {:.3} | | {:.3} |",
        p.se.resolution, told.light.se_resolution
    );
    let _ = writeln!(
        s,
        "| S2 top fraction, measured gains' scale (recorded S2 area fraction top {:.4}) | {:.4} | {:.4} | {:.4} |",
        p.s2_top.recorded_aft, p.s2_top.s2_top_fraction, p.s2_top.sigma, told.light.s2_top_fraction
    );
    let _ = writeln!(
        s,
        "| single-phe area noise, common to the channels [phe] | {:.3} | | |",
        p.gains.area_noise_phe
    );
    let _ = writeln!(
        s,
        "| hit threshold on single phe [phe]; area below it (SE gain corrected) | {:.3} (turn-on {:.3}); {:.2} % | | |",
        p.gains.threshold.at_phe,
        p.gains.threshold.width_phe,
        100.0 * p.gains.threshold.area_loss
    );
    let _ = writeln!(
        s,
        "| dead channels | {:?} | | {:?} |",
        p.gains.dead, told.calibration.dead_channels
    );
    let _ = writeln!(s, "| noisy channels | {:?} | | |", p.gains.noisy);
    let rates =
        super::pmt_gains::noisy_rates_hz(&p.gains, &p.inputs.spe_pairs, p.base.sim.dark_rate_hz);
    if !rates.is_empty() {
        let rates: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        let _ = writeln!(
            s,
            "| noisy channels' excess single-phe rate [Hz] | {} | | |",
            rates.join(", ")
        );
    }
    match &p.liquid {
        Ok(g) => {
            let _ = writeln!(
                s,
                "| liquid-level tilt [mrad] | {:.3} toward {:.0} deg | {:.3} | |",
                g.tilt_mrad, g.tilt_direction_deg, g.sigma_tilt_mrad
            );
            let _ = writeln!(
                s,
                "| gas gap at the centre [mm] | {:.3} | | {:.3} |",
                g.plane_gap_mm,
                told.tpc.anode_z_mm - told.tpc.liquid_z_mm
            );
            let _ = writeln!(
                s,
                "| S2 width at the gate (50 %) [ns] | {:.0} | {} | |",
                g.s2_width_at_gate_ns,
                g.sigma_s2_width_at_gate_ns
                    .map_or("n/a".into(), |v| format!("{v:.0}"))
            );
        }
        Err(e) => {
            let _ = writeln!(s, "| liquid level | not measured: {e} | | |");
        }
    }
    let k = &p.kr_peak;
    let _ = writeln!(
        s,
        "| Kr83m energy peak [keV] | {:.2} | {:.2} | |\n| Kr83m peak width (sigma) [keV] | {:.2} | {:.2} | |",
        k.mean, k.sigma_mean, k.width, k.sigma_width
    );
    let rate = |v: Option<f64>, d: usize| v.map_or("n/a".into(), |v| format!("{v:.d$}"));
    let r = &p.rates;
    let _ = writeln!(
        s,
        "| event rate [Hz] | {} | {} | |\n| single-electron rate [Hz] | {} | {} | |",
        rate(r.event_rate_hz, 2),
        rate(r.sigma_event_rate_hz, 2),
        rate(r.se_rate_hz, 1),
        rate(r.sigma_se_rate_hz, 1)
    );
    let es = &p.energy_scale;
    let _ = writeln!(
        s,
        "\n## Energy scale\n\nFactor {:.4} +- {:.4} on the combined energy: the Kr83m line at {} keV with the measured lifetime, maps and single-electron gain ({} events; without it the line is at {:.2} keV).",
        es.factor,
        es.sigma_factor,
        energy_scale::KR83M_KEV,
        es.events,
        es.peak_before_kev
    );
    let ub = &p.uniformity_base;
    let um = &p.uniformity_measured;
    let _ = writeln!(
        s,
        "\n## Kr83m peak uniformity (median energy in 4 x 4 xy cells x 5 z slices)\n\n| corrections | cells | rms | max deviation | rms from statistics |\n|---|---|---|---|---|"
    );
    for (name, u) in [
        (format!("told ({})", p.base.tag), ub),
        (format!("measured ({})", opts.tag), um),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {:.2} % | {:.2} % | {:.2} % |",
            u.cells,
            100.0 * u.rms,
            100.0 * u.max_deviation,
            100.0 * u.statistical_rms
        );
    }
    s.push_str(&super::lrf::markdown(&p.lrf));
    let _ = writeln!(
        s,
        "\n## Figures\n\n![electron lifetime](lifetime.svg)\n\n![PMT gains](gains.svg)\n"
    );
    if p.liquid.is_ok() {
        let _ = writeln!(s, "![gas gap](gas_gap.svg)\n");
    }
    let _ = writeln!(
        s,
        "How to read it: the lifetime points are drift-time slices of ln S2 with the radial term removed; the line is the fit. Gains are coloured by measured / told. The gas-gap arrow points where the gas gap grows (the liquid surface is lower)."
    );
    s
}
