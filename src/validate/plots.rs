//! The report's figures, as SVG (plotters' SVG backend writes `<text>`
//! elements and needs no font files). Each figure is drawn into a string and
//! written atomically.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use tpcflow_reco::xy::{cramer_rao_xy, excess_variance_factor};

use super::metrics::{
    drift_residuals, ss_energies, xy_rows, Efficiency, Physics, ValidationReport, KR83M_KEV,
};
use super::{MatchedEvent, ValidateError};
use crate::conditions::Conditions;

const SIZE: (u32, u32) = (820, 520);
const FONT: (&str, u32) = ("sans-serif", 20);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type PlotResult = Result<(), String>;

fn e2s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Draw into a fresh SVG string.
fn svg(draw: impl FnOnce(&Area<'_>) -> PlotResult) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(e2s)?;
        draw(&root)?;
        root.present().map_err(e2s)?;
    }
    Ok(buf)
}

/// The series legend in a white box at `position`.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> PlotResult {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e2s)
}

fn legend_line(c: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c)
}

/// A usable (lo, hi) range around finite values, with a margin.
fn range_of(values: impl Iterator<Item = f64>, floor: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return (floor, floor * 10.0);
    }
    (lo.max(floor), hi.max(lo * 1.5).max(floor * 10.0))
}

