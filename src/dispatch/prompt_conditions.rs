//! Which conditions processing uses, from the catalog's tags.
//!
//! ```text
//! prompt processing   one campaign `prompt-{tag}` per published tag, over the
//!                     tag's interval of validity [first_run, next first_run - 1];
//!                     a file is queued (and so processed) with the tag valid for
//!                     its run when the queue stage sees it
//! reprocessing        a campaign pins a global tag: one campaign per interval of
//!                     the global tag inside its run range (`NAME` when one,
//!                     `NAME.{tag}` for each when several)
//! jobs                read the tag's TOML from `{rq_root}/conditions/{tag}.{sha16}.toml`,
//!                     written once from the catalog (content-addressed name)
//! ```
//!
//! The conditions a campaign uses are always in the catalog (a campaign over
//! a built-in tag or a TOML file adds it as a candidate), so a tag name means
//! the same bytes for every campaign, and the lineage hash, which covers the
//! content's SHA-256, differs whenever the conditions differ.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tpcflow_reco::RecoConfig;

use crate::catalog::{CampaignRow, Catalog, NewConditions};
use crate::conditions::Conditions;

/// Who the dispatcher's decisions are logged as.
pub const DISPATCHER: &str = "tpcflow dispatch";

/// Conditions by catalog tag, or else a built-in tag or TOML file, which is
/// then added to the catalog as a candidate (the same tag with other content
/// is refused).
///
/// # Errors
/// Unknown conditions, invalid TOML, a tag name taken by other content.
pub fn resolve(catalog: &Catalog, spec: &str, why: &str) -> Result<Conditions> {
    if catalog.conditions_tag(spec)?.is_some() {
        let text = catalog.conditions_content(spec)?;
        return Ok(Conditions::parse(
            &text,
            Path::new(&format!("catalog:{spec}")),
        )?);
    }
    let text = crate::conditions::text_of(spec)?;
    let cond = Conditions::parse(&text, Path::new(spec))?;
    catalog.add_conditions(&NewConditions {
        tag: &cond.tag,
        content: &text,
        source_run: None,
        by: DISPATCHER,
        reason: why,
    })?;
    Ok(cond)
}

/// Seed prompt processing: the settings' `prompt_conditions` in the catalog,
/// published from run 0 when nothing is published yet.
///
/// # Errors
/// The catalog's, or conditions that do not load.
pub fn seed(catalog: &Catalog, prompt_conditions: &str) -> Result<()> {
    let cond = resolve(
        catalog,
        prompt_conditions,
        "prompt_conditions of the dispatcher",
    )?;
    if catalog
        .conditions_tags()?
        .iter()
        .all(|t| t.first_run.is_none())
    {
        catalog.publish_conditions(
            &cond.tag,
            0,
            DISPATCHER,
            "prompt_conditions of the dispatcher: the first conditions in force",
        )?;
    }
    Ok(())
}

/// One prompt campaign per published tag over its interval of validity:
/// create the missing ones, end each where the next tag begins. Returns the
/// campaigns created.
///
/// # Errors
/// The catalog's.
pub fn sync_prompt_campaigns(catalog: &Catalog) -> Result<Vec<String>> {
    let published: Vec<(u32, String)> = catalog
        .conditions_tags()?
        .into_iter()
        .filter_map(|t| t.first_run.map(|r| (r, t.tag)))
        .collect();
    let mut created = Vec::new();
    for (i, (first, tag)) in published.iter().enumerate() {
        let last = published
            .get(i + 1)
            .map_or(u32::MAX >> 1, |(next, _)| next.saturating_sub(1));
        let name = super::prompt_campaign_name(tag);
        let campaign = match catalog.campaign_by_name(&name)? {
            Some(c) => c,
            None => {
                created.push(name.clone());
                super::create_campaign(
                    catalog,
                    &name,
                    (*first, last.max(*first)),
                    tag,
                    &RecoConfig::default(),
                    true,
                )?
            }
        };
        if campaign.last_run > last {
            catalog.end_campaign_runs(campaign.id, last)?;
            tracing::info!(campaign = %name, last_run = last, "prompt campaign ends where the next conditions begin");
        }
    }
    Ok(created)
}

