//! The `tpcflow reco` command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tpcflow_reco::RecoConfig;

use super::{JobSummary, RecoJobOptions};
use crate::conditions::Conditions;
use crate::exit::{self, ExitError};

/// Arguments of `tpcflow reco`.
#[derive(Debug, clap::Args)]
pub struct RecoArgs {
    /// Raw input files, or @LIST for a file with one path per line.
    #[arg(long, required = true, num_args = 1..)]
    pub inputs: Vec<String>,
    /// Directory for RQ files and result records.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Detector conditions: a tag (v1) or a TOML file.
    #[arg(long, default_value = "v1")]
    pub conditions: String,
    /// Reconstruction settings (TOML with RecoConfig fields; defaults otherwise).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Rayon threads per rank (default: SLURM_CPUS_PER_TASK, else the cores per rank).
    #[arg(long, value_parser = crate::cli_bounds::threads())]
    pub threads: Option<usize>,
    /// Events per work unit (default: about four units per rank; at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub events_per_unit: Option<u64>,
    /// Events reconstructed per parallel batch (1-65536).
    #[arg(long, default_value_t = 32, value_parser = crate::cli_bounds::usize_in(1, 65_536))]
    pub batch: usize,
    /// Print the summary as JSON (rank 0).
    #[arg(long)]
    pub json: bool,
}

/// Inputs with the checksum an input list may give after a TAB (the
/// catalogued adler32, which the job verifies the file against); without one
/// the job computes it.
fn expand_inputs(inputs: &[String]) -> Result<Vec<(PathBuf, Option<String>)>> {
    let mut out = Vec::new();
    for i in inputs {
        if let Some(list) = i.strip_prefix('@') {
            let text = std::fs::read_to_string(list)
                .with_context(|| format!("reading input list {list}"))?;
            for line in text.lines().map(|l| l.trim_end_matches(['\r', '\n'])) {
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let (path, sum) = match line.split_once('\t') {
                    Some((p, s)) => (p, Some(s.trim().to_string()).filter(|s| !s.is_empty())),
                    None => (line.trim(), None),
                };
                out.push((PathBuf::from(path), sum));
            }
        } else {
            out.push((PathBuf::from(i), None));
        }
    }
    anyhow::ensure!(!out.is_empty(), "no input files");
    Ok(out)
}

fn print_summary(s: &JobSummary) {
    println!(
        "reco: {} rank(s) x {} thread(s), lineage {}: files ok {}, failed {}, skipped {}; wall {:.2} s",
        s.ranks, s.threads, s.lineage_hash, s.files_ok, s.files_failed, s.files_skipped, s.wall_seconds
    );
    // busy = read + reco + write + opening files; "reco MB/s" is the core's
    // own speed inside the job, to set beside `cargo bench --bench reco`.
    println!(
        "{:>5} {:>6} {:>8} {:>9} {:>10} {:>8} {:>9} {:>7} {:>7} {:>8} {:>10} {:>7} {:>10}",
        "rank",
        "units",
        "events",
        "pulses",
        "MB read",
        "busy s",
        "MB/s",
        "read s",
        "reco s",
        "write s",
        "reco MB/s",
        "idle s",
        "direct MB"
    );
    let (mut ev, mut pu, mut by) = (0, 0, 0);
    for (r, st) in s.per_rank.iter().enumerate() {
        let mb = st.bytes as f64 / 1e6;
        println!(
            "{r:>5} {:>6} {:>8} {:>9} {mb:>10.1} {:>8.2} {:>9.1} {:>7.2} {:>7.2} {:>8.2} {:>10.1} {:>7.2} {:>10.1}",
            st.units,
            st.events,
            st.pulses,
            st.busy_seconds,
            mb / st.busy_seconds.max(1e-9),
            st.read_seconds,
            st.reco_seconds,
            st.write_seconds,
            mb / st.reco_seconds.max(1e-9),
            st.idle_seconds,
            st.direct_bytes as f64 / 1e6
        );
        ev += st.events;
        pu += st.pulses;
        by += st.bytes;
    }
    let mb = by as f64 / 1e6;
    println!(
        "{:>5} {:>6} {ev:>8} {pu:>9} {mb:>10.1} {:>8.2} {:>9.1}",
        "all",
        "",
        s.wall_seconds,
        mb / s.wall_seconds.max(1e-9)
    );
}

/// Run `tpcflow reco` on this rank.
///
/// # Errors
/// Bad arguments or conditions, MPI failure, or the job's non-zero exit code.
pub fn run_reco(a: RecoArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let conditions = Conditions::load(&a.conditions)?;
    let config: RecoConfig = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("{}: not a reco config", p.display()))?
        }
        None => RecoConfig::default(),
    };
    config.validate().with_context(|| "reco config")?;
    let (inputs, input_adler32): (Vec<PathBuf>, Vec<Option<String>>) =
        expand_inputs(&a.inputs)?.into_iter().unzip();
    let fault = super::abort::InjectedFault::from_env()?;
    let mpi = super::ranks::JobMpi::start(&crate::mpi_env::launch_info())?;
    let opts = RecoJobOptions {
        inputs,
        input_adler32,
        out_dir: a.out_dir,
        conditions,
        config,
        threads: super::default_threads(a.threads),
        events_per_unit: a.events_per_unit,
        batch_events: a.batch.max(1),
        fault,
        started,
    };
    let summary = super::run(&opts, mpi.ranks())?;
    if let Some(s) = summary {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print_summary(&s);
        }
        if s.exit_code != exit::OK {
            for f in &s.failures {
                // Input errors name their file already.
                if f.error.contains(&f.input) {
                    eprintln!("failed: {}", f.error);
                } else {
                    eprintln!("failed: {}: {}", f.input, f.error);
                }
            }
            if s.files_failed > s.failures.len() {
                eprintln!("failed: ... and {} more", s.files_failed - s.failures.len());
            }
            let what = if s.exit_code == exit::PARTIAL_FAILURE {
                "partial failure"
            } else {
                "all inputs failed"
            };
            return Err(ExitError::new(
                s.exit_code,
                format!(
                    "{what}: {} of {} input(s) failed (see the result records)",
                    s.files_failed,
                    opts.inputs.len()
                ),
            )
            .into());
        }
    }
    Ok(())
}
