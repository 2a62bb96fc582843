//! The `tpcflow` command line. Exit codes: see [`tpcflow::exit`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tpcflow::exit::{self, ExitError};

#[derive(Debug, Parser)]
#[command(
    name = "tpcflow",
    version,
    about = "Data pipeline of a dual-phase liquid-xenon TPC"
)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `tpcflow=debug`.
    #[arg(long, global = true, env = "TPCFLOW_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check HDF5, MPI, SQLite and SLURM before a campaign (exit 4 if something is missing).
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Each MPI rank writes and reads back an HDF5 file; an allreduce checks the sum.
    MpiSelftest {
        /// Directory for the rank files and selftest.json.
        #[arg(long)]
        out: PathBuf,
        /// Fail unless the MPI world has exactly this many ranks.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        expect_size: Option<u32>,
    },
    /// Simulate the detector and write raw files as the DAQ would (the DAQ stand-in).
    Sim(SimArgs),
    /// Operate the catalog: init, ingest new raw files, list runs/files, show a file.
    #[command(subcommand)]
    Catalog(tpcflow::catalog::cli::CatalogCommand),
    /// Copy raw files from SURF to USDC, UKDC and ARCHIVE with verified checksums (one pass).
    Transfer(tpcflow::transfer::cli::TransferArgs),
    /// Compare a site's storage with the catalog: dark, lost and bad files (never deletes).
    Audit(tpcflow::audit::cli::AuditArgs),
    /// Free the SURF buffer: remove copies verified at USDC, UKDC and ARCHIVE (one pass).
    Retire(tpcflow::retire::cli::RetireArgs),
    /// Reconstruct raw files into RQ files (run under srun/mpirun for many ranks).
    Reco(tpcflow::reco_job::cli::RecoArgs),
    /// Salt science raw files (a pass), or `salt keygen` to create the key and vault.
    Salt(tpcflow::salt::cli::SaltArgs),
    /// Unblind: list salt events and write RQ files without them (logged; needs the key).
    Unsalt(tpcflow::salt::cli::UnsaltArgs),
    /// The workflow manager: ingest, transfer, queue and submit SLURM jobs, track them.
    Dispatch(tpcflow::dispatch::cli::DispatchArgs),
    /// Processing campaigns (families): create, list, status, retry-failed, cancel.
    #[command(subcommand)]
    Campaign(tpcflow::dispatch::cli::CampaignCommand),
    /// The operator's view: per-run data movement and processing, families, latency.
    Status(tpcflow::dispatch::cli::StatusArgs),
    /// Processing sites: drain, resume, list (SLURM outages and drains).
    #[command(subcommand)]
    Site(tpcflow::dispatch::cli::SiteCommand),
    /// Web pages of the catalog: runs, families, event display, and their JSON API.
    Serve(tpcflow::web::cli::ServeArgs),
    /// Detector-health products from reconstructed Kr83m runs: a conditions file and a report.
    Calibrate(tpcflow::calibrate::cli::CalibrateArgs),
    /// Conditions tags in the catalog: list, show, diff, add, publish, hold, log, global.
    #[command(subcommand)]
    Conditions(tpcflow::conditions::cli::ConditionsCommand),
    /// Match RQ files to simulation truth and write an accuracy report (Markdown, JSON, SVG).
    Validate(tpcflow::validate::cli::ValidateArgs),
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Run number.
    #[arg(long)]
    run: u32,
    /// Number of files (1-100000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    files: u32,
    /// Events per file (the mean with --close-on-time; 1-10000000).
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    events_per_file: u32,
    /// Close files on DAQ time, like a real DAQ: each file covers
    /// --events-per-file mean trigger intervals, so event counts vary from
    /// file to file (and a salted file's count hides its salt count).
    #[arg(long)]
    close_on_time: bool,
    /// Seed of every random stream (same seed, same files).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Site root directory: files go to OUT/{run:06}/{run:06}_{seq:05}.raw.h5.
    #[arg(long)]
    out: PathBuf,
    /// Physics source.
    #[arg(long, value_enum, default_value = "mixed")]
    source: tpcflow::sim::Source,
    /// Detector conditions: a tag (v1) or a TOML file.
    #[arg(long, default_value = "v1")]
    conditions: String,
    /// Simulate a detector that differs from the conditions: a truth name
    /// (`realistic`) or a TOML file. The run's truth is written to
    /// OUT/{run:06}/{run:06}.detector-truth.json; the raw files keep the
    /// --conditions tag.
    #[arg(long)]
    detector_truth: Option<String>,
    /// Simulate the detector as --detector-truth gives it at this run
    /// (default: the simulated run), e.g. a production numbered apart from
    /// the detector's runs.
    #[arg(long, requires = "detector_truth")]
    truth_run: Option<u32>,
    /// First file sequence number (0-99999: five digits in the file name).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=99_999))]
    first_sequence: u32,
    /// Write only file INDEX (0 to --files - 1) of the run, byte for byte as
    /// the whole run writes it (one element of a simulation campaign's job array).
    #[arg(long, conflicts_with = "live")]
    file_index: Option<u32>,
    /// Write files over time, like a live DAQ, at --rate events per second.
    #[arg(long)]
    live: bool,
    /// Event rate for --live [Hz] (0.001-1000000).
    #[arg(long, default_value_t = 40.0, value_parser = tpcflow::cli_bounds::float_in(1e-3, 1e6))]
    rate: f64,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = tpcflow::cli_bounds::threads())]
    threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    exit::to_exit_code(run(cli))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Doctor { json } => doctor(json),
        Command::Sim(args) => sim(args),
        Command::Catalog(cmd) => tpcflow::catalog::cli::run_catalog(cmd),
        Command::Transfer(args) => tpcflow::transfer::cli::run_transfer(args),
        Command::Audit(args) => tpcflow::audit::cli::run_audit(args),
        Command::Retire(args) => tpcflow::retire::cli::run_retire(args),
        Command::Reco(args) => tpcflow::reco_job::cli::run_reco(args),
        Command::Salt(args) => tpcflow::salt::cli::run_salt(args),
        Command::Unsalt(args) => tpcflow::salt::cli::run_unsalt(args),
        Command::Dispatch(args) => tpcflow::dispatch::cli::run_dispatch(args),
        Command::Campaign(cmd) => tpcflow::dispatch::cli::run_campaign(cmd),
        Command::Status(args) => tpcflow::dispatch::cli::run_status(args),
        Command::Site(cmd) => tpcflow::dispatch::cli::run_site(cmd),
        Command::Serve(args) => tpcflow::web::cli::run_serve(args),
        Command::Validate(args) => tpcflow::validate::cli::run_validate(args),
        Command::Calibrate(args) => tpcflow::calibrate::cli::run_calibrate(args),
        Command::Conditions(cmd) => tpcflow::conditions::cli::run_conditions(cmd),
        Command::MpiSelftest { out, expect_size } => {
            if let Some(summary) = tpcflow::mpi_selftest::run(&out, expect_size)? {
                println!(
                    "mpi-selftest ok: {} ranks on {:?}, allreduce sum {} (expected {})",
                    summary.world_size, summary.nodes, summary.sum, summary.expected_sum
                );
            }
            Ok(())
        }
    }
}

