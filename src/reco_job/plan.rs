//! Planning a reco job: which files to process, skip or fail, and how to cut
//! them into work units (event ranges) so that no rank idles behind a big file.
//!
//! Rank 0 alone looks at the file system (which outputs are done, how many
//! events each input has) and broadcasts its plan ([`broadcast_plans`]):
//! ranks that looked for themselves could see different answers (an output
//! renamed into place, a file replaced between their looks) and cut
//! different unit lists, then wait for each other forever or write the same
//! output twice.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mpi::traits::*;
use serde::{Deserialize, Serialize};

use super::ranks::Ranks;

/// One piece of work: an event range of one input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Index into the job's inputs.
    pub file: usize,
    /// First event row.
    pub first_event: u64,
    /// One past the last event row.
    pub end_event: u64,
    /// Which part of the file (0-based).
    pub part: u32,
    /// Parts the file is cut into.
    pub n_parts: u32,
}

/// What the job does with one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FilePlan {
    /// Reconstruct it in these units (indices into the unit list).
    Process {
        /// Events in the file.
        n_events: u64,
    },
    /// A complete output with the same lineage exists.
    Skip,
    /// The file cannot be read at all.
    Fail(String),
}

/// Names of a file's outputs for one lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputNames {
    /// The RQ file.
    pub rq: PathBuf,
    /// The result record (JSON).
    pub record: PathBuf,
    /// Stem used for part files.
    stem: String,
    dir: PathBuf,
}

impl OutputNames {
    /// Outputs of `input` under `out_dir` for lineage `hash`:
    /// `{stem}.{hash}.rq.h5` and `{stem}.{hash}.result.json`.
    pub fn new(out_dir: &Path, input: &Path, hash: &str) -> Self {
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name.strip_suffix(".raw.h5").unwrap_or(&name).to_string();
        Self {
            rq: out_dir.join(format!("{stem}.{hash}.rq.h5")),
            record: out_dir.join(format!("{stem}.{hash}.result.json")),
            stem: format!("{stem}.{hash}"),
            dir: out_dir.to_path_buf(),
        }
    }

    /// Hidden part file of a split input.
    pub fn part(&self, part: u32) -> PathBuf {
        self.dir.join(format!(".{}.part{part:04}.h5", self.stem))
    }

    /// Hidden record of one part.
    pub fn part_record(&self, part: u32) -> PathBuf {
        self.dir.join(format!(".{}.part{part:04}.json", self.stem))
    }
}

/// Inputs a job refuses before it starts.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// One input listed twice.
    #[error("input {path} is listed twice (inputs number {first} and {second})")]
    ListedTwice {
        /// The input.
        path: PathBuf,
        /// Its first position in the input list (0-based).
        first: usize,
        /// Its second position.
        second: usize,
    },
    /// Two inputs whose outputs would have the same names.
    #[error("inputs {first} and {second} have the same file name: their RQ files and result records would have the same names")]
    SameFileName {
        /// The first input.
        first: PathBuf,
        /// The other one.
        second: PathBuf,
    },
}

/// Every input gets outputs of its own: outputs are named after the input's
/// file name ([`OutputNames`]), so an input listed twice, or two inputs of
/// the same name in different directories, would write the same files.
/// Decided from the paths alone (no file system access: every rank agrees).
///
/// # Errors
/// The first pair that collides, naming both.
pub fn check_distinct_outputs(inputs: &[PathBuf]) -> Result<(), PlanError> {
    let mut seen = std::collections::HashMap::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let name = input.file_name().unwrap_or(input.as_os_str());
        if let Some(&first) = seen.get(name) {
            let earlier: &PathBuf = &inputs[first];
            return Err(if earlier == input {
                PlanError::ListedTwice {
                    path: input.clone(),
                    first,
                    second: i,
                }
            } else {
                PlanError::SameFileName {
                    first: earlier.clone(),
                    second: input.clone(),
                }
            });
        }
        seen.insert(name, i);
    }
    Ok(())
}

/// Rank 0's plan on every rank: rank 0 passes its plans, the others an
/// empty vector (they never look at the inputs for planning).
///
/// # Errors
/// When rank 0's plan cannot be encoded or what arrived cannot be decoded.
pub fn broadcast_plans(world: Ranks<'_>, plans: Vec<FilePlan>) -> Result<Vec<FilePlan>> {
    let Some(world) = world.mpi().filter(|w| w.size() > 1) else {
        return Ok(plans);
    };
    let root = world.process_at_rank(0);
    let mut bytes = if world.rank() == 0 {
        serde_json::to_vec(&plans).context("encoding the plan")?
    } else {
        Vec::new()
    };
    let mut len = bytes.len() as u64;
    root.broadcast_into(&mut len);
    bytes.resize(len as usize, 0);
    root.broadcast_into(&mut bytes[..]);
    serde_json::from_slice(&bytes).context("decoding the plan rank 0 broadcast")
}

