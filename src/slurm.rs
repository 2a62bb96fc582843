//! Talking to SLURM through its client commands: submit with
//! `sbatch --parsable`, read states from `scontrol show job -o` while SLURM
//! remembers the job (MinJobAge) and from the jobcomp file afterwards.
//!
//! Only the first word of a state counts (`CANCELLED by 0` is `CANCELLED`);
//! a job SLURM does not know is [`JobState::Unknown`], never a success.
//!
//! Every client command runs with a deadline ([`Client::timeout`]): a
//! controller that does not answer (stopped, overloaded, SIGSTOPped) makes
//! squeue/sbatch/scontrol hang for minutes, so the command is killed at the
//! deadline. That, and a command that says it cannot reach the controller, is
//! [`SlurmError::Unavailable`]: nothing is known about the jobs then, and a
//! submission that ended so may still have been accepted.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Errors from the SLURM client commands.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// Command line.
        command: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The command ran and failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// Command line.
        command: String,
        /// Its standard error.
        stderr: String,
    },
    /// The command's output was not what SLURM prints.
    #[error("cannot parse the output of `{command}`: {output:?}")]
    Parse {
        /// Command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// The controller did not answer: the command hit its deadline (and was
    /// killed) or could not connect. Says nothing about any job.
    #[error("SLURM unavailable: `{command}`: {cause}")]
    Unavailable {
        /// Command line.
        command: String,
        /// What happened (the deadline, or the command's own error).
        cause: String,
    },
    /// The job did not reach a final state in time.
    #[error("job {job_id} still {state:?} after {waited:?}")]
    Timeout {
        /// SLURM job id.
        job_id: u64,
        /// Last state seen.
        state: JobState,
        /// Time waited.
        waited: Duration,
    },
}

impl SlurmError {
    /// True when the controller did not answer (see [`SlurmError::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// What the client commands print when they cannot reach slurmctld
/// (SLURM 22.05: `Unable to contact slurm controller (connect failure)`,
/// `Socket timed out on send/recv operation`, ...).
const CONTROLLER_UNREACHABLE: [&str; 6] = [
    "Unable to contact slurm controller",
    "Socket timed out",
    "connect failure",
    "Connection refused",
    "Zero Bytes were transmitted or received",
    "Communication connection failure",
];

/// Time a client command gets before it is killed, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the SLURM client commands are run: each gets `timeout`, and talks to
/// the cluster of `conf` (the `SLURM_CONF` of its commands) when set, else to
/// the cluster the environment names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Deadline of one command; past it the command is killed and the call is
    /// [`SlurmError::Unavailable`].
    pub timeout: Duration,
    /// `slurm.conf` of the cluster to talk to (one site's own cluster).
    pub conf: Option<std::path::PathBuf>,
}

impl Default for Client {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            conf: None,
        }
    }
}

/// What the dispatcher needs to know of a cluster's configuration, read once
/// from `scontrol show config`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `ClusterName`.
    pub name: String,
    /// The jobcomp/filetxt file, if the cluster writes one.
    pub jobcomp: Option<std::path::PathBuf>,
    /// Accounting goes to slurmdbd: `sacct` knows finished jobs.
    pub accounting: bool,
}

/// Parse `scontrol show config` (`Key = value` lines).
pub fn parse_cluster_config(text: &str) -> ClusterConfig {
    let mut c = ClusterConfig::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "ClusterName" => c.name = v.to_string(),
            "JobCompLoc" if !v.is_empty() && v != "(null)" => {
                c.jobcomp = Some(std::path::PathBuf::from(v));
            }
            "AccountingStorageType" => c.accounting = v.contains("slurmdbd"),
            _ => {}
        }
    }
    c
}

/// Job states, matched on the first word of what SLURM prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Waiting for resources.
    Pending,
    /// Running (or configuring / completing).
    Running,
    /// Ended with exit code 0.
    Completed,
    /// Ended with a non-zero exit code.
    Failed,
    /// Hit its time limit.
    Timeout,
    /// Killed for exceeding its memory.
    OutOfMemory,
    /// Its node failed.
    NodeFail,
    /// Cancelled by a user or the system.
    Cancelled,
    /// Preempted.
    Preempted,
    /// The node could not boot.
    BootFail,
    /// Deadline passed.
    Deadline,
    /// Suspended.
    Suspended,
    /// Requeued or held.
    Requeued,
    /// SLURM does not know the job, or printed a state we do not know.
    Unknown,
}

