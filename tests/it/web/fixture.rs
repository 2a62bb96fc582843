//! The catalog the web tests serve, filled by a real pipeline run: simulate
//! two runs, `catalog ingest`, `transfer`, lose one UKDC copy and `audit` it,
//! `tpcflow reco` on the USDC copies, then register the outputs through a
//! prompt family's tasks (one task failed) as the dispatcher does. Also an
//! in-process server and a small HTTP client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tpcflow::catalog::{Catalog, NewCampaign, NewOutput, Site, TaskState};
use tpcflow::reco_job::read_result;

use crate::common::tpcflow_bin;

/// The two simulated runs.
pub const RUNS: [u32; 2] = [100, 101];
/// Raw files per run.
pub const FILES: u32 = 3;
/// Events per raw file.
pub const EVENTS: u32 = 20;
/// The prompt family.
pub const FAMILY: &str = "SR1_autodata_Y2026_W01_PROD-1";
/// A reprocessing family with no work yet.
pub const IDLE_FAMILY: &str = "SR1_reprocess_v2_PROD-2";
/// The raw file whose UKDC copy is lost.
pub const LOST_AT_UKDC: &str = "000101_00002.raw.h5";
/// The raw file whose processing task fails.
pub const FAILED_TASK: &str = "000101_00001.raw.h5";

/// The pipeline's products.
#[derive(Debug)]
pub struct Fixture {
    /// Data root (SURF, USDC, UKDC, ARCHIVE, RQ).
    pub data: PathBuf,
    /// Catalog file.
    pub catalog: PathBuf,
    /// Lineage hash of the RQ outputs.
    pub lineage: String,
}

/// Where screenshots and reports go: `target/test-artefacts/web/`.
pub fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artefacts/web");
    std::fs::create_dir_all(&dir).expect("artefact dir");
    dir
}

