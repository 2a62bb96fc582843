//! Routes, the access guard and the embedded assets.
//!
//! Pages are static HTML shells drawn by their script from the JSON API, so
//! what a page shows and what `/api/...` returns are the same data. Page
//! routes check their parameters too, so a bad link fails with a 4xx before
//! any script runs.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::event::{self, EventQuery, EVENT_PARAMS};
use super::families::{self, FAMILIES_PARAMS, FAMILY_PARAMS};
use super::health::HEALTH_PARAMS;
use super::params::Params;
use super::runs::{self, RunsQuery, RUNS_PARAMS};
use super::{blocking, AppState, WebError};

/// Name of the cookie holding the access token after `?token=`.
const TOKEN_COOKIE: &str = "tpcflow_token";
/// Lifetime of the token cookie [s]: one 12-hour shift, then `?token=` again.
const TOKEN_COOKIE_MAX_AGE_S: u32 = 12 * 3600;

/// Only this server's own files: no CDN, no external fonts or scripts.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const RUNS_HTML: &str = include_str!("assets/runs.html");
const FAMILIES_HTML: &str = include_str!("assets/families.html");
const EVENT_HTML: &str = include_str!("assets/event.html");
const HEALTH_HTML: &str = include_str!("assets/health.html");
const APP_CSS: &str = include_str!("assets/app.css");
const COMMON_JS: &str = include_str!("assets/common.js");
const RUNS_JS: &str = include_str!("assets/runs.js");
const FAMILIES_JS: &str = include_str!("assets/families.js");
const EVENT_JS: &str = include_str!("assets/event.js");
const HEALTH_JS: &str = include_str!("assets/health.js");

/// The application.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(runs_html))
        .route("/families", get(families_html))
        .route("/event", get(event_html))
        .route("/health", get(health_html))
        .route("/api/runs", get(api_runs))
        .route("/api/families", get(api_families))
        .route("/api/family", get(api_family))
        .route("/api/event", get(api_event))
        .route("/api/health", get(api_health))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/static/{name}", get(asset))
        .fallback(|req: Request| async move {
            WebError::NoRoute {
                path: req.uri().path().chars().take(100).collect(),
            }
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
        .with_state(state)
}

/// Constant-time comparison of two tokens.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The token a request carries: bearer header, cookie, or `token=` in the query.
fn presented_token(req: &Request) -> (Option<String>, bool) {
    let h = req.headers();
    if let Some(t) = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return (Some(t.trim().to_string()), false);
    }
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_string)
    });
    if from_query.is_some() {
        return (from_query, true);
    }
    let cookie = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{TOKEN_COOKIE}="))
                .map(str::to_string)
        });
    (cookie, false)
}

/// True when the Host header names this server (loopback names or its address).
fn host_allowed(headers: &HeaderMap, state: &AppState) -> Result<(), WebError> {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return Ok(());
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let ok = matches!(name, "localhost" | "127.0.0.1" | "::1")
        || name == state.addr.ip().to_string()
        || state.token.is_some();
    if ok {
        Ok(())
    } else {
        Err(WebError::ForeignHost {
            host: host.chars().take(100).collect(),
        })
    }
}

/// Access guard and security headers for every response.
async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Err(e) = host_allowed(req.headers(), &state) {
        return with_headers(e.into_response(), false);
    }
    let mut set_cookie = None;
    if let Some(expected) = &state.token {
        let (given, from_query) = presented_token(&req);
        if !given.as_deref().is_some_and(|g| same_token(g, expected)) {
            return with_headers(WebError::Unauthorized.into_response(), false);
        }
        if from_query {
            // HttpOnly: page scripts never see it; SameSite=Strict: other
            // sites' pages cannot make the browser send it; Max-Age: it expires.
            set_cookie = Some(format!(
                "{TOKEN_COOKIE}={expected}; Path=/; HttpOnly; SameSite=Strict; \
                 Max-Age={TOKEN_COOKIE_MAX_AGE_S}"
            ));
        }
    }
    let api = req.uri().path().starts_with("/api/");
    let mut resp = with_headers(next.run(req).await, api);
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}

fn with_headers(mut resp: Response, no_store: bool) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if no_store {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The query string without the access token (the guard has checked it).
fn query_of(req: &Request) -> Option<String> {
    req.uri().query().map(|q| {
        q.split('&')
            .filter(|kv| !kv.starts_with("token="))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn html(page: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

async fn runs_html(req: Request) -> Result<Response, WebError> {
    RunsQuery::parse(&Params::parse(query_of(&req).as_deref(), RUNS_PARAMS)?)?;
    Ok(html(RUNS_HTML))
}

async fn families_html(req: Request) -> Result<Response, WebError> {
    Params::parse(query_of(&req).as_deref(), FAMILIES_PARAMS)?;
    Ok(html(FAMILIES_HTML))
}

async fn event_html(req: Request) -> Result<Response, WebError> {
    let p = Params::parse(query_of(&req).as_deref(), EVENT_PARAMS)?;
    if p.get("run").is_some() {
        EventQuery::parse(&p)?;
    }
    Ok(html(EVENT_HTML))
}

async fn health_html(req: Request) -> Result<Response, WebError> {
    Params::parse(query_of(&req).as_deref(), HEALTH_PARAMS)?.name("tag", "a conditions tag")?;
    Ok(html(HEALTH_HTML))
}

async fn api_runs(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, WebError> {
    let q = RunsQuery::parse(&Params::parse(query_of(&req).as_deref(), RUNS_PARAMS)?)?;
    Ok(Json(runs::runs_page(&state, q).await?).into_response())
}

async fn api_families(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, WebError> {
    let p = Params::parse(query_of(&req).as_deref(), FAMILIES_PARAMS)?;
    let page = blocking(&state, move |s| families::families(&s.catalog, &p)).await?;
    Ok(Json(page).into_response())
}

async fn api_health(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, WebError> {
    let p = Params::parse(query_of(&req).as_deref(), HEALTH_PARAMS)?;
    let page = blocking(&state, move |s| {
        super::health::detector_health(&s.catalog, &p)
    })
    .await?;
    Ok(Json(page).into_response())
}

async fn api_family(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, WebError> {
    let p = Params::parse(query_of(&req).as_deref(), FAMILY_PARAMS)?;
    let detail = blocking(&state, move |s| families::family(&s.catalog, &p)).await?;
    Ok(Json(detail).into_response())
}

async fn api_event(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, WebError> {
    let q = EventQuery::parse(&Params::parse(query_of(&req).as_deref(), EVENT_PARAMS)?)?;
    let display = blocking(&state, move |s| event::event_display(s, &q)).await?;
    Ok(Json(display).into_response())
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, mime) = match name.as_str() {
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "common.js" => (COMMON_JS, "text/javascript; charset=utf-8"),
        "runs.js" => (RUNS_JS, "text/javascript; charset=utf-8"),
        "families.js" => (FAMILIES_JS, "text/javascript; charset=utf-8"),
        "event.js" => (EVENT_JS, "text/javascript; charset=utf-8"),
        "health.js" => (HEALTH_JS, "text/javascript; charset=utf-8"),
        _ => {
            return WebError::NoRoute {
                path: format!("/static/{}", name.chars().take(80).collect::<String>()),
            }
            .into_response()
        }
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}