impl JobState {
    /// Parse SLURM's text, first word only (`CANCELLED by 0` -> `Cancelled`).
    pub fn parse(text: &str) -> Self {
        let word = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('+');
        match word {
            "PENDING" | "PD" => Self::Pending,
            "RUNNING" | "R" | "CONFIGURING" | "CF" | "COMPLETING" | "CG" | "STAGE_OUT" | "SO"
            | "SIGNALING" | "SI" | "RESIZING" | "RS" => Self::Running,
            "COMPLETED" | "CD" => Self::Completed,
            "FAILED" | "F" => Self::Failed,
            "TIMEOUT" | "TO" => Self::Timeout,
            "OUT_OF_MEMORY" | "OOM" => Self::OutOfMemory,
            "NODE_FAIL" | "NF" => Self::NodeFail,
            "CANCELLED" | "CA" => Self::Cancelled,
            "PREEMPTED" | "PR" => Self::Preempted,
            "BOOT_FAIL" | "BF" => Self::BootFail,
            "DEADLINE" | "DL" => Self::Deadline,
            "SUSPENDED" | "S" | "STOPPED" | "ST" => Self::Suspended,
            "REQUEUED" | "RQ" | "REQUEUE_FED" | "RF" | "REQUEUE_HOLD" | "RH" | "RESV_DEL_HOLD"
            | "RD" => Self::Requeued,
            _ => Self::Unknown,
        }
    }

    /// SLURM's own name of the state (`NODE_FAIL`, `TIMEOUT`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Timeout => "TIMEOUT",
            Self::OutOfMemory => "OUT_OF_MEMORY",
            Self::NodeFail => "NODE_FAIL",
            Self::Cancelled => "CANCELLED",
            Self::Preempted => "PREEMPTED",
            Self::BootFail => "BOOT_FAIL",
            Self::Deadline => "DEADLINE",
            Self::Suspended => "SUSPENDED",
            Self::Requeued => "REQUEUED",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// True once the job will not change any more.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Running | Self::Suspended | Self::Requeued | Self::Unknown
        )
    }
}

/// Parse one `key=value key=value ...` record (scontrol `-o`, jobcomp lines).
///
/// Values run to the next ` key=`; this keeps `Reason=` texts with spaces.
pub fn parse_record(line: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let tokens: Vec<&str> = line.split(' ').collect();
    let mut key: Option<String> = None;
    let mut value = String::new();
    for tok in tokens {
        let starts_key = tok.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '/')
        });
        if starts_key {
            if let Some(k) = key.take() {
                out.insert(k, value.trim().to_string());
            }
            let (k, v) = tok.split_once('=').unwrap_or((tok, ""));
            key = Some(k.to_string());
            value = v.to_string();
        } else if key.is_some() {
            value.push(' ');
            value.push_str(tok);
        }
    }
    if let Some(k) = key {
        out.insert(k, value.trim().to_string());
    }
    out
}

impl Client {
    /// Run `cmd args` with this client's deadline and return its stdout.
    ///
    /// # Errors
    /// [`SlurmError::Spawn`] when it cannot start, [`SlurmError::Unavailable`]
    /// at the deadline or when it cannot reach the controller,
    /// [`SlurmError::Failed`] for any other non-zero exit.
    pub fn run(&self, cmd: &str, args: &[&str]) -> Result<String, SlurmError> {
        let command = format!("{cmd} {}", args.join(" "));
        let spawn_error = |source| SlurmError::Spawn {
            command: command.clone(),
            source,
        };
        let mut command_line = Command::new(cmd);
        if let Some(conf) = &self.conf {
            command_line.env("SLURM_CONF", conf);
        }
        let mut child = command_line
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        // Readers drain both pipes while we wait: a full pipe must not stall the command.
        let (status, stdout, stderr) = std::thread::scope(|scope| {
            let out_reader = scope.spawn(move || read_pipe(out.as_mut()));
            let err_reader = scope.spawn(move || read_pipe(err.as_mut()));
            let status = wait_with_deadline(&mut child, self.timeout);
            let stdout = out_reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            (status, stdout, stderr)
        });
        let status = match status {
            Ok(Some(status)) => status,
            Ok(None) => {
                return Err(SlurmError::Unavailable {
                    command,
                    cause: format!("no answer within {:?} (command killed)", self.timeout),
                })
            }
            Err(source) => return Err(spawn_error(source)),
        };
        if !status.success() {
            let stderr = stderr.trim().to_string();
            if CONTROLLER_UNREACHABLE.iter().any(|m| stderr.contains(m)) {
                return Err(SlurmError::Unavailable {
                    command,
                    cause: stderr,
                });
            }
            return Err(SlurmError::Failed { command, stderr });
        }
        Ok(stdout)
    }

