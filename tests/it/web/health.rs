//! The detector-health page and `/api/health` on a catalog made as the
//! conditions loop makes it ([`super::health_fixture`]): every value equals
//! the tag's TOML and provenance in the catalog, a value a tag does not
//! carry is null (n/a on the page), and the page draws what the API says.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::{json, Value};
use tpcflow::catalog::Catalog;
use tpcflow::conditions::Conditions;

use super::browser::{js, screenshot, start_browser, wait_loaded};
use super::fixture::{get, get_json, http, runtime};
use super::health_fixture::*;

/// The detector's truth (`conditions/truth-realistic.toml`): dead and noisy channels.
const TRUE_DEAD: [u16; 5] = [17, 102, 189, 311, 460];
const TRUE_NOISY: [u16; 1] = [233];

/// What the page must show for one tag, read from the catalog directly.
#[derive(Debug)]
struct Expected {
    /// (value, sigma) by trend key; None where the tag does not carry it.
    trends: BTreeMap<&'static str, (Option<f64>, Option<f64>)>,
    dead: Option<Vec<u16>>,
    noisy: Option<Vec<u16>>,
    used_by_runs: Vec<u32>,
    latency_s: Option<f64>,
    state: String,
}

/// Provenance path of each trend: (key, value path, uncertainty path).
const TREND_PATHS: [(&str, &str, &str); 6] = [
    (
        "kr83m_peak_kev",
        "/kr83m_peak/energy_kev",
        "/uncertainty/kr83m_peak_energy_kev",
    ),
    (
        "kr83m_width_kev",
        "/kr83m_peak/width_kev",
        "/uncertainty/kr83m_peak_width_kev",
    ),
    (
        "event_rate_hz",
        "/rates/event_rate_hz",
        "/uncertainty/event_rate_hz",
    ),
    ("se_rate_hz", "/rates/se_rate_hz", "/uncertainty/se_rate_hz"),
    (
        "s2_width_at_gate_ns",
        "/liquid_level/s2_width_at_gate_ns",
        "/uncertainty/s2_width_at_gate_ns",
    ),
    (
        "tilt_mrad",
        "/liquid_level/tilt_mrad",
        "/uncertainty/tilt_mrad",
    ),
];

fn tag_conditions(c: &Catalog, tag: &str) -> Conditions {
    Conditions::parse(
        &c.conditions_content(tag).unwrap(),
        Path::new(&format!("catalog:{tag}")),
    )
    .unwrap()
}

fn expected(c: &Catalog) -> BTreeMap<String, Expected> {
    let mut out = BTreeMap::new();
    for t in c.conditions_tags().unwrap() {
        let Some(run) = t.source_run else { continue };
        let cond = tag_conditions(c, &t.tag);
        let p = &cond.detector.params;
        let f = |path: &str| t.provenance.pointer(path).and_then(Value::as_f64);
        let mut trends = BTreeMap::new();
        for (key, value, sigma) in TREND_PATHS {
            trends.insert(key, (f(value), f(sigma)));
        }
        trends.insert(
            "electron_lifetime_us",
            (
                Some(p.tpc.electron_lifetime_us),
                f("/uncertainty/electron_lifetime_us"),
            ),
        );
        trends.insert(
            "se_gain_phd",
            (Some(p.light.se_gain_phd), f("/uncertainty/se_gain_phd")),
        );
        let has_calibration = c
            .conditions_content(&t.tag)
            .unwrap()
            .contains("[detector.calibration]");
        let dead = has_calibration.then(|| p.calibration.dead_channels.clone());
        let noisy = has_calibration.then(|| p.calibration.noisy_channels.clone());
        trends.insert(
            "dead_channels",
            (dead.as_ref().map(|d| d.len() as f64), None),
        );
        let last_written = c
            .files_of_run(run)
            .unwrap()
            .iter()
            .map(|f| f.written_at.unwrap_or(f.registered_at))
            .fold(None, |m: Option<f64>, w| Some(m.map_or(w, |m| m.max(w))));
        out.insert(
            t.tag.clone(),
            Expected {
                trends,
                dead,
                noisy,
                used_by_runs: c.runs_using_conditions(&t.tag).unwrap(),
                latency_s: t.published_at.zip(last_written).map(|(p, w)| p - w),
                state: t.state.as_str().to_string(),
            },
        );
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Numbers of a JSON array against values (the JSON parser may be off by an ulp).
fn assert_numbers(what: &str, got: &Value, want: &[f64]) {
    let got = got
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {got} is no array"));
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.as_f64().is_some_and(|g| close(g, *w)),
            "{what}[{k}]: {g} vs {w}"
        );
    }
}

