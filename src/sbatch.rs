//! sbatch scripts from the templates in `slurm/`: `{{name}}` placeholders
//! filled from a map in one pass ([`crate::shell::fill`]: a value is never
//! expanded again). Values are inserted as given: words that reach a shell
//! line are quoted by the caller with [`crate::shell::quote`], while
//! `#SBATCH` directives take them bare. A placeholder without a value, or a
//! value that could break out of its line, is an error naming the template
//! and the key: a malformed template fails before anything is submitted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Templates compiled into the binary, by profile name.
pub const PROFILES: &[(&str, &str)] = &[
    ("local", include_str!("../slurm/reco-local.sbatch")),
    (
        "perlmutter",
        include_str!("../slurm/reco-perlmutter.sbatch"),
    ),
];

/// Errors rendering a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No such profile or file.
    #[error("sbatch template `{0}`: no such profile (local, perlmutter) or readable file")]
    NotFound(String),
    /// A placeholder has no value.
    #[error("sbatch template {template}: placeholder {{{{{key}}}}} has no value")]
    Missing {
        /// Template name or path.
        template: String,
        /// Placeholder.
        key: String,
    },
    /// An unterminated `{{`.
    #[error("sbatch template {template}: unterminated placeholder at byte {at}")]
    Unterminated {
        /// Template name or path.
        template: String,
        /// Byte offset.
        at: usize,
    },
    /// A value with a newline or NUL.
    #[error("sbatch template {template}: value of {key} contains a line break or NUL")]
    BadValue {
        /// Template name or path.
        template: String,
        /// Placeholder.
        key: String,
    },
}

/// A template: its name and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Profile name or file path.
    pub name: String,
    /// Text.
    pub text: String,
}

impl Template {
    /// A built-in profile (`local`, `perlmutter`) or a template file.
    ///
    /// # Errors
    /// [`TemplateError::NotFound`].
    pub fn load(spec: &str) -> Result<Self, TemplateError> {
        if let Some((name, text)) = PROFILES.iter().find(|(n, _)| *n == spec) {
            return Ok(Self {
                name: (*name).into(),
                text: (*text).into(),
            });
        }
        std::fs::read_to_string(spec)
            .map(|text| Self {
                name: spec.into(),
                text,
            })
            .map_err(|_| TemplateError::NotFound(spec.into()))
    }

    /// Placeholders the template uses, in order of first use.
    ///
    /// # Errors
    /// [`TemplateError::Unterminated`].
    pub fn placeholders(&self) -> Result<Vec<String>, TemplateError> {
        let mut out: Vec<String> = Vec::new();
        let mut rest = self.text.as_str();
        let mut at = 0;
        while let Some(i) = rest.find("{{") {
            let after = &rest[i + 2..];
            let j = after.find("}}").ok_or(TemplateError::Unterminated {
                template: self.name.clone(),
                at: at + i,
            })?;
            let key = after[..j].trim().to_string();
            if !out.contains(&key) {
                out.push(key);
            }
            at += i + 2 + j + 2;
            rest = &after[j + 2..];
        }
        Ok(out)
    }

    /// Fill every placeholder.
    ///
    /// # Errors
    /// [`TemplateError`] naming the template and the key.
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<String, TemplateError> {
        self.placeholders()?;
        crate::shell::fill(&self.text, "{{", "}}", |key| {
            let v = values.get(key).ok_or_else(|| TemplateError::Missing {
                template: self.name.clone(),
                key: key.to_string(),
            })?;
            if v.contains('\n') || v.contains('\r') || v.contains('\0') {
                return Err(TemplateError::BadValue {
                    template: self.name.clone(),
                    key: key.to_string(),
                });
            }
            Ok(Some(v.clone()))
        })
    }
}

/// Write a rendered script (mode 0755) atomically.
///
/// # Errors
/// [`crate::atomic_file::AtomicFileError`] naming the step and the path.
pub fn write_script(
    path: &Path,
    text: &str,
) -> Result<PathBuf, crate::atomic_file::AtomicFileError> {
    crate::atomic_file::write_with_mode(path, text.as_bytes(), 0o755)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn profiles_render_with_all_values_and_fail_naming_a_missing_one() {
        let local = Template::load("local").unwrap();
        let keys = local.placeholders().unwrap();
        assert_eq!(
            keys,
            [
                "job_name",
                "nodes",
                "ntasks",
                "cpus_per_task",
                "time_limit",
                "log",
                "tpcflow",
                "reco_args"
            ]
        );
        let mut v = values(&[
            ("job_name", "tpcflow-reco-j7"),
            ("nodes", "2"),
            ("ntasks", "2"),
            ("cpus_per_task", "1"),
            ("time_limit", "00:10:00"),
            ("log", "/tmp/j7.log"),
            ("tpcflow", "/usr/bin/tpcflow"),
        ]);
        let err = local.render(&v).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Missing {
                template: "local".into(),
                key: "reco_args".into()
            }
        );
        v.insert(
            "reco_args".into(),
            "--inputs @/tmp/l --out-dir /tmp/o".into(),
        );
        let text = local.render(&v).unwrap();
        assert!(text.contains("#SBATCH --job-name=tpcflow-reco-j7\n"));
        assert!(text.contains("pin-rank /usr/bin/tpcflow reco --threads"));
        assert!(text.contains("srun --mpi=pmix --kill-on-bad-exit=1 bash -c"));
        assert!(!text.contains("{{"));
        v.insert("log".into(), "/tmp/x\n#SBATCH --uid=0".into());
        assert!(matches!(
            local.render(&v),
            Err(TemplateError::BadValue { .. })
        ));

        let pm = Template::load("perlmutter").unwrap();
        let keys = pm.placeholders().unwrap();
        for k in ["account", "qos", "ntasks_per_node", "cpus_per_task"] {
            assert!(
                keys.contains(&k.to_string()),
                "perlmutter template lacks {k}"
            );
        }
        assert!(
            pm.text.contains("--constraint=cpu")
                && pm
                    .text
                    .contains("srun --cpu-bind=cores --kill-on-bad-exit=1 ")
        );
    }

    #[test]
    fn unterminated_placeholder_is_an_error() {
        let t = Template {
            name: "t".into(),
            text: "a {{b".into(),
        };
        assert_eq!(
            t.placeholders().unwrap_err(),
            TemplateError::Unterminated {
                template: "t".into(),
                at: 2
            }
        );
    }

    #[test]
    fn a_value_that_looks_like_a_placeholder_is_not_expanded() {
        let t = Template {
            name: "t".into(),
            text: "#SBATCH --output={{log}}\nrun {{args}}\n".into(),
        };
        let text = t
            .render(&values(&[("log", "/tmp/{{args}}.log"), ("args", "--x")]))
            .unwrap();
        assert_eq!(text, "#SBATCH --output=/tmp/{{args}}.log\nrun --x\n");
    }
}