fn efficiency_plot(
    area: &Area<'_>,
    e: &Efficiency,
    title: &str,
    target: f64,
    label: &str,
) -> PlotResult {
    let pts: Vec<(f64, f64, f64)> = e
        .bins
        .iter()
        .filter(|b| b.events > 0)
        .map(|b| {
            let hi = b.hi.map_or(b.lo as f64 * 4.0, |h| h as f64);
            ((b.lo as f64 * hi).sqrt(), b.efficiency, b.error)
        })
        .collect();
    let x_hi = pts.iter().map(|p| p.0).fold(100.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption(title, FONT)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((0.8f64..x_hi).log_scale(), 0f64..1.05)
        .map_err(e2s)?;
    chart
        .configure_mesh()
        .x_desc(e.variable.as_str())
        .y_desc("efficiency")
        .draw()
        .map_err(e2s)?;
    chart
        .draw_series(pts.iter().map(|&(x, y, s)| {
            PathElement::new(vec![(x, (y - s).max(0.0)), (x, (y + s).min(1.05))], BLUE)
        }))
        .map_err(e2s)?;
    chart
        .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), BLUE))
        .map_err(e2s)?
        .label(label)
        .legend(legend_line(BLUE));
    chart
        .draw_series(
            pts.iter()
                .map(|p| Circle::new((p.0, p.1), 4, BLUE.filled())),
        )
        .map_err(e2s)?;
    chart
        .draw_series(LineSeries::new(
            vec![(e.threshold as f64, target), (x_hi, target)],
            RED,
        ))
        .map_err(e2s)?
        .label(format!(
            "target {:.0} % at >= {} ({:.1} % measured)",
            target * 100.0,
            e.threshold,
            e.efficiency_above * 100.0
        ))
        .legend(legend_line(RED));
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// A histogram of `values` in [lo, hi) with an optional Gaussian of (mean, sd)
/// scaled to the entries, and labelled vertical lines.
#[allow(clippy::too_many_arguments)]
fn histogram(
    area: &Area<'_>,
    title: &str,
    x_desc: &str,
    values: &[f64],
    (lo, hi): (f64, f64),
    bins: usize,
    gauss: Option<(f64, f64, &str)>,
    lines: &[(f64, &str)],
) -> PlotResult {
    let w = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for v in values {
        if *v >= lo && *v < hi {
            counts[(((v - lo) / w) as usize).min(bins - 1)] += 1;
        }
    }
    let outside = values.len() - counts.iter().sum::<usize>();
    let y_hi = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, FONT)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..hi, 0f64..y_hi)
        .map_err(e2s)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("events per bin")
        .draw()
        .map_err(e2s)?;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x0 = lo + i as f64 * w;
            Rectangle::new([(x0, 0.0), (x0 + w, c as f64)], BLUE.mix(0.5).filled())
        }))
        .map_err(e2s)?
        .label(format!(
            "{} entries ({outside} outside the axis)",
            values.len()
        ))
        .legend(legend_line(BLUE));
    if let Some((mean, sd, label)) = gauss.filter(|g| g.1 > 0.0 && g.1.is_finite()) {
        let n = values.len() as f64;
        let curve = (0..=400).map(|i| {
            let x = lo + (hi - lo) * f64::from(i) / 400.0;
            let z = (x - mean) / sd;
            (
                x,
                n * w / (sd * (2.0 * std::f64::consts::PI).sqrt()) * (-0.5 * z * z).exp(),
            )
        });
        chart
            .draw_series(LineSeries::new(curve, RED.stroke_width(2)))
            .map_err(e2s)?
            .label(label)
            .legend(legend_line(RED));
    }
    for (i, &(x, label)) in lines.iter().enumerate() {
        // An unlabelled line continues the previous one's colour.
        let labelled = lines[..=i].iter().filter(|l| !l.1.is_empty()).count();
        let c = [BLACK, GREEN, MAGENTA][labelled.saturating_sub(1) % 3];
        let s = chart
            .draw_series(LineSeries::new(vec![(x, 0.0), (x, y_hi)], c))
            .map_err(e2s)?;
        if !label.is_empty() {
            s.label(label).legend(legend_line(c));
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

fn xy_resolution(area: &Area<'_>, r: &ValidationReport, cond: &Conditions) -> PlotResult {
    let m = &cond.detector;
    let f = excess_variance_factor(m);
    let aft = m.params.light.s2_top_fraction;
    let (x_lo, x_hi) = (100.0, 1e6);
    let grid: Vec<f64> = (0..=60)
        .map(|i| x_lo * 10f64.powf(f64::from(i) / 15.0))
        .collect();
    let crb = |x0: f64| -> Vec<(f64, f64)> {
        grid.iter()
            .map(|&n| {
                let (cx, cy) = cramer_rao_xy(m, x0, 0.0, n * aft, f);
                (n, cx.hypot(cy) / std::f64::consts::SQRT_2)
            })
            .collect()
    };
    let (centre, edge) = (crb(0.0), crb(400.0));
    let centres = |b: &super::metrics::XyBin| (b.lo * b.hi.min(b.lo * 10.0)).sqrt();
    let (y_lo, y_hi) = range_of(
        centre
            .iter()
            .chain(&edge)
            .map(|p| p.1)
            .chain(r.xy.bins.iter().map(|b| b.rms_mm))
            .chain(
                r.xy_truth
                    .iter()
                    .flat_map(|t| t.curve_centre_mm.iter().copied()),
            )
            .chain(
                r.xy_baseline
                    .iter()
                    .flat_map(|b| b.xy.bins.iter().map(|b| b.rms_mm)),
            )
            .chain([8.2, 1.7]),
        0.01,
    );
    let mut chart = ChartBuilder::on(area)
        .caption("xy resolution per axis vs S2 size", FONT)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x_lo..x_hi).log_scale(),
            (y_lo * 0.7..y_hi * 1.5).log_scale(),
        )
        .map_err(e2s)?;
    chart
        .configure_mesh()
        .x_desc("truth S2 [phd]")
        .y_desc("sigma [mm]")
        .draw()
        .map_err(e2s)?;
    chart
        .draw_series(LineSeries::new(centre, BLACK.stroke_width(2)))
        .map_err(e2s)?
        .label("Cramer-Rao bound, told detector, centre")
        .legend(legend_line(BLACK));
    chart
        .draw_series(LineSeries::new(edge, GREEN.stroke_width(2)))
        .map_err(e2s)?
        .label("Cramer-Rao bound, told detector, r = 400 mm")
        .legend(legend_line(GREEN));
    if let Some(t) = &r.xy_truth {
        let orange = RGBColor(230, 120, 0);
        chart
            .draw_series(LineSeries::new(
                super::metrics::XY_CURVE_PHD
                    .iter()
                    .copied()
                    .zip(t.curve_centre_mm.iter().copied()),
                orange.stroke_width(2),
            ))
            .map_err(e2s)?
            .label("bound of the true detector, centre")
            .legend(legend_line(orange));
    }
    if let Some(b) = &r.xy_baseline {
        let grey = RGBColor(110, 110, 110);
        chart
            .draw_series(b.xy.bins.iter().map(|bin| {
                let (x, y) = (centres(bin), bin.rms_mm);
                Rectangle::new([(x / 1.08, y / 1.08), (x * 1.08, y * 1.08)], grey.filled())
            }))
            .map_err(e2s)?
            .label(format!("reconstructed rms with {}", b.conditions_tag))
            .legend(move |(x, y)| Rectangle::new([(x + 5, y - 4), (x + 13, y + 4)], grey.filled()));
    }
    let bins: Vec<&super::metrics::XyBin> = r.xy.bins.iter().collect();
    chart
        .draw_series(LineSeries::new(
            bins.iter().map(|b| (centres(b), b.crb_diff_mm)),
            MAGENTA,
        ))
        .map_err(e2s)?
        .label("CRB (+) diffusion, this sample")
        .legend(legend_line(MAGENTA));
    chart
        .draw_series(
            bins.iter()
                .map(|b| Circle::new((centres(b), b.rms_mm), 5, BLUE.filled())),
        )
        .map_err(e2s)?
        .label("reconstructed rms (this sample)")
        .legend(|(x, y)| Circle::new((x + 10, y), 5, BLUE.filled()));
    chart
        .draw_series(
            [(200.0, 8.2), (4000.0, 1.7)]
                .into_iter()
                .map(|p| TriangleMarker::new(p, 8, RED.filled())),
        )
        .map_err(e2s)?
        .label("LUX, arXiv:1710.02752 (2-inch PMTs)")
        .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, RED.filled()));
    legend(&mut chart, SeriesLabelPosition::LowerLeft)
}

