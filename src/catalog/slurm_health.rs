//! The dispatcher's view of SLURM's health, kept in the catalog so that
//! `tpcflow status` in another process shows an outage and a dispatcher run
//! pass by pass (`--once`) keeps its back-off across processes.
//!
//! One row of the `meta` table per processing site, key `slurm_health` for
//! the primary site USDC and `slurm_health:{SITE}` for another, value a JSON
//! [`SlurmHealth`]; no row means that site's SLURM answered the last time it
//! was asked.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{Catalog, CatalogError, Site};

/// The `meta` key of the record of the primary site.
const KEY: &str = "slurm_health";

fn key_of(site: Site) -> String {
    if site == Site::Usdc {
        KEY.to_string()
    } else {
        format!("{KEY}:{site}")
    }
}

/// An ongoing SLURM outage as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlurmHealth {
    /// When SLURM first did not answer [s since the Unix epoch].
    pub unavailable_since: f64,
    /// Dispatcher passes since then that ran without the SLURM stages.
    pub passes: u32,
    /// Times SLURM was asked and did not answer since then.
    pub attempts: u32,
    /// When SLURM was last asked [s since the Unix epoch].
    pub last_attempt_at: f64,
    /// Passes before this time skip the SLURM stages [s since the Unix epoch].
    pub next_try_at: f64,
    /// The last error of a SLURM client command.
    pub last_error: String,
}

impl Catalog {
    /// The recorded SLURM outage, if any.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`], also when the record is not valid JSON.
    pub fn slurm_health(&self) -> Result<Option<SlurmHealth>, CatalogError> {
        self.slurm_health_at(Site::Usdc)
    }

    /// The recorded SLURM outage of a processing site's cluster, if any.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`], also when the record is not valid JSON.
    pub fn slurm_health_at(&self, site: Site) -> Result<Option<SlurmHealth>, CatalogError> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [key_of(site)],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("read SLURM health"))?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| {
                self.sql("parse the SLURM health record")(
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    ),
                )
            })
        })
        .transpose()
    }

    /// Record (or replace) the SLURM outage.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn set_slurm_health(&self, health: &SlurmHealth) -> Result<(), CatalogError> {
        self.set_slurm_health_at(Site::Usdc, health)
    }

    /// Record (or replace) the SLURM outage of a processing site.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn set_slurm_health_at(
        &self,
        site: Site,
        health: &SlurmHealth,
    ) -> Result<(), CatalogError> {
        let json = serde_json::to_string(health).map_err(|e| {
            self.sql("encode the SLURM health record")(rusqlite::Error::ToSqlConversionFailure(
                Box::new(e),
            ))
        })?;
        self.conn()
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key_of(site), json],
            )
            .map(drop)
            .map_err(self.sql("write SLURM health"))
    }

    /// SLURM answered: forget the outage. Returns whether one was recorded.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn clear_slurm_health(&self) -> Result<bool, CatalogError> {
        self.clear_slurm_health_at(Site::Usdc)
    }

    /// A processing site's SLURM answered: forget its outage. Returns whether one was recorded.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn clear_slurm_health_at(&self, site: Site) -> Result<bool, CatalogError> {
        self.conn()
            .execute("DELETE FROM meta WHERE key = ?1", [key_of(site)])
            .map(|n| n > 0)
            .map_err(self.sql("clear SLURM health"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_recorded_read_back_by_another_connection_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let c = Catalog::init(&path).unwrap();
        assert_eq!(c.slurm_health().unwrap(), None);
        let h = SlurmHealth {
            unavailable_since: 1_795_869_543.5,
            passes: 3,
            attempts: 2,
            last_attempt_at: 1_795_869_560.0,
            next_try_at: 1_795_869_580.0,
            last_error: "SLURM unavailable: `squeue -h`: no answer within 3s".into(),
        };
        c.set_slurm_health(&h).unwrap();
        let again = SlurmHealth {
            passes: 4,
            ..h.clone()
        };
        c.set_slurm_health(&again).unwrap();
        let other = Catalog::open(&path).unwrap();
        assert_eq!(other.slurm_health().unwrap(), Some(again));
        assert_eq!(c.instance_id().unwrap().len(), 6, "the identity row stays");
        assert!(other.clear_slurm_health().unwrap());
        assert!(!other.clear_slurm_health().unwrap());
        assert_eq!(c.slurm_health().unwrap(), None);
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let c = Catalog::init(&path).unwrap();
        c.conn()
            .execute(
                "INSERT INTO meta (key, value) VALUES ('slurm_health', '{not json')",
                [],
            )
            .unwrap();
        let e = c.slurm_health().unwrap_err().to_string();
        assert!(e.contains("c.sqlite") && e.contains("SLURM health"), "{e}");
    }
}