fn doctor(json: bool) -> Result<()> {
    let report = tpcflow::doctor::run();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for c in &report.checks {
            println!("{:<5} {:<11} {}", c.status.label(), c.name, c.detail);
        }
    }
    if report.all_ok() {
        Ok(())
    } else {
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.status == tpcflow::doctor::Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        Err(ExitError::new(
            exit::ENVIRONMENT,
            format!("missing or broken: {}", failed.join(", ")),
        )
        .into())
    }
}

fn sim(a: SimArgs) -> Result<()> {
    use anyhow::Context;
    let cond = tpcflow::conditions::Conditions::load(&a.conditions)?;
    anyhow::ensure!(
        a.first_sequence + a.files <= 100_000,
        "--first-sequence {} + --files {} passes sequence 99999 (five digits in the file name)",
        a.first_sequence,
        a.files
    );
    let truth = a
        .detector_truth
        .as_deref()
        .map(tpcflow::sim::detector_truth::DetectorTruth::load)
        .transpose()?;
    let opts = tpcflow::sim::SimOptions {
        run: a.run,
        files: a.files,
        events_per_file: a.events_per_file,
        seed: a.seed,
        out: a.out.clone(),
        source: a.source,
        first_sequence: a.first_sequence,
        live_rate_hz: a.live.then_some(a.rate),
    };
    tpcflow::sim::prepare_out(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()?;
    let closing = if a.close_on_time {
        tpcflow::sim::FileClosing::Time
    } else {
        tpcflow::sim::FileClosing::Count
    };
    if let Some(i) = a.file_index {
        anyhow::ensure!(
            i < a.files,
            "--file-index {i} is not a file of a run of --files {}",
            a.files
        );
    }
    let report = pool.install(|| match a.file_index {
        Some(i) => {
            tpcflow::sim::run_one_file(&opts, &cond, truth.as_ref(), a.truth_run, closing, i)
        }
        None => tpcflow::sim::run_with_truth_at(&opts, &cond, truth.as_ref(), a.truth_run, closing),
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "sim: run {} wrote {} files, {} events, {:.1} MB ({:.1} MB of samples) in {:.2} s ({:.0} events/s)",
            a.run,
            report.files.len(),
            report.events,
            report.bytes as f64 / 1e6,
            report.sample_bytes as f64 / 1e6,
            report.seconds,
            report.events as f64 / report.seconds.max(1e-9)
        );
    }
    Ok(())
}
