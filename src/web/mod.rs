//! `tpcflow serve`: the monitoring pages of the catalog and the event display.
//!
//! ```text
//! /                   runs: data movement per run (SURF, USDC, UKDC, archive,
//!                     reconstructed, failed), look-up, filter, paging, refresh
//! /families           families (campaigns): progress, expandable per-run rows
//! /event?run=&event=  event display: header, summed and channel waveforms
//!                     with pod boundaries, PMT hit maps and area-fraction
//!                     times of a selected pulse, JSON export
//! /health             detector health: calibration trends across runs, the
//!                     gas-gap and gain maps of a calibration, the tag in force
//! /api/runs           the same data as JSON (every page is drawn from its API)
//! /api/families, /api/family?name=, /api/event?run=&event=, /api/health
//! /static/*           the CSS and scripts, embedded in the binary
//! ```
//!
//! Everything works offline: the pages, styles and scripts are compiled in
//! (`include_str!`), plots are SVG drawn by a small local script, and the
//! Content-Security-Policy forbids loading anything from elsewhere.
//!
//! Safety: the server binds to loopback unless told otherwise, and then
//! requires an access token ([`ServeConfig::token`]). Give the token in the
//! environment (`TPCFLOW_WEB_TOKEN`), not as `--token` on the command line,
//! where every user of the machine sees it in `ps`. A browser presents it once
//! as `?token=`; the server answers with a cookie that is `HttpOnly`,
//! `SameSite=Strict` and expires after 12 hours. The server speaks plain HTTP:
//! anything beyond loopback must be reached through TLS (a reverse proxy such
//! as nginx or Apache terminating HTTPS in front of it), or the token and the
//! cookie cross the network in clear text. The catalog is opened read-only
//! ([`Catalog::open_read_only`]): serving never writes or migrates it. Request parameters are
//! only ever parsed into numbers or checked names ([`params`]); files are
//! opened only at paths that come from the catalog, joined to a configured
//! root, canonicalized and checked to stay inside it ([`paths`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use tpcflow::web::{DataRoots, ServeConfig};
//! let cfg = ServeConfig {
//!     catalog: "/data/catalog.sqlite".into(),
//!     addr: "127.0.0.1:8080".parse()?,
//!     token: None,
//!     roots: DataRoots::under(std::path::Path::new("/data"), None)?,
//!     conditions: tpcflow::conditions::Conditions::load("v1")?,
//!     runs_cache: std::time::Duration::from_secs(5),
//! };
//! let server = tpcflow::web::spawn(cfg).await?;
//! println!("serving on http://{}", server.addr);
//! server.stop().await?;
//! # Ok(()) }
//! ```

mod cache;
pub mod cli;
mod event;
pub mod event_view;
mod families;
pub mod health;
pub mod params;
pub mod paths;
mod routes;
mod runs;
pub mod waveform;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::catalog::{Catalog, CatalogError};
use crate::conditions::Conditions;
pub use paths::DataRoots;

/// Everything the server needs, resolved once.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Catalog SQLite file.
    pub catalog: PathBuf,
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Access token; required when `addr` is not a loopback address.
    pub token: Option<String>,
    /// Site and RQ roots: the only places files are read from.
    pub roots: DataRoots,
    /// Detector conditions for the PMT map and gains.
    pub conditions: Conditions,
    /// How long the run table is reused before it is read again.
    pub runs_cache: Duration,
}

/// Shortest access token accepted [characters].
pub const MIN_TOKEN_CHARS: usize = 16;

