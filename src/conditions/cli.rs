//! `tpcflow conditions list|show|diff|add|publish|hold|log|global`: the
//! operator's view of the conditions tags in the catalog.
//!
//! `add` stores a TOML file as a candidate tag; `publish` makes it valid
//! from a run onward and, like `catalog unblind`, is explicit and logged
//! with who (`--by`, default `$USER`) and why (`--reason`); `global` freezes
//! the published intervals under a name a reprocessing campaign pins
//! (`tpcflow campaign create --global-tag NAME`).
//!
//! ```text
//! $ tpcflow conditions list --catalog cat.sqlite
//! tag      state      from run  sha256            source run  provenance
//! v1       published         0  5d1c0c3e9a1b2f40  -           -
//! kr-3     published         3  a0b1c2d3e4f50617  3           runs [3], 9713 Kr83m single scatters
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::catalog::cli::CatalogPathArg;
use crate::catalog::{now_unix_s, utc_string, Catalog, NewConditions};

/// `tpcflow conditions ...`
#[derive(Debug, clap::Subcommand)]
pub enum ConditionsCommand {
    /// Every tag: state, interval of validity, content hash, provenance.
    List {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One tag: its decisions and its TOML text.
    Show {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Tag.
        tag: String,
        /// Print only the TOML text.
        #[arg(long)]
        toml: bool,
    },
    /// The values that differ between two tags (dotted keys).
    Diff {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Older tag.
        a: String,
        /// Newer tag.
        b: String,
    },
    /// Store a conditions TOML as a candidate tag (its `tag` key names it).
    Add {
        #[command(flatten)]
        db: CatalogPathArg,
        /// The TOML file (e.g. written by `tpcflow calibrate`), or a built-in tag.
        file: String,
        #[command(flatten)]
        decision: DecisionArgs,
    },
    /// Make a tag valid from a run onward (logged with who and why).
    Publish {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Tag.
        tag: String,
        /// First run of its interval of validity (default: its calibration run).
        #[arg(long)]
        from_run: Option<u32>,
        #[command(flatten)]
        decision: DecisionArgs,
    },
    /// Hold a candidate for a person (logged).
    Hold {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Tag.
        tag: String,
        #[command(flatten)]
        decision: DecisionArgs,
    },
    /// Every logged decision, oldest first.
    Log {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Only this tag.
        tag: Option<String>,
    },
    /// Freeze the published intervals as a global tag (logged).
    Global {
        #[command(flatten)]
        db: CatalogPathArg,
        /// Global tag name, e.g. `GT-SR1-2026`.
        name: String,
        #[command(flatten)]
        decision: DecisionArgs,
    },
}

/// Who decides about a tag, and why.
#[derive(Debug, Clone, clap::Args)]
pub struct DecisionArgs {
    /// Who decides (default: $USER).
    #[arg(long, env = "USER")]
    pub by: Option<String>,
    /// Why (recorded in the catalog).
    #[arg(long)]
    pub reason: String,
}

impl DecisionArgs {
    fn who(&self) -> Result<&str> {
        self.by.as_deref().context("say who decides with --by")
    }
}

/// Run a `tpcflow conditions` command.
///
/// # Errors
/// Catalog errors (unknown tag, immutable interval, clash), unreadable files.
pub fn run_conditions(cmd: ConditionsCommand) -> Result<()> {
    match cmd {
        ConditionsCommand::List { db, json } => {
            let catalog = Catalog::open_read_only(&db.catalog)?;
            let tags = catalog.conditions_tags()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tags)?);
                return Ok(());
            }
            println!(
                "{:<16} {:<10} {:>8}  {:<16}  {:<10}  provenance",
                "tag", "state", "from run", "sha256", "source run"
            );
            for t in tags {
                println!(
                    "{:<16} {:<10} {:>8}  {:<16}  {:<10}  {}",
                    t.tag,
                    t.state.as_str(),
                    t.first_run.map_or("-".into(), |r| r.to_string()),
                    &t.content_sha256[..16],
                    t.source_run.map_or("-".into(), |r| r.to_string()),
                    provenance_line(&t.provenance, t.note.as_deref())
                );
            }
        }
        ConditionsCommand::Show { db, tag, toml } => {
            let catalog = Catalog::open_read_only(&db.catalog)?;
            let content = catalog.conditions_content(&tag)?;
            if toml {
                print!("{content}");
                return Ok(());
            }
            let row = catalog
                .conditions_tag(&tag)?
                .context("tag vanished while reading")?;
            println!(
                "tag {} ({}{}) sha256 {}",
                row.tag,
                row.state.as_str(),
                row.first_run
                    .map_or(String::new(), |r| format!(" from run {r}")),
                row.content_sha256
            );
            println!("used by outputs: {}", catalog.conditions_used(&tag)?);
            for d in catalog.conditions_log(Some(&tag))? {
                println!(
                    "  {} {} by {}: {}",
                    utc_string(d.at),
                    d.action,
                    d.by,
                    d.reason
                );
            }
            println!();
            print!("{content}");
        }
        ConditionsCommand::Diff { db, a, b } => {
            let catalog = Catalog::open_read_only(&db.catalog)?;
            let (ta, tb) = (
                flatten(&catalog.conditions_content(&a)?, &a)?,
                flatten(&catalog.conditions_content(&b)?, &b)?,
            );
            let lines = diff_lines(&ta, &tb);
            if lines.is_empty() {
                println!("{a} and {b} hold the same values");
            }
            for l in lines {
                println!("{l}");
            }
        }
        ConditionsCommand::Add { db, file, decision } => {
            let catalog = Catalog::open(&db.catalog)?;
            let content = crate::conditions::text_of(&file)?;
            let tag = crate::conditions::Conditions::parse(&content, &PathBuf::from(&file))?.tag;
            let added = catalog.add_conditions(&NewConditions {
                tag: &tag,
                content: &content,
                source_run: None,
                by: decision.who()?,
                reason: &decision.reason,
            })?;
            println!(
                "conditions {tag} {} as a candidate (publish it with `tpcflow conditions publish {tag} --from-run N`)",
                if added { "added" } else { "already in the catalog" }
            );
        }
        ConditionsCommand::Publish {
            db,
            tag,
            from_run,
            decision,
        } => {
            let catalog = Catalog::open(&db.catalog)?;
            let row = catalog
                .conditions_tag(&tag)?
                .with_context(|| format!("no conditions tag `{tag}` in the catalog"))?;
            let Some(first_run) = from_run.or(row.source_run) else {
                bail!("say from which run {tag} is valid with --from-run");
            };
            let by = decision.who()?;
            if catalog.publish_conditions(&tag, first_run, by, &decision.reason)? {
                tracing::warn!(%tag, first_run, %by, reason = %decision.reason, "conditions published");
                println!(
                    "conditions {tag} PUBLISHED from run {first_run} by {by} at {}: {}",
                    utc_string(now_unix_s()),
                    decision.reason
                );
            } else {
                println!("conditions {tag} is already published from run {first_run}");
            }
        }
        ConditionsCommand::Hold { db, tag, decision } => {
            let catalog = Catalog::open(&db.catalog)?;
            let held = catalog.hold_conditions(&tag, decision.who()?, &decision.reason)?;
            println!(
                "conditions {tag} {}",
                if held { "held" } else { "is already held" }
            );
        }
        ConditionsCommand::Log { db, tag } => {
            let catalog = Catalog::open_read_only(&db.catalog)?;
            for d in catalog.conditions_log(tag.as_deref())? {
                println!(
                    "{} {:<16} {} by {}: {}",
                    utc_string(d.at),
                    d.tag,
                    d.action,
                    d.by,
                    d.reason
                );
            }
        }
        ConditionsCommand::Global { db, name, decision } => {
            let catalog = Catalog::open(&db.catalog)?;
            let iovs = catalog.create_global_tag(&name, decision.who()?, &decision.reason)?;
            println!("global tag {name}:");
            for (run, tag) in iovs {
                println!("  from run {run:>8}: {tag}");
            }
        }
    }
    Ok(())
}

