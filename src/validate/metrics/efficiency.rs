//! S1 and S2 finding efficiencies: truth signals binned by size (S1 phd,
//! extracted electrons), each found and classified or not, and the efficiency
//! above the target threshold with its binomial error.

use serde::Serialize;

use super::{hi_edge, ratio};

/// One bin of an efficiency table.
#[derive(Debug, Clone, Serialize)]
pub struct EffBin {
    /// Lower edge (inclusive).
    pub lo: u64,
    /// Upper edge (exclusive; None = no limit).
    pub hi: Option<u64>,
    /// Truth signals in the bin.
    pub events: usize,
    /// With a reconstructed pulse at the truth position.
    pub found: usize,
    /// With that pulse classified correctly.
    pub classified: usize,
    /// classified / events.
    pub efficiency: f64,
    /// Binomial error of the efficiency.
    pub error: f64,
}

/// An efficiency table and its value above the target threshold.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Efficiency {
    /// What the bins are of.
    pub variable: String,
    /// Bins.
    pub bins: Vec<EffBin>,
    /// Threshold of the target (inclusive).
    pub threshold: u64,
    /// Signals at or above the threshold.
    pub n_above: usize,
    /// Of which classified correctly.
    pub ok_above: usize,
    /// ok_above / n_above.
    pub efficiency_above: f64,
}

/// S1 efficiency bins of the accuracy test; target threshold 5 phd.
pub const S1_EDGES: [u64; 13] = [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50, 200, u64::MAX];
/// S2 efficiency bins (extracted electrons); target threshold 5.
pub const S2_EDGES: [u64; 12] = [1, 2, 3, 4, 5, 7, 10, 20, 50, 200, 1000, u64::MAX];

pub(super) fn efficiency(
    variable: &str,
    edges: &[u64],
    threshold: u64,
    signals: impl Iterator<Item = (u64, bool, bool)>,
) -> Efficiency {
    let mut bins: Vec<EffBin> = edges
        .windows(2)
        .map(|w| EffBin {
            lo: w[0],
            hi: hi_edge(w[1]),
            events: 0,
            found: 0,
            classified: 0,
            efficiency: f64::NAN,
            error: f64::NAN,
        })
        .collect();
    let (mut n, mut ok) = (0, 0);
    for (size, found, classified) in signals {
        if let Some(b) = edges.windows(2).position(|w| size >= w[0] && size < w[1]) {
            bins[b].events += 1;
            bins[b].found += usize::from(found);
            bins[b].classified += usize::from(classified);
        }
        if size >= threshold {
            n += 1;
            ok += usize::from(classified);
        }
    }
    for b in &mut bins {
        b.efficiency = ratio(b.classified, b.events);
        b.error = (b.efficiency * (1.0 - b.efficiency) / b.events.max(1) as f64).sqrt();
    }
    Efficiency {
        variable: variable.to_string(),
        bins,
        threshold,
        n_above: n,
        ok_above: ok,
        efficiency_above: ratio(ok, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_bins_and_threshold() {
        let e = efficiency(
            "x",
            &[1, 5, u64::MAX],
            5,
            [
                (1, true, true),
                (2, false, false),
                (7, true, true),
                (9, true, false),
            ]
            .into_iter(),
        );
        assert_eq!(e.bins[0].events, 2);
        assert_eq!(e.bins[1].hi, None);
        assert_eq!((e.ok_above, e.n_above), (1, 2));
        assert_eq!(e.efficiency_above, 0.5);
    }
}
