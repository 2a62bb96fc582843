//! The salt vault: the only place that knows which events are salt.
//!
//! ```text
//! KEY FILE   64 hex digits (32 random bytes) + newline, mode 0600, owner only
//! VAULT DIR  mode 0700
//!   config.vault                 rate of salt events per real event
//!   {run:06}/ledger.vault        per run: id ranges and salt counts of salted files
//!   {run:06}/{run:06}_{seq:05}.vault   per raw file: salt ids, id map, salt truth
//!   unsalt.log                   append-only log of every unblinding (plain text)
//! every *.vault file = "TPCVAULT1\n" | 24-byte nonce | XChaCha20-Poly1305(JSON)
//!                      associated data = magic | the file's name in the vault
//! ```
//!
//! The AEAD is RustCrypto's `chacha20poly1305` (XChaCha20: 192-bit random
//! nonces, so a fresh nonce per write never repeats in practice). The file's
//! name is authenticated with it, so records cannot be swapped between raw
//! files. A wrong key or a modified file fails authentication: nothing is
//! ever decrypted to garbage.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// First bytes of every vault file.
pub const MAGIC: &[u8] = b"TPCVAULT1\n";
/// Nonce length of XChaCha20-Poly1305 [bytes].
const NONCE_BYTES: usize = 24;
/// Name of the encrypted configuration in the vault directory.
pub const CONFIG_NAME: &str = "config.vault";
/// Name of the unblinding log in the vault directory.
pub const UNSALT_LOG_NAME: &str = "unsalt.log";

/// Errors of the key file and the vault. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Writing a file atomically (temporary, fsync, rename, fsync of the
    /// directory) failed; the file under its name is unchanged.
    #[error(transparent)]
    Write(#[from] crate::atomic_file::AtomicFileError),
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The key file may be read by group or others.
    #[error("key file {path} has mode {mode:04o}: it must be readable by its owner only (chmod 600 {path})")]
    KeyPermissions {
        /// Key file.
        path: PathBuf,
        /// Permission bits found.
        mode: u32,
    },
    /// The key file is not 64 hex digits.
    #[error(
        "key file {path}: {what} (expected 64 hex digits, as written by `tpcflow salt keygen`)"
    )]
    BadKey {
        /// Key file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Refusing to overwrite an existing key or vault configuration.
    #[error("{path} already exists: refusing to overwrite a key or vault configuration")]
    Exists {
        /// File.
        path: PathBuf,
    },
    /// Decryption failed: wrong key, or the file was modified.
    #[error("vault file {path}: authentication failed (wrong key, or the file was modified)")]
    Authentication {
        /// Vault file.
        path: PathBuf,
    },
    /// Not a vault file, or a record that does not parse.
    #[error("vault file {path}: {what}")]
    Malformed {
        /// Vault file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

/// 32 random bytes from the operating system.
///
/// # Errors
/// [`VaultError::Random`].
pub fn random_bytes<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| VaultError::Random(e.to_string()))?;
    Ok(b)
}

/// The vault key, loaded from a key file whose permissions were checked.
pub struct VaultKey {
    key: [u8; 32],
    path: PathBuf,
}

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl VaultKey {
    /// Write a new random key to `path` with mode 0600 (never overwrites).
    ///
    /// # Errors
    /// [`VaultError::Exists`], [`VaultError::Write`], [`VaultError::Random`].
    pub fn generate(path: &Path) -> Result<Self, VaultError> {
        let key: [u8; 32] = random_bytes()?;
        if path.exists() {
            return Err(VaultError::Exists {
                path: path.to_path_buf(),
            });
        }
        // Written whole or not at all (a half-written key would lock the
        // vault); never over a key that appeared meanwhile.
        let text = format!("{}\n", crate::conditions::hex(&key));
        crate::atomic_file::write_new(path, text.as_bytes(), 0o600).map_err(|e| {
            if e.source.kind() == std::io::ErrorKind::AlreadyExists {
                VaultError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                VaultError::Write(e)
            }
        })?;
        Ok(Self {
            key,
            path: path.to_path_buf(),
        })
    }

    /// Load a key file, refusing one that group or others may access.
    ///
    /// # Errors
    /// [`VaultError::KeyPermissions`] for a mode with any group/other bit;
    /// [`VaultError::BadKey`]; [`VaultError::Io`].
    pub fn load(path: &Path) -> Result<Self, VaultError> {
        let io = |source| VaultError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(VaultError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let hex = text.trim();
        let bad = |what: String| VaultError::BadKey {
            path: path.to_path_buf(),
            what,
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!("{} characters of text", hex.len())));
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|e| bad(format!("byte {i}: {e}")))?;
        }
        Ok(Self {
            key,
            path: path.to_path_buf(),
        })
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.key))
    }
}

/// Encrypted configuration of the salting, written once by `tpcflow salt keygen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultConfig {
    /// Mean number of salt events per real event (the hidden rate).
    pub rate_per_event: f64,
    /// Creation time [s since the Unix epoch].
    pub created_at: f64,
}

/// A vault directory opened with its key.
#[derive(Debug)]
pub struct Vault {
    dir: PathBuf,
    key: VaultKey,
}

