//! `tpcflow serve` on a catalog filled by a real pipeline run ([`fixture`];
//! the detector-health page on one made by the conditions loop, see
//! [`health`]): the JSON API against the catalog and the RQ files, the pages in real
//! headless Chromium (screenshots in `target/test-artefacts/web/`), bad
//! input, access tokens, and a bounded loopback load.

mod browser;
pub(crate) mod fixture;
mod health;
mod health_fixture;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tpcflow::catalog::{Catalog, ReplicaState, Site};
use tpcflow::rq::{read_rq_file, ColumnData};

use crate::common::tpcflow_bin;
use fixture::*;

/// What the run table must show, counted from the catalog file by file.
fn expected_runs(c: &Catalog) -> BTreeMap<u32, BTreeMap<&'static str, u64>> {
    let mut out = BTreeMap::new();
    for run in RUNS {
        let mut m: BTreeMap<&'static str, u64> = BTreeMap::new();
        for f in c.files_of_run(run).unwrap() {
            *m.entry("files").or_default() += 1;
            let reps = c.replicas_of(f.id).unwrap();
            for (site, key) in [
                (Site::Surf, "surf"),
                (Site::Usdc, "usdc"),
                (Site::Ukdc, "ukdc"),
                (Site::Archive, "archive"),
            ] {
                let ok = reps
                    .iter()
                    .any(|r| r.site == site && r.state == ReplicaState::Verified);
                *m.entry(key).or_default() += u64::from(ok);
            }
            let recon = !c.outputs_of(f.id).unwrap().is_empty();
            *m.entry("reconstructed").or_default() += u64::from(recon);
            let failed = f.state.as_str() == "failed"
                || reps
                    .iter()
                    .any(|r| matches!(r.state, ReplicaState::Bad | ReplicaState::Lost));
            *m.entry("failed").or_default() += u64::from(failed);
        }
        out.insert(run, m);
    }
    out
}

/// The header values of an event, read from its RQ file directly.
fn rq_header(f: &Fixture, run: u32, event: u64) -> BTreeMap<String, f64> {
    let c = Catalog::open(&f.catalog).unwrap();
    for file in c.files_of_run(run).unwrap() {
        for o in c.outputs_of(file.id).unwrap() {
            let rq = read_rq_file(std::path::Path::new(&o.rq_path)).unwrap();
            let ColumnData::U64(ids) = rq.event_column("event_id").unwrap() else {
                panic!("event_id is u64")
            };
            let Some(row) = ids.iter().position(|&i| i == event) else {
                continue;
            };
            return rq
                .events
                .iter()
                .map(|col| {
                    let v = match &col.data {
                        ColumnData::F32(v) => f64::from(v[row]),
                        ColumnData::F64(v) => v[row],
                        ColumnData::I64(v) => v[row] as f64,
                        ColumnData::I32(v) => f64::from(v[row]),
                        ColumnData::U64(v) => v[row] as f64,
                        ColumnData::U32(v) => f64::from(v[row]),
                        ColumnData::U16(v) => f64::from(v[row]),
                        ColumnData::U8(v) => f64::from(v[row]),
                    };
                    (col.name.clone(), v)
                })
                .collect();
        }
    }
    panic!("event {event} of run {run} is in no RQ file");
}

/// Every event id of a run's RQ outputs.
fn event_ids(f: &Fixture, run: u32) -> Vec<u64> {
    let c = Catalog::open(&f.catalog).unwrap();
    let mut ids = Vec::new();
    for file in c.files_of_run(run).unwrap() {
        for o in c.outputs_of(file.id).unwrap() {
            let rq = read_rq_file(std::path::Path::new(&o.rq_path)).unwrap();
            if let Some(ColumnData::U64(v)) = rq.event_column("event_id") {
                ids.extend(v);
            }
        }
    }
    ids
}