/// Define a reprocessing campaign that pins a global tag: one campaign per
/// interval of the global tag inside `runs`. Returns the campaigns.
///
/// # Errors
/// An unknown global tag, no interval inside the runs, a name taken.
pub fn create_pinned_campaigns(
    catalog: &Catalog,
    name: &str,
    runs: (u32, u32),
    global_tag: &str,
    config: &RecoConfig,
) -> Result<Vec<CampaignRow>> {
    let iovs = catalog.global_tag(global_tag)?;
    if iovs.is_empty() {
        bail!("no global tag `{global_tag}` (make one with `tpcflow conditions global`)");
    }
    let mut parts = Vec::new();
    for (i, (first, tag)) in iovs.iter().enumerate() {
        let end = iovs
            .get(i + 1)
            .map_or(u32::MAX >> 1, |(next, _)| next.saturating_sub(1));
        let (lo, hi) = ((*first).max(runs.0), end.min(runs.1));
        if lo <= hi {
            parts.push((lo, hi, tag.clone()));
        }
    }
    if parts.is_empty() {
        bail!(
            "global tag `{global_tag}` has no conditions for runs {}-{}",
            runs.0,
            runs.1
        );
    }
    let single = parts.len() == 1;
    let mut out = Vec::new();
    for (lo, hi, tag) in parts {
        let part_name = if single {
            name.to_string()
        } else {
            format!("{name}.{tag}")
        };
        let c = super::create_campaign(catalog, &part_name, (lo, hi), &tag, config, false)?;
        catalog.set_campaign_global_tag(c.id, global_tag)?;
        out.push(c);
    }
    Ok(out)
}

/// The conditions argument of a job: the catalog tag's TOML written once
/// under `{rq_root}/conditions/` (named by tag and content hash), or the
/// tag itself when the catalog does not hold it.
///
/// # Errors
/// When the file cannot be written.
pub fn job_conditions(catalog: &Catalog, rq_root: &Path, tag: &str) -> Result<String> {
    let Some(row) = catalog.conditions_tag(tag)? else {
        return Ok(tag.to_string());
    };
    let path = conditions_file(rq_root, tag, &row.content_sha256);
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = catalog.conditions_content(tag)?;
        crate::atomic_file::write(&path, text.as_bytes())
            .with_context(|| format!("writing conditions {tag} to {}", path.display()))?;
    }
    Ok(path.display().to_string())
}

