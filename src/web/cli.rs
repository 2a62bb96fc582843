//! `tpcflow serve`: the command line of the web pages.
//!
//! ```text
//! tpcflow serve --catalog cat.sqlite --data-root /data            # http://127.0.0.1:8080/
//! TPCFLOW_WEB_TOKEN=... tpcflow serve --catalog cat.sqlite --data-root /data --addr 0.0.0.0:8080
//! ```
//!
//! The access token comes preferably from `TPCFLOW_WEB_TOKEN` (a `--token`
//! argument is visible to every user in `ps`). The server speaks plain HTTP:
//! beyond loopback, put a TLS-terminating reverse proxy in front of it.
//!
//! Sites are found as for `tpcflow transfer` (`--data-root DIR`: `DIR/SURF`,
//! `DIR/USDC`, ...; `--site-root SITE=DIR` moves one); RQ files under
//! `--rq-root` (default `DIR/RQ`, where the dispatcher writes them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{DataRoots, ServeConfig};
use crate::catalog::cli::CatalogPathArg;
use crate::conditions::Conditions;
use crate::transfer::{parse_site_assignment, Sites};

/// Arguments of `tpcflow serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    db: CatalogPathArg,
    /// Address to listen on; anything but loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Access token (at least 16 characters) required from every client.
    /// Prefer the environment variable: a command-line argument shows in `ps`.
    /// The server speaks plain HTTP: beyond loopback, serve it behind a
    /// TLS-terminating reverse proxy, or the token crosses the network in clear.
    #[arg(long, env = "TPCFLOW_WEB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Data root holding one directory per site (SURF, USDC, UKDC, ARCHIVE) and RQ/.
    #[arg(long, env = "TPCFLOW_DATA_ROOT")]
    data_root: Option<PathBuf>,
    /// A site's root directory, SITE=DIR (repeatable; overrides --data-root).
    #[arg(long = "site-root", value_name = "SITE=DIR")]
    site_roots: Vec<String>,
    /// Root of the RQ files (default: DATA_ROOT/RQ).
    #[arg(long)]
    rq_root: Option<PathBuf>,
    /// Detector conditions for the PMT map and gains: a tag (v1) or a TOML file.
    #[arg(long, default_value = "v1")]
    conditions: String,
    /// Seconds the run table is reused before it is read from the catalog again (0-86400).
    #[arg(long, default_value_t = 5.0,
          value_parser = crate::cli_bounds::float_in(0.0, crate::cli_bounds::MAX_SECONDS))]
    cache_seconds: f64,
    /// Worker threads (default: the cores).
    #[arg(long, value_parser = crate::cli_bounds::threads())]
    threads: Option<usize>,
}

impl ServeArgs {
    /// Resolve into a server configuration.
    ///
    /// # Errors
    /// Bad site assignments, unreadable roots or conditions.
    pub fn resolve(&self) -> Result<ServeConfig> {
        let mut sites = self
            .data_root
            .as_deref()
            .map(Sites::under)
            .unwrap_or_default();
        for spec in &self.site_roots {
            let (site, dir) = parse_site_assignment(spec).context("--site-root")?;
            sites.set_root(site, PathBuf::from(dir));
        }
        let rq_root = self
            .rq_root
            .clone()
            .or_else(|| self.data_root.as_ref().map(|d| d.join("RQ")));
        Ok(ServeConfig {
            catalog: self.db.catalog.clone(),
            addr: self.addr,
            token: self.token.clone().filter(|t| !t.is_empty()),
            roots: DataRoots::new(&sites, rq_root.as_deref())?,
            conditions: Conditions::load(&self.conditions)?,
            runs_cache: Duration::from_secs_f64(self.cache_seconds),
        })
    }
}

/// Run `tpcflow serve` until interrupted (Ctrl-C or SIGTERM).
///
/// # Errors
/// Bad configuration, a missing catalog, an address in use.
pub fn run_serve(a: ServeArgs) -> Result<()> {
    let cfg = a.resolve()?;
    super::check_config(&cfg)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = a.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let mut server = super::spawn(cfg).await?;
        println!("tpcflow serve: http://{}/", server.addr);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = server.wait() => r,
            _ = tokio::signal::ctrl_c() => server.stop().await,
            _ = term.recv() => server.stop().await,
        }
    })
}