/// The first single-scatter event of a run (else its first event).
fn pick_event(f: &Fixture, run: u32) -> u64 {
    let c = Catalog::open(&f.catalog).unwrap();
    let file = &c.files_of_run(run).unwrap()[0];
    let rq = read_rq_file(std::path::Path::new(
        &c.outputs_of(file.id).unwrap()[0].rq_path,
    ))
    .unwrap();
    let (Some(ColumnData::U64(ids)), Some(ColumnData::U8(kind))) =
        (rq.event_column("event_id"), rq.event_column("interaction"))
    else {
        panic!("event_id u64, interaction u8");
    };
    ids.iter()
        .zip(kind)
        .find(|(_, &k)| k == 1)
        .map_or(ids[0], |(&id, _)| id)
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn web_api_matches_the_catalog_and_the_rq_files() {
    let f = fixture();
    let expected = expected_runs(&Catalog::open(&f.catalog).unwrap());
    runtime().block_on(async {
        let server = serve(f, None).await;
        let base = format!("http://{}", server.addr);
        let client = http();
        // Runs: every number equals the catalog, newest first.
        let page = get_json(&client, &format!("{base}/api/runs"), 200).await;
        assert_eq!(page["total_runs"], 2);
        let rows = page["rows"].as_array().unwrap();
        assert_eq!(rows[0]["run"], RUNS[1], "newest first");
        for row in rows {
            let run = row["run"].as_u64().unwrap() as u32;
            for (k, v) in &expected[&run] {
                assert_eq!(row[*k].as_u64(), Some(*v), "run {run} {k}: {row}");
            }
        }
        assert_eq!(expected[&101]["ukdc"], u64::from(FILES) - 1);
        assert_eq!(
            expected[&101]["failed"], 2,
            "lost replica + failed task's file"
        );
        // Missing-first, look-up, filter and paging.
        let p = get_json(
            &client,
            &format!("{base}/api/runs?missing_first=1&order=asc"),
            200,
        )
        .await;
        assert_eq!(p["rows"][0]["run"], 101);
        assert_eq!(p["rows"][0]["missing_files"], true);
        let p = get_json(&client, &format!("{base}/api/runs?runs=100%2099999"), 200).await;
        assert_eq!(p["matched"], 1);
        assert_eq!(p["not_found"], serde_json::json!([99999]));
        let p = get_json(&client, &format!("{base}/api/runs?q=101"), 200).await;
        assert_eq!(p["matched"], 1);
        let p = get_json(&client, &format!("{base}/api/runs?per_page=1&page=2"), 200).await;
        assert_eq!(
            (p["pages"].as_u64(), p["rows"][0]["run"].as_u64()),
            (Some(2), Some(100))
        );
        // Families: progress from the tasks.
        let fams = get_json(&client, &format!("{base}/api/families"), 200).await;
        let fam = fams["families"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == FAMILY)
            .unwrap()
            .clone();
        let n = u64::from(FILES) * 2;
        assert_eq!(
            (&fam["tasks"], &fam["done"], &fam["failed"], &fam["samples"]),
            (
                &Value::from(n),
                &Value::from(n - 1),
                &Value::from(1),
                &Value::from(2)
            )
        );
        assert_eq!(fams["total"], 2);
        let det = get_json(&client, &format!("{base}/api/family?name={FAMILY}"), 200).await;
        let runs = det["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (&runs[1]["run"], &runs[1]["failed"], &runs[1]["done"]),
            (&Value::from(101), &Value::from(1), &Value::from(2))
        );
        // Event display: header equals the RQ file; walking `next` visits every event once.
        let mut event = get_json(&client, &format!("{base}/api/event?run=100"), 200).await;
        let mut seen = vec![];
        loop {
            let h = &event["header"];
            let id = h["event_id"].as_u64().unwrap();
            let rq = rq_header(f, 100, id);
            for (api, col) in [
                ("trigger_time_ns", "trigger_time_ns"),
                ("drift_time_ns", "drift_time_ns"),
                ("s1c_phd", "s1c_phd"),
                ("s2c_phd", "s2c_phd"),
                ("x_mm", "x_mm"),
                ("y_mm", "y_mm"),
                ("z_mm", "z_mm"),
                ("energy_kev", "energy_kev"),
                ("interaction_code", "interaction"),
            ] {
                let got = h[api].as_f64().unwrap_or(f64::NAN);
                assert!(
                    close(got, rq[col]),
                    "event {id} {api}: api {got} rq {}",
                    rq[col]
                );
            }
            assert_eq!(h["lineage_hash"], f.lineage.as_str());
            assert_eq!(h["software_version"], tpcflow::SOFTWARE_VERSION);
            assert_eq!(
                event["pulses"].as_array().unwrap().len() as f64,
                rq["n_pulses"]
            );
            if event["selected_pulse"].is_u64() {
                assert_eq!(event["hitmap"]["top"].as_array().unwrap().len(), 253);
                assert_eq!(event["hitmap"]["bottom"].as_array().unwrap().len(), 241);
            }
            assert!(
                event["waveform_error"].is_null(),
                "{}",
                event["waveform_error"]
            );
            assert_eq!(event["raw"]["site"], "USDC");
            assert!(!event["waveform"]["top"]["values"]
                .as_array()
                .unwrap()
                .is_empty());
            seen.push(id);
            let Some(next) = event["next_event"].as_u64() else {
                break;
            };
            event = get_json(
                &client,
                &format!("{base}/api/event?run=100&event={next}"),
                200,
            )
            .await;
        }
        assert_eq!(seen.len(), (FILES * EVENTS) as usize);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        // A zoomed range and a chosen pulse.
        let id = pick_event(f, 100);
        let e = get_json(
            &client,
            &format!(
                "{base}/api/event?run=100&event={id}&pulse=0&xmin_us=1000&xmax_us=3000&bins=200"
            ),
            200,
        )
        .await;
        assert_eq!(e["selected_pulse"], 0);
        assert_eq!(
            e["raw"]["range_ns"],
            serde_json::json!([1_000_000.0, 3_000_000.0])
        );
        assert!(e["waveform"]["top"]["values"].as_array().unwrap().len() <= 200);
        check_pulse_and_pods(
            f,
            &get_json(
                &client,
                &format!("{base}/api/event?run=100&event={id}"),
                200,
            )
            .await,
        );
        server.stop().await.unwrap();
    });
}

/// The selected pulse's area-fraction times and the pods of an event display
/// answer: the times are ordered and inside the pulse, 50 % - 10 % is the RQ
/// rise time (measured by reco on its own summed waveform) within 10 %, and
/// the pods are those of the raw file that overlap the range shown.
fn check_pulse_and_pods(f: &Fixture, e: &Value) {
    let sel = e["selected_pulse"].as_u64().expect("a selected pulse") as usize;
    let pw = &e["pulse_waveform"];
    assert_eq!(pw["pulse"], sel);
    let pulse = &e["pulses"][sel];
    let aft: Vec<(f64, f64)> = pw["aft"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["fraction"].as_f64().unwrap(),
                a["time_ns"].as_f64().unwrap(),
            )
        })
        .collect();
    let fractions: Vec<f64> = aft.iter().map(|a| (a.0 * 100.0).round()).collect();
    assert_eq!(fractions, [1.0, 5.0, 10.0, 50.0, 90.0]);
    let (start, end) = (
        pw["start_ns"].as_f64().unwrap(),
        pw["end_ns"].as_f64().unwrap(),
    );
    assert!(
        start <= pulse["start_ns"].as_f64().unwrap() && end >= pulse["end_ns"].as_f64().unwrap()
    );
    assert!(aft.windows(2).all(|w| w[0].1 <= w[1].1), "{aft:?}");
    assert!(
        aft.iter().all(|a| (start..=end).contains(&a.1)),
        "{aft:?} outside {start}-{end}"
    );
    let rise = pulse["rise_time_ns"].as_f64().unwrap();
    let web_rise = aft[3].1 - aft[2].1;
    eprintln!(
        "pulse {sel} ({}): AFT 10-50 % {web_rise:.1} ns from the raw pods, RQ rise time {rise:.1} ns",
        pulse["kind_name"]
    );
    assert!(
        (web_rise - rise).abs() <= 0.1 * rise,
        "AFT 50-10 % {web_rise} vs RQ rise time {rise}"
    );
    // Pods against the raw file read here.
    let raw = &e["raw"];
    let path = f
        .data
        .join(raw["site"].as_str().unwrap())
        .join(format!("{:06}", e["header"]["run"].as_u64().unwrap()))
        .join(raw["file"].as_str().unwrap());
    let file = tpcflow::raw::RawFile::open(&path).unwrap();
    let id = e["header"]["event_id"].as_u64().unwrap();
    let i = file.event_ids().iter().position(|&x| x == id).unwrap();
    let view = file.event(i);
    let dt = file.header().sample_period_ns;
    let (lo, hi) = (
        raw["range_ns"][0].as_f64().unwrap(),
        raw["range_ns"][1].as_f64().unwrap(),
    );
    let mut want: Vec<(u64, f64, f64)> = view
        .pods
        .iter()
        .map(|p| {
            let a = f64::from(p.start_sample) * dt;
            (u64::from(p.channel), a, a + f64::from(p.length) * dt)
        })
        .filter(|&(_, a, b)| b > lo && a < hi)
        .collect();
    want.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let got: Vec<(u64, f64, f64)> = e["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["channel"].as_u64().unwrap(),
                p["start_ns"].as_f64().unwrap(),
                p["end_ns"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(!got.is_empty() && e["pods_truncated"] == false);
    assert_eq!(got, want, "pods of event {id}");
    for c in e["channels"].as_array().unwrap() {
        let pods = c["pods"].as_array().unwrap();
        assert!(
            !pods.is_empty() && pods.iter().all(|p| p["channel"] == c["channel"]),
            "{c}"
        );
    }
}

#[test]
fn web_bad_input_gets_a_clear_4xx() {
    let f = fixture();
    runtime().block_on(async {
        let server = serve(f, None).await;
        let base = format!("http://{}", server.addr);
        let client = http();
        let table: &[(&str, u16, &str)] = &[
            (
                "/api/event?run=999999&event=1",
                404,
                "run 999999 is not in the catalog",
            ),
            (
                "/api/event?run=100&event=999999",
                404,
                "has no event 999999",
            ),
            ("/api/event?run=abc&event=1", 400, "parameter `run`"),
            ("/api/event?run=100&event=1.5", 400, "parameter `event`"),
            ("/api/event?run=-100", 400, "parameter `run`"),
            ("/api/event?event=1", 400, "parameter `run`"),
            (
                "/api/event?run=100&event=0&pulse=9999",
                400,
                "parameter `pulse`",
            ),
            ("/api/event?run=100&xmin_us=5&xmax_us=1", 400, "xmin_us"),
            (
                "/api/event?run=100&lineage=..%2F..%2Fetc",
                400,
                "parameter `lineage`",
            ),
            (
                "/api/event?run=100&lineage=ffffffff",
                404,
                "of lineage ffffffff",
            ),
            (
                "/api/event?run=..%2F..%2Fetc%2Fpasswd",
                400,
                "parameter `run`",
            ),
            (
                "/api/event?run=100&file=/etc/passwd",
                400,
                "unknown parameter `file`",
            ),
            (
                "/api/event?run=100%3B%20DROP%20TABLE%20runs",
                400,
                "parameter `run`",
            ),
            (
                "/api/runs?runs=100%27%20OR%20%271%27%3D%271",
                400,
                "parameter `runs`",
            ),
            ("/api/runs?runs=424242", 404, "none of the runs"),
            ("/api/runs?page=0", 400, "parameter `page`"),
            ("/api/runs?per_page=100000", 400, "parameter `per_page`"),
            (
                "/api/runs?missing_first=maybe",
                400,
                "parameter `missing_first`",
            ),
            ("/api/runs?q=%zz", 400, "%XX"),
            ("/api/runs?runs=1&runs=2", 400, "once"),
            (
                "/api/family?name=..%2F..%2Fetc%2Fpasswd",
                400,
                "parameter `name`",
            ),
            (
                "/api/family?name=x%27%3B%20DROP%20TABLE%20campaigns%3B--",
                400,
                "parameter `name`",
            ),
            ("/api/family?name=NOPE", 404, "no family `NOPE`"),
            ("/api/family", 400, "parameter `name`"),
            ("/event?run=abc", 400, "parameter `run`"),
            ("/?page=x", 400, "parameter `page`"),
            ("/static/..%2F..%2Fetc%2Fpasswd", 404, "no page"),
            ("/static/../../etc/passwd", 404, "no page"),
            ("/etc/passwd", 404, "no page"),
            ("/api/nothing", 404, "no page"),
        ];
        for (path, status, needle) in table {
            let (s, headers, body) = get(&client, &format!("{base}{path}"), &[]).await;
            let text = String::from_utf8_lossy(&body);
            assert_eq!(s, *status, "{path}: {text}");
            assert!(text.contains(needle), "{path}: {text}");
            assert!(!text.contains("root:x:0"), "{path} leaked a file");
            assert!(headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'"));
        }
        // The catalog is untouched by the SQL fragments.
        let p = get_json(&client, &format!("{base}/api/runs"), 200).await;
        assert_eq!(p["total_runs"], 2);
        // A foreign Host header (DNS rebinding) is refused without a token.
        let (s, _, _) = get(
            &client,
            &format!("{base}/api/runs"),
            &[("host", "evil.example:80")],
        )
        .await;
        assert_eq!(s, 403);
        server.stop().await.unwrap();
    });
}

#[test]
fn web_tokens_and_the_serve_command() {
    let f = fixture();
    // Beyond loopback without a token: refused before binding.
    let out = Command::new(tpcflow_bin())
        .args(["serve", "--addr", "0.0.0.0:0", "--catalog"])
        .arg(&f.catalog)
        .arg("--data-root")
        .arg(&f.data)
        .env_remove("TPCFLOW_WEB_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("token"), "{err}");
    // The command serves on loopback.
    let mut child = Command::new(tpcflow_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--catalog"])
        .arg(&f.catalog)
        .arg("--data-root")
        .arg(&f.data)
        .env_remove("TPCFLOW_WEB_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let token = "s3cret-token-0123456789";
    runtime().block_on(async {
        let client = http();
        let (s, _, body) = get(&client, &format!("{url}/api/runs"), &[]).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        // In-process with a token: nothing without it, everything with it.
        let server = serve(f, Some(token)).await;
        let base = format!("http://{}", server.addr);
        let (s, _, body) = get(&client, &format!("{base}/api/runs"), &[]).await;
        assert_eq!(s, 401, "{}", String::from_utf8_lossy(&body));
        let (s, _, _) = get(
            &client,
            &format!("{base}/"),
            &[("authorization", "Bearer wrong-token-000000000")],
        )
        .await;
        assert_eq!(s, 401);
        let bearer = format!("Bearer {token}");
        let (s, _, _) = get(
            &client,
            &format!("{base}/api/families"),
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(s, 200);
        let (s, h, _) = get(&client, &format!("{base}/?token={token}"), &[]).await;
        assert_eq!(s, 200);
        let cookie = h["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let (s, _, _) = get(
            &client,
            &format!("{base}/api/event?run=100"),
            &[("cookie", &cookie)],
        )
        .await;
        assert_eq!(s, 200);
        server.stop().await.unwrap();
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn web_pages_in_headless_chromium() {
    let f = fixture();
    let expected = expected_runs(&Catalog::open(&f.catalog).unwrap());
    let event = pick_event(f, 100);
    let rq = rq_header(f, 100, event);
    runtime().block_on(async {
        let server = serve(f, None).await;
        let base = format!("http://{}", server.addr);
        let api = get_json(
            &http(),
            &format!("{base}/api/event?run=100&event={event}"),
            200,
        )
        .await;
        browser::check_pages(&base, &expected, event, &rq, &api).await;
        server.stop().await.unwrap();
    });
}

#[test]
fn web_load_runs_page_and_event_api() {
    let f = fixture();
    let clients = 20;
    let seconds: f64 = std::env::var("TPCFLOW_WEB_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    runtime().block_on(async {
        let server = serve(f, None).await;
        let base = format!("http://{}", server.addr);
        let ids: Vec<(u32, u64)> = RUNS
            .iter()
            .flat_map(|&r| event_ids(f, r).into_iter().map(move |e| (r, e)))
            .collect();
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..clients {
            let (base, ids) = (base.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                let client = http();
                let mut lat: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
                let mut errors = Vec::new();
                let mut i = k;
                while Instant::now() < end {
                    let (run, event) = ids[i % ids.len()];
                    let urls = [
                        ("runs page", format!("{base}/")),
                        ("runs api", format!("{base}/api/runs?per_page=50")),
                        (
                            "event api",
                            format!("{base}/api/event?run={run}&event={event}"),
                        ),
                    ];
                    for (what, url) in urls {
                        let t = Instant::now();
                        let (s, _, body) = get(&client, &url, &[]).await;
                        lat.entry(what).or_default().push(t.elapsed().as_secs_f64());
                        if s != 200 || body.is_empty() {
                            errors.push(format!("{url}: {s}"));
                        }
                    }
                    i += 7;
                }
                (lat, errors)
            }));
        }
        let mut all: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        let mut errors = Vec::new();
        for t in tasks {
            let (lat, errs) = t.await.unwrap();
            for (k, v) in lat {
                all.entry(k).or_default().extend(v);
            }
            errors.extend(errs);
        }
        let wall = started.elapsed().as_secs_f64();
        let mut report = serde_json::Map::new();
        for (what, mut v) in all {
            v.sort_by(f64::total_cmp);
            let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] * 1e3;
            let line = serde_json::json!({
                "requests": v.len(), "req_per_s": v.len() as f64 / wall,
                "p50_ms": p(0.5), "p99_ms": p(0.99), "max_ms": p(1.0)
            });
            eprintln!("load {what:<10} {line}");
            report.insert(what.into(), line);
        }
        let total: u64 = report.values().filter_map(|v| v["requests"].as_u64()).sum();
        eprintln!(
            "load total {total} requests, {:.0} req/s, {} errors",
            total as f64 / wall,
            errors.len()
        );
        report.insert("total_req_per_s".into(), (total as f64 / wall).into());
        report.insert("clients".into(), clients.into());
        report.insert("seconds".into(), wall.into());
        report.insert("errors".into(), errors.len().into());
        std::fs::write(
            artefacts().join("load.json"),
            serde_json::to_string_pretty(&report).unwrap(),
        )
        .unwrap();
        assert!(
            errors.is_empty(),
            "{} errors, e.g. {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        server.stop().await.unwrap();
    });
}
