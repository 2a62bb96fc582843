//! The catalog's side of sites that process: which site a job runs at and an
//! output was made at, where a campaign may run, the operator's drains, and
//! the verified replicas each processing site can read.
//!
//! A job or output without a site (recorded before sites processed) belongs
//! to the primary site, USDC.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{now_unix_s, Catalog, CatalogError, Site};

/// A site closed to new work by the operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteDrain {
    /// The site.
    pub site: String,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// Since when [s since the Unix epoch].
    pub since: f64,
}

impl Catalog {
    /// Record the site a job (or each element of an array) was submitted to.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn set_jobs_site(&self, job_ids: &[i64], site: Site) -> Result<(), CatalogError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("UPDATE jobs SET site = ?2 WHERE id = ?1")
            .map_err(self.sql("record job site"))?;
        for id in job_ids {
            st.execute(params![id, site])
                .map_err(self.sql("record job site"))?;
        }
        Ok(())
    }

    /// Ids of the jobs at `site` among these (NULL counts as `primary`).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn jobs_at_site(
        &self,
        job_ids: &[i64],
        site: Site,
        primary: Site,
    ) -> Result<HashSet<i64>, CatalogError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT coalesce(site, ?2) FROM jobs WHERE id = ?1")
            .map_err(self.sql("read job site"))?;
        let mut out = HashSet::new();
        for &id in job_ids {
            let s: Option<Site> = st
                .query_row(params![id, primary], |r| r.get(0))
                .optional()
                .map_err(self.sql("read job site"))?;
            if s == Some(site) {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// The site that made the output of a file in a lineage (after [`Catalog::task_done`]).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn set_output_site(
        &self,
        file_id: i64,
        lineage_hash: &str,
        site: Site,
    ) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE outputs SET site = ?3 WHERE file_id = ?1 AND lineage_hash = ?2",
                params![file_id, lineage_hash, site],
            )
            .map(drop)
            .map_err(self.sql("record output site"))
    }

    /// The site that made an output (None: recorded without one).
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn output_site(
        &self,
        file_id: i64,
        lineage_hash: &str,
    ) -> Result<Option<String>, CatalogError> {
        self.conn()
            .query_row(
                "SELECT site FROM outputs WHERE file_id = ?1 AND lineage_hash = ?2",
                params![file_id, lineage_hash],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(self.sql("read output site"))
    }

    /// Where a campaign may run: a site name or `any`.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn campaign_site(&self, campaign_id: i64) -> Result<String, CatalogError> {
        self.conn()
            .query_row(
                "SELECT site FROM campaigns WHERE id = ?1",
                [campaign_id],
                |r| r.get(0),
            )
            .map_err(self.sql("read campaign site"))
    }

    /// Pin a campaign to a site, or `any`.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn set_campaign_site(&self, campaign_id: i64, site: &str) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "UPDATE campaigns SET site = ?2 WHERE id = ?1",
                params![campaign_id, site],
            )
            .map(drop)
            .map_err(self.sql("write campaign site"))
    }

    /// Paths (relative to the site root) of the verified replicas of these
    /// files at these sites.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn verified_paths(
        &self,
        file_ids: &[i64],
        sites: &[Site],
    ) -> Result<HashMap<(i64, Site), String>, CatalogError> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached(
                "SELECT path FROM replicas WHERE file_id = ?1 AND site = ?2 AND state = 'verified'",
            )
            .map_err(self.sql("read verified replicas"))?;
        let mut out = HashMap::new();
        for &f in file_ids {
            for &s in sites {
                let p: Option<String> = st
                    .query_row(params![f, s], |r| r.get(0))
                    .optional()
                    .map_err(self.sql("read verified replicas"))?;
                if let Some(p) = p {
                    out.insert((f, s), p);
                }
            }
        }
        Ok(out)
    }

    /// Close a site to new work.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn drain_site(&self, site: Site, reason: &str, by: &str) -> Result<(), CatalogError> {
        self.conn()
            .execute(
                "INSERT INTO site_drains (site, reason, by_whom, since) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (site) DO UPDATE SET reason = excluded.reason, by_whom = excluded.by_whom",
                params![site, reason, by, now_unix_s()],
            )
            .map(drop)
            .map_err(self.sql("drain site"))
    }

    /// Open a drained site again. Returns whether it was drained.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn resume_site(&self, site: Site) -> Result<bool, CatalogError> {
        self.conn()
            .execute("DELETE FROM site_drains WHERE site = ?1", [site])
            .map(|n| n > 0)
            .map_err(self.sql("resume site"))
    }

    /// Drained sites.
    ///
    /// # Errors
    /// [`CatalogError::Sqlite`].
    pub fn site_drains(&self) -> Result<Vec<SiteDrain>, CatalogError> {
        self.query_rows(
            "SELECT site, reason, by_whom, since FROM site_drains ORDER BY site",
            [],
            "list drains",
            |r| {
                Ok(SiteDrain {
                    site: r.get(0)?,
                    reason: r.get(1)?,
                    by: r.get(2)?,
                    since: r.get(3)?,
                })
            },
        )
    }
}
