//! The run table of data movement: `/api/runs`.
//!
//! The whole table ([`Catalog::run_movement`], one grouped query) is read at
//! most once per cache period by one request while the others wait for it
//! (single flight); looking up, filtering, ordering and paging then work on
//! the cached rows, so tens of thousands of runs and many clients cost one
//! query every few seconds.
//!
//! ```text
//! /api/runs?runs=17400 17401   look up run numbers (space or comma separated)
//!          &q=2024-09           keep rows whose run, type or start time contains the text
//!          &missing_first=1     runs missing files (not placed everywhere, or failed) first
//!          &order=desc|asc      by run number (default: newest first)
//!          &page=1&per_page=100 paging (per_page 1-1000)
//! ```
//!
//! [`Catalog::run_movement`]: crate::catalog::Catalog::run_movement

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::params::{parse_uint, Params};
use super::{blocking, AppState, WebError};
use crate::catalog::RunMovement;
use crate::catalog::{now_unix_s, utc_string};

/// Parameters of `/api/runs` and `/`.
pub(crate) const RUNS_PARAMS: &[&str] =
    &["runs", "q", "missing_first", "order", "page", "per_page"];
/// Most run numbers in one look-up.
pub const MAX_LOOKUP: usize = 1000;
/// Largest page.
pub const MAX_PER_PAGE: u64 = 1000;
/// Default page size.
pub const DEFAULT_PER_PAGE: u64 = 100;

/// The run table as read: (when, when [s since the Unix epoch], rows).
type Snapshot = (Instant, f64, Arc<Vec<RunMovement>>);

/// The cached run table.
#[derive(Debug)]
pub(crate) struct RunsCache {
    ttl: Duration,
    slot: tokio::sync::Mutex<Option<Snapshot>>,
}

impl RunsCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slot: tokio::sync::Mutex::new(None),
        }
    }
}

/// One row of the table with its "missing files" mark.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// The counts.
    #[serde(flatten)]
    pub counts: RunMovement,
    /// Some file is not yet placed everywhere, or failed.
    pub missing_files: bool,
}

/// One page of the run table.
#[derive(Debug, Clone, Serialize)]
pub struct RunsPage {
    /// When the table was read from the catalog, ISO 8601 UTC.
    pub read_at: String,
    /// Runs in the catalog.
    pub total_runs: usize,
    /// Runs after look-up and filter.
    pub matched: usize,
    /// This page, from 1.
    pub page: u64,
    /// Rows per page.
    pub per_page: u64,
    /// Pages of `matched` rows (at least 1).
    pub pages: u64,
    /// Runs missing files were put first.
    pub missing_first: bool,
    /// Run numbers looked up (empty: all runs).
    pub looked_up: Vec<u32>,
    /// Run numbers looked up that are not in the catalog.
    pub not_found: Vec<u32>,
    /// The rows of this page.
    pub rows: Vec<RunRow>,
}

/// Run numbers separated by spaces or commas.
fn parse_run_list(text: &str) -> Result<Vec<u32>, WebError> {
    let mut runs = Vec::new();
    for tok in text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
    {
        let n = parse_uint(
            "runs",
            tok,
            "run numbers separated by spaces",
            u64::from(u32::MAX),
        )?;
        runs.push(n as u32);
        if runs.len() > MAX_LOOKUP {
            return Err(WebError::bad_param(
                "runs",
                text,
                &format!("at most {MAX_LOOKUP} run numbers"),
            ));
        }
    }
    Ok(runs)
}

/// What `/api/runs` asks for, validated.
#[derive(Debug, Clone)]
pub(crate) struct RunsQuery {
    runs: Vec<u32>,
    filter: Option<String>,
    missing_first: bool,
    ascending: bool,
    page: u64,
    per_page: u64,
}

