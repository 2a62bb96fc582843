//! Documented process exit codes of the `tpcflow` binary.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | failure (an error stopped the command; the message says which file/field) |
//! | 2 | usage error (bad command line, reported by clap) |
//! | 3 | partial failure (some inputs failed, the others completed) |
//! | 4 | environment check failed (`tpcflow doctor` found a missing piece) |

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// An error stopped the command.
pub const FAILURE: u8 = 1;
/// Bad command line.
pub const USAGE: u8 = 2;
/// Some inputs failed, the others completed.
pub const PARTIAL_FAILURE: u8 = 3;
/// `tpcflow doctor` found a missing piece.
pub const ENVIRONMENT: u8 = 4;

/// An error that carries its own exit code, for the edges of the program.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    /// Exit code to return (one of the constants of this module).
    pub code: u8,
    /// Message for the operator.
    pub message: String,
}

impl ExitError {
    /// An error with the given exit code and message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Map a command's result to the process exit code, printing the error chain.
pub fn to_exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(OK),
        Err(err) => {
            let code = err.downcast_ref::<ExitError>().map_or(FAILURE, |e| e.code);
            eprint_line(&format!("error: {err:#}"));
            ExitCode::from(code)
        }
    }
}

/// Print `line` and a newline to stderr in one write. The ranks of an MPI
/// job share their launcher's stderr, and `eprintln!` writes the pieces of
/// its format one by one (stderr is unbuffered), so the lines of two ranks
/// reporting an error at once would mix mid-line; a pipe write of up to
/// 4 KiB is atomic.
pub fn eprint_line(line: &str) {
    use std::io::Write;
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    let _ = std::io::stderr().lock().write_all(&bytes);
}
