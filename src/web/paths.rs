//! The only places the server reads files from.
//!
//! A raw file is read at `{site root}/{replica path}`, an RQ file at its
//! catalogued path under the RQ root (absolute paths as the dispatcher
//! catalogues them, or relative to the root). Either way the joined path is
//! canonicalized (symbolic links and `..` resolved) and must still lie inside
//! the canonical root; otherwise it is refused ([`WebError::OutsideRoots`]).
//! Request parameters never reach this module: paths come from the catalog.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::WebError;
use crate::catalog::Site;
use crate::transfer::Sites;

/// Canonical site roots and RQ root.
#[derive(Debug, Clone, Default)]
pub struct DataRoots {
    sites: Vec<(Site, PathBuf)>,
    rq: Option<PathBuf>,
}

fn canonical(dir: &Path, what: &str) -> Result<PathBuf> {
    let c = dir
        .canonicalize()
        .with_context(|| format!("{what} {}", dir.display()))?;
    anyhow::ensure!(c.is_dir(), "{what} {} is not a directory", dir.display());
    Ok(c)
}

impl DataRoots {
    /// Sites as directories under `data_root` (`SURF`, `USDC`, ...) and the
    /// RQ root (default `data_root/RQ`). Directories that do not exist are left out.
    ///
    /// # Errors
    /// When a directory exists but cannot be resolved.
    pub fn under(data_root: &Path, rq_root: Option<&Path>) -> Result<Self> {
        let rq = rq_root.map_or_else(|| data_root.join("RQ"), Path::to_path_buf);
        Self::new(&Sites::under(data_root), Some(&rq))
    }

    /// Roots from resolved site locations and an RQ root. Roots that do not
    /// exist are left out (logged); their files are then unavailable.
    ///
    /// # Errors
    /// When an existing root cannot be canonicalized.
    pub fn new(sites: &Sites, rq_root: Option<&Path>) -> Result<Self> {
        let mut out = Self::default();
        for &site in Site::ALL {
            let Ok(access) = sites.get(site) else {
                continue;
            };
            if access.root.exists() {
                out.sites
                    .push((site, canonical(&access.root, &format!("{site} root"))?));
            } else {
                tracing::warn!("{site} root {} does not exist", access.root.display());
            }
        }
        if let Some(rq) = rq_root {
            if rq.exists() {
                out.rq = Some(canonical(rq, "RQ root")?);
            } else {
                tracing::warn!("RQ root {} does not exist", rq.display());
            }
        }
        Ok(out)
    }

    /// The canonical root of a site, when configured.
    pub fn site_root(&self, site: Site) -> Option<&Path> {
        self.sites
            .iter()
            .find(|(s, _)| *s == site)
            .map(|(_, p)| p.as_path())
    }

    /// The canonical RQ root, when configured.
    pub fn rq_root(&self) -> Option<&Path> {
        self.rq.as_deref()
    }

    /// A raw file replica: `{site root}/{path}`, inside the site root.
    ///
    /// # Errors
    /// [`WebError::FileUnavailable`] when the site has no root or the file is
    /// missing; [`WebError::OutsideRoots`] when it resolves outside the root.
    pub fn raw_file(&self, site: Site, path: &str, what: &str) -> Result<PathBuf, WebError> {
        let root = self
            .site_root(site)
            .ok_or_else(|| WebError::FileUnavailable {
                what: what.to_string(),
                reason: format!("no {site} root is configured"),
            })?;
        inside(root, path, what)
    }

    /// An RQ file: its catalogued path under the RQ root.
    ///
    /// # Errors
    /// As [`DataRoots::raw_file`].
    pub fn rq_file(&self, path: &str, what: &str) -> Result<PathBuf, WebError> {
        let root = self.rq_root().ok_or_else(|| WebError::FileUnavailable {
            what: what.to_string(),
            reason: "no RQ root is configured (--rq-root or --data-root)".into(),
        })?;
        inside(root, path, what)
    }
}

/// `root.join(path)` canonicalized, if it is a regular file inside `root`.
fn inside(root: &Path, path: &str, what: &str) -> Result<PathBuf, WebError> {
    if path.is_empty() || path.contains('\0') {
        return Err(WebError::OutsideRoots {
            what: what.to_string(),
        });
    }
    let joined = root.join(path);
    let canon = joined
        .canonicalize()
        .map_err(|e| WebError::FileUnavailable {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if !canon.starts_with(root) {
        return Err(WebError::OutsideRoots {
            what: what.to_string(),
        });
    }
    if !canon.is_file() {
        return Err(WebError::FileUnavailable {
            what: what.to_string(),
            reason: "not a regular file".into(),
        });
    }
    Ok(canon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_their_root() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("USDC/000001")).unwrap();
        std::fs::create_dir_all(data.join("RQ/fam")).unwrap();
        std::fs::write(data.join("USDC/000001/a.raw.h5"), b"x").unwrap();
        std::fs::write(data.join("RQ/fam/a.rq.h5"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret"), data.join("USDC/000001/link"))
            .unwrap();
        let roots = DataRoots::under(&data, None).unwrap();
        assert!(roots.raw_file(Site::Usdc, "000001/a.raw.h5", "raw").is_ok());
        let rq_abs = data.join("RQ/fam/a.rq.h5");
        assert!(roots.rq_file(&rq_abs.display().to_string(), "rq").is_ok());
        assert!(roots.rq_file("fam/a.rq.h5", "rq").is_ok());
        for bad in [
            "../../secret",
            "000001/../../../secret",
            "000001/link",
            "/etc/passwd",
        ] {
            let e = roots.raw_file(Site::Usdc, bad, "raw").unwrap_err();
            assert!(matches!(e, WebError::OutsideRoots { .. }), "{bad}: {e}");
        }
        let abs = dir.path().join("secret").display().to_string();
        assert!(matches!(
            roots.rq_file(&abs, "rq").unwrap_err(),
            WebError::OutsideRoots { .. }
        ));
        assert!(matches!(
            roots
                .raw_file(Site::Usdc, "000001/none.raw.h5", "raw")
                .unwrap_err(),
            WebError::FileUnavailable { .. }
        ));
        assert!(matches!(
            roots
                .raw_file(Site::Ukdc, "000001/a.raw.h5", "raw")
                .unwrap_err(),
            WebError::FileUnavailable { .. }
        ));
        assert!(matches!(
            roots.raw_file(Site::Usdc, "000001", "raw").unwrap_err(),
            WebError::FileUnavailable { .. }
        ));
    }
}
