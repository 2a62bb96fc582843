//! The catalog the detector-health tests serve, made as the conditions loop
//! makes it, on a detector whose truth differs from v1 (`realistic`: dead and
//! noisy channels, other gains, a tilted liquid surface, a lifetime step at
//! run 17400):
//!
//! ```text
//! 17391  calibration (Kr83m)  reconstructed with v1 -> tpcflow calibrate -> cal-017391,
//!                             published from 17391 (the dispatcher's products)
//! 17392  science              reconstructed with cal-017391
//! 17401  calibration (Kr83m)  reconstructed with cal-017391 -> cal-017401, a candidate
//! 17395  (no data)            hand-017395: a tag with a calibration run but no
//!                             provenance (every value calibrate records is n/a)
//! ```
//!
//! Outputs are catalogued under one campaign per conditions tag, as prompt
//! processing does; the raw files are read at SURF (no transfers).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tpcflow::catalog::{Catalog, NewCampaign, NewConditions, NewOutput};
use tpcflow::reco_job::read_result;

use crate::common::tpcflow_bin;

/// Calibration runs, with their tags.
pub const CALIBRATIONS: [(u32, &str); 2] = [(17391, "cal-017391"), (17401, "cal-017401")];
/// The science run processed with the first calibration's tag.
pub const SCIENCE_RUN: u32 = 17392;
/// A tag with a calibration run and nothing calibrate records.
pub const BARE_TAG: (u32, &str) = (17395, "hand-017395");
/// Kr83m events per calibration run (the liquid level needs 200 single scatters).
const KR_EVENTS: u32 = 450;

/// The catalog and its data.
#[derive(Debug)]
pub struct HealthFixture {
    /// Data root (SURF, RQ, calibration).
    pub data: PathBuf,
    /// Catalog file.
    pub catalog: PathBuf,
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("tpcflow runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tpcflow(args: &[&str]) -> Command {
    let mut c = Command::new(tpcflow_bin());
    c.args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("SLURM_CPUS_PER_TASK")
        .env_remove("TPCFLOW_DATA_ROOT");
    c
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn sim(surf: &Path, run: u32, events: u32, source: &str, calibration: bool) {
    let dir = surf.join(format!("{run:06}"));
    std::fs::create_dir_all(&dir).unwrap();
    if calibration {
        std::fs::write(dir.join("RUNINFO.toml"), "run_type = \"calibration\"\n").unwrap();
    }
    run_ok(&mut tpcflow(&[
        "sim",
        "--run",
        &run.to_string(),
        "--files",
        "1",
        "--events-per-file",
        &events.to_string(),
        "--source",
        source,
        "--seed",
        &run.to_string(),
        "--threads",
        "2",
        "--detector-truth",
        "realistic",
        "--out",
        p(surf),
    ]));
}

/// Reconstruct `runs` with `conditions` into RQ/`campaign` and catalogue the
/// outputs under that campaign (conditions `tag`).
fn reco_and_catalogue(
    c: &Catalog,
    data: &Path,
    runs: &[u32],
    conditions: &str,
    tag: &str,
    campaign: &str,
) -> Vec<PathBuf> {
    let out_dir = data.join("RQ").join(campaign);
    let inputs: Vec<PathBuf> = runs
        .iter()
        .map(|&r| tpcflow::raw::raw_file_path(&data.join("SURF"), r, 0))
        .collect();
    let mut reco = tpcflow(&["reco", "--threads", "2", "--conditions", conditions]);
    reco.arg("--out-dir")
        .arg(&out_dir)
        .arg("--inputs")
        .args(&inputs);
    run_ok(&mut reco);
    let mut records: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".result.json"))
        .map(|p| read_result(&p).unwrap())
        .filter(|r| inputs.contains(&r.input))
        .collect();
    records.sort_by(|a, b| a.input.cmp(&b.input));
    assert_eq!(records.len(), inputs.len(), "one result record per input");
    let lineage = records[0].lineage_hash.clone();
    if c.campaign_by_name(campaign).unwrap().is_none() {
        c.create_campaign(&NewCampaign {
            name: campaign.into(),
            first_run: runs[0],
            last_run: 99_999,
            conditions_tag: tag.into(),
            lineage_hash: lineage.clone(),
        })
        .unwrap();
    }
    let mut rq = Vec::new();
    for r in &records {
        let name = r.input.file_name().unwrap().to_string_lossy().into_owned();
        let output = r.output.clone().expect("an RQ file");
        c.record_output(&NewOutput {
            file_id: c.file(&name).unwrap().id,
            lineage_hash: r.lineage_hash.clone(),
            rq_path: output.display().to_string(),
            checksum: r.output_adler32.clone().unwrap(),
            events: r.events,
        })
        .unwrap();
        rq.push(output);
    }
    rq
}

