//! Blinding as a property of the catalog.
//!
//! A catalog is blinded from an explicit decision on (`tpcflow catalog blind`)
//! until an explicit decision off (`tpcflow catalog unblind --confirm-unblind`).
//! Each decision is a row of `blinding_log` (on or off, who, why, when) and
//! the last row wins, so the history of a blind analysis stays in the catalog.
//! While blinded, every command that places raw files (`tpcflow transfer`, the
//! dispatcher's transfer stage) places science files only once salted, whatever
//! its own options say; calibration files move as usual.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::{now_unix_s, Catalog, CatalogError};

/// One blinding decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlindingDecision {
    /// Blinded from then on (true) or unblinded (false).
    pub blinded: bool,
    /// Who decided.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When [s since the Unix epoch].
    pub at: f64,
}

/// The catalog's blinding: now, and every decision, oldest first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BlindingStatus {
    /// Science files must be salted before placement.
    pub blinded: bool,
    /// Every decision, oldest first.
    pub history: Vec<BlindingDecision>,
}

impl Catalog {
    /// True while the catalog is blinded.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn blinded(&self) -> Result<bool, CatalogError> {
        let last: Option<bool> = self
            .conn()
            .query_row(
                "SELECT blinded FROM blinding_log ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("read blinding"))?;
        Ok(last.unwrap_or(false))
    }

    /// The blinding state and its history.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn blinding(&self) -> Result<BlindingStatus, CatalogError> {
        let history: Vec<BlindingDecision> = self.query_rows(
            "SELECT blinded, by_whom, reason, at FROM blinding_log ORDER BY id",
            [],
            "read blinding log",
            |r| {
                Ok(BlindingDecision {
                    blinded: r.get(0)?,
                    by: r.get(1)?,
                    reason: r.get(2)?,
                    at: r.get(3)?,
                })
            },
        )?;
        Ok(BlindingStatus {
            blinded: history.last().is_some_and(|d| d.blinded),
            history,
        })
    }

    /// Record a decision to blind (`blinded = true`) or unblind the catalog,
    /// with who and why. Returns false (and records nothing) when the
    /// catalog is already in that state.
    ///
    /// # Errors
    /// [`CatalogError::Blinding`] when `by` or `reason` is empty;
    /// [`CatalogError::Sqlite`].
    pub fn set_blinding(
        &self,
        blinded: bool,
        by: &str,
        reason: &str,
    ) -> Result<bool, CatalogError> {
        for (field, value) in [("who", by), ("reason", reason)] {
            if value.trim().is_empty() {
                return Err(CatalogError::Blinding {
                    path: self.path.clone(),
                    message: format!("a blinding decision needs a non-empty {field}"),
                });
            }
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin blinding decision"))?;
        let last: Option<bool> = tx
            .query_row(
                "SELECT blinded FROM blinding_log ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("read blinding"))?;
        if last.unwrap_or(false) == blinded {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO blinding_log (blinded, by_whom, reason, at) VALUES (?1, ?2, ?3, ?4)",
            params![blinded, by.trim(), reason.trim(), now_unix_s()],
        )
        .map_err(self.sql("record blinding decision"))?;
        tx.commit().map_err(self.sql("commit blinding decision"))?;
        Ok(true)
    }

    /// Science files registered at SURF, not salted, without any destination
    /// replica: what a blinded catalog holds back from placement.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn unsalted_science_files_at_surf(&self) -> Result<u64, CatalogError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM raw_files f JOIN runs r ON r.number = f.run
                 WHERE f.state = 'registered' AND f.salted = 0 AND r.run_type = 'science'",
                [],
                |r| r.get(0),
            )
            .map_err(self.sql("count unsalted science files"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_logged_and_the_last_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::init(&dir.path().join("c.sqlite")).unwrap();
        assert!(!c.blinded().unwrap());
        assert!(c.set_blinding(true, "coordinator", "SR3 blind").unwrap());
        assert!(!c.set_blinding(true, "coordinator", "again").unwrap());
        assert!(c.blinded().unwrap());
        assert!(c.set_blinding(false, "", "x").is_err());
        assert!(c.set_blinding(false, "bob", " ").is_err());
        assert!(c.blinded().unwrap(), "a refused decision changes nothing");
        assert!(c.set_blinding(false, "bob", "box opened").unwrap());
        let s = c.blinding().unwrap();
        assert!(!s.blinded);
        assert_eq!(s.history.len(), 2);
        assert_eq!(
            (s.history[1].by.as_str(), s.history[1].reason.as_str()),
            ("bob", "box opened")
        );
    }
}
