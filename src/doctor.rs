//! `tpcflow doctor`: what an HPC user needs to know before a campaign.
//!
//! Checks the HDF5 library the binary is linked to, the MPI library and its
//! launcher (rank/size), SQLite, the SLURM client commands and the cluster
//! (nodes, CPUs, state). Each missing piece is a failed check with a message
//! that names it; the command exits with [`crate::exit::ENVIRONMENT`] then.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::mpi_env;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and working.
    Ok,
    /// Works, with a caveat the user should know.
    Warn,
    /// Missing or broken: campaigns will fail.
    Fail,
}

impl Status {
    /// Fixed-width label for terminal output.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name of the component (`hdf5`, `mpi`, `slurmctld`, ...).
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// What was found, or what is missing and how to fix it.
    pub detail: String,
}

/// A SLURM node as `sinfo` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// CPUs on the node.
    pub cpus: u32,
    /// Memory [MB].
    pub memory_mb: u64,
    /// First word of the node state (`idle`, `mixed`, `down`, ...).
    pub state: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Checks in the order they ran.
    pub checks: Vec<Check>,
    /// Cluster nodes, when `sinfo` answered.
    pub nodes: Vec<NodeInfo>,
}

impl Report {
    /// True when no check failed.
    pub fn all_ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    fn push(&mut self, name: &str, status: Status, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_string(),
            status,
            detail: detail.into(),
        });
    }
}

