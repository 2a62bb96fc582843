//! `tpcflow serve` against bad input and bad files, with a real server on a
//! real socket: the catalog opened read-only (never migrated), oversized
//! queries with multi-byte text, the token cookie's attributes, and RQ files
//! with ragged columns, missing datasets, wrong types or indexes pointing
//! past their rows, which must give a status and a message, never a dropped
//! connection.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tpcflow::catalog::{schema, Catalog, NewOutput, NewRawFile, RunInfo, RunType};
use tpcflow::rq::{write_rq_file_with_channels, Column, ColumnData, RqHeader};

use crate::common::{run_python, scratch, tpcflow_bin};
use crate::web::fixture::{get, http, runtime};

/// Start the server in-process on a free loopback port over `catalog`.
async fn serve_catalog(
    catalog: &Path,
    data: &Path,
    token: Option<&str>,
) -> anyhow::Result<tpcflow::web::RunningServer> {
    std::fs::create_dir_all(data.join("RQ"))?;
    tpcflow::web::spawn(tpcflow::web::ServeConfig {
        catalog: catalog.to_path_buf(),
        addr: "127.0.0.1:0".parse()?,
        token: token.map(str::to_string),
        roots: tpcflow::web::DataRoots::under(data, None)?,
        conditions: tpcflow::conditions::Conditions::load("v1")?,
        runs_cache: Duration::from_secs(1),
    })
    .await
}

/// A catalog at schema version 2 (one migration behind), as an older
/// dispatcher leaves it.
fn older_catalog(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    for sql in &schema::MIGRATIONS[..2] {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch("PRAGMA user_version = 2").unwrap();
}

#[test]
fn web_serve_opens_the_catalog_read_only_and_never_migrates_it() {
    let dir = scratch("web-ro");
    let data = dir.path().join("data");
    // A current catalog made read-only: served, bytes unchanged.
    let current = dir.path().join("current.sqlite");
    drop(Catalog::init(&current).unwrap());
    let mut perms = std::fs::metadata(&current).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&current, perms).unwrap();
    let before = std::fs::read(&current).unwrap();
    runtime().block_on(async {
        let server = serve_catalog(&current, &data, None).await.unwrap();
        let client = http();
        let (s, _, body) = get(&client, &format!("http://{}/api/runs", server.addr), &[]).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        server.stop().await.unwrap();
    });
    assert_eq!(
        std::fs::read(&current).unwrap(),
        before,
        "read-only catalog"
    );
    // An older schema: refused in-process and by the command, not upgraded.
    let old = dir.path().join("old.sqlite");
    older_catalog(&old);
    let before = std::fs::read(&old).unwrap();
    let err = runtime()
        .block_on(serve_catalog(&old, &data, None))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("schema version 2 is older") && msg.contains("never migrated"),
        "{msg}"
    );
    let out = Command::new(tpcflow_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--catalog"])
        .arg(&old)
        .arg("--data-root")
        .arg(&data)
        .env_remove("TPCFLOW_WEB_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("schema version 2 is older"), "{stderr}");
    assert_eq!(
        std::fs::read(&old).unwrap(),
        before,
        "older catalog untouched"
    );
    let version: u32 = rusqlite::Connection::open(&old)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

/// Send `request` as is on a new connection; the whole answer.
fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn web_oversized_queries_with_multibyte_text_get_a_400() {
    let dir = scratch("web-utf8");
    let catalog = dir.path().join("c.sqlite");
    drop(Catalog::init(&catalog).unwrap());
    let rt = runtime();
    let server = rt
        .block_on(serve_catalog(&catalog, &dir.path().join("data"), None))
        .unwrap();
    let addr = server.addr;
    for pad in [61, 62, 63, 64] {
        // Raw UTF-8 in the request target: 'é' straddles byte 64 of the query.
        let query = format!("q={}{}", "a".repeat(pad), "é".repeat(5000));
        let req = format!(
            "GET /api/runs?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        );
        let answer = std::thread::spawn(move || raw_http(addr, req.as_bytes()))
            .join()
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "pad {pad}: {answer:.300}"
        );
        assert!(
            answer.contains("at most 8192 bytes"),
            "pad {pad}: {answer:.300}"
        );
        // Percent-encoded: the decoded value is over its limit, 'ü' at byte 64.
        let url = format!(
            "http://{addr}/api/runs?q={}{}",
            "a".repeat(pad),
            "%C3%BC".repeat(1200)
        );
        let (s, _, body) = rt.block_on(get(&http(), &url, &[]));
        let body = String::from_utf8_lossy(&body);
        assert_eq!(s, 400, "{body}");
        assert!(body.contains("at most 2048 bytes"), "{body}");
    }
    rt.block_on(server.stop()).unwrap();
}

#[test]
fn web_token_cookie_is_http_only_strict_and_expires() {
    let dir = scratch("web-cookie");
    let catalog = dir.path().join("c.sqlite");
    drop(Catalog::init(&catalog).unwrap());
    let token = "cookie-token-0123456789";
    runtime().block_on(async {
        let server = serve_catalog(&catalog, &dir.path().join("data"), Some(token))
            .await
            .unwrap();
        let (s, h, _) = get(
            &http(),
            &format!("http://{}/?token={token}", server.addr),
            &[],
        )
        .await;
        assert_eq!(s, 200);
        let cookie = h["set-cookie"].to_str().unwrap().to_string();
        let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
        assert_eq!(attrs[0], format!("tpcflow_token={token}"), "{cookie}");
        for want in ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=43200"] {
            assert!(attrs.contains(&want), "{want} missing: {cookie}");
        }
        server.stop().await.unwrap();
    });
    // The help says where the token should come from and that TLS goes in front.
    let out = Command::new(tpcflow_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("TPCFLOW_WEB_TOKEN"), "{help}");
    assert!(
        help.contains("TLS") && help.contains("reverse proxy"),
        "{help}"
    );
}

fn header() -> RqHeader {
    RqHeader {
        lineage_json: "{}".into(),
        lineage_hash: "abcd1234".into(),
        conditions_tag: "v1".into(),
        input_file: "000001_00000.raw.h5".into(),
        input_adler32: "00000001".into(),
    }
}

/// A well-formed RQ file: 2 events of 1 and 2 pulses, 1 channel area each.
pub fn good_rq(path: &Path) {
    let events = vec![
        Column::new("event_id", "1", "", ColumnData::U64(vec![0, 1])),
        Column::new("first_pulse", "1", "", ColumnData::U64(vec![0, 1])),
        Column::new("n_pulses", "1", "", ColumnData::U32(vec![1, 2])),
        Column::new("interaction", "1", "", ColumnData::U8(vec![1, 2])),
        Column::new("s1_area_phd", "phd", "", ColumnData::F32(vec![5.0, 6.0])),
    ];
    let pulses = vec![
        Column::new("area_phd", "phd", "", ColumnData::F32(vec![1.0, 2.0, 3.0])),
        Column::new("kind", "1", "", ColumnData::U8(vec![1, 2, 2])),
        Column::new("first_channel", "1", "", ColumnData::U64(vec![0, 1, 2])),
        Column::new("n_channel_areas", "1", "", ColumnData::U32(vec![1, 1, 1])),
    ];
    let channels = vec![
        Column::new("channel", "1", "", ColumnData::U16(vec![3, 4, 5])),
        Column::new("area_phd", "phd", "", ColumnData::F32(vec![1.0, 2.0, 3.0])),
    ];
    write_rq_file_with_channels(path, &header(), &events, &pulses, &channels).unwrap();
}

/// Bad RQ files, made from a good one with h5py: (name, what the error names).
pub const BAD_RQ: &[(&str, &str)] = &[
    ("ragged", "/pulses/kind has 1 rows, expected 3"),
    ("no_event_id", "/events/event_id"),
    ("float_index", "/events/first_pulse"),
    (
        "index_past_end",
        "/events/first_pulse row 1: rows 1..1000001 outside /pulses",
    ),
    ("channel_index_past_end", "/pulses/first_channel row 2"),
];

/// Write the files of [`BAD_RQ`] into `dir`; their paths.
pub fn bad_rq_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let paths: Vec<PathBuf> = BAD_RQ
        .iter()
        .map(|(name, _)| dir.join(format!("{name}.rq.h5")))
        .collect();
    for p in &paths {
        good_rq(p);
    }
    let code = r#"
import sys, h5py, numpy as np
def redo(f, name, data):
    units = f[name].attrs["units"]
    del f[name]
    d = f.create_dataset(name, data=data)
    d.attrs["units"] = units
ragged, no_id, float_index, past, ch_past = sys.argv[1:6]
with h5py.File(ragged, "r+") as f:
    redo(f, "pulses/kind", np.array([1], dtype=np.uint8))
with h5py.File(no_id, "r+") as f:
    del f["events/event_id"]
with h5py.File(float_index, "r+") as f:
    redo(f, "events/first_pulse", np.array([0.0, 1.5]))
with h5py.File(past, "r+") as f:
    redo(f, "events/n_pulses", np.array([1, 1000000], dtype=np.uint32))
with h5py.File(ch_past, "r+") as f:
    redo(f, "pulses/first_channel", np.array([0, 1, 7], dtype=np.uint64))
"#;
    let args: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    run_python(code, &args);
    paths
}