    /// Submit a batch script with `sbatch --parsable [extra args] script`.
    ///
    /// # Errors
    /// As [`Client::run`]; [`SlurmError::Parse`] when sbatch prints something
    /// other than `id[;cluster]`. An [`SlurmError::Unavailable`] submission
    /// may still have been accepted: look the job up by name before submitting again.
    pub fn submit(&self, script: &Path, extra_args: &[&str]) -> Result<u64, SlurmError> {
        let script_str = script.to_string_lossy().into_owned();
        let mut args = vec!["--parsable"];
        args.extend_from_slice(extra_args);
        args.push(&script_str);
        let out = self.run("sbatch", &args)?;
        parse_sbatch_parsable(&out).ok_or_else(|| SlurmError::Parse {
            command: format!("sbatch {}", args.join(" ")),
            output: out,
        })
    }

    /// `scancel ids...`.
    ///
    /// # Errors
    /// As [`Client::run`].
    pub fn cancel(&self, ids: &[String]) -> Result<(), SlurmError> {
        let args: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.run("scancel", &args).map(drop)
    }
}

fn read_pipe(pipe: Option<&mut impl Read>) -> String {
    let mut bytes = Vec::new();
    if let Some(p) = pipe {
        let _ = p.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Wait for `child` until `timeout`; at the deadline kill it and return `None`.
fn wait_with_deadline(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // Killing closes its pipes, which ends the readers.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(nap.min(deadline.saturating_duration_since(Instant::now())));
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String, SlurmError> {
    Client::default().run(cmd, args)
}

/// Submit a batch script with `sbatch --parsable [extra args] script`, with
/// the [`DEFAULT_TIMEOUT`].
///
/// # Errors
/// As [`Client::submit`].
pub fn submit(script: &Path, extra_args: &[&str]) -> Result<u64, SlurmError> {
    Client::default().submit(script, extra_args)
}

/// Parse `sbatch --parsable` output: `id` or `id;cluster`.
pub fn parse_sbatch_parsable(out: &str) -> Option<u64> {
    out.trim().split(';').next()?.trim().parse().ok()
}

/// A job's state as far as SLURM can tell, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// SLURM job id.
    pub job_id: u64,
    /// State (first word).
    pub state: JobState,
    /// `ExitCode=` (`code:signal`) when known.
    pub exit_code: Option<String>,
    /// Job name.
    pub name: Option<String>,
    /// Nodes the job ran on.
    pub node_list: Option<String>,
    /// Where the answer came from: `scontrol` or `jobcomp`.
    pub source: &'static str,
}

fn info_from_record(job_id: u64, rec: &HashMap<String, String>, source: &'static str) -> JobInfo {
    JobInfo {
        job_id,
        state: rec
            .get("JobState")
            .map_or(JobState::Unknown, |s| JobState::parse(s)),
        exit_code: rec.get("ExitCode").cloned(),
        name: rec.get("Name").or_else(|| rec.get("JobName")).cloned(),
        node_list: rec.get("NodeList").cloned(),
        source,
    }
}

/// Last record for `job_id` in a jobcomp/filetxt file (ids repeat after a
/// controller state wipe; the last line is the newest).
pub fn jobcomp_lookup(text: &str, job_id: u64) -> Option<HashMap<String, String>> {
    let key = format!("JobId={job_id} ");
    text.lines()
        .rev()
        .find(|l| l.starts_with(&key))
        .map(parse_record)
}

/// Where the cluster keeps its jobcomp file (`scontrol show config`), with
/// the [`DEFAULT_TIMEOUT`].
///
/// # Errors
/// When scontrol fails.
pub fn jobcomp_location() -> Result<Option<String>, SlurmError> {
    Client::default().jobcomp_location()
}

impl Client {
    /// Where the cluster keeps its jobcomp file (`scontrol show config`).
    ///
    /// # Errors
    /// As [`Client::run`].
    pub fn jobcomp_location(&self) -> Result<Option<String>, SlurmError> {
        let out = self.run("scontrol", &["show", "config"])?;
        Ok(out
            .lines()
            .find(|l| l.starts_with("JobCompLoc"))
            .and_then(|l| l.split_once('='))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty() && v != "(null)"))
    }

    /// The cluster's name, jobcomp file and accounting (`scontrol show config`).
    ///
    /// # Errors
    /// As [`Client::run`].
    pub fn cluster_config(&self) -> Result<ClusterConfig, SlurmError> {
        Ok(parse_cluster_config(
            &self.run("scontrol", &["show", "config"])?,
        ))
    }
}

/// The state of one job: `scontrol show job -o` first, the jobcomp file after.
///
/// # Errors
/// When scontrol cannot be run at all.
pub fn job_info(job_id: u64, jobcomp: Option<&Path>) -> Result<JobInfo, SlurmError> {
    let id = job_id.to_string();
    match run("scontrol", &["show", "job", "-o", &id]) {
        Ok(out) => {
            if let Some(line) = out.lines().find(|l| l.starts_with("JobId=")) {
                let info = info_from_record(job_id, &parse_record(line), "scontrol");
                if info.state != JobState::Unknown {
                    return Ok(info);
                }
            }
        }
        Err(SlurmError::Failed { stderr, .. }) if stderr.contains("Invalid job id") => {}
        Err(e) => return Err(e),
    }
    if let Some(path) = jobcomp {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(rec) = jobcomp_lookup(&text, job_id) {
                return Ok(info_from_record(job_id, &rec, "jobcomp"));
            }
        }
    }
    Ok(JobInfo {
        job_id,
        state: JobState::Unknown,
        exit_code: None,
        name: None,
        node_list: None,
        source: "none",
    })
}

