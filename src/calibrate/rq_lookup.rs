//! The RQ files of calibration runs, found through the catalog
//! (`tpcflow calibrate --runs 17390-17392 --catalog CATALOG`): for each raw
//! file of each run, the output of the campaign's lineage (the newest when
//! there are several). RQ paths in the catalog are relative to the catalog's
//! directory, as `tpcflow validate --runs` reads them.

use std::path::{Path, PathBuf};

use super::CalibrateError;
use crate::catalog::Catalog;

/// Run numbers from `--runs` values: single runs (`17390`) and inclusive
/// ranges (`17390-17392`), in the order given, without repeats.
///
/// # Errors
/// [`CalibrateError::Runs`] naming the value that is neither.
pub fn parse_runs(values: &[String]) -> Result<Vec<u32>, CalibrateError> {
    let mut runs = Vec::new();
    for v in values {
        let bad = |why: &str| CalibrateError::Runs {
            value: v.clone(),
            why: why.to_string(),
        };
        let (a, b) = match v.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (v.trim(), v.trim()),
        };
        let first: u32 = a.parse().map_err(|_| bad("not a run number"))?;
        let last: u32 = b.parse().map_err(|_| bad("not a run number"))?;
        if last < first {
            return Err(bad("the range ends before it starts"));
        }
        if last - first >= 100_000 {
            return Err(bad("more than 100000 runs"));
        }
        for r in first..=last {
            if !runs.contains(&r) {
                runs.push(r);
            }
        }
    }
    Ok(runs)
}

/// The RQ files of `runs` made by `campaign`, in run and sequence order.
///
/// # Errors
/// [`CalibrateError::Catalog`] when the catalog cannot be read or has no such
/// campaign, [`CalibrateError::NoRq`] naming the first run without an RQ file.
pub fn rq_files_of_runs(
    catalog_path: &Path,
    campaign: &str,
    runs: &[u32],
) -> Result<Vec<PathBuf>, CalibrateError> {
    let err = |why: String| CalibrateError::Catalog {
        path: catalog_path.to_path_buf(),
        why,
    };
    let catalog = Catalog::open_read_only(catalog_path).map_err(|e| err(e.to_string()))?;
    let c = catalog
        .campaign_by_name(campaign)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err(format!("no campaign `{campaign}`")))?;
    let root = catalog_path.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for &run in runs {
        let before = files.len();
        for f in catalog.files_of_run(run).map_err(|e| err(e.to_string()))? {
            let newest = catalog
                .outputs_of(f.id)
                .map_err(|e| err(e.to_string()))?
                .into_iter()
                .filter(|o| o.lineage_hash == c.lineage_hash)
                .max_by(|a, b| a.catalogued_at.total_cmp(&b.catalogued_at));
            if let Some(o) = newest {
                files.push(root.join(o.rq_path));
            }
        }
        if files.len() == before {
            return Err(CalibrateError::NoRq {
                run,
                campaign: campaign.to_string(),
                catalog: catalog_path.to_path_buf(),
            });
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_ranges() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_runs(&v(&["7"])).unwrap(), vec![7]);
        assert_eq!(
            parse_runs(&v(&["17390-17392", "17391", "5"])).unwrap(),
            vec![17390, 17391, 17392, 5]
        );
        for bad in ["17392-17390", "x", "1-", "-3"] {
            let e = parse_runs(&v(&[bad])).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
