//! Classification tables: truth signal vs reconstructed pulse kind, and the
//! SS/MS study (clear truth multiplicity vs reconstructed interaction).

use serde::Serialize;

use super::{ratio, s1_pulse, singles, Physics};
use crate::validate::{MatchedEvent, RecoPulse};

/// Pulse kind codes of the RQ files.
pub const KIND_NAMES: [&str; 5] = ["other", "S1", "S2", "SE", "SPE"];
/// Interaction codes of the RQ files.
pub const INTERACTION_NAMES: [&str; 6] = ["none", "SS", "MS", "S2only", "S1only", "other"];

/// A confusion table: truth rows, reconstructed columns.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Confusion {
    /// Column names.
    pub columns: Vec<String>,
    /// Row names.
    pub rows: Vec<String>,
    /// counts[row][column].
    pub counts: Vec<Vec<usize>>,
}

/// Pulse-kind column of a found pulse: 0-4 by kind, 5 = none found.
fn kind_column(p: Option<&RecoPulse>) -> usize {
    p.map_or(5, |p| usize::from(p.kind.min(4)))
}

pub(super) fn classification(events: &[MatchedEvent], ph: &Physics<'_>) -> Confusion {
    let rows = [
        "S1 >= 5 phd",
        "S1 1-4 phd",
        "S2 >= 5 e",
        "S2 2-4 e",
        "SE (1 e)",
    ];
    let mut counts = vec![vec![0usize; 6]; rows.len()];
    for e in singles(events) {
        let v = &e.truth.vertices[0];
        if v.s1_phd >= 1 {
            let r = if v.s1_phd >= 5 { 0 } else { 1 };
            counts[r][kind_column(s1_pulse(&e.reco, v.t_s1_ns))] += 1;
        }
        if v.n_extracted >= 1 {
            let r = match v.n_extracted {
                1 => 4,
                2..=4 => 3,
                _ => 2,
            };
            counts[r][kind_column(ph.s2_pulse(&e.reco, v).map(|(_, p)| p))] += 1;
        }
    }
    let mut columns: Vec<String> = KIND_NAMES.iter().map(|s| s.to_string()).collect();
    columns.push("not found".into());
    Confusion {
        columns,
        rows: rows.iter().map(|s| s.to_string()).collect(),
        counts,
    }
}

/// Clear truth for the SS/MS study (see the module docs); the largest |dz| between vertices.
fn clear_dz(e: &MatchedEvent) -> Option<f64> {
    let vs = &e.truth.vertices;
    let max = vs.iter().map(|v| v.s2_phd as f64).fold(0.0, f64::max);
    let clear = !vs.is_empty()
        && e.truth.s1_phd() >= 10
        && vs.iter().all(|v| v.n_extracted >= 10)
        && vs.iter().all(|v| v.s2_phd as f64 >= 0.1 * max);
    let zs = vs.iter().map(|v| v.z);
    let dz = zs.clone().fold(f64::MIN, f64::max) - zs.fold(f64::MAX, f64::min);
    clear.then_some(dz)
}

pub(super) fn scatter(events: &[MatchedEvent]) -> (Confusion, f64, f64) {
    let rows = [
        "single (clear)",
        "multiple, dz < 10 mm",
        "multiple, dz >= 10 mm",
    ];
    let mut counts = vec![vec![0usize; 6]; rows.len()];
    for e in events {
        let Some(dz) = clear_dz(e) else { continue };
        let r = match (e.truth.vertices.len(), dz) {
            (1, _) => 0,
            (_, d) if d < 10.0 => 1,
            _ => 2,
        };
        counts[r][usize::from(e.reco.interaction.min(5))] += 1;
    }
    let ss = ratio(counts[0][1], counts[0].iter().sum());
    let ms = ratio(counts[2][2], counts[2].iter().sum());
    let c = Confusion {
        columns: INTERACTION_NAMES.iter().map(|s| s.to_string()).collect(),
        rows: rows.iter().map(|s| s.to_string()).collect(),
        counts,
    };
    (c, ss, ms)
}
