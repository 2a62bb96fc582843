//! Bounds of the numeric command-line options, checked by clap while parsing.
//!
//! Every number a command takes is bounded where it is declared
//! (`#[arg(value_parser = ...)]`), so a value that would overflow later
//! (seconds times 1000 in a `u64`, `Duration::from_secs_f64` of a huge, NaN or
//! negative value, a sequence number past the five digits of a file name) is
//! refused before anything runs: clap prints the option, the value and the
//! range, and `tpcflow` exits with [`crate::exit::USAGE`] (2).
//!
//! ```
//! use clap::Parser;
//! #[derive(Parser)]
//! struct Args {
//!     #[arg(long, value_parser = tpcflow::cli_bounds::float_in(0.0, 60.0))]
//!     seconds: f64,
//!     #[arg(long, value_parser = tpcflow::cli_bounds::threads())]
//!     threads: Option<usize>,
//! }
//! assert!(Args::try_parse_from(["x", "--seconds", "1.5"]).is_ok());
//! for bad in ["NaN", "inf", "-1", "1e300"] {
//!     assert!(Args::try_parse_from(["x", "--seconds", bad]).is_err());
//! }
//! assert!(Args::try_parse_from(["x", "--seconds", "1", "--threads", "0"]).is_err());
//! ```

use clap::builder::RangedU64ValueParser;

/// Most worker threads any command accepts.
pub const MAX_THREADS: u64 = 4096;
/// Longest period in seconds any command accepts (a day).
pub const MAX_SECONDS: f64 = 86_400.0;

/// A finite decimal number in `min..=max`.
pub fn float_in(
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let x: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number (expected {min} to {max})"))?;
        if x.is_finite() && (min..=max).contains(&x) {
            Ok(x)
        } else {
            Err(format!("{s} is not in {min} to {max}"))
        }
    }
}

/// A `usize` in `min..=max`.
pub fn usize_in(min: u64, max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(min..=max)
}

/// A thread count, 1 to [`MAX_THREADS`].
pub fn threads() -> RangedU64ValueParser<usize> {
    usize_in(1, MAX_THREADS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_outside_the_range_or_not_finite_are_refused() {
        let p = float_in(0.0, MAX_SECONDS);
        assert_eq!(p("0"), Ok(0.0));
        assert_eq!(p(" 86400 "), Ok(86_400.0));
        for bad in ["NaN", "inf", "-inf", "-0.5", "86400.5", "1e20", "", "5s"] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}
