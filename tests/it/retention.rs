//! The retention stage on real raw files through the `tpcflow` binary: a
//! dry run removes nothing, the grace period holds new files, a corrupted
//! ARCHIVE replica keeps its SURF copy, a normal run removes SURF copies and
//! records them `retired`, a crash between the steps is finished by the next
//! run, and audit and status count retired copies, never as lost.

use std::path::{Path, PathBuf};

use crate::blinding::{ok_in, sim_run, tpcflow_in};
use crate::common::*;

const RUN: u32 = 17620;

fn surf_file(data: &Path, seq: u32) -> PathBuf {
    data.join("SURF")
        .join(format!("{RUN:06}"))
        .join(format!("{RUN:06}_{seq:05}.raw.h5"))
}

/// State of a file's replica at a site, from `tpcflow catalog show --json`.
fn replica_state(catalog: &Path, data: &Path, seq: u32, site: &str) -> String {
    let name = format!("{RUN:06}_{seq:05}.raw.h5");
    let out = ok_in(catalog, data, &["catalog", "show", "--json", &name]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["site"] == site)
        .map(|r| r["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{name} has no {site} replica: {out}"))
}

/// What a crash leaves: the SURF row already `retiring` (the first step done).
fn mark_retiring(catalog: &Path, seq: u32) {
    let conn = rusqlite::Connection::open(catalog).unwrap();
    let n = conn
        .execute(
            "UPDATE replicas SET state = 'retiring' WHERE site = 'SURF'
               AND file_id = (SELECT id FROM raw_files WHERE run = ?1 AND sequence = ?2)",
            [RUN, seq],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn surf_copies_are_retired_only_when_safe_elsewhere_and_crashes_are_finished() {
    let dir = scratch("retention");
    let (d, data) = (dir.path(), dir.path().join("data"));
    let catalog = d.join("catalog.sqlite");
    sim_run(&data, RUN, 4, false);
    ok_in(&catalog, &data, &["catalog", "init"]);
    ok_in(&catalog, &data, &["catalog", "ingest"]);
    ok_in(&catalog, &data, &["transfer"]);
    let retire = ["retire", "--site", "SURF", "--grace-s", "0"];

    // A dry run lists every file and removes nothing.
    let out = ok_in(&catalog, &data, &[&retire[..], &["--dry-run"]].concat());
    assert_eq!(out.matches("WOULD RETIRE").count(), 4, "{out}");
    for seq in 0..4 {
        assert!(surf_file(&data, seq).exists(), "dry run removed {seq}");
        assert_eq!(replica_state(&catalog, &data, seq, "SURF"), "verified");
    }
    // Files that arrived within the grace period stay.
    let out = ok_in(
        &catalog,
        &data,
        &["retire", "--site", "SURF", "--grace-s", "3600"],
    );
    assert!(out.contains("retired 0 file(s)"), "{out}");
    assert!((0..4).all(|seq| surf_file(&data, seq).exists()));
    // Only SURF is a retention site.
    let out = tpcflow_in(&catalog, &data, &["retire", "--site", "USDC"]);
    assert_eq!(out.status.code(), Some(2));

    // File 0: its ARCHIVE copy rots. File 1: a crash after `retiring` was
    // recorded, before the delete. File 2: a crash after the delete.
    let archive0 = data
        .join("ARCHIVE")
        .join(format!("{RUN:06}"))
        .join(format!("{RUN:06}_00000.raw.h5"));
    let mut bytes = std::fs::read(&archive0).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&archive0, bytes).unwrap();
    mark_retiring(&catalog, 1);
    mark_retiring(&catalog, 2);
    std::fs::remove_file(surf_file(&data, 2)).unwrap();

    // Checksums re-read now (max age 0): the rotten ARCHIVE copy is found.
    let out = tpcflow_in(
        &catalog,
        &data,
        &[&retire[..], &["--max-checksum-age-s", "0"]].concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a kept file is a partial failure"
    );
    assert!(stdout.contains("2 interrupted finished"), "{stdout}");
    assert!(
        stdout.contains(&format!("KEPT {RUN:06}_00000.raw.h5: ARCHIVE bad")),
        "{stdout}"
    );
    assert!(
        surf_file(&data, 0).exists(),
        "SURF copy of a file with a bad ARCHIVE copy removed"
    );
    assert_eq!(replica_state(&catalog, &data, 0, "SURF"), "verified");
    assert_eq!(replica_state(&catalog, &data, 0, "ARCHIVE"), "bad");
    for seq in 1..4 {
        assert!(
            !surf_file(&data, seq).exists(),
            "SURF copy {seq} still there"
        );
        assert_eq!(replica_state(&catalog, &data, seq, "SURF"), "retired");
        assert_eq!(replica_state(&catalog, &data, seq, "USDC"), "verified");
    }
    // A file with a bad replica is not even a candidate afterwards.
    let out = ok_in(&catalog, &data, &retire);
    assert!(out.contains("retired 0 file(s)"), "{out}");
    assert!(surf_file(&data, 0).exists());

    // The audit of SURF sees three retired copies, nothing lost or dark.
    let out = ok_in(&catalog, &data, &["audit", "--site", "SURF", "--json"]);
    let audit: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(audit["lost"].as_array().unwrap().len(), 0, "{out}");
    assert_eq!(audit["dark"].as_array().unwrap().len(), 0, "{out}");
    assert_eq!(audit["retired"], 3, "{out}");
    assert_eq!(audit["ok"], 1, "{out}");
    // Status counts them.
    let out = ok_in(&catalog, &data, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let run = &status["runs"][0];
    assert_eq!(
        (run["files"].as_u64(), run["surf_retired"].as_u64()),
        (Some(4), Some(3)),
        "{out}"
    );
    let text = ok_in(&catalog, &data, &["status"]);
    assert!(text.contains("retired"), "{text}");
}

#[test]
fn the_dispatcher_retires_surf_copies_in_its_pass_once_three_replicas_are_verified() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let dir = scratch("retention-dispatch");
    let (d, data) = (dir.path(), dir.path().join("data"));
    let catalog = d.join("catalog.sqlite");
    // A calibration run: no salting needed, so one pass moves it everywhere.
    sim_run(&data, RUN + 5, 2, true);
    let config = d.join("dispatch.toml");
    let write_config = |enabled: bool| {
        std::fs::write(
            &config,
            format!("prompt_conditions = \"\"\n[retention]\nenabled = {enabled}\ngrace_s = 0.0\n"),
        )
        .unwrap();
    };
    let surf = |seq: u32| {
        data.join("SURF")
            .join(format!("{:06}", RUN + 5))
            .join(format!("{:06}_{seq:05}.raw.h5", RUN + 5))
    };

    // Retention off (the default): the pass moves the files and frees nothing.
    write_config(false);
    let out = ok_in(
        &catalog,
        &data,
        &["dispatch", "--once", "--config", config.to_str().unwrap()],
    );
    assert!(out.contains("SURF retired 0"), "{out}");
    assert!(surf(0).exists() && surf(1).exists());

    // On: the same catalog's next pass frees the SURF buffer.
    write_config(true);
    let out = ok_in(
        &catalog,
        &data,
        &["dispatch", "--once", "--config", config.to_str().unwrap()],
    );
    assert!(out.contains("SURF retired 2"), "{out}");
    for seq in 0..2 {
        assert!(!surf(seq).exists(), "SURF copy {seq} still on disk");
        let name = format!("{:06}_{seq:05}.raw.h5", RUN + 5);
        let show = ok_in(&catalog, &data, &["catalog", "show", "--json", &name]);
        let json: serde_json::Value = serde_json::from_str(&show).unwrap();
        let states: Vec<(String, String)> = json["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["site"].as_str().unwrap().to_string(),
                    r["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for (site, state) in &states {
            let want = if site == "SURF" {
                "retired"
            } else {
                "verified"
            };
            assert_eq!(state, want, "{name} at {site}: {states:?}");
        }
    }
    // The audit of SURF finds nothing lost.
    let audit = tpcflow_in(&catalog, &data, &["audit", "--site", "SURF", "--json"]);
    assert!(
        audit.status.success(),
        "audit of a retired SURF buffer fails"
    );
    let report: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(report["lost"].as_array().map_or(0, Vec::len), 0, "{report}");
}