/// One line of provenance: runs and Kr83m statistics, or why it is held.
fn provenance_line(p: &serde_json::Value, note: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(runs) = p.get("runs") {
        parts.push(format!("runs {runs}"));
    }
    if let Some(n) = p.get("kr83m_single_scatters") {
        parts.push(format!("{n} Kr83m single scatters"));
    }
    if let Some(n) = note {
        parts.push(format!("held: {n}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// TOML as dotted key -> value text.
///
/// # Errors
/// When the text is not TOML (naming the tag).
pub fn flatten(text: &str, tag: &str) -> Result<BTreeMap<String, String>> {
    let table: toml::Table = toml::from_str(text).with_context(|| format!("conditions {tag}"))?;
    let mut out = BTreeMap::new();
    fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    walk("", &toml::Value::Table(table), &mut out);
    Ok(out)
}

/// `key: a -> b` for every key whose value differs (`-` when absent).
pub fn diff_lines(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let short = |v: Option<&String>| {
        v.map_or_else(
            || "-".to_string(),
            |s| {
                if s.len() > 60 {
                    let head: String = s.chars().take(57).collect();
                    format!("{head}... ({} chars)", s.len())
                } else {
                    s.clone()
                }
            },
        )
    };
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {} -> {}", short(a.get(k)), short(b.get(k))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_publish_and_read_commands_change_and_read_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        drop(Catalog::init(&path).unwrap());
        let db = || CatalogPathArg {
            catalog: path.clone(),
        };
        let decision = |reason: &str| DecisionArgs {
            by: Some("alice".into()),
            reason: reason.into(),
        };
        let file = dir.path().join("kr.toml");
        std::fs::write(
            &file,
            include_str!("../../conditions/v1.toml").replace("tag = \"v1\"", "tag = \"kr-3\""),
        )
        .unwrap();
        for spec in ["v1".to_string(), file.display().to_string()] {
            run_conditions(ConditionsCommand::Add {
                db: db(),
                file: spec,
                decision: decision("import"),
            })
            .unwrap();
        }
        let e = run_conditions(ConditionsCommand::Publish {
            db: db(),
            tag: "kr-3".into(),
            from_run: None,
            decision: decision("no run"),
        })
        .unwrap_err();
        assert!(e.to_string().contains("--from-run"), "{e}");
        run_conditions(ConditionsCommand::Publish {
            db: db(),
            tag: "kr-3".into(),
            from_run: Some(3),
            decision: decision("Kr run 3 looked fine"),
        })
        .unwrap();
        let e = run_conditions(ConditionsCommand::Publish {
            db: db(),
            tag: "kr-9".into(),
            from_run: Some(9),
            decision: decision("x"),
        })
        .unwrap_err();
        assert!(e.to_string().contains("kr-9"), "{e}");
        run_conditions(ConditionsCommand::List {
            db: db(),
            json: true,
        })
        .unwrap();
        run_conditions(ConditionsCommand::Diff {
            db: db(),
            a: "v1".into(),
            b: "kr-3".into(),
        })
        .unwrap();
        run_conditions(ConditionsCommand::Show {
            db: db(),
            tag: "kr-3".into(),
            toml: false,
        })
        .unwrap();
        let c = Catalog::open(&path).unwrap();
        assert_eq!(c.conditions_for_run(5).unwrap().unwrap().tag, "kr-3");
        let last = c.conditions_log(Some("kr-3")).unwrap().pop().unwrap();
        assert_eq!(
            (last.action.as_str(), last.by.as_str(), last.reason.as_str()),
            ("publish from run 3", "alice", "Kr run 3 looked fine")
        );
    }

    #[test]
    fn diff_names_changed_added_and_removed_keys() {
        let a = flatten("tag = \"a\"\n[d]\nx = 1\ny = 2\n", "a").unwrap();
        let b = flatten("tag = \"b\"\n[d]\nx = 1\nz = [1, 2]\n", "b").unwrap();
        assert_eq!(
            diff_lines(&a, &b),
            ["d.y: 2 -> -", "d.z: - -> [1, 2]", "tag: \"a\" -> \"b\""]
        );
    }
}
