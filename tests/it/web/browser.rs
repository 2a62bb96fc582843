//! The pages in real headless Chromium, driven over WebDriver (chromedriver
//! started here on a free loopback port, `fantoccini` as the client).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use super::fixture::{artefacts, FAMILY, RUNS};

/// chromedriver, killed on drop.
pub(super) struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(super) async fn start_browser() -> (Driver, Client, tempfile::TempDir) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromedriver is missing ({e}): run scripts/setup.sh (chromium chromium-driver)")
        });
    let driver = Driver(child);
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1400,1900",
                     format!("--user-data-dir={}", profile.path().display())]
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session from chromedriver at {url}: {e}"),
        }
    };
    (driver, client, profile)
}

/// Wait until the page's status element says `loaded`.
pub(super) async fn wait_loaded(c: &Client, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state: Value = c
            .execute("const s = document.querySelector('#status'); return s ? [s.dataset.state, s.textContent] : null;", vec![])
            .await
            .unwrap();
        if state[0] == "loaded" {
            return;
        }
        assert!(state[0] != "error", "{what}: page says {}", state[1]);
        assert!(Instant::now() < deadline, "{what}: not loaded: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Click the element `css` selects.
pub(super) async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

pub(super) async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

pub(super) async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(artefacts().join(name), png).unwrap();
}

/// A number shown in the header, by element id.
async fn header_number(c: &Client, id: &str) -> f64 {
    let v = js(
        c,
        &format!("return document.getElementById('h-{id}').textContent"),
    )
    .await;
    v.as_str().unwrap().parse().unwrap_or(f64::NAN)
}

/// Load every page, assert on the DOM, save screenshots.
pub async fn check_pages(
    base: &str,
    expected: &BTreeMap<u32, BTreeMap<&'static str, u64>>,
    event: u64,
    rq: &BTreeMap<String, f64>,
    api: &Value,
) {
    let (_driver, c, _profile) = start_browser().await;
    // Runs page: one row per run, numbers as in the catalog.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_loaded(&c, "runs page").await;
    let rows = js(&c, "return [...document.querySelectorAll('#runs-table tbody tr')].map(tr => {
        const o = {run: +tr.dataset.run, missing: tr.classList.contains('missing')};
        for (const td of tr.querySelectorAll('td[class^=c-]')) o[td.className.split(' ')[0].slice(2)] = +td.textContent;
        return o; })").await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), expected.len());
    for row in rows {
        let run = row["run"].as_u64().unwrap() as u32;
        for (k, v) in &expected[&run] {
            assert_eq!(row[*k].as_u64(), Some(*v), "runs page, run {run} {k}");
        }
    }
    assert_eq!(
        rows[1]["missing"], false,
        "run 100 has every file everywhere"
    );
    screenshot(&c, "runs.png").await;
    // Missing first + look-up.
    c.find(Locator::Css("#runs"))
        .await
        .unwrap()
        .send_keys("100")
        .await
        .unwrap();
    click(&c, "#lookup-btn").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_loaded(&c, "runs look-up").await;
    let n = js(
        &c,
        "return document.querySelectorAll('#runs-table tbody tr').length",
    )
    .await;
    assert_eq!(n, 1);
    click(&c, "#all-btn").await;
    click(&c, "#missing").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_loaded(&c, "missing first").await;
    let first = js(
        &c,
        "return +document.querySelector('#runs-table tbody tr').dataset.run",
    )
    .await;
    assert_eq!(first, RUNS[1]);
    // Families page: expand the prompt family into its runs.
    c.goto(&format!("{base}/families")).await.unwrap();
    wait_loaded(&c, "families page").await;
    let fams = js(&c, "return [...document.querySelectorAll('#families-table tr.family')].map(tr => [tr.dataset.family,
        +tr.querySelector('.c-done').textContent, +tr.querySelector('.c-failed').textContent,
        +tr.querySelector('.c-samples').textContent])").await;
    assert_eq!(fams.as_array().unwrap().len(), 2);
    assert!(
        fams.as_array().unwrap().contains(&json!([FAMILY, 5, 1, 2])),
        "{fams}"
    );
    c.find(Locator::Css(&format!(
        "tr[data-family='{FAMILY}'] button.expand"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let subs = js(
            &c,
            "return [...document.querySelectorAll('tr.sub')].map(tr => [+tr.dataset.run,
            +tr.querySelector('.c-done').textContent, +tr.querySelector('.c-failed').textContent])",
        )
        .await;
        if subs.as_array().unwrap().len() == 2 {
            assert_eq!(subs, json!([[100, 3, 0], [101, 2, 1]]));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "family rows never appeared: {subs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot(&c, "families.png").await;
    // Event display: header equals the RQ file; plots drawn.
    c.goto(&format!("{base}/event?run=100&event={event}"))
        .await
        .unwrap();
    wait_loaded(&c, "event display").await;
    let re = js(
        &c,
        "return document.getElementById('h-run-event').textContent",
    )
    .await;
    assert_eq!(re, format!("100, {event}"));
    for (id, col, tol) in [
        ("s1c", "s1c_phd", 0.006),
        ("s2c", "s2c_phd", 0.006),
        ("x", "x_mm", 0.006),
        ("y", "y_mm", 0.006),
        ("z", "z_mm", 0.006),
        ("energy", "energy_kev", 0.0006),
        ("drift", "drift_time_ns", 0.06),
        ("trigger", "trigger_time_ns", 0.5),
    ] {
        let shown = header_number(&c, id).await;
        let want = rq[col];
        assert!(
            (shown.is_nan() && want.is_nan()) || (shown - want).abs() <= tol,
            "header {id}: shown {shown}, RQ {want}"
        );
    }
    let interaction = js(
        &c,
        "return document.getElementById('h-interaction').textContent",
    )
    .await;
    if rq["interaction"] == 1.0 {
        assert_eq!(interaction, "single scatter");
    }
    let counts = js(
        &c,
        "return [document.querySelectorAll('#summed path').length,
        document.querySelectorAll('#hit-top circle.pmt').length,
        document.querySelectorAll('#hit-bottom circle.pmt').length,
        document.querySelectorAll('#channels svg').length,
        document.querySelectorAll('#pulses tbody tr').length,
        document.querySelectorAll('#summed rect.pulse').length]",
    )
    .await;
    let counts: Vec<u64> = counts
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(&counts[..3], &[2, 253, 241], "{counts:?}");
    assert!(
        counts[3] > 0 && counts[4] as f64 == rq["n_pulses"],
        "{counts:?}"
    );
    let export = js(
        &c,
        "return document.getElementById('export').getAttribute('href')",
    )
    .await;
    assert_eq!(
        export,
        format!(
            "/api/event?run=100&event={event}&pulse={}",
            rq["main_s2"] as i64
        )
    );
    check_aft_and_pods(&c, api).await;
    screenshot(&c, "event.png").await;
    // Select the S1 (pulse table), then go to the next event.
    if rq["main_s1"] >= 0.0 {
        let s1 = rq["main_s1"] as i64;
        c.find(Locator::Css(&format!("#pulses tr[data-pulse='{s1}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while js(
            &c,
            "return document.getElementById('hit-title').textContent",
        )
        .await
            != json!(format!("pulse {s1} (S1)"))
        {
            assert!(Instant::now() < deadline, "S1 never selected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_loaded(&c, "S1 selected").await;
        screenshot(&c, "event-s1.png").await;
    }
    click(&c, "#next-event").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while js(
        &c,
        "return document.getElementById('h-run-event').textContent",
    )
    .await
        != json!(format!("100, {}", event + 1))
    {
        assert!(Instant::now() < deadline, "next event never shown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.close().await.unwrap();
}

/// The selected pulse's area-fraction-time markers sit at the API's times;
/// the pod toggle adds one element per pod of the API and takes them away;
/// the header keeps the software version and conditions tag.
async fn check_aft_and_pods(c: &Client, api: &Value) {
    let software = js(
        c,
        "return document.getElementById('h-software').textContent",
    )
    .await;
    let want = format!(
        "tpcflow {} / condTag {}",
        api["header"]["software_version"].as_str().unwrap(),
        api["rq"]["conditions_tag"].as_str().unwrap()
    );
    assert!(
        software.as_str().unwrap().starts_with(&want),
        "{software} vs {want}"
    );
    let marks = js(c, "const s = document.getElementById('pulse-wf');
        return {x0: +s.dataset.x0Us, x1: +s.dataset.x1Us, left: +s.dataset.left, width: +s.dataset.width,
                marks: [...s.querySelectorAll('line.aft')].map(l => [+l.dataset.fraction, +l.dataset.timeNs, +l.getAttribute('x1')])}").await;
    let aft = api["pulse_waveform"]["aft"].as_array().unwrap();
    let m = marks["marks"].as_array().unwrap();
    assert_eq!(m.len(), aft.len(), "{marks}");
    let px = |t_ns: f64| {
        let (x0, x1) = (marks["x0"].as_f64().unwrap(), marks["x1"].as_f64().unwrap());
        marks["left"].as_f64().unwrap()
            + (t_ns / 1e3 - x0) / (x1 - x0) * marks["width"].as_f64().unwrap()
    };
    for (shown, a) in m.iter().zip(aft) {
        let (f, t) = (
            a["fraction"].as_f64().unwrap(),
            a["time_ns"].as_f64().unwrap(),
        );
        assert_eq!(shown[0].as_f64(), Some(f), "{shown}");
        assert_eq!(shown[1].as_f64(), Some(t), "{shown}");
        assert!(
            (shown[2].as_f64().unwrap() - px(t)).abs() < 0.01,
            "marker of {f} at x {shown}, want {}",
            px(t)
        );
    }
    let counts = "return [document.querySelectorAll('#summed g.pod').length,
        document.querySelectorAll('#summed line.pod-edge').length, document.querySelectorAll('#channels g.pod').length]";
    assert_eq!(
        js(c, counts).await,
        json!([0, 0, 0]),
        "pods hidden by default"
    );
    click(c, "#pods").await;
    let pods = api["pods"].as_array().unwrap().len();
    let channel_pods: usize = api["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| ch["pods"].as_array().unwrap().len())
        .sum();
    assert_eq!(js(c, counts).await, json!([pods, 2 * pods, channel_pods]));
    let first = js(c, "const g = document.querySelector('#summed g.pod'); return [+g.dataset.channel, +g.dataset.startNs, +g.dataset.endNs]").await;
    let p0 = &api["pods"][0];
    let nums = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    assert_eq!(
        nums(&first),
        nums(&json!([p0["channel"], p0["start_ns"], p0["end_ns"]]))
    );
    screenshot(c, "event-pods.png").await;
    click(c, "#pods").await;
    assert_eq!(js(c, counts).await, json!([0, 0, 0]), "pods hidden again");
}