/// Output of a command run with a time limit.
#[derive(Debug)]
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Run `program args` with a time limit; `Err` says why it did not run or finish.
fn run_with_timeout(program: &str, args: &[&str], limit: Duration) -> Result<Output, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut stdout = String::new();
                let mut stderr = String::new();
                if let Some(mut s) = child.stdout.take() {
                    let _ = s.read_to_string(&mut stdout);
                }
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut stderr);
                }
                return Ok(Output {
                    success: status.success(),
                    stdout,
                    stderr,
                });
            }
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program} {}` did not answer within {limit:?}",
                    args.join(" ")
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for `{program}`: {e}")),
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// Parse `sinfo -h -N -o '%N|%c|%m|%T'` output (one line per node and partition).
pub fn parse_sinfo_nodes(text: &str) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.trim().split('|').collect();
        if fields.len() != 4 {
            continue;
        }
        let state = fields[3].trim_end_matches(['*', '~', '#', '!', '%', '$', '@', '^', '-', '+']);
        let node = NodeInfo {
            name: fields[0].to_string(),
            cpus: fields[1].parse().unwrap_or(0),
            memory_mb: fields[2].parse().unwrap_or(0),
            state: state.split_whitespace().next().unwrap_or("").to_lowercase(),
        };
        if !nodes.iter().any(|n| n.name == node.name) {
            nodes.push(node);
        }
    }
    nodes
}

fn usable(state: &str) -> bool {
    matches!(state, "idle" | "mixed" | "allocated" | "completing")
}

const LIMIT: Duration = Duration::from_secs(15);

/// Run every check. Initialises MPI (as a singleton when not launched).
pub fn run() -> Report {
    let mut report = Report {
        checks: Vec::new(),
        nodes: Vec::new(),
    };

    let (maj, min, rel) = hdf5::library_version();
    report.push(
        "hdf5",
        Status::Ok,
        format!("HDF5 {maj}.{min}.{rel} (linked)"),
    );

    let (v, sv) = mpi::environment::version();
    let lib = mpi_env::library_version();
    let launch = mpi_env::launch_info();
    mpi_env::prepare_singleton(&launch);
    match mpi::initialize() {
        Some(universe) => {
            use mpi::topology::Communicator;
            let world = universe.world();
            let (rank, size) = (world.rank() as u32, world.size() as u32);
            let detail = format!(
                "{lib} (MPI {v}.{sv}); launcher {}; rank {rank} of {size}",
                launch.launcher
            );
            match mpi_env::check_world_size(size, &launch) {
                Ok(()) => report.push("mpi", Status::Ok, detail),
                Err(e) => report.push("mpi", Status::Fail, format!("{detail}: {e}")),
            }
        }
        None => report.push("mpi", Status::Fail, format!("{lib}: MPI_Init failed")),
    }

    report.push(
        "sqlite",
        Status::Ok,
        format!("SQLite {} (bundled)", rusqlite::version()),
    );

    for cmd in ["sbatch", "squeue", "scontrol", "sinfo", "sacct"] {
        match run_with_timeout(cmd, &["--version"], LIMIT) {
            Ok(out) if out.success => {
                report.push(cmd, Status::Ok, first_line(&out.stdout).to_string())
            }
            Ok(out) => report.push(cmd, Status::Fail, first_line(&out.stderr).to_string()),
            Err(e) => report.push(
                cmd,
                Status::Fail,
                format!("{e} (install slurm-client, or run scripts/setup.sh)"),
            ),
        }
    }

    match run_with_timeout("scontrol", &["ping"], LIMIT) {
        Ok(out) if out.success && out.stdout.contains("UP") => {
            report.push("slurmctld", Status::Ok, first_line(&out.stdout).to_string())
        }
        Ok(out) => report.push(
            "slurmctld",
            Status::Fail,
            format!(
                "controller not answering: {} {} (start it with scripts/setup.sh)",
                first_line(&out.stdout),
                first_line(&out.stderr)
            ),
        ),
        Err(e) => report.push("slurmctld", Status::Fail, e),
    }

    match run_with_timeout("sinfo", &["-h", "-N", "-o", "%N|%c|%m|%T"], LIMIT) {
        Ok(out) if out.success => {
            let nodes = parse_sinfo_nodes(&out.stdout);
            let cpus: u32 = nodes.iter().map(|n| n.cpus).sum();
            let bad: Vec<String> = nodes
                .iter()
                .filter(|n| !usable(&n.state))
                .map(|n| format!("{} is {}", n.name, n.state))
                .collect();
            let list: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}({} cpu, {})", n.name, n.cpus, n.state))
                .collect();
            let detail = format!("{} node(s), {cpus} CPUs: {}", nodes.len(), list.join(" "));
            if nodes.is_empty() {
                report.push("cluster", Status::Fail, "sinfo lists no nodes");
            } else if bad.is_empty() {
                report.push("cluster", Status::Ok, detail);
            } else {
                report.push(
                    "cluster",
                    Status::Fail,
                    format!("{detail}; unusable: {}", bad.join(", ")),
                );
            }
            report.nodes = nodes;
        }
        Ok(out) => report.push("cluster", Status::Fail, first_line(&out.stderr).to_string()),
        Err(e) => report.push("cluster", Status::Fail, e),
    }

    match run_with_timeout(
        "sacct",
        &["-n", "-X", "-o", "JobID", "-S", "now-1minutes"],
        LIMIT,
    ) {
        Ok(out) if out.success => report.push(
            "accounting",
            Status::Ok,
            "sacct answers (slurmdbd accounting)",
        ),
        Ok(out) => {
            let jobcomp = run_with_timeout("scontrol", &["show", "config"], LIMIT)
                .ok()
                .and_then(|o| {
                    o.stdout
                        .lines()
                        .find(|l| l.starts_with("JobCompLoc"))
                        .and_then(|l| l.split('=').nth(1))
                        .map(|s| s.trim().to_string())
                })
                .unwrap_or_default();
            let reason = first_line(&out.stderr);
            if jobcomp.is_empty() || jobcomp == "(null)" {
                report.push(
                    "accounting",
                    Status::Fail,
                    format!(
                        "sacct: {reason}; and no JobCompLoc: final job states cannot be read back"
                    ),
                );
            } else {
                report.push(
                    "accounting",
                    Status::Warn,
                    format!(
                        "sacct: {reason}; final job states come from the jobcomp file {jobcomp}"
                    ),
                );
            }
        }
        Err(e) => report.push("accounting", Status::Fail, e),
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinfo_nodes_are_parsed_and_deduplicated() {
        // Verbatim `sinfo -h -N -o '%N|%c|%m|%T'` output with a node in two partitions.
        let text = "n1|1|11000|idle\nn2|1|11000|down*\nn1|1|11000|idle\n";
        let nodes = parse_sinfo_nodes(text);
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            nodes[0],
            NodeInfo {
                name: "n1".into(),
                cpus: 1,
                memory_mb: 11000,
                state: "idle".into()
            }
        );
        assert_eq!(nodes[1].state, "down");
        assert!(usable("idle") && usable("mixed") && !usable("down") && !usable("drained"));
    }
}