/// What a request can get wrong, or what can fail while answering it.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A parameter value is not what the route expects (400).
    #[error("parameter `{param}`: `{value}` is not valid (expected {expected})")]
    BadParam {
        /// Parameter name.
        param: String,
        /// Value given (truncated).
        value: String,
        /// What the route accepts.
        expected: String,
    },
    /// A parameter the route does not know (400).
    #[error("unknown parameter `{param}` (this page takes: {allowed})")]
    UnknownParam {
        /// Parameter name (truncated).
        param: String,
        /// The names accepted.
        allowed: String,
    },
    /// No such run in the catalog (404).
    #[error("run {run} is not in the catalog")]
    UnknownRun {
        /// Run number asked for.
        run: u32,
    },
    /// None of the runs looked up is in the catalog (404).
    #[error("none of the runs looked up is in the catalog: {runs}")]
    NoRunsFound {
        /// The run numbers, space-separated.
        runs: String,
    },
    /// The run has no event with this id in its RQ outputs (404).
    #[error("run {run} has no event {event} in its RQ files (events {first}-{last})")]
    UnknownEvent {
        /// Run number.
        run: u32,
        /// Event id asked for.
        event: u64,
        /// Lowest event id of the run.
        first: u64,
        /// Highest event id of the run.
        last: u64,
    },
    /// The run has no catalogued RQ output (of that lineage) (404).
    #[error("run {run} has no catalogued RQ output{}", lineage.as_ref().map(|l| format!(" of lineage {l}")).unwrap_or_default())]
    NotReconstructed {
        /// Run number.
        run: u32,
        /// Lineage asked for.
        lineage: Option<String>,
    },
    /// No family by that name (404).
    #[error("no family `{name}` in the catalog")]
    UnknownFamily {
        /// Name asked for.
        name: String,
    },
    /// No calibration conditions tag by that name (404).
    #[error("no calibration conditions tag `{tag}` in the catalog")]
    UnknownConditions {
        /// Tag asked for.
        tag: String,
    },
    /// No page or API at this path (404).
    #[error("no page `{path}` (pages: /, /families, /event, /health; API: /api/runs, /api/families, /api/family, /api/event, /api/health)")]
    NoRoute {
        /// Path asked for (truncated).
        path: String,
    },
    /// Missing or wrong access token (401).
    #[error("an access token is required: send `Authorization: Bearer TOKEN` or open the page once with ?token=TOKEN")]
    Unauthorized,
    /// A Host header that is not this server's (403; DNS rebinding guard).
    #[error("host `{host}` is not served here")]
    ForeignHost {
        /// Host header.
        host: String,
    },
    /// A catalogued path that resolves outside every configured root (403).
    #[error("{what} is outside the configured data roots; not served")]
    OutsideRoots {
        /// Which file, e.g. `RQ file of 000017_00003.raw.h5`.
        what: String,
    },
    /// A catalogued file that cannot be read now (503).
    #[error("{what} cannot be read: {reason}")]
    FileUnavailable {
        /// Which file.
        what: String,
        /// Why.
        reason: String,
    },
    /// The catalog refused (503).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A bug or a panicked worker (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl WebError {
    /// A [`WebError::BadParam`], truncating the value for the message.
    pub fn bad_param(param: &str, value: &str, expected: &str) -> Self {
        let mut value: String = value.chars().take(80).collect();
        value.retain(|c| !c.is_control());
        WebError::BadParam {
            param: param.chars().take(64).collect(),
            value,
            expected: expected.to_string(),
        }
    }

    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        use WebError::*;
        match self {
            BadParam { .. } | UnknownParam { .. } => StatusCode::BAD_REQUEST,
            UnknownRun { .. }
            | NoRunsFound { .. }
            | UnknownEvent { .. }
            | NotReconstructed { .. }
            | UnknownFamily { .. }
            | UnknownConditions { .. }
            | NoRoute { .. } => StatusCode::NOT_FOUND,
            Unauthorized => StatusCode::UNAUTHORIZED,
            ForeignHost { .. } | OutsideRoots { .. } => StatusCode::FORBIDDEN,
            FileUnavailable { .. } | Catalog(_) => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "{self}");
        }
        let body = serde_json::json!({"error": self.to_string(), "status": status.as_u16()});
        (status, axum::Json(body)).into_response()
    }
}

/// Shared state of the handlers.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) catalog: Catalog,
    pub(crate) roots: DataRoots,
    pub(crate) conditions: Conditions,
    pub(crate) token: Option<String>,
    pub(crate) addr: SocketAddr,
    pub(crate) runs: runs::RunsCache,
    pub(crate) events: event::EventCache,
}

/// Run blocking work (SQLite, HDF5) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> Result<T, WebError> + Send + 'static,
) -> Result<T, WebError> {
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|e| WebError::Internal(format!("worker failed: {e}")))?
}

/// Check the configuration: a non-loopback address needs a token of
/// [`MIN_TOKEN_CHARS`] or more.
///
/// # Errors
/// Naming the address or the token length.
pub fn check_config(cfg: &ServeConfig) -> Result<()> {
    if let Some(t) = &cfg.token {
        anyhow::ensure!(
            t.chars().count() >= MIN_TOKEN_CHARS && !t.chars().any(char::is_whitespace),
            "the access token must have at least {MIN_TOKEN_CHARS} characters and no spaces"
        );
    } else {
        anyhow::ensure!(
            cfg.addr.ip().is_loopback(),
            "{} is not a loopback address: give an access token (--token or TPCFLOW_WEB_TOKEN) \
             to serve beyond this machine",
            cfg.addr
        );
    }
    Ok(())
}

/// A server running on the current tokio runtime.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stop accepting, finish the requests in flight, and wait.
    ///
    /// # Errors
    /// When the server loop failed.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        self.task.await.context("server task")??;
        Ok(())
    }

    /// Wait until the server stops (it only stops on an error or [`RunningServer::stop`]).
    ///
    /// # Errors
    /// When the server loop failed.
    pub async fn wait(&mut self) -> Result<()> {
        (&mut self.task).await.context("server task")??;
        Ok(())
    }
}

/// Open the catalog, bind the address and serve in a background task.
///
/// # Errors
/// A bad configuration ([`check_config`]), a missing catalog or one of
/// another schema version (it is opened read-only, never migrated), or an
/// address in use.
pub async fn spawn(cfg: ServeConfig) -> Result<RunningServer> {
    check_config(&cfg)?;
    let catalog = Catalog::open_read_only(&cfg.catalog)?;
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("binding {}", cfg.addr))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        catalog,
        roots: cfg.roots,
        conditions: cfg.conditions,
        token: cfg.token,
        addr,
        runs: runs::RunsCache::new(cfg.runs_cache),
        events: event::EventCache::default(),
    });
    let app = routes::router(state);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!("serving the catalog on http://{addr}/");
    Ok(RunningServer {
        addr,
        shutdown: tx,
        task,
    })
}