fn assert_value(what: &str, got: &Value, want: Option<f64>) {
    match want {
        Some(w) => assert!(
            got.as_f64().is_some_and(|g| close(g, w)),
            "{what}: API {got}, catalog {w}"
        ),
        None => assert!(
            got.is_null(),
            "{what}: API {got}, the tag does not carry it"
        ),
    }
}

#[test]
fn web_health_api_matches_the_catalog() {
    let f = health_fixture();
    let c = Catalog::open(&f.catalog).unwrap();
    let want = expected(&c);
    runtime().block_on(async {
        let server = serve_health(f).await;
        let base = format!("http://{}", server.addr);
        let client = http();
        let page = get_json(&client, &format!("{base}/api/health"), 200).await;
        let (run2, tag2) = CALIBRATIONS[1];
        let tag1 = CALIBRATIONS[0].1;
        assert_eq!(page["newest_run"], run2);
        assert_eq!(page["tag_in_force"], tag1, "{page}");
        assert_eq!(page["in_force_from_run"], CALIBRATIONS[0].0);
        let trends = page["trends"].as_array().unwrap();
        let tags: Vec<&str> = trends.iter().map(|p| p["tag"].as_str().unwrap()).collect();
        assert_eq!(tags, [tag1, BARE_TAG.1, tag2], "by calibration run");
        for p in trends {
            let tag = p["tag"].as_str().unwrap();
            let w = &want[tag];
            for (key, (value, sigma)) in &w.trends {
                if *key == "dead_channels" {
                    assert_value(&format!("{tag} {key}"), &p[*key], *value);
                    continue;
                }
                assert_value(&format!("{tag} {key}"), &p[*key]["value"], *value);
                assert_value(&format!("{tag} {key} sigma"), &p[*key]["sigma"], *sigma);
            }
            assert_eq!(
                p["noisy_channels"].as_u64(),
                w.noisy.as_ref().map(|n| n.len() as u64),
                "{tag}"
            );
            assert_eq!(p["state"], w.state.as_str());
            assert_eq!(p["used_by_runs"], json!(w.used_by_runs), "{tag}");
            assert_value(
                &format!("{tag} latency"),
                &p["products_latency_s"],
                w.latency_s,
            );
        }
        // The loop as it ran: the first tag published and used by the runs after it.
        let w1 = &want[tag1];
        assert_eq!(w1.used_by_runs, [SCIENCE_RUN, run2]);
        assert!(w1.latency_s.is_some_and(|l| l > 0.0), "{:?}", w1.latency_s);
        assert_eq!(want[tag2].state, "candidate");
        assert_eq!(want[tag2].latency_s, None);
        // Calibrate found the true dead and noisy channels; the bare tag carries nothing.
        assert_eq!(w1.dead.as_deref(), Some(&TRUE_DEAD[..]));
        assert_eq!(w1.noisy.as_deref(), Some(&TRUE_NOISY[..]));
        let bare = &want[BARE_TAG.1];
        assert!(bare.trends["kr83m_peak_kev"].0.is_none() && bare.dead.is_none());
        // Maps: the newest calibration by default, any by ?tag=.
        for (query, tag, base_tag) in [("", tag2, tag1), (&*format!("?tag={tag1}"), tag1, "v1")] {
            let page = get_json(&client, &format!("{base}/api/health{query}"), 200).await;
            let m = &page["maps"];
            assert_eq!(m["tag"], tag);
            let cond = tag_conditions(&c, tag);
            let cal = &cond.detector.params.calibration;
            let gap = cal.gas_gap_mm.as_ref().expect("a gas-gap map");
            assert_numbers("gas gap", &m["gas_gap_mm"]["values"], &gap.values);
            assert_eq!(m["gas_gap_mm"]["nx"], gap.nx);
            let g = &m["gains"];
            assert_numbers(
                "gains",
                &g["gain_adc"],
                &cond.detector.params.pmts.spe_area_adc,
            );
            assert_eq!(g["dead"], json!(cal.dead_channels));
            assert_eq!(g["noisy"], json!(cal.noisy_channels));
            assert_eq!(g["base_tag"], base_tag);
            assert_eq!(
                g["base_gain_adc"],
                json!(
                    tag_conditions(&c, base_tag)
                        .detector
                        .params
                        .pmts
                        .spe_area_adc
                )
            );
            let prov = &c.conditions_tag(tag).unwrap().unwrap().provenance;
            let lv = |k: &str| prov["liquid_level"][k].as_f64();
            assert_value("tilt", &m["tilt_mrad"]["value"], lv("tilt_mrad"));
            assert_value(
                "tilt direction",
                &m["tilt_direction_deg"],
                lv("tilt_direction_deg"),
            );
            let sigmas = prov["uncertainty"]["spe_area_adc"].as_array().unwrap();
            for (k, s) in sigmas.iter().enumerate() {
                let s = s.as_f64().unwrap();
                let got = &g["gain_sigma_adc"][k];
                if s < 0.0 {
                    assert!(got.is_null(), "channel {k}: {got}");
                } else {
                    assert_value(&format!("gain sigma of channel {k}"), got, Some(s));
                }
            }
        }
        let (s, _, body) = get(&client, &format!("{base}/api/health?tag=v9"), &[]).await;
        assert_eq!(s, 404, "{}", String::from_utf8_lossy(&body));
        let (s, _, _) = get(&client, &format!("{base}/api/health?tag=a/b"), &[]).await;
        assert_eq!(s, 400);
        let (s, _, _) = get(&client, &format!("{base}/health?run=1"), &[]).await;
        assert_eq!(s, 400);
        server.stop().await.unwrap();
    });
}

