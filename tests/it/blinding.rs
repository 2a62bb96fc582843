//! Blinding as a catalog property, through the real `tpcflow` binary on real
//! raw files: a blinded catalog places no unsalted science file, whoever
//! moves it (`tpcflow transfer`, a dispatcher pass without a salt key);
//! calibration files move; salted files move; unblinding needs an explicit
//! flag and is logged with who and why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tpcflow::adler::{digest_file, same_checksum};
use tpcflow::catalog::{Catalog, Site};
use tpcflow::conditions::Conditions;
use tpcflow::sim::{SimOptions, Source};

use crate::common::*;

const SCIENCE: u32 = 17600;
const CALIBRATION: u32 = 17601;

/// Simulate `files` raw files of `run` under `data/SURF`; a calibration run gets its RUNINFO.
pub fn sim_run(data: &Path, run: u32, files: u32, calibration: bool) -> Vec<PathBuf> {
    let opts = SimOptions {
        run,
        files,
        events_per_file: 12,
        seed: 5,
        out: data.join("SURF"),
        source: if calibration {
            Source::Kr83m
        } else {
            Source::Wimp
        },
        first_sequence: 0,
        live_rate_hz: None,
    };
    let written = tpcflow::sim::run(&opts, &Conditions::load("v1").unwrap())
        .unwrap()
        .files;
    if calibration {
        let dir = data.join("SURF").join(format!("{run:06}"));
        std::fs::write(dir.join("RUNINFO.toml"), "run_type = \"calibration\"\n").unwrap();
    }
    written
}

/// Run `tpcflow` with the catalog and data root in the environment.
pub fn tpcflow_in(catalog: &Path, data: &Path, args: &[&str]) -> Output {
    let out = Command::new(tpcflow_bin())
        .args(args)
        .env("TPCFLOW_CATALOG", catalog)
        .env("TPCFLOW_DATA_ROOT", data)
        .env("TPCFLOW_LOG", "warn")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("tpcflow runs");
    eprintln!(
        "$ tpcflow {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// As [`tpcflow_in`], asserting success; returns stdout.
pub fn ok_in(catalog: &Path, data: &Path, args: &[&str]) -> String {
    let out = tpcflow_in(catalog, data, args);
    assert!(out.status.success(), "tpcflow {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Raw files of `run` present at `site`.
fn placed(data: &Path, site: Site, run: u32) -> usize {
    let dir = data.join(site.as_str()).join(format!("{run:06}"));
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".raw.h5"))
            .count()
    })
}

fn blinding_json(catalog: &Path, data: &Path) -> serde_json::Value {
    serde_json::from_str(&ok_in(catalog, data, &["catalog", "blinding", "--json"])).unwrap()
}

