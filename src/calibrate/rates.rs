//! Event and single-electron rates of the calibration run: a shifter watches
//! both (a DAQ or source problem shows in the first, electron emission from
//! the grids or the liquid surface in the second).
//!
//! ```text
//! event rate   r    = sum_f (n_f - 1) / sum_f (t_last,f - t_first,f)   [Hz]
//!              (trigger times of each RQ file; the dead time after each
//!              trigger counts, as the DAQ's clock does)
//! SE rate      r_SE = N_SE / sum_events t_S1                           [Hz]
//!              (lone single electrons are searched before each event's
//!              main S1, from the window start: see `inputs`)
//! sigma(r)     = sqrt(sum_f (n_f - 1)) / sum_f span_f,   sigma(r_SE) = sqrt(N_SE) / sum t_S1
//! ```
//! A rate with nothing to count it over (one event per file, no S1) is None.

use super::inputs::Inputs;

/// The two rates with their Poisson uncertainties.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rates {
    /// Trigger rate [Hz].
    pub event_rate_hz: Option<f64>,
    /// Its uncertainty [Hz].
    pub sigma_event_rate_hz: Option<f64>,
    /// Lone single-electron rate [Hz].
    pub se_rate_hz: Option<f64>,
    /// Its uncertainty [Hz].
    pub sigma_se_rate_hz: Option<f64>,
    /// Time the triggers span, summed over files [s].
    pub trigger_span_s: f64,
}

/// Rate and uncertainty of `count` over `span_ns` (None for no time).
fn poisson_rate(count: f64, span_ns: f64) -> (Option<f64>, Option<f64>) {
    if span_ns > 0.0 && span_ns.is_finite() {
        let t = span_ns * 1e-9;
        (Some(count / t), Some(count.sqrt() / t))
    } else {
        (None, None)
    }
}

/// The rates of the inputs.
pub fn measure_rates(inputs: &Inputs) -> Rates {
    let (event_rate_hz, sigma_event_rate_hz) =
        poisson_rate(inputs.trigger_intervals as f64, inputs.trigger_span_ns);
    let (se_rate_hz, sigma_se_rate_hz) =
        poisson_rate(inputs.se_areas_phd.len() as f64, inputs.se_search_ns);
    Rates {
        event_rate_hz,
        sigma_event_rate_hz,
        se_rate_hz,
        sigma_se_rate_hz,
        trigger_span_s: inputs.trigger_span_ns * 1e-9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_their_uncertainties() {
        // (intervals, span ns, SEs, search ns) -> (event Hz, sigma, SE Hz, sigma)
        let cases = [
            (
                99,
                2.0e9,
                400,
                1.0e9,
                Some((49.5, 99f64.sqrt() / 2.0, 400.0, 20.0)),
            ),
            (0, 0.0, 0, 0.0, None),
        ];
        for (intervals, span, se, search, want) in cases {
            let inputs = Inputs {
                trigger_intervals: intervals,
                trigger_span_ns: span,
                se_areas_phd: vec![47.0; se],
                se_search_ns: search,
                ..Inputs::default()
            };
            let r = measure_rates(&inputs);
            match want {
                Some((e, se_, s, ss)) => {
                    assert!((r.event_rate_hz.unwrap() - e).abs() < 1e-9);
                    assert!((r.sigma_event_rate_hz.unwrap() - se_).abs() < 1e-9);
                    assert!((r.se_rate_hz.unwrap() - s).abs() < 1e-9);
                    assert!((r.sigma_se_rate_hz.unwrap() - ss).abs() < 1e-9);
                }
                None => assert_eq!((r.event_rate_hz, r.se_rate_hz), (None, None)),
            }
        }
    }
}
