//! Conditions as data: tags, their intervals of validity, global tags.
//!
//! A tag is stored whole (its TOML text) with the SHA-256 of that text, the
//! same hash [`crate::conditions::Conditions::sha256`] computes and the
//! output lineage covers: a tag name always means the same bytes (adding a
//! tag again with other content is refused). A tag starts as a `candidate`
//! (from a calibration job or `tpcflow conditions add`), may be `held` for a
//! person, and is `published` from a run onward:
//!
//! ```text
//! tag in force for run R = the published tag with the largest first_run <= R
//! ```
//!
//! so each published tag is valid from its `first_run` until the next
//! published tag's. Once an output was made with a tag (an output of a
//! campaign whose conditions are that tag), its interval can no longer move.
//! Every decision is logged with who and why (`conditions_log`), as blinding
//! decisions are. A global tag is a frozen copy of the published intervals,
//! which a reprocessing campaign pins.

use std::path::Path;

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::{now_unix_s, Catalog, CatalogError};
use crate::conditions::Conditions;

/// Where a tag is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditionsState {
    /// Made, not yet valid for any run.
    Candidate,
    /// Made, held back for a person (a sanity limit was crossed).
    Held,
    /// Valid from its first run onward.
    Published,
}

impl ConditionsState {
    /// Name in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Held => "held",
            Self::Published => "published",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "held" => Self::Held,
            "published" => Self::Published,
            _ => Self::Candidate,
        }
    }
}

/// A catalogued conditions tag (without its text; see [`Catalog::conditions_content`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConditionsTagRow {
    /// Tag name (the `tag` key of its TOML).
    pub tag: String,
    /// SHA-256 of the TOML text (hex).
    pub content_sha256: String,
    /// Provenance as JSON (runs, counts, uncertainties; `{}` for nominal conditions).
    pub provenance: serde_json::Value,
    /// State.
    pub state: ConditionsState,
    /// First run of its interval of validity (published tags).
    pub first_run: Option<u32>,
    /// Calibration run it was made from.
    pub source_run: Option<u32>,
    /// Why it is held, when held.
    pub note: Option<String>,
    /// When it was added [s since the Unix epoch].
    pub created_at: f64,
    /// When it was published [s since the Unix epoch].
    pub published_at: Option<f64>,
}

/// One logged decision about a tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConditionsDecision {
    /// Tag (or global tag).
    pub tag: String,
    /// `add`, `publish from run N`, `hold`, `global tag`.
    pub action: String,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When [s since the Unix epoch].
    pub at: f64,
}

/// A new tag to add.
#[derive(Debug, Clone)]
pub struct NewConditions<'a> {
    /// Tag name; must equal the TOML's `tag`.
    pub tag: &'a str,
    /// The TOML text.
    pub content: &'a str,
    /// Calibration run it was made from.
    pub source_run: Option<u32>,
    /// Who adds it.
    pub by: &'a str,
    /// Why.
    pub reason: &'a str,
}

const TAG_COLUMNS: &str = "tag, content_sha256, provenance, state, first_run, source_run, note, \
                           created_at, published_at";

fn tag_row(r: &Row<'_>) -> rusqlite::Result<ConditionsTagRow> {
    let provenance: String = r.get(2)?;
    let state: String = r.get(3)?;
    Ok(ConditionsTagRow {
        tag: r.get(0)?,
        content_sha256: r.get(1)?,
        provenance: serde_json::from_str(&provenance).unwrap_or(serde_json::Value::Null),
        state: ConditionsState::parse(&state),
        first_run: r.get(4)?,
        source_run: r.get(5)?,
        note: r.get(6)?,
        created_at: r.get(7)?,
        published_at: r.get(8)?,
    })
}

impl Catalog {
    fn conditions_error(&self, tag: &str, message: impl Into<String>) -> CatalogError {
        CatalogError::Conditions {
            path: self.path.clone(),
            tag: tag.to_string(),
            message: message.into(),
        }
    }