fn calibrate(data: &Path, rq: &[PathBuf], run: u32, tag: &str, base: &str) -> String {
    let out = data.join("calibration").join(format!("{run:06}"));
    let mut cmd = tpcflow(&["calibrate", "--tag", tag, "--base-conditions", base]);
    cmd.args(["--runs", &run.to_string(), "--out", p(&out), "--rq"])
        .args(rq);
    run_ok(&mut cmd);
    std::fs::read_to_string(out.join("conditions.toml")).unwrap()
}

fn add(c: &Catalog, tag: &str, content: &str, run: u32) {
    c.add_conditions(&NewConditions {
        tag,
        content,
        source_run: Some(run),
        by: "tpcflow dispatch",
        reason: &format!("products of calibration run {run}"),
    })
    .unwrap();
}

fn build() -> HealthFixture {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-health");
    let _ = std::fs::remove_dir_all(&base);
    let data = base.join("data");
    let catalog = base.join("catalog.sqlite");
    let surf = data.join("SURF");
    sim(&surf, CALIBRATIONS[0].0, KR_EVENTS, "kr83m", true);
    sim(&surf, SCIENCE_RUN, 8, "mixed", false);
    sim(&surf, CALIBRATIONS[1].0, KR_EVENTS, "kr83m", true);
    let db = |args: &[&str]| {
        let mut c = tpcflow(args);
        c.arg("--catalog").arg(&catalog);
        c
    };
    run_ok(&mut db(&["catalog", "init"]));
    run_ok(db(&["catalog", "ingest"]).arg("--data-root").arg(&data));
    let c = Catalog::open(&catalog).unwrap();
    // The conditions prompt processing starts with, as the dispatcher seeds them.
    let v1 = tpcflow::conditions::builtin_text("v1").unwrap();
    c.add_conditions(&NewConditions {
        tag: "v1",
        content: v1,
        source_run: None,
        by: "tpcflow dispatch",
        reason: "prompt_conditions",
    })
    .unwrap();
    c.publish_conditions("v1", 0, "tpcflow dispatch", "the first conditions in force")
        .unwrap();
    let (run1, tag1) = CALIBRATIONS[0];
    let rq1 = reco_and_catalogue(&c, &data, &[run1], "v1", "v1", "prompt-v1");
    let cal1 = calibrate(&data, &rq1, run1, tag1, "v1");
    add(&c, tag1, &cal1, run1);
    c.publish_conditions(tag1, run1, "shifter", "lifetime and gains look sane")
        .unwrap();
    let cal1_file = data.join(format!("calibration/{run1:06}/conditions.toml"));
    let (run2, tag2) = CALIBRATIONS[1];
    let rq = reco_and_catalogue(
        &c,
        &data,
        &[SCIENCE_RUN, run2],
        p(&cal1_file),
        tag1,
        &format!("prompt-{tag1}"),
    );
    let cal2 = calibrate(&data, &rq[1..], run2, tag2, p(&cal1_file));
    add(&c, tag2, &cal2, run2);
    let bare = v1
        .replace("tag = \"v1\"", &format!("tag = \"{}\"", BARE_TAG.1))
        .replace(
            "electron_lifetime_us = 9000.0",
            "electron_lifetime_us = 8500.0",
        );
    add(&c, BARE_TAG.1, &bare, BARE_TAG.0);
    HealthFixture { data, catalog }
}

/// The shared catalog (built once per test process).
pub fn health_fixture() -> &'static HealthFixture {
    static F: OnceLock<HealthFixture> = OnceLock::new();
    F.get_or_init(build)
}

/// A server on the fixture's catalog.
pub async fn serve_health(f: &HealthFixture) -> tpcflow::web::RunningServer {
    let cfg = tpcflow::web::ServeConfig {
        catalog: f.catalog.clone(),
        addr: "127.0.0.1:0".parse().unwrap(),
        token: None,
        roots: tpcflow::web::DataRoots::under(&f.data, None).unwrap(),
        conditions: tpcflow::conditions::Conditions::load("v1").unwrap(),
        runs_cache: std::time::Duration::from_secs(2),
    };
    tpcflow::web::spawn(cfg).await.unwrap()
}