fn run_ok(cmd: &mut Command, ok_codes: &[i32]) -> String {
    let out = cmd.output().expect("tpcflow runs");
    let code = out.status.code().unwrap_or(-1);
    assert!(
        ok_codes.contains(&code),
        "{cmd:?} exited {code}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tpcflow(args: &[&str], data: &Path, catalog: &Path) -> Command {
    let mut c = Command::new(tpcflow_bin());
    c.args(args)
        .arg("--catalog")
        .arg(catalog)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("SLURM_CPUS_PER_TASK")
        .env_remove("TPCFLOW_DATA_ROOT");
    if !args.contains(&"init") {
        c.arg("--data-root").arg(data);
    }
    c
}

fn build() -> Fixture {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-pipeline");
    let _ = std::fs::remove_dir_all(&base);
    let data = base.join("data");
    let catalog = base.join("catalog.sqlite");
    let cond = tpcflow::conditions::Conditions::load("v1").unwrap();
    for (k, run) in RUNS.into_iter().enumerate() {
        let opts = tpcflow::sim::SimOptions {
            run,
            files: FILES,
            events_per_file: EVENTS,
            seed: 40 + k as u64,
            out: data.join("SURF"),
            source: tpcflow::sim::Source::Mixed,
            first_sequence: 0,
            live_rate_hz: None,
        };
        tpcflow::sim::run(&opts, &cond).unwrap();
    }
    run_ok(&mut tpcflow(&["catalog", "init"], &data, &catalog), &[0]);
    run_ok(&mut tpcflow(&["catalog", "ingest"], &data, &catalog), &[0]);
    run_ok(&mut tpcflow(&["transfer"], &data, &catalog), &[0]);
    // One copy goes missing at UKDC; the audit marks it lost (exit 3: discrepancies).
    std::fs::remove_file(data.join("UKDC/000101").join(LOST_AT_UKDC)).unwrap();
    run_ok(
        &mut tpcflow(&["audit", "--site", "UKDC", "--size-only"], &data, &catalog),
        &[3],
    );
    // Reconstruct the USDC copies into the family's RQ directory.
    let out_dir = data.join("RQ").join(FAMILY);
    let usdc = data.join("USDC");
    let inputs: Vec<PathBuf> = RUNS
        .iter()
        .flat_map(|&r| (0..FILES).map(move |s| (r, s)))
        .map(|(r, s)| tpcflow::raw::raw_file_path(&usdc, r, s))
        .collect();
    let mut reco = Command::new(tpcflow_bin());
    reco.args(["reco", "--threads", "2", "--out-dir"])
        .arg(&out_dir)
        .arg("--inputs")
        .args(&inputs)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("SLURM_CPUS_PER_TASK");
    run_ok(&mut reco, &[0]);
    let records: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".result.json"))
        .map(|p| read_result(&p).unwrap())
        .collect();
    assert_eq!(records.len(), inputs.len(), "one result record per input");
    let lineage = records[0].lineage_hash.clone();
    // Register through a prompt family's tasks, as the dispatcher does.
    let c = Catalog::open(&catalog).unwrap();
    let id = c
        .create_campaign(&NewCampaign {
            name: FAMILY.into(),
            first_run: RUNS[0],
            last_run: RUNS[1],
            conditions_tag: "v1".into(),
            lineage_hash: lineage.clone(),
        })
        .unwrap();
    c.set_campaign_extras(id, "{}", true).unwrap();
    let row = c.campaign_by_name(FAMILY).unwrap().unwrap();
    let queued = c.queue_campaign_tasks(&row, false).unwrap();
    assert_eq!(queued, (RUNS.len() as u32 * FILES) as usize);
    let tasks = c.tasks_in_state(id, TaskState::Queued).unwrap();
    let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    c.begin_job(id, "webtest", &ids, 1).unwrap();
    for t in &tasks {
        if t.file_name == FAILED_TASK {
            c.task_failed(t.id, "reco: test failure", 1, 0.0).unwrap();
            continue;
        }
        let r = records
            .iter()
            .find(|r| r.input.file_name().unwrap().to_string_lossy() == t.file_name)
            .expect("record of the task's file");
        c.task_done(
            t.id,
            &NewOutput {
                file_id: t.file_id,
                lineage_hash: r.lineage_hash.clone(),
                rq_path: r.output.clone().unwrap().display().to_string(),
                checksum: r.output_adler32.clone().unwrap(),
                events: r.events,
            },
        )
        .unwrap();
    }
    c.create_campaign(&NewCampaign {
        name: IDLE_FAMILY.into(),
        first_run: RUNS[0],
        last_run: RUNS[0],
        conditions_tag: "v1".into(),
        lineage_hash: "0000000000000000".into(),
    })
    .unwrap();
    assert!(c
        .replicas_of(c.file(LOST_AT_UKDC).unwrap().id)
        .unwrap()
        .iter()
        .any(|r| r.site == Site::Ukdc && r.state.as_str() == "lost"));
    Fixture {
        data,
        catalog,
        lineage,
    }
}

/// The shared pipeline products (built once per test process).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build)
}

/// A tokio runtime for one test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Start the server in-process on a free loopback port.
pub async fn serve(f: &Fixture, token: Option<&str>) -> tpcflow::web::RunningServer {
    let cfg = tpcflow::web::ServeConfig {
        catalog: f.catalog.clone(),
        addr: "127.0.0.1:0".parse().unwrap(),
        token: token.map(str::to_string),
        roots: tpcflow::web::DataRoots::under(&f.data, None).unwrap(),
        conditions: tpcflow::conditions::Conditions::load("v1").unwrap(),
        runs_cache: Duration::from_secs(2),
    };
    tpcflow::web::spawn(cfg).await.unwrap()
}

/// A plain HTTP/1 client.
pub type Http = Client<HttpConnector, Empty<Bytes>>;

/// A new client.
pub fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `url` with extra headers: (status, headers, body).
pub async fn get(
    client: &Http,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, axum::http::HeaderMap, Bytes) {
    let mut req = axum::http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status.as_u16(), parts.headers, bytes)
}

/// GET a JSON document; panics unless the status is `status`.
pub async fn get_json(client: &Http, url: &str, status: u16) -> serde_json::Value {
    let (s, _, body) = get(client, url, &[]).await;
    assert_eq!(s, status, "GET {url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}