#[test]
fn a_blinded_catalog_moves_science_files_only_once_salted_and_unblinding_is_explicit() {
    let dir = scratch("blinding");
    let (d, data) = (dir.path(), dir.path().join("data"));
    let catalog = d.join("catalog.sqlite");
    sim_run(&data, SCIENCE, 2, false);
    sim_run(&data, CALIBRATION, 1, true);
    ok_in(&catalog, &data, &["catalog", "init"]);
    ok_in(&catalog, &data, &["catalog", "ingest"]);
    let out = ok_in(
        &catalog,
        &data,
        &[
            "catalog",
            "blind",
            "--by",
            "coordinator",
            "--reason",
            "SR3 blind analysis",
        ],
    );
    assert!(out.contains("BLINDED by coordinator"), "{out}");

    // The mover, without any salting option, holds the science files.
    let out = ok_in(&catalog, &data, &["transfer"]);
    assert!(out.contains("HELD 2 unsalted science file(s)"), "{out}");
    for site in Site::DESTINATIONS {
        assert_eq!(
            placed(&data, site, SCIENCE),
            0,
            "science file placed at {site} unsalted"
        );
        assert_eq!(
            placed(&data, site, CALIBRATION),
            1,
            "calibration not moved to {site}"
        );
    }

    // Salted, they move, with the salted checksum verified at every destination.
    let (key, vault) = (d.join("salt.key"), d.join("vault"));
    let (key_s, vault_s) = (key.to_str().unwrap(), vault.to_str().unwrap());
    ok_in(
        &catalog,
        &data,
        &[
            "salt", "keygen", "--key", key_s, "--vault", vault_s, "--rate", "0.1",
        ],
    );
    let out = ok_in(
        &catalog,
        &data,
        &["salt", "--key", key_s, "--vault", vault_s],
    );
    assert!(out.contains("2 science file(s) salted"), "{out}");
    let out = ok_in(&catalog, &data, &["transfer"]);
    assert!(!out.contains("HELD"), "{out}");
    let c = Catalog::open(&catalog).unwrap();
    for f in c.files_of_run(SCIENCE).unwrap() {
        assert!(f.salted);
        for site in Site::DESTINATIONS {
            let path = data
                .join(site.as_str())
                .join(format!("{SCIENCE:06}"))
                .join(&f.name);
            let got = digest_file(&path).unwrap();
            assert!(
                same_checksum(&got.adler32, &f.adler32),
                "{} at {site}",
                f.name
            );
        }
    }

    // Unblinding without the flag is refused and changes nothing.
    let out = tpcflow_in(
        &catalog,
        &data,
        &[
            "catalog",
            "unblind",
            "--by",
            "bob",
            "--reason",
            "box opening",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--confirm-unblind"));
    let b = blinding_json(&catalog, &data);
    assert_eq!(b["blinded"], true);
    assert_eq!(b["history"].as_array().unwrap().len(), 1);

    let out = ok_in(
        &catalog,
        &data,
        &[
            "catalog",
            "unblind",
            "--by",
            "bob",
            "--reason",
            "box opening approved",
            "--confirm-unblind",
        ],
    );
    assert!(out.contains("UNBLINDED by bob"), "{out}");
    let b = blinding_json(&catalog, &data);
    assert_eq!(b["blinded"], false);
    let last = &b["history"][1];
    assert_eq!(
        (last["by"].as_str(), last["reason"].as_str()),
        (Some("bob"), Some("box opening approved"))
    );
    assert!(last["at"].as_f64().unwrap() > 1.7e9);
    let status = ok_in(&catalog, &data, &["status"]);
    assert!(
        status.contains("blinding: unblinded") && status.contains("bob"),
        "{status}"
    );
}

#[test]
fn a_dispatcher_without_a_salt_key_places_no_science_file_of_a_blinded_catalog() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let dir = scratch("blinding-dispatch");
    let (d, data) = (dir.path(), dir.path().join("data"));
    let catalog = d.join("catalog.sqlite");
    sim_run(&data, SCIENCE, 1, false);
    sim_run(&data, CALIBRATION, 1, true);
    ok_in(&catalog, &data, &["catalog", "init"]);
    ok_in(
        &catalog,
        &data,
        &[
            "catalog",
            "blind",
            "--by",
            "coordinator",
            "--reason",
            "blind",
        ],
    );
    let config = d.join("dispatch.toml");
    std::fs::write(&config, "prompt_conditions = \"\"\n").unwrap();
    let out = ok_in(
        &catalog,
        &data,
        &["dispatch", "--once", "--config", config.to_str().unwrap()],
    );
    assert!(out.contains("held unsalted 1"), "{out}");
    assert!(
        out.contains("blinded and no salt key is configured"),
        "the pass does not say why: {out}"
    );
    for site in Site::DESTINATIONS {
        assert_eq!(
            placed(&data, site, SCIENCE),
            0,
            "science file placed at {site}"
        );
        assert_eq!(
            placed(&data, site, CALIBRATION),
            1,
            "calibration not moved to {site}"
        );
    }
}

#[test]
fn a_dispatcher_that_salts_blinds_a_new_catalog_for_good() {
    if !require_cluster() {
        return;
    }
    let _cluster = cluster_shared();
    let dir = scratch("blinding-by-dispatch");
    let (d, data) = (dir.path(), dir.path().join("data"));
    let catalog = d.join("catalog.sqlite");
    let (key, vault) = (d.join("salt.key"), d.join("vault"));
    ok_in(
        &catalog,
        &data,
        &[
            "salt",
            "keygen",
            "--key",
            key.to_str().unwrap(),
            "--vault",
            vault.to_str().unwrap(),
            "--rate",
            "0.1",
        ],
    );
    sim_run(&data, SCIENCE, 1, false);
    ok_in(&catalog, &data, &["catalog", "init"]);
    assert_eq!(blinding_json(&catalog, &data)["blinded"], false);

    // A pass that salts blinds the catalog, and says who did it.
    let salting = d.join("salting.toml");
    std::fs::write(
        &salting,
        format!(
            "prompt_conditions = \"\"\nsalt_key = \"{}\"\nsalt_vault = \"{}\"\n",
            key.display(),
            vault.display()
        ),
    )
    .unwrap();
    ok_in(
        &catalog,
        &data,
        &["dispatch", "--once", "--config", salting.to_str().unwrap()],
    );
    let b = blinding_json(&catalog, &data);
    assert_eq!(b["blinded"], true, "{b}");
    assert_eq!(b["history"][0]["by"], "tpcflow dispatch", "{b}");
    for site in Site::DESTINATIONS {
        assert_eq!(placed(&data, site, SCIENCE), 1, "salted file not at {site}");
    }

    // Without the key later, a new science run stays at SURF: the catalog,
    // not the configuration, decides.
    sim_run(&data, SCIENCE + 2, 1, false);
    let plain = d.join("plain.toml");
    std::fs::write(&plain, "prompt_conditions = \"\"\n").unwrap();
    let out = ok_in(
        &catalog,
        &data,
        &["dispatch", "--once", "--config", plain.to_str().unwrap()],
    );
    assert!(out.contains("held unsalted 1"), "{out}");
    for site in Site::DESTINATIONS {
        assert_eq!(
            placed(&data, site, SCIENCE + 2),
            0,
            "unsalted file at {site}"
        );
    }
}