/// Poll until the job reaches a final state, then read its final record.
///
/// The final record is read from the jobcomp file when the cluster has one
/// (the durable record), which it writes when the job ends.
///
/// # Errors
/// [`SlurmError::Timeout`] when the job is not final within `limit`.
pub fn wait_for_job(job_id: u64, limit: Duration) -> Result<JobInfo, SlurmError> {
    let jobcomp = jobcomp_location()?;
    let jobcomp = jobcomp.as_deref().map(Path::new);
    let start = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let info = job_info(job_id, jobcomp)?;
        if info.state.is_final() {
            return Ok(info);
        }
        if start.elapsed() > limit {
            return Err(SlurmError::Timeout {
                job_id,
                state: info.state,
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_match_on_first_word() {
        assert_eq!(JobState::parse("CANCELLED by 0"), JobState::Cancelled);
        assert_eq!(JobState::parse("COMPLETED"), JobState::Completed);
        assert_eq!(JobState::parse("OUT_OF_MEMORY"), JobState::OutOfMemory);
        assert_eq!(JobState::parse("NODE_FAIL"), JobState::NodeFail);
        assert_eq!(JobState::parse("BOOT_FAIL"), JobState::BootFail);
        assert_eq!(JobState::parse("TIMEOUT"), JobState::Timeout);
        assert_eq!(JobState::parse("PREEMPTED"), JobState::Preempted);
        assert_eq!(JobState::parse(""), JobState::Unknown);
        assert_eq!(JobState::parse("SOMETHING_NEW"), JobState::Unknown);
        assert!(
            !JobState::Unknown.is_final(),
            "an unknown job is never taken as done"
        );
        assert!(JobState::Failed.is_final() && !JobState::Pending.is_final());
    }

    #[test]
    fn a_command_past_its_deadline_is_killed_and_unavailable() {
        let client = Client {
            timeout: Duration::from_millis(300),
            conf: None,
        };
        let start = Instant::now();
        let e = client.run("sleep", &["30"]).unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().contains("no answer within 300ms"), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn unreachable_controller_is_unavailable_other_failures_are_not() {
        let client = Client::default();
        // Verbatim stderr of squeue and sbatch (SLURM 22.05) with no controller listening.
        for stderr in [
            "slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
        ] {
            let e = client
                .run("sh", &["-c", &format!("echo '{stderr}' >&2; exit 1")])
                .unwrap_err();
            assert!(e.is_unavailable(), "{e}");
        }
        let e = client
            .run(
                "sh",
                &[
                    "-c",
                    "echo 'sbatch: error: invalid partition specified: nope' >&2; exit 1",
                ],
            )
            .unwrap_err();
        assert!(matches!(e, SlurmError::Failed { .. }), "{e}");
        let e = client.run("/nonexistent/squeue", &[]).unwrap_err();
        assert!(matches!(e, SlurmError::Spawn { .. }), "{e}");
        // More output than a pipe holds, on both streams: nothing stalls.
        let out = client
            .run(
                "sh",
                &[
                    "-c",
                    "head -c 1000000 /dev/zero | tr '\\0' x; head -c 300000 /dev/zero >&2",
                ],
            )
            .unwrap();
        assert_eq!(out.len(), 1_000_000);
    }

    #[test]
    fn cluster_config_names_jobcomp_and_accounting() {
        // Excerpts of `scontrol show config` (SLURM 22.05): the default local
        // cluster, then the second site with slurmdbd.
        let none = parse_cluster_config(
            "AccountingStorageType   = (null)\nClusterName             = tpcflow\n\
             JobCompLoc              = /var/log/slurm/jobcomp.log\n",
        );
        assert_eq!(none.name, "tpcflow");
        assert!(!none.accounting);
        assert_eq!(
            none.jobcomp.as_deref(),
            Some(Path::new("/var/log/slurm/jobcomp.log"))
        );
        let dbd = parse_cluster_config(
            "AccountingStorageType   = accounting_storage/slurmdbd\n\
             ClusterName             = ukdc\nJobCompLoc              = (null)\n",
        );
        assert!(dbd.accounting && dbd.jobcomp.is_none() && dbd.name == "ukdc");
    }

    #[test]
    fn a_client_with_a_conf_talks_to_that_cluster() {
        let client = Client {
            conf: Some("/etc/slurm-ukdc/slurm.conf".into()),
            ..Client::default()
        };
        let out = client.run("sh", &["-c", "echo $SLURM_CONF"]).unwrap();
        assert_eq!(out.trim(), "/etc/slurm-ukdc/slurm.conf");
    }

    #[test]
    fn sbatch_parsable_output() {
        assert_eq!(parse_sbatch_parsable("42\n"), Some(42));
        assert_eq!(parse_sbatch_parsable("42;perlmutter\n"), Some(42));
        assert_eq!(parse_sbatch_parsable("Submitted batch job 42"), None);
    }

    #[test]
    fn jobcomp_line_with_spaces_in_values() {
        // Verbatim jobcomp/filetxt line from slurm-wlm 22.05 (local cluster).
        let text = "JobId=7 UserId=root(0) GroupId=root(0) Name=wrap JobState=COMPLETED Partition=debug TimeLimit=UNLIMITED StartTime=2026-11-28T12:40:01 EndTime=2026-11-28T12:40:02 NodeList=n[1-2] NodeCnt=2 ProcCnt=2 WorkDir=/tmp ReservationName= Tres=cpu=2,mem=22000M,node=2,billing=2 Account= QOS= WcKey= Cluster=unknown SubmitTime=2026-11-28T12:40:01 EligibleTime=2026-11-28T12:40:01 DerivedExitCode=0:0 ExitCode=0:0\n\
JobId=8 UserId=root(0) GroupId=root(0) Name=tpcflow-reco-12 JobState=CANCELLED by 0 Partition=debug TimeLimit=UNLIMITED NodeList=n1 ExitCode=0:15\n";
        let rec = jobcomp_lookup(text, 7).expect("job 7 is in the file");
        assert_eq!(rec["JobState"], "COMPLETED");
        assert_eq!(rec["NodeList"], "n[1-2]");
        assert_eq!(rec["ReservationName"], "");
        let rec8 = jobcomp_lookup(text, 8).expect("job 8 is in the file");
        assert_eq!(JobState::parse(&rec8["JobState"]), JobState::Cancelled);
        assert_eq!(rec8["Name"], "tpcflow-reco-12");
        assert!(jobcomp_lookup(text, 9).is_none());
    }
}