fn er_energy(area: &Area<'_>, pairs: &[(f64, f64)]) -> PlotResult {
    let mut chart = ChartBuilder::on(area)
        .caption("er-flat (tritium-like): reconstructed vs true energy", FONT)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..22.0, 0f64..30.0)
        .map_err(e2s)?;
    chart
        .configure_mesh()
        .x_desc("true energy [keV]")
        .y_desc("reconstructed energy [keV]")
        .draw()
        .map_err(e2s)?;
    chart
        .draw_series(LineSeries::new(vec![(0.0, 0.0), (22.0, 22.0)], BLACK))
        .map_err(e2s)?
        .label("reco = true")
        .legend(legend_line(BLACK));
    chart
        .draw_series(
            pairs
                .iter()
                .filter(|p| p.1 < 30.0)
                .map(|&p| Circle::new(p, 2, BLUE.filled())),
        )
        .map_err(e2s)?
        .label(format!("single scatters ({})", pairs.len()))
        .legend(|(x, y)| Circle::new((x + 10, y), 3, BLUE.filled()));
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// Draw every figure into `dir`; returns the file names.
///
/// # Errors
/// [`ValidateError::Write`] naming the figure.
pub(super) fn write_all(
    dir: &Path,
    r: &ValidationReport,
    events: &[MatchedEvent],
    cond: &Conditions,
) -> Result<Vec<String>, ValidateError> {
    let ph = Physics { cond };
    let drift = drift_residuals(events);
    let d_ns: Vec<f64> = drift.iter().map(|d| d.1).collect();
    let d_mm: Vec<f64> = drift.iter().map(|d| d.2).collect();
    let pulls: Vec<f64> = drift
        .iter()
        .filter(|d| d.0.n_extracted >= 5)
        .map(|(v, d, _)| d / ph.drift_spread_ns(v))
        .collect();
    let dr = &r.drift;
    let span_ns = if dr.abs_95_ns.is_finite() {
        (3.0 * dr.abs_95_ns).max(150.0)
    } else {
        300.0
    };
    let span_mm = span_ns * cond.detector.params.tpc.drift_velocity_mm_per_us * 1e-3;
    let xy_pulls: Vec<f64> = xy_rows(events, &ph)
        .iter()
        .filter(|r| r.ss)
        .flat_map(|r| r.pull)
        .collect();
    let kr: Vec<f64> = ss_energies(events, 2).into_iter().map(|p| p.1).collect();
    let er = ss_energies(events, 0);
    let k = &r.kr83m;
    let kr_label = format!(
        "peak {:.2} keV, sigma/E {:.1} %",
        k.peak_kev,
        100.0 * k.sigma_over_e
    );
    let (dp_label, xy_label) = (
        format!("unit Gaussian (pull sd {:.2})", dr.pull_sd),
        format!("unit Gaussian (pull sd {:.2})", r.xy.pull_sd),
    );
    type Figure<'a> = (&'a str, Box<dyn FnOnce(&Area<'_>) -> PlotResult + 'a>);
    let figures: Vec<Figure<'_>> = vec![
        (
            "s1_efficiency.svg",
            Box::new(|a| {
                efficiency_plot(
                    a,
                    &r.s1_efficiency,
                    "S1 finding efficiency (3-fold coincidence)",
                    0.95,
                    "classified S1",
                )
            }),
        ),
        (
            "s2_efficiency.svg",
            Box::new(|a| {
                efficiency_plot(
                    a,
                    &r.s2_efficiency,
                    "S2 finding efficiency",
                    0.99,
                    "classified S2",
                )
            }),
        ),
        (
            "drift_residuals.svg",
            Box::new(|a| {
                histogram(
                    a,
                    "drift time residual, single scatters",
                    "reco - truth drift time [ns]",
                    &d_ns,
                    (-span_ns, span_ns),
                    60,
                    None,
                    &[(-100.0, "target +-100 ns"), (100.0, "")],
                )
            }),
        ),
        (
            "z_residuals.svg",
            Box::new(|a| {
                histogram(
                    a,
                    "z residual, single scatters",
                    "reco - truth z [mm]",
                    &d_mm,
                    (-span_mm, span_mm),
                    60,
                    None,
                    &[],
                )
            }),
        ),
        (
            "drift_pulls.svg",
            Box::new(|a| {
                histogram(
                    a,
                    "drift pull vs the expected diffusion spread",
                    "(reco - truth) / expected spread",
                    &pulls,
                    (-6.0, 6.0),
                    48,
                    Some((0.0, 1.0, dp_label.as_str())),
                    &[],
                )
            }),
        ),
        ("xy_resolution.svg", Box::new(|a| xy_resolution(a, r, cond))),
        (
            "xy_pulls.svg",
            Box::new(|a| {
                histogram(
                    a,
                    "xy pulls of single scatters (x and y)",
                    "(reco - truth) / sigma_xy",
                    &xy_pulls,
                    (-6.0, 6.0),
                    48,
                    Some((0.0, 1.0, xy_label.as_str())),
                    &[],
                )
            }),
        ),
        (
            "kr83m_energy.svg",
            Box::new(|a| {
                histogram(
                    a,
                    "kr83m: reconstructed energy of single scatters",
                    "energy [keV]",
                    &kr,
                    (20.0, 65.0),
                    90,
                    None,
                    &[
                        (KR83M_KEV, "41.5 keV line"),
                        (k.peak_kev, kr_label.as_str()),
                    ],
                )
            }),
        ),
        ("er_energy.svg", Box::new(|a| er_energy(a, &er))),
    ];
    let mut names = Vec::new();
    for (name, draw) in figures {
        let path = dir.join(name);
        let text = svg(draw).map_err(|message| ValidateError::Write {
            path: path.clone(),
            message,
        })?;
        super::write_atomic(&path, text.as_bytes()).map_err(|e| ValidateError::Write {
            path: path.clone(),
            message: e.to_string(),
        })?;
        names.push(name.to_string());
    }
    Ok(names)
}
