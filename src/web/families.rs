//! Processing families (campaigns): `/api/families` and `/api/family?name=`.
//!
//! ```text
//! family       name, e.g. SR3_autodata_Y2024_W41_PROD-1
//! start date   creation date of the campaign (UTC)
//! samples      runs with at least one task of the family
//! status       campaign state: defined, active, complete, cancelled
//! progress     tasks done / failed (of all tasks; the rest are in flight);
//!              a simulation family also shows its production: files
//!              simulated / failed of the files it makes, and reconstructs
//!              out of those files
//! expand       /api/family?name=... adds one row per run
//! ```

use serde::Serialize;

use super::params::Params;
use super::WebError;
use crate::catalog::FamilyRun;
use crate::catalog::{utc_string, CampaignProgress, Catalog, SimProgress};

/// Parameters of `/api/families` and `/families`.
pub(crate) const FAMILIES_PARAMS: &[&str] = &["q"];
/// Parameters of `/api/family`.
pub(crate) const FAMILY_PARAMS: &[&str] = &["name"];

/// One family with its progress.
#[derive(Debug, Clone, Serialize)]
pub struct Family {
    /// Catalog id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Creation date, `YYYY-MM-DD` (UTC).
    pub start_date: String,
    /// Creation time [s since the Unix epoch].
    pub created_at: f64,
    /// Runs with at least one task.
    pub samples: u64,
    /// Campaign state.
    pub status: String,
    /// Prompt (real-time) processing rather than reprocessing.
    pub prompt: bool,
    /// First run of the range.
    pub first_run: u32,
    /// Last run of the range.
    pub last_run: u32,
    /// Conditions tag.
    pub conditions_tag: String,
    /// Lineage hash of its outputs.
    pub lineage_hash: String,
    /// Tasks in total.
    pub tasks: u64,
    /// Tasks done.
    pub done: u64,
    /// Tasks failed after the retry cap.
    pub failed: u64,
    /// Tasks queued or in jobs.
    pub in_flight: u64,
    /// A simulation family's production (None: it reconstructs detector data).
    pub simulation: Option<SimProgress>,
}

impl From<CampaignProgress> for Family {
    fn from(p: CampaignProgress) -> Self {
        let c = p.campaign;
        Self {
            id: c.id,
            name: c.name,
            start_date: utc_string(c.created_at)[..10].to_string(),
            created_at: c.created_at,
            samples: p.runs,
            status: c.state.to_string(),
            prompt: p.prompt,
            first_run: c.first_run,
            last_run: c.last_run,
            conditions_tag: c.conditions_tag,
            lineage_hash: c.lineage_hash,
            tasks: p.tasks,
            done: p.done,
            failed: p.failed,
            in_flight: p.in_flight,
            simulation: p.simulation,
        }
    }
}

/// `/api/families`.
#[derive(Debug, Clone, Serialize)]
pub struct FamiliesPage {
    /// Families in the catalog.
    pub total: usize,
    /// Families, newest first (after the filter).
    pub families: Vec<Family>,
}

/// `/api/family?name=`.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyDetail {
    /// The family.
    pub family: Family,
    /// Its runs.
    pub runs: Vec<FamilyRun>,
}

/// Answer `/api/families`.
///
/// # Errors
/// [`WebError::BadParam`]; catalog errors.
pub(crate) fn families(catalog: &Catalog, p: &Params) -> Result<FamiliesPage, WebError> {
    let filter = p.get("q").map(str::to_lowercase);
    if filter.as_ref().is_some_and(|f| f.chars().count() > 100) {
        return Err(WebError::bad_param(
            "q",
            p.get("q").unwrap_or_default(),
            "at most 100 characters",
        ));
    }
    let all: Vec<Family> = catalog
        .campaign_progress()?
        .into_iter()
        .map(Family::from)
        .collect();
    let total = all.len();
    let families = all
        .into_iter()
        .filter(|f| {
            filter.as_deref().is_none_or(|q| {
                f.name.to_lowercase().contains(q)
                    || f.status.contains(q)
                    || f.start_date.contains(q)
            })
        })
        .collect();
    Ok(FamiliesPage { total, families })
}

/// Answer `/api/family?name=`.
///
/// # Errors
/// [`WebError::BadParam`] for a missing or malformed name;
/// [`WebError::UnknownFamily`]; catalog errors.
pub(crate) fn family(catalog: &Catalog, p: &Params) -> Result<FamilyDetail, WebError> {
    let name = p
        .name("name", "a family name of letters, digits, `_`, `.` and `-`")?
        .ok_or_else(|| WebError::bad_param("name", "", "a family name"))?;
    let progress = catalog
        .campaign_progress()?
        .into_iter()
        .find(|c| c.campaign.name == name)
        .ok_or_else(|| WebError::UnknownFamily {
            name: name.to_string(),
        })?;
    let runs = catalog.family_runs(progress.campaign.id)?;
    Ok(FamilyDetail {
        family: Family::from(progress),
        runs,
    })
}