#[test]
fn web_event_display_answers_bad_rq_files_with_a_status_and_a_message() {
    let dir = scratch("web-bad-rq");
    let data = dir.path().join("data");
    let rq_dir = data.join("RQ");
    let catalog = dir.path().join("c.sqlite");
    let c = Catalog::init(&catalog).unwrap();
    let mut files = bad_rq_files(&rq_dir);
    let good = rq_dir.join("good.rq.h5");
    good_rq(&good);
    files.push(good);
    for (k, path) in files.iter().enumerate() {
        let run = 1 + k as u32;
        c.upsert_run(
            &RunInfo {
                number: run,
                run_type: RunType::Science,
                start_time: None,
                conditions: Some("v1".into()),
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
            size_bytes: 1,
            adler32: "00000001".into(),
            written_at: None,
        }])
        .unwrap();
        c.record_output(&NewOutput {
            file_id: c.file(&name).unwrap().id,
            lineage_hash: "abcd1234".into(),
            rq_path: path.display().to_string(),
            checksum: "00000001".into(),
            events: 2,
        })
        .unwrap();
    }
    drop(c);
    runtime().block_on(async {
        let server = serve_catalog(&catalog, &data, None).await.unwrap();
        let client = http();
        for (k, (name, needle)) in BAD_RQ.iter().enumerate() {
            let url = format!("http://{}/api/event?run={}&event=1", server.addr, k + 1);
            let (s, _, body) = get(&client, &url, &[]).await;
            let body = String::from_utf8_lossy(&body);
            assert_eq!(s, 503, "{name}: {body}");
            assert!(body.contains(needle), "{name}: wants `{needle}`: {body}");
            assert!(body.contains(&format!("{name}.rq.h5")), "{name}: {body}");
        }
        // The good file is displayed, pulses and hit map included.
        let url = format!(
            "http://{}/api/event?run={}&event=1",
            server.addr,
            files.len()
        );
        let (s, _, body) = get(&client, &url, &[]).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["pulses"].as_array().unwrap().len(), 2);
        server.stop().await.unwrap();
    });
}