impl Vault {
    /// Open (creating with mode 0700 if needed) a vault directory.
    ///
    /// # Errors
    /// [`VaultError::Io`].
    pub fn open(dir: &Path, key: VaultKey) -> Result<Self, VaultError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| VaultError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a vault file by its name relative to the vault directory.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Encrypt `value` as JSON into vault file `name` (atomic: temp, fsync, rename; mode 0600).
    ///
    /// # Errors
    /// [`VaultError::Io`], [`VaultError::Random`].
    pub fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<(), VaultError> {
        let path = self.path_of(name);
        let io = |source| VaultError::Io {
            path: path.clone(),
            source,
        };
        let plain = serde_json::to_vec(value).map_err(|e| VaultError::Malformed {
            path: path.clone(),
            what: format!("cannot encode: {e}"),
        })?;
        let nonce: [u8; NONCE_BYTES] = random_bytes()?;
        let aad = aad(name);
        let sealed = self
            .key
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Malformed {
                path: path.clone(),
                what: "encryption failed".into(),
            })?;
        if let Some(dir) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        crate::atomic_file::write_with(&path, 0o600, false, |f| {
            f.write_all(MAGIC)?;
            f.write_all(&nonce)?;
            f.write_all(&sealed)
        })?;
        Ok(())
    }

    /// Decrypt vault file `name`; `None` when it does not exist.
    ///
    /// # Errors
    /// [`VaultError::Authentication`] for a wrong key or a modified file;
    /// [`VaultError::Malformed`]; [`VaultError::Io`].
    pub fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, VaultError> {
        let path = self.path_of(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(VaultError::Io { path, source }),
        };
        if bytes.len() < MAGIC.len() + NONCE_BYTES || !bytes.starts_with(MAGIC) {
            return Err(VaultError::Malformed {
                path,
                what: "not a tpcflow vault file".into(),
            });
        }
        let (nonce, sealed) = bytes[MAGIC.len()..].split_at(NONCE_BYTES);
        let aad = aad(name);
        let plain = self
            .key
            .cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Authentication { path: path.clone() })?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| VaultError::Malformed {
                path,
                what: format!("record does not parse: {e}"),
            })
    }

    /// The salting configuration.
    ///
    /// # Errors
    /// [`VaultError::Malformed`] when the vault has none (run `tpcflow salt keygen`);
    /// otherwise as [`Vault::read`].
    pub fn config(&self) -> Result<VaultConfig, VaultError> {
        self.read(CONFIG_NAME)?
            .ok_or_else(|| VaultError::Malformed {
                path: self.path_of(CONFIG_NAME),
                what: "missing: create the vault with `tpcflow salt keygen`".into(),
            })
    }

    /// Append one line to the unblinding log (created with mode 0600).
    ///
    /// # Errors
    /// [`VaultError::Io`].
    pub fn append_log(&self, line: &str) -> Result<(), VaultError> {
        let path = self.path_of(UNSALT_LOG_NAME);
        let io = |source| VaultError::Io {
            path: path.clone(),
            source,
        };
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        writeln!(f, "{line}").map_err(io)?;
        f.sync_all().map_err(io)
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut a = MAGIC.to_vec();
    a.extend_from_slice(name.as_bytes());
    a
}

/// Create a key file and an encrypted vault configuration with the hidden rate.
///
/// # Errors
/// [`VaultError::Exists`] when the key or the vault configuration exists;
/// [`VaultError::Malformed`] for a rate that is not finite and >= 0.
pub fn keygen(key_path: &Path, vault_dir: &Path, rate_per_event: f64) -> Result<Vault, VaultError> {
    let config_path = vault_dir.join(CONFIG_NAME);
    if !(rate_per_event.is_finite() && rate_per_event >= 0.0) {
        return Err(VaultError::Malformed {
            path: config_path,
            what: format!("rate must be finite and >= 0 (got {rate_per_event})"),
        });
    }
    if config_path.exists() {
        return Err(VaultError::Exists { path: config_path });
    }
    let vault = Vault::open(vault_dir, VaultKey::generate(key_path)?)?;
    vault.write(
        CONFIG_NAME,
        &VaultConfig {
            rate_per_event,
            created_at: crate::catalog::now_unix_s(),
        },
    )?;
    Ok(vault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_wrong_key_or_a_moved_file_fails_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let vault = keygen(&dir.path().join("k"), &dir.path().join("v"), 0.1).unwrap();
        assert_eq!(vault.config().unwrap().rate_per_event, 0.1);
        let mode = std::fs::metadata(dir.path().join("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        vault.write("000001/a.vault", &vec![1u64, 2, 3]).unwrap();
        let back: Vec<u64> = vault.read("000001/a.vault").unwrap().unwrap();
        assert_eq!(back, [1, 2, 3]);
        assert!(vault
            .read::<Vec<u64>>("000001/none.vault")
            .unwrap()
            .is_none());

        std::fs::copy(
            vault.path_of("000001/a.vault"),
            vault.path_of("000001/b.vault"),
        )
        .unwrap();
        let moved = vault.read::<Vec<u64>>("000001/b.vault").unwrap_err();
        assert!(
            matches!(moved, VaultError::Authentication { .. }),
            "{moved}"
        );

        let other = Vault::open(
            vault.dir(),
            VaultKey::generate(&dir.path().join("k2")).unwrap(),
        )
        .unwrap();
        let wrong = other.config().unwrap_err();
        assert!(
            wrong.to_string().contains("authentication failed"),
            "{wrong}"
        );
        assert!(matches!(
            keygen(&dir.path().join("k3"), vault.dir(), 0.1),
            Err(VaultError::Exists { .. })
        ));
    }

    #[test]
    fn a_key_readable_by_others_is_refused_naming_file_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        VaultKey::generate(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = VaultKey::load(&path).unwrap_err();
            assert!(
                matches!(e, VaultError::KeyPermissions { mode: m, .. } if m == mode),
                "{e}"
            );
            assert!(e.to_string().contains(&format!("{mode:04o}")), "{e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        VaultKey::load(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "abc\n").unwrap();
        assert!(matches!(
            VaultKey::load(&path),
            Err(VaultError::BadKey { .. })
        ));
    }
}