/// Wait until `script` returns `want`.
async fn wait_for(c: &fantoccini::Client, script: &str, want: Value, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = js(c, script).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn web_health_page_in_headless_chromium() {
    let f = health_fixture();
    let c = Catalog::open(&f.catalog).unwrap();
    let want = expected(&c);
    let (tag1, tag2) = (CALIBRATIONS[0].1, CALIBRATIONS[1].1);
    let cond2 = tag_conditions(&c, tag2);
    let gap2 = cond2
        .detector
        .params
        .calibration
        .gas_gap_mm
        .clone()
        .unwrap();
    let prov2 = c.conditions_tag(tag2).unwrap().unwrap().provenance;
    runtime().block_on(async {
        let server = serve_health(f).await;
        let base = format!("http://{}", server.addr);
        let (_driver, b, _profile) = start_browser().await;
        b.goto(&format!("{base}/health")).await.unwrap();
        wait_loaded(&b, "health page").await;
        assert_eq!(js(&b, "return document.getElementById('in-force').textContent").await, tag1);
        // Trend points and error bars: the catalog's values, one point per tag carrying it.
        for key in ["electron_lifetime_us", "se_gain_phd", "kr83m_peak_kev", "event_rate_hz",
                    "se_rate_hz", "s2_width_at_gate_ns", "dead_channels"] {
            let pts = js(&b, &format!("return [...document.querySelectorAll('#plot-{key} g.point')].map(g => {{
                const c = g.querySelector('circle.pt'), e = g.querySelector('line.err');
                return [g.dataset.tag, +c.dataset.value, c.dataset.sigma === '' ? null : +c.dataset.sigma,
                        e ? [+e.dataset.lo, +e.dataset.hi] : null]; }})")).await;
            let pts = pts.as_array().unwrap();
            let carrying: Vec<&String> = want.iter().filter(|(_, w)| w.trends[key].0.is_some()).map(|(t, _)| t).collect();
            assert_eq!(pts.len(), carrying.len(), "{key}: {pts:?}");
            for pt in pts {
                let tag = pt[0].as_str().unwrap();
                let (v, s) = want[tag].trends[key];
                assert!(close(pt[1].as_f64().unwrap(), v.unwrap()), "{key} {tag}: {pt}");
                match s {
                    Some(s) => {
                        assert!(close(pt[2].as_f64().unwrap(), s), "{key} {tag} sigma: {pt}");
                        let (lo, hi) = (pt[3][0].as_f64().unwrap(), pt[3][1].as_f64().unwrap());
                        assert!(close(lo, v.unwrap() - s) && close(hi, v.unwrap() + s), "{key} {tag} bar: {pt}");
                    }
                    None => assert!(pt[2].is_null() && pt[3].is_null(), "{key} {tag}: no error bar: {pt}"),
                }
            }
        }
        // The table: dead channels and n/a where a tag carries nothing.
        let row = |tag: &str, key: &str| format!(
            "return document.querySelector(\"#tags tr[data-tag='{tag}'] td.c-{key}\").textContent");
        assert_eq!(js(&b, &row(tag1, "dead_channels")).await, TRUE_DEAD.len().to_string());
        for key in ["kr83m_peak_kev", "event_rate_hz", "se_rate_hz", "s2_width_at_gate_ns", "tilt_mrad",
                    "dead_channels", "noisy_channels", "latency"] {
            assert_eq!(js(&b, &row(BARE_TAG.1, key)).await, "n/a", "{key} of {}", BARE_TAG.1);
        }
        assert_eq!(js(&b, &row(tag1, "used_by_runs")).await,
                   format!("{SCIENCE_RUN} {}", CALIBRATIONS[1].0));
        // Maps of the newest calibration: one cell per gap bin and per PMT, dead and noisy marked.
        let maps = js(&b, "return [document.querySelectorAll('#gap-map rect.gap-cell').length,
            document.querySelectorAll('#gain-top circle.gain-cell').length,
            document.querySelectorAll('#gain-bottom circle.gain-cell').length,
            [...document.querySelectorAll('circle.gain-cell.dead')].map(c => +c.dataset.channel),
            [...document.querySelectorAll('circle.gain-cell.noisy')].map(c => +c.dataset.channel),
            +document.getElementById('tilt').dataset.mrad, +document.getElementById('tilt').dataset.direction,
            document.querySelectorAll('path.dead-mark').length]").await;
        let d = &cond2.detector.params.calibration;
        assert_eq!(maps[0], gap2.nx * gap2.ny, "{maps}");
        assert_eq!((&maps[1], &maps[2]), (&json!(253), &json!(241)), "{maps}");
        assert_eq!(maps[3], json!(d.dead_channels), "{maps}");
        assert_eq!(maps[4], json!(d.noisy_channels), "{maps}");
        assert_eq!(maps[7], d.dead_channels.len(), "{maps}");
        let tilt = prov2["liquid_level"]["tilt_mrad"].as_f64().unwrap();
        let dir = prov2["liquid_level"]["tilt_direction_deg"].as_f64().unwrap();
        assert!(close(maps[5].as_f64().unwrap(), tilt) && close(maps[6].as_f64().unwrap(), dir), "{maps}");
        let gains = js(&b, "return [...document.querySelectorAll('circle.gain-cell')].map(c => [+c.dataset.channel, +c.dataset.gain])").await;
        for g in gains.as_array().unwrap() {
            let k = g[0].as_u64().unwrap() as usize;
            assert!(close(g[1].as_f64().unwrap(), cond2.detector.params.pmts.spe_area_adc[k]), "{g}");
        }
        screenshot(&b, "health.png").await;
        // Another calibration's maps, and gains relative to the conditions they were measured on.
        b.execute(&format!("const s = document.getElementById('map-tag'); s.value = '{tag1}'; s.dispatchEvent(new Event('change'));"), vec![]).await.unwrap();
        wait_for(&b, "return document.querySelector('#tags tr.sel')?.dataset.tag ?? null", json!(tag1), "maps of the first calibration").await;
        wait_loaded(&b, "maps of the first calibration").await;
        b.execute("const s = document.getElementById('gain-mode'); s.value = 'rel'; s.dispatchEvent(new Event('change'));", vec![]).await.unwrap();
        wait_for(&b, "return [...document.querySelectorAll('#gain-colorbar text')].some(t => t.textContent === '/ v1')",
                 json!(true), "gain / v1 colour bar").await;
        screenshot(&b, "health-relative.png").await;
        // A trend point selects its calibration too.
        b.find(Locator::Css(&format!("#plot-electron_lifetime_us g.point[data-tag='{tag2}'] circle")))
            .await.unwrap().click().await.unwrap();
        wait_for(&b, "return document.getElementById('map-tag').value", json!(tag2), "click on a point").await;
        b.close().await.unwrap();
        server.stop().await.unwrap();
    });
}
