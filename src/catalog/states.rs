//! The catalog's closed vocabularies: sites, run types and states.
//!
//! Each is a Rust enum, stored as text guarded by a CHECK constraint built
//! from the same list ([`check_list`]), so the database and the code cannot
//! drift apart. Unknown text read back is an error naming the value, never a
//! silent default.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// A value that is not one of an enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}` (expected one of: {expected})")]
pub struct UnknownName {
    /// Which vocabulary (e.g. "site").
    pub kind: &'static str,
    /// The text found.
    pub value: String,
    /// The accepted names, comma-separated.
    pub expected: String,
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            /// Parse a stored name, case-insensitively.
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                $(if s.eq_ignore_ascii_case($text) {
                    return Ok($name::$variant);
                })+
                Err(UnknownName {
                    kind: $kind,
                    value: s.to_string(),
                    expected: [$($text),+].join(", "),
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                text.parse().map_err(|e: UnknownName| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

text_enum!(
    /// A storage site. SURF is the source (the DAQ writes there); the others
    /// receive copies.
    Site, "site", {
        /// Sanford Underground Research Facility: where the DAQ writes.
        Surf => "SURF",
        /// US data centre (NERSC).
        Usdc => "USDC",
        /// UK data centre (GridPP).
        Ukdc => "UKDC",
        /// Tape archive.
        Archive => "ARCHIVE",
    }
);

impl Site {
    /// The sites that receive copies from SURF.
    pub const DESTINATIONS: [Site; 3] = [Site::Usdc, Site::Ukdc, Site::Archive];
}

text_enum!(
    /// What a run was taken for.
    RunType, "run type", {
        /// WIMP-search data (salted, blinded).
        Science => "science",
        /// Calibration sources (not salted).
        Calibration => "calibration",
        /// Made by a simulation campaign at a processing site (never salted,
        /// counted apart from detector data).
        Simulation => "simulation",
    }
);

text_enum!(
    /// Life of a raw file in the pipeline.
    ///
    /// ```text
    /// registered -> transferred -> processing -> processed
    ///      |              ^             |
    ///      v              +-- (retry) --+--> failed -> transferred (operator retry)
    ///    failed
    /// ```
    FileState, "file state", {
        /// Catalogued at SURF with size and checksum.
        Registered => "registered",
        /// Every destination replica verified.
        Transferred => "transferred",
        /// A processing job holds it.
        Processing => "processing",
        /// Its RQ output is catalogued.
        Processed => "processed",
        /// Gave up after the retry cap (see `last_error`).
        Failed => "failed",
    }
);

impl FileState {
    /// True when a file may move from `self` to `to`.
    pub fn can_become(self, to: FileState) -> bool {
        use FileState::*;
        matches!(
            (self, to),
            (Registered, Transferred)
                | (Registered, Failed)
                | (Transferred, Processing)
                | (Processing, Processed)
                | (Processing, Transferred)
                | (Processing, Failed)
                | (Failed, Transferred)
                | (Processed, Processing)
        )
    }
}

text_enum!(
    /// State of one copy of a file at one site.
    ReplicaState, "replica state", {
        /// Waiting for the mover.
        Queued => "queued",
        /// A mover is copying it (a leftover after a crash is re-queued).
        Transferring => "transferring",
        /// Present with the catalogued size and checksum.
        Verified => "verified",
        /// Wrong bytes: checksum mismatch after the retry cap, or found by the audit.
        Bad => "bad",
        /// Catalogued but absent from the storage (found by the audit).
        Lost => "lost",
        /// The retention stage is removing this SURF copy (the file is
        /// verified at every destination); a restart finishes it.
        Retiring => "retiring",
        /// SURF copy removed on purpose by the retention stage: absent from
        /// the storage, and not lost.
        Retired => "retired",
    }
);

text_enum!(
    /// State of a SLURM job as the dispatcher tracks it.
    JobState, "job state", {
        /// Written, not yet submitted.
        Pending => "pending",
        /// Accepted by sbatch.
        Submitted => "submitted",
        /// Running on a node.
        Running => "running",
        /// Finished and its results ingested.
        Completed => "completed",
        /// Finished without its results.
        Failed => "failed",
        /// Cancelled by an operator or by SLURM.
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// State of a processing campaign (a family).
    CampaignState, "campaign state", {
        /// Defined, no job yet.
        Defined => "defined",
        /// Jobs are being dispatched.
        Active => "active",
        /// Every file of the run range processed.
        Complete => "complete",
        /// Stopped by an operator.
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// Processing of one raw file for one campaign.
    ///
    /// ```text
    /// queued -> submitting -> submitted -> done
    ///   ^           |             |
    ///   +-----------+-------------+--> failed (after the retry cap)
    /// queued/submitting/submitted -> cancelled (campaign cancelled)
    /// ```
    TaskState, "task state", {
        /// Waiting for a job (maybe after a back-off).
        Queued => "queued",
        /// A job is being submitted for it (intent recorded before sbatch).
        Submitting => "submitting",
        /// Its job is in SLURM.
        Submitted => "submitted",
        /// Its output is catalogued.
        Done => "done",
        /// Gave up after the retry cap (see `last_error`).
        Failed => "failed",
        /// Its campaign was cancelled.
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// What a SLURM job of the dispatcher runs.
    JobKind, "job kind", {
        /// `tpcflow reco` over raw files (tasks).
        Reco => "reco",
        /// `tpcflow sim`, one file per element (simulation tasks).
        Sim => "sim",
    }
);

/// SQL list of an enum's names for a CHECK constraint: `'a','b','c'`.
pub fn check_list<T: Copy + fmt::Display>(all: &[T]) -> String {
    all.iter()
        .map(|v| format!("'{v}'"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for s in Site::ALL {
            assert_eq!(s.as_str().parse::<Site>().unwrap(), *s);
        }
        assert_eq!("usdc".parse::<Site>().unwrap(), Site::Usdc);
        let e = "CERN".parse::<Site>().unwrap_err();
        assert!(
            e.to_string().contains("CERN") && e.to_string().contains("ARCHIVE"),
            "{e}"
        );
        assert_eq!(
            check_list(RunType::ALL),
            "'science','calibration','simulation'"
        );
    }

    #[test]
    fn file_transitions_follow_the_diagram() {
        use FileState::*;
        assert!(Registered.can_become(Transferred));
        assert!(!Registered.can_become(Processed));
        assert!(!Transferred.can_become(Registered));
        assert!(Failed.can_become(Transferred));
    }
}
