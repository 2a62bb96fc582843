//! Conditions tags in a real SQLite catalog: content addressing, intervals
//! of validity, immutability once used, logged decisions, global tags.

use super::super::{Catalog, NewCampaign, NewOutput, NewRawFile, RunInfo, RunType};
use super::*;

const V1: &str = include_str!("../../conditions/v1.toml");

fn catalog() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::init(&dir.path().join("catalog.sqlite")).unwrap();
    (dir, c)
}

/// v1 under another tag with another electron lifetime.
fn variant(tag: &str, lifetime_us: f64) -> String {
    V1.replace("tag = \"v1\"", &format!("tag = \"{tag}\""))
        .replace(
            "electron_lifetime_us = 9000.0",
            &format!("electron_lifetime_us = {lifetime_us:.1}"),
        )
}

fn add(c: &Catalog, tag: &str, content: &str) -> Result<bool, CatalogError> {
    c.add_conditions(&NewConditions {
        tag,
        content,
        source_run: None,
        by: "alice",
        reason: "test",
    })
}

#[test]
fn a_tag_is_its_content_and_refuses_other_content() {
    let (_d, c) = catalog();
    assert!(add(&c, "v1", V1).unwrap());
    assert!(!add(&c, "v1", V1).unwrap(), "same content again: no-op");
    let row = c.conditions_tag("v1").unwrap().unwrap();
    assert_eq!(
        row.content_sha256,
        crate::conditions::Conditions::load("v1").unwrap().sha256,
        "the catalog's hash is the one the lineage covers"
    );
    assert_eq!(row.state, ConditionsState::Candidate);
    assert_eq!(c.conditions_content("v1").unwrap(), V1);

    let e = add(&c, "v1", &variant("v1", 8000.0)).unwrap_err();
    assert!(e.to_string().contains("other content"), "{e}");
    let e = add(&c, "k7", V1).unwrap_err();
    assert!(e.to_string().contains("tag = \"v1\""), "{e}");
    let e = add(&c, "bad", &variant("bad", -1.0)).unwrap_err();
    assert!(
        e.to_string().contains("conditions bad") && e.to_string().contains("lifetime"),
        "{e}"
    );
    let e = c
        .add_conditions(&NewConditions {
            tag: "k8",
            content: &variant("k8", 8000.0),
            source_run: None,
            by: " ",
            reason: "x",
        })
        .unwrap_err();
    assert!(e.to_string().contains("who"), "{e}");
    assert!(c.conditions_tag("k8").unwrap().is_none());
}

#[test]
fn the_tag_in_force_follows_the_intervals_of_validity() {
    let (_d, c) = catalog();
    add(&c, "v1", V1).unwrap();
    add(&c, "kr-5", &variant("kr-5", 8000.0)).unwrap();
    add(&c, "kr-9", &variant("kr-9", 10400.0)).unwrap();
    assert!(
        c.conditions_for_run(3).unwrap().is_none(),
        "nothing published"
    );
    assert!(c.publish_conditions("v1", 0, "alice", "nominal").unwrap());
    assert!(c.publish_conditions("kr-5", 5, "bob", "Kr run 5").unwrap());
    assert!(!c.publish_conditions("kr-5", 5, "bob", "again").unwrap());
    let in_force = |run| c.conditions_for_run(run).unwrap().unwrap().tag;
    assert_eq!(in_force(0), "v1");
    assert_eq!(in_force(4), "v1");
    assert_eq!(in_force(5), "kr-5");
    assert_eq!(in_force(100), "kr-5", "a candidate is never in force");
    let e = c.publish_conditions("kr-9", 5, "bob", "clash").unwrap_err();
    assert!(e.to_string().contains("kr-5"), "{e}");
    c.publish_conditions("kr-9", 9, "bob", "Kr run 9").unwrap();
    assert_eq!(in_force(8), "kr-5");
    assert_eq!(in_force(9), "kr-9");

    let log = c.conditions_log(Some("kr-5")).unwrap();
    let actions: Vec<_> = log.iter().map(|d| d.action.as_str()).collect();
    assert_eq!(actions, ["add", "publish from run 5"], "{log:?}");
    assert_eq!(
        (log[1].by.as_str(), log[1].reason.as_str()),
        ("bob", "Kr run 5")
    );

    let g = c.create_global_tag("GT-1", "carol", "SR1").unwrap();
    assert_eq!(
        g,
        [(0, "v1".into()), (5, "kr-5".into()), (9, "kr-9".into())]
    );
    add(&c, "kr-12", &variant("kr-12", 9500.0)).unwrap();
    c.publish_conditions("kr-12", 12, "bob", "Kr run 12")
        .unwrap();
    assert_eq!(
        c.global_tag("GT-1").unwrap().len(),
        3,
        "a global tag is frozen"
    );
    assert!(c.create_global_tag("GT-1", "carol", "again").is_err());
}

#[test]
fn an_interval_is_immutable_once_an_output_used_the_tag() {
    let (_d, c) = catalog();
    add(&c, "kr-5", &variant("kr-5", 8000.0)).unwrap();
    c.publish_conditions("kr-5", 5, "bob", "Kr run 5").unwrap();
    c.publish_conditions("kr-5", 4, "bob", "unused: may move")
        .unwrap();
    c.upsert_run(
        &RunInfo {
            number: 6,
            run_type: RunType::Science,
            start_time: None,
            conditions: None,
        },
        false,
    )
    .unwrap();
    c.register_files(&[NewRawFile {
        run: 6,
        sequence: 0,
        name: "000006_00000.raw.h5".into(),
        rel_path: "000006/000006_00000.raw.h5".into(),
        size_bytes: 10,
        adler32: "00000001".into(),
        written_at: None,
    }])
    .unwrap();
    c.create_campaign(&NewCampaign {
        name: "prompt-kr-5".into(),
        first_run: 4,
        last_run: 100,
        conditions_tag: "kr-5".into(),
        lineage_hash: "abc".into(),
    })
    .unwrap();
    assert!(!c.conditions_used("kr-5").unwrap());
    c.record_output(&NewOutput {
        file_id: c.file("000006_00000.raw.h5").unwrap().id,
        lineage_hash: "abc".into(),
        rq_path: "x.rq.h5".into(),
        checksum: "00000001".into(),
        events: 1,
    })
    .unwrap();
    assert!(c.conditions_used("kr-5").unwrap());
    let e = c.publish_conditions("kr-5", 7, "bob", "move").unwrap_err();
    assert!(e.to_string().contains("immutable"), "{e}");
    assert_eq!(
        c.conditions_tag("kr-5").unwrap().unwrap().first_run,
        Some(4)
    );
}

#[test]
fn a_held_candidate_waits_for_publish() {
    let (_d, c) = catalog();
    add(&c, "kr-5", &variant("kr-5", 8000.0)).unwrap();
    assert!(c
        .hold_conditions("kr-5", "dispatcher", "lifetime jump 40 %")
        .unwrap());
    assert!(!c.hold_conditions("kr-5", "dispatcher", "again").unwrap());
    let row = c.conditions_tag("kr-5").unwrap().unwrap();
    assert_eq!(row.state, ConditionsState::Held);
    assert_eq!(row.note.as_deref(), Some("lifetime jump 40 %"));
    assert!(c.conditions_for_run(9).unwrap().is_none());
    c.publish_conditions("kr-5", 6, "dave", "checked the Kr run by eye")
        .unwrap();
    assert_eq!(c.conditions_for_run(9).unwrap().unwrap().tag, "kr-5");
    assert!(c.hold_conditions("kr-5", "x", "y").is_err());
}
