//! Words and templates for the shell.
//!
//! Two things go wrong when values are pasted into a command or script:
//! a value with a space, quote or `$` becomes several words or runs code,
//! and a value that itself contains a placeholder (`{dst}` in a file name)
//! is expanded by the next substitution. [`quote`] makes a value one word
//! for a POSIX shell (the `shlex` crate's quoting), and [`fill`] replaces
//! every placeholder of a text in one pass over the original text, so no
//! substituted value is ever scanned again.
//!
//! ```
//! use tpcflow::shell::{fill, quote};
//! let cmd = fill("cp {src} {dst}", "{", "}", |key| match key {
//!     "src" => quote("/data/it's {dst}.h5").map(Some),
//!     "dst" => quote("/data/b.h5").map(Some),
//!     _ => Ok(None),
//! })?;
//! assert_eq!(cmd, r#"cp "/data/it's {dst}.h5" /data/b.h5"#);
//! # Ok::<(), tpcflow::shell::ShellError>(())
//! ```

use std::path::Path;

/// A value that cannot be made into a shell word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    /// NUL ends a C string: no shell word can carry it.
    #[error("{value:?} contains a NUL byte, which no shell word can carry")]
    Nul {
        /// The value (lossy for paths).
        value: String,
    },
    /// A path that is not UTF-8 text.
    #[error("path {value:?} is not UTF-8 text")]
    NotUtf8 {
        /// The path, lossily decoded.
        value: String,
    },
}

/// `word` quoted so a POSIX shell reads it back as exactly one word (left as
/// it is when it needs no quoting).
///
/// # Errors
/// [`ShellError::Nul`].
pub fn quote(word: &str) -> Result<String, ShellError> {
    shlex::try_quote(word)
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| ShellError::Nul {
            value: word.to_string(),
        })
}

/// [`quote`] for a path.
///
/// # Errors
/// [`ShellError::NotUtf8`] or [`ShellError::Nul`].
pub fn quote_path(path: &Path) -> Result<String, ShellError> {
    let text = path.to_str().ok_or_else(|| ShellError::NotUtf8 {
        value: path.to_string_lossy().into_owned(),
    })?;
    quote(text)
}

/// Replace each `{open}key{close}` of `text` by `value(key)` (the key
/// trimmed), in one pass: substituted values are never scanned for
/// placeholders. `value` returns `Ok(None)` to leave a placeholder as it is
/// (text that only looks like one, e.g. `${HOME}` in a shell command); an
/// opening delimiter without a closing one is text too (callers that forbid
/// it check first, as [`crate::sbatch::Template::placeholders`] does).
///
/// # Errors
/// Any error of `value`.
pub fn fill<E>(
    text: &str,
    open: &str,
    close: &str,
    mut value: impl FnMut(&str) -> Result<Option<String>, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(close) else {
            break;
        };
        out.push_str(&rest[..i]);
        match value(after[..j].trim())? {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[i..i + open.len() + j + close.len()]),
        }
        rest = &after[j + close.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn echo_back(word: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(word).unwrap()))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn quoted_words_come_back_from_sh_unchanged() {
        assert_eq!(quote("/tmp/a.h5").unwrap(), "/tmp/a.h5");
        assert_eq!(quote("").unwrap(), "''");
        for word in [
            "a b",
            "it's",
            "$HOME `id` $(id) \\ \"x\"",
            "*.h5 ? [a]",
            "tab\there",
            "line\nbreak",
            "{dst} {{log}}",
            "",
        ] {
            assert_eq!(echo_back(word), word, "{word:?} -> {:?}", quote(word));
        }
        assert_eq!(
            quote("a\0b").unwrap_err(),
            ShellError::Nul {
                value: "a\0b".into()
            }
        );
    }

    #[test]
    fn fill_is_one_pass_and_leaves_unknown_placeholders() {
        let got: Result<String, ShellError> =
            fill("cp {src} {dst}; echo ${HOME}", "{", "}", |key| {
                Ok(match key {
                    "src" => Some("{dst}".to_string()),
                    "dst" => Some("/b".to_string()),
                    _ => None,
                })
            });
        assert_eq!(got.unwrap(), "cp {dst} /b; echo ${HOME}");
        let got: Result<String, ShellError> =
            fill("{{a}} {{b", "{{", "}}", |_| Ok(Some("x".into())));
        assert_eq!(got.unwrap(), "x {{b");
    }
}