/// Where a tag's TOML is written for jobs.
pub fn conditions_file(rq_root: &Path, tag: &str, sha256: &str) -> PathBuf {
    rq_root
        .join("conditions")
        .join(format!("{tag}.{}.toml", &sha256[..16.min(sha256.len())]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{FileState, NewRawFile, RunInfo, RunType};

    const V1: &str = include_str!("../../conditions/v1.toml");

    fn variant(tag: &str, lifetime_us: f64) -> String {
        V1.replace("tag = \"v1\"", &format!("tag = \"{tag}\""))
            .replace(
                "electron_lifetime_us = 9000.0",
                &format!("electron_lifetime_us = {lifetime_us:.1}"),
            )
    }

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::init(&dir.path().join("catalog.sqlite")).unwrap();
        (dir, c)
    }

    fn add_published(c: &Catalog, tag: &str, lifetime_us: f64, first_run: u32) {
        c.add_conditions(&NewConditions {
            tag,
            content: &variant(tag, lifetime_us),
            source_run: Some(first_run),
            by: "t",
            reason: "t",
        })
        .unwrap();
        c.publish_conditions(tag, first_run, "t", "t").unwrap();
    }

    fn transferred_file(c: &Catalog, run: u32) {
        c.upsert_run(
            &RunInfo {
                number: run,
                run_type: RunType::Science,
                start_time: None,
                conditions: None,
            },
            false,
        )
        .unwrap();
        let name = format!("{run:06}_00000.raw.h5");
        c.register_files(&[NewRawFile {
            run,
            sequence: 0,
            rel_path: format!("{run:06}/{name}"),
            name: name.clone(),
            size_bytes: 10,
            adler32: "00000001".into(),
            written_at: None,
        }])
        .unwrap();
        let id = c.file(&name).unwrap().id;
        c.transition(id, FileState::Registered, FileState::Transferred)
            .unwrap();
    }

    #[test]
    fn other_conditions_give_other_lineages_and_a_tag_name_one_content() {
        let (dir, c) = catalog();
        let cfg = RecoConfig::default();
        let a = super::super::create_campaign(&c, "A", (1, 9), "v1", &cfg, false).unwrap();
        assert_eq!(
            c.conditions_tag("v1").unwrap().unwrap().content_sha256,
            Conditions::load("v1").unwrap().sha256,
            "a campaign's conditions enter the catalog"
        );
        let file = dir.path().join("other-v1.toml");
        std::fs::write(&file, variant("v1", 8000.0)).unwrap();
        let e = super::super::create_campaign(&c, "B", (1, 9), file.to_str().unwrap(), &cfg, false)
            .unwrap_err();
        assert!(format!("{e:#}").contains("other content"), "{e:#}");
        add_published(&c, "kr-5", 8000.0, 5);
        let k = super::super::create_campaign(&c, "C", (1, 9), "kr-5", &cfg, false).unwrap();
        assert_ne!(a.lineage_hash, k.lineage_hash);
        let again = super::super::create_campaign(&c, "D", (1, 9), "v1", &cfg, false).unwrap();
        assert_eq!(a.lineage_hash, again.lineage_hash);

        let job = job_conditions(&c, dir.path(), "kr-5").unwrap();
        let loaded = Conditions::load(&job).unwrap();
        assert_eq!(loaded.tag, "kr-5");
        assert_eq!(
            loaded.sha256,
            c.conditions_tag("kr-5").unwrap().unwrap().content_sha256,
            "the job reads the catalog's bytes"
        );
        assert_eq!(job_conditions(&c, dir.path(), "v9").unwrap(), "v9");
    }

    #[test]
    fn prompt_processing_queues_each_run_with_the_tag_valid_for_it() {
        let (_dir, c) = catalog();
        seed(&c, "v1").unwrap();
        assert_eq!(sync_prompt_campaigns(&c).unwrap(), ["prompt-v1"]);
        transferred_file(&c, 3);
        add_published(&c, "kr-5", 8000.0, 5);
        assert_eq!(sync_prompt_campaigns(&c).unwrap(), ["prompt-kr-5"]);
        assert!(sync_prompt_campaigns(&c).unwrap().is_empty());
        transferred_file(&c, 7);
        let v1 = c.campaign_by_name("prompt-v1").unwrap().unwrap();
        let kr = c.campaign_by_name("prompt-kr-5").unwrap().unwrap();
        assert_eq!((v1.first_run, v1.last_run), (0, 4));
        assert_eq!((kr.first_run, kr.last_run), (5, u32::MAX >> 1));
        assert_eq!(c.queue_campaign_tasks(&v1, false).unwrap(), 1);
        assert_eq!(c.queue_campaign_tasks(&kr, false).unwrap(), 1);
        let t7 = c.runnable_tasks(kr.id, 10).unwrap();
        assert_eq!(t7.len(), 1);
        assert_eq!(t7[0].file_name, "000007_00000.raw.h5");
        // Seeding again (a restarted dispatcher) publishes nothing new.
        seed(&c, "v1").unwrap();
        assert_eq!(c.conditions_log(Some("v1")).unwrap().len(), 2);
    }

    #[test]
    fn a_campaign_pinning_a_global_tag_gets_one_part_per_interval() {
        let (_dir, c) = catalog();
        seed(&c, "v1").unwrap();
        add_published(&c, "kr-5", 8000.0, 5);
        c.create_global_tag("GT-1", "carol", "SR1").unwrap();
        add_published(&c, "kr-8", 8500.0, 8);
        let parts =
            create_pinned_campaigns(&c, "R", (2, 9), "GT-1", &RecoConfig::default()).unwrap();
        let got: Vec<_> = parts
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.first_run,
                    p.last_run,
                    p.conditions_tag.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [("R.v1", 2, 4, "v1"), ("R.kr-5", 5, 9, "kr-5")],
            "kr-8 came after GT-1"
        );
        assert_eq!(
            c.campaign_global_tag(parts[1].id).unwrap().as_deref(),
            Some("GT-1")
        );
        let one = create_pinned_campaigns(&c, "S", (6, 7), "GT-1", &RecoConfig::default()).unwrap();
        assert_eq!(one[0].name, "S");
        assert!(create_pinned_campaigns(&c, "T", (1, 2), "GT-9", &RecoConfig::default()).is_err());
    }
}