/// Events per unit: about four units per rank so the dynamic distribution
/// can even out, never below `min_events`. A job of one rank has nothing to
/// even out: its files stay whole (parts would only be written, read back
/// and merged again).
pub fn unit_size(total_events: u64, ranks: usize, requested: Option<u64>, min_events: u64) -> u64 {
    if let Some(n) = requested {
        return n.max(1);
    }
    if ranks <= 1 {
        return total_events.max(1);
    }
    let target = total_events.div_ceil((ranks as u64 * 4).max(1));
    target.max(min_events).max(1)
}

/// Cut files into units of at most `size` events, in near-equal parts.
/// Units are ordered largest first (longest-processing-time first), ties by
/// file and part, so the last units handed out are the small ones.
pub fn cut_units(n_events: &[Option<u64>], size: u64) -> Vec<Unit> {
    let mut units = Vec::new();
    for (file, n) in n_events.iter().enumerate() {
        let Some(n) = *n else { continue };
        let parts = n.div_ceil(size).max(1);
        for part in 0..parts {
            units.push(Unit {
                file,
                first_event: n * part / parts,
                end_event: n * (part + 1) / parts,
                part: part as u32,
                n_parts: parts as u32,
            });
        }
    }
    units.sort_by(|a, b| {
        (b.end_event - b.first_event)
            .cmp(&(a.end_event - a.first_event))
            .then(a.file.cmp(&b.file))
            .then(a.part.cmp(&b.part))
    });
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_cover_every_event_once_in_near_equal_parts() {
        let n = [Some(1000), None, Some(10), Some(0)];
        let units = cut_units(&n, 300);
        for (file, total) in [(0usize, 1000u64), (2, 10)] {
            let mut mine: Vec<&Unit> = units.iter().filter(|u| u.file == file).collect();
            mine.sort_by_key(|u| u.part);
            assert_eq!(mine.first().unwrap().first_event, 0);
            assert_eq!(mine.last().unwrap().end_event, total);
            for w in mine.windows(2) {
                assert_eq!(w[0].end_event, w[1].first_event);
            }
        }
        assert_eq!(units.iter().filter(|u| u.file == 0).count(), 4);
        assert!(units.iter().all(|u| u.file != 1));
        // The empty file still gets one (empty) unit, so it gets an output.
        assert_eq!(units.iter().filter(|u| u.file == 3).count(), 1);
        // Largest first.
        assert!(units
            .windows(2)
            .all(|w| w[0].end_event - w[0].first_event >= w[1].end_event - w[1].first_event));
    }

    #[test]
    fn unit_size_aims_at_four_units_per_rank() {
        assert_eq!(unit_size(800, 2, None, 16), 100);
        assert_eq!(unit_size(800, 1, None, 16), 800);
        assert_eq!(unit_size(800, 1, Some(50), 16), 50);
        assert_eq!(
            cut_units(&[Some(500), None, Some(300)], unit_size(800, 1, None, 16)).len(),
            2
        );
        assert_eq!(unit_size(10, 2, None, 16), 16);
        assert_eq!(unit_size(800, 2, Some(50), 16), 50);
    }

    #[test]
    fn inputs_that_would_share_outputs_are_refused_naming_both() {
        let p = |s: &str| PathBuf::from(s);
        let ok = [p("/a/000001_00000.raw.h5"), p("/a/000001_00001.raw.h5")];
        check_distinct_outputs(&ok).unwrap();
        let twice = [p("/a/x.raw.h5"), p("/a/y.raw.h5"), p("/a/x.raw.h5")];
        let e = check_distinct_outputs(&twice).unwrap_err();
        assert!(matches!(
            e,
            PlanError::ListedTwice {
                first: 0,
                second: 2,
                ..
            }
        ));
        assert!(e.to_string().contains("/a/x.raw.h5 is listed twice"), "{e}");
        let same = [p("/a/x.raw.h5"), p("/b/x.raw.h5")];
        let e = check_distinct_outputs(&same).unwrap_err().to_string();
        assert!(
            e.contains("/a/x.raw.h5") && e.contains("/b/x.raw.h5"),
            "{e}"
        );
    }

    #[test]
    fn output_names() {
        let o = OutputNames::new(
            Path::new("/out"),
            Path::new("/surf/000001/000001_00003.raw.h5"),
            "abcd",
        );
        assert_eq!(o.rq, Path::new("/out/000001_00003.abcd.rq.h5"));
        assert_eq!(o.record, Path::new("/out/000001_00003.abcd.result.json"));
        assert_eq!(o.part(2), Path::new("/out/.000001_00003.abcd.part0002.h5"));
    }
}