    fn check_decision(&self, tag: &str, by: &str, reason: &str) -> Result<(), CatalogError> {
        for (field, value) in [("who", by), ("reason", reason)] {
            if value.trim().is_empty() {
                return Err(self.conditions_error(
                    tag,
                    format!("a conditions decision needs a non-empty {field}"),
                ));
            }
        }
        Ok(())
    }

    /// Add a candidate tag. Returns false when the tag is already there with
    /// the same content (nothing is recorded then).
    ///
    /// # Errors
    /// [`CatalogError::Conditions`] when the text is not valid conditions,
    /// its `tag` differs from the name, or the name is taken by other content;
    /// [`CatalogError::Sqlite`].
    pub fn add_conditions(&self, new: &NewConditions<'_>) -> Result<bool, CatalogError> {
        self.check_decision(new.tag, new.by, new.reason)?;
        let parsed = Conditions::parse(new.content, Path::new(&format!("catalog:{}", new.tag)))
            .map_err(|e| self.conditions_error(new.tag, e.to_string()))?;
        if parsed.tag != new.tag {
            return Err(
                self.conditions_error(new.tag, format!("the TOML says tag = \"{}\"", parsed.tag))
            );
        }
        let provenance = serde_json::to_string(&parsed.provenance.unwrap_or_default())
            .map_err(|e| self.conditions_error(new.tag, format!("provenance: {e}")))?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin adding conditions"))?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT content_sha256 FROM conditions_tags WHERE tag = ?1",
                [new.tag],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("read conditions tag"))?;
        match existing {
            Some(sha) if sha == parsed.sha256 => return Ok(false),
            Some(sha) => {
                return Err(self.conditions_error(
                    new.tag,
                    format!(
                    "tag exists with other content (sha256 {sha}, new {}): a tag never changes, \
                         add the new content under a new tag",
                    parsed.sha256
                ),
                ))
            }
            None => {}
        }
        let now = now_unix_s();
        tx.execute(
            "INSERT INTO conditions_tags (tag, content, content_sha256, provenance, source_run, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![new.tag, new.content, parsed.sha256, provenance, new.source_run, now],
        )
        .map_err(self.sql("insert conditions tag"))?;
        tx.execute(
            "INSERT INTO conditions_log (tag, action, by_whom, reason, at) VALUES (?1, 'add', ?2, ?3, ?4)",
            params![new.tag, new.by.trim(), new.reason.trim(), now],
        )
        .map_err(self.sql("log conditions decision"))?;
        tx.commit().map_err(self.sql("commit conditions tag"))?;
        Ok(true)
    }

    /// Every tag: published ones by first run, then the others by age.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn conditions_tags(&self) -> Result<Vec<ConditionsTagRow>, CatalogError> {
        self.query_rows(
            &format!(
                "SELECT {TAG_COLUMNS} FROM conditions_tags
                 ORDER BY first_run IS NULL, first_run, created_at, tag"
            ),
            [],
            "list conditions tags",
            tag_row,
        )
    }

    /// One tag, if catalogued.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn conditions_tag(&self, tag: &str) -> Result<Option<ConditionsTagRow>, CatalogError> {
        self.conn()
            .query_row(
                &format!("SELECT {TAG_COLUMNS} FROM conditions_tags WHERE tag = ?1"),
                [tag],
                tag_row,
            )
            .optional()
            .map_err(self.sql("read conditions tag"))
    }

    /// The TOML text of a tag.
    ///
    /// # Errors
    /// [`CatalogError::Conditions`] for an unknown tag; [`CatalogError::Sqlite`].
    pub fn conditions_content(&self, tag: &str) -> Result<String, CatalogError> {
        self.conn()
            .query_row(
                "SELECT content FROM conditions_tags WHERE tag = ?1",
                [tag],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("read conditions content"))?
            .ok_or_else(|| self.conditions_error(tag, "no such tag in the catalog"))
    }

    /// The published tag in force for a run (interval of validity), if any.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn conditions_for_run(&self, run: u32) -> Result<Option<ConditionsTagRow>, CatalogError> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {TAG_COLUMNS} FROM conditions_tags
                     WHERE state = 'published' AND first_run <= ?1
                     ORDER BY first_run DESC LIMIT 1"
                ),
                [run],
                tag_row,
            )
            .optional()
            .map_err(self.sql("read conditions for run"))
    }

    /// True once an output was made with the tag (an output of a campaign
    /// whose conditions are the tag).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn conditions_used(&self, tag: &str) -> Result<bool, CatalogError> {
        self.conn()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM campaigns c JOIN outputs o ON o.lineage_hash = c.lineage_hash
                                WHERE c.conditions_tag = ?1)",
                [tag],
                |r| r.get(0),
            )
            .map_err(self.sql("check conditions use"))
    }

    /// Publish a tag: valid from `first_run` until the next published tag.
    /// Returns false (nothing recorded) when it is already published from
    /// that run.
    ///
    /// # Errors
    /// [`CatalogError::Conditions`] for an unknown tag, an empty who/why,
    /// a run that already starts another tag's interval, or a tag already
    /// used by outputs whose interval would move; [`CatalogError::Sqlite`].
    pub fn publish_conditions(
        &self,
        tag: &str,
        first_run: u32,
        by: &str,
        reason: &str,
    ) -> Result<bool, CatalogError> {
        self.check_decision(tag, by, reason)?;
        let used = self.conditions_used(tag)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin publishing conditions"))?;
        let now_first: Option<Option<u32>> = tx
            .query_row(
                "SELECT first_run FROM conditions_tags WHERE tag = ?1",
                [tag],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("read conditions tag"))?;
        let Some(now_first) = now_first else {
            return Err(self.conditions_error(tag, "no such tag in the catalog"));
        };
        match now_first {
            Some(f) if f == first_run => return Ok(false),
            Some(f) if used => {
                return Err(self.conditions_error(
                    tag,
                    format!(
                        "published from run {f} and already used by outputs: its interval of \
                         validity is immutable (publish a new tag from run {first_run} instead)"
                    ),
                ))
            }
            _ => {}
        }
        let other: Option<String> = tx
            .query_row(
                "SELECT tag FROM conditions_tags WHERE first_run = ?1 AND tag <> ?2",
                params![first_run, tag],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("read conditions intervals"))?;
        if let Some(other) = other {
            return Err(self.conditions_error(
                tag,
                format!("run {first_run} already starts the interval of tag {other}"),
            ));
        }
        let now = now_unix_s();
        tx.execute(
            "UPDATE conditions_tags SET state = 'published', first_run = ?2, note = NULL, published_at = ?3
             WHERE tag = ?1",
            params![tag, first_run, now],
        )
        .map_err(self.sql("publish conditions"))?;
        tx.execute(
            "INSERT INTO conditions_log (tag, action, by_whom, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tag, format!("publish from run {first_run}"), by.trim(), reason.trim(), now],
        )
        .map_err(self.sql("log conditions decision"))?;
        tx.commit().map_err(self.sql("commit publishing"))?;
        Ok(true)
    }

    /// Hold a candidate for a person (it stays unpublished until
    /// `tpcflow conditions publish`). Returns false when already held.
    ///
    /// # Errors
    /// [`CatalogError::Conditions`] for an unknown or published tag;
    /// [`CatalogError::Sqlite`].
    pub fn hold_conditions(&self, tag: &str, by: &str, reason: &str) -> Result<bool, CatalogError> {
        self.check_decision(tag, by, reason)?;
        let Some(row) = self.conditions_tag(tag)? else {
            return Err(self.conditions_error(tag, "no such tag in the catalog"));
        };
        match row.state {
            ConditionsState::Held => return Ok(false),
            ConditionsState::Published => {
                return Err(self.conditions_error(tag, "published tags cannot be held"))
            }
            ConditionsState::Candidate => {}
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin holding conditions"))?;
        let now = now_unix_s();
        tx.execute(
            "UPDATE conditions_tags SET state = 'held', note = ?2 WHERE tag = ?1 AND state = 'candidate'",
            params![tag, reason.trim()],
        )
        .map_err(self.sql("hold conditions"))?;
        tx.execute(
            "INSERT INTO conditions_log (tag, action, by_whom, reason, at) VALUES (?1, 'hold', ?2, ?3, ?4)",
            params![tag, by.trim(), reason.trim(), now],
        )
        .map_err(self.sql("log conditions decision"))?;
        tx.commit().map_err(self.sql("commit holding"))?;
        Ok(true)
    }

    /// Logged decisions, oldest first (of one tag, or all).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn conditions_log(
        &self,
        tag: Option<&str>,
    ) -> Result<Vec<ConditionsDecision>, CatalogError> {
        self.query_rows(
            "SELECT tag, action, by_whom, reason, at FROM conditions_log
                 WHERE ?1 IS NULL OR tag = ?1 ORDER BY id",
            [tag],
            "read conditions log",
            |r| {
                Ok(ConditionsDecision {
                    tag: r.get(0)?,
                    action: r.get(1)?,
                    by: r.get(2)?,
                    reason: r.get(3)?,
                    at: r.get(4)?,
                })
            },
        )
    }

    /// Freeze the published intervals as a global tag; returns them
    /// (first run, tag), in run order.
    ///
    /// # Errors
    /// [`CatalogError::Conditions`] when the name is taken or nothing is
    /// published; [`CatalogError::Sqlite`].
    pub fn create_global_tag(
        &self,
        name: &str,
        by: &str,
        reason: &str,
    ) -> Result<Vec<(u32, String)>, CatalogError> {
        self.check_decision(name, by, reason)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin global tag"))?;
        let taken: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM global_tags WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )
            .map_err(self.sql("read global tags"))?;
        if taken {
            return Err(self.conditions_error(name, "a global tag by that name exists"));
        }
        let now = now_unix_s();
        tx.execute(
            "INSERT INTO global_tags (name, by_whom, reason, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, by.trim(), reason.trim(), now],
        )
        .map_err(self.sql("insert global tag"))?;
        let n = tx
            .execute(
                "INSERT INTO global_tag_iovs (global_tag, first_run, tag)
                 SELECT ?1, first_run, tag FROM conditions_tags WHERE state = 'published'",
                [name],
            )
            .map_err(self.sql("freeze global tag"))?;
        if n == 0 {
            return Err(self.conditions_error(name, "no published conditions to freeze"));
        }
        tx.execute(
            "INSERT INTO conditions_log (tag, action, by_whom, reason, at) VALUES (?1, 'global tag', ?2, ?3, ?4)",
            params![name, by.trim(), reason.trim(), now],
        )
        .map_err(self.sql("log conditions decision"))?;
        tx.commit().map_err(self.sql("commit global tag"))?;
        drop(conn);
        self.global_tag(name)
    }

    /// The intervals of a global tag (first run, tag), in run order; empty
    /// for an unknown name.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn global_tag(&self, name: &str) -> Result<Vec<(u32, String)>, CatalogError> {
        self.query_rows(
            "SELECT first_run, tag FROM global_tag_iovs WHERE global_tag = ?1 ORDER BY first_run",
            [name],
            "read global tag",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Pin a global tag on a campaign.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`] (an unknown global tag breaks the foreign key).
    pub fn set_campaign_global_tag(
        &self,
        campaign_id: i64,
        name: &str,
    ) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE campaigns SET global_tag = ?2 WHERE id = ?1",
                params![campaign_id, name],
            )
            .map_err(self.sql("pin global tag"))?;
        Ok(())
    }

    /// The global tag a campaign pins, if any.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn campaign_global_tag(&self, campaign_id: i64) -> Result<Option<String>, CatalogError> {
        self.conn()
            .query_row(
                "SELECT global_tag FROM campaigns WHERE id = ?1",
                [campaign_id],
                |r| r.get(0),
            )
            .map_err(self.sql("read campaign global tag"))
    }

    /// Narrow a campaign's run range to end at `last_run` (a prompt campaign
    /// whose conditions a newer tag replaces from `last_run + 1`).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn end_campaign_runs(&self, campaign_id: i64, last_run: u32) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE campaigns SET last_run = max(first_run, ?2) WHERE id = ?1 AND last_run > ?2",
                params![campaign_id, last_run],
            )
            .map_err(self.sql("narrow campaign runs"))?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "conditions_tests.rs"]
mod tests;