impl RunsQuery {
    /// Validate the parameters.
    ///
    /// # Errors
    /// [`WebError::BadParam`] naming the parameter.
    pub(crate) fn parse(p: &Params) -> Result<Self, WebError> {
        let runs = p
            .get("runs")
            .map(parse_run_list)
            .transpose()?
            .unwrap_or_default();
        let filter = p.get("q").map(str::to_lowercase);
        if filter.as_ref().is_some_and(|f| f.chars().count() > 100) {
            return Err(WebError::bad_param(
                "q",
                p.get("q").unwrap_or_default(),
                "at most 100 characters",
            ));
        }
        let ascending = match p.get("order") {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(other) => return Err(WebError::bad_param("order", other, "`asc` or `desc`")),
        };
        let page = p
            .uint("page", "a page number from 1", u64::from(u32::MAX))?
            .unwrap_or(1);
        if page == 0 {
            return Err(WebError::bad_param("page", "0", "a page number from 1"));
        }
        let per_page = p
            .uint("per_page", "rows per page", MAX_PER_PAGE)?
            .unwrap_or(DEFAULT_PER_PAGE)
            .max(1);
        Ok(Self {
            runs,
            filter,
            missing_first: p.flag("missing_first")?,
            ascending,
            page,
            per_page,
        })
    }
}

/// The cached table, read again when older than the cache period.
async fn table(state: &Arc<AppState>) -> Result<(f64, Arc<Vec<RunMovement>>), WebError> {
    let mut slot = state.runs.slot.lock().await;
    if let Some((at, read_at, rows)) = slot.as_ref() {
        if at.elapsed() < state.runs.ttl {
            return Ok((*read_at, Arc::clone(rows)));
        }
    }
    let rows = Arc::new(blocking(state, |s| Ok(s.catalog.run_movement()?)).await?);
    let read_at = now_unix_s();
    *slot = Some((Instant::now(), read_at, Arc::clone(&rows)));
    Ok((read_at, rows))
}

/// Answer `/api/runs`.
///
/// # Errors
/// [`WebError::NoRunsFound`] when none of the looked-up runs exists; catalog errors.
pub(crate) async fn runs_page(state: &Arc<AppState>, q: RunsQuery) -> Result<RunsPage, WebError> {
    let (read_at, all) = table(state).await?;
    let mut not_found = Vec::new();
    let mut rows: Vec<&RunMovement> = if q.runs.is_empty() {
        all.iter().collect()
    } else {
        let mut found = Vec::new();
        for &r in &q.runs {
            match all.binary_search_by_key(&r, |m| m.run) {
                Ok(i) if !found.iter().any(|m: &&RunMovement| m.run == r) => found.push(&all[i]),
                Ok(_) => {}
                Err(_) => not_found.push(r),
            }
        }
        if found.is_empty() {
            let runs = q
                .runs
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            return Err(WebError::NoRunsFound { runs });
        }
        found
    };
    if let Some(f) = &q.filter {
        rows.retain(|m| {
            m.run.to_string().contains(f.as_str())
                || m.run_type.to_lowercase().contains(f.as_str())
                || m.start_time
                    .as_deref()
                    .is_some_and(|t| t.to_lowercase().contains(f.as_str()))
        });
    }
    rows.sort_by(|a, b| {
        let by_run = if q.ascending {
            a.run.cmp(&b.run)
        } else {
            b.run.cmp(&a.run)
        };
        if q.missing_first {
            b.missing_files().cmp(&a.missing_files()).then(by_run)
        } else {
            by_run
        }
    });
    let matched = rows.len();
    let pages = (matched as u64).div_ceil(q.per_page).max(1);
    let page = q.page.min(pages);
    let start = ((page - 1) * q.per_page) as usize;
    let rows = rows
        .into_iter()
        .skip(start)
        .take(q.per_page as usize)
        .map(|m| RunRow {
            counts: m.clone(),
            missing_files: m.missing_files(),
        })
        .collect();
    Ok(RunsPage {
        read_at: utc_string(read_at),
        total_runs: all.len(),
        matched,
        page,
        per_page: q.per_page,
        pages,
        missing_first: q.missing_first,
        looked_up: q.runs,
        not_found,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lists() {
        assert_eq!(
            parse_run_list("17400 17401,17402  ").unwrap(),
            vec![17400, 17401, 17402]
        );
        assert!(parse_run_list("17400 abc").is_err());
        assert!(parse_run_list("1' OR '1'='1").is_err());
        let many = (0..=MAX_LOOKUP)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(parse_run_list(&many).is_err());
    }
}
