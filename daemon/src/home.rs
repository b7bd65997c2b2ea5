//! The home directory: identity key, config, database, control socket, and the lock that keeps two
//! daemons off one home.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use libp2p::identity::Keypair;

/// The daemon's home directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `--home`, else `$BTD_HOME`, else `~/.btd`.
    pub fn resolve(flag: Option<PathBuf>) -> Result<Home> {
        if let Some(dir) = flag {
            return Ok(Home { dir });
        }
        if let Some(dir) = std::env::var_os("BTD_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home {
                dir: PathBuf::from(dir),
            });
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow!("cannot find a home directory: set --home or BTD_HOME"))?;
        Ok(Home {
            dir: PathBuf::from(home).join(".btd"),
        })
    }

    /// A home at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Home {
        Home { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ed25519 identity key (protobuf encoding, mode 0600).
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("identity.key")
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The SQLite database.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("btd.sqlite")
    }

    /// Where the worker loop keeps each round's outputs and records.
    pub fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// The control socket (mode 0600).
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// The lock file held while a daemon runs.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }

    /// Creates the directory (mode 0700) if needed.
    pub fn ensure_dir(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create home directory {}", self.dir.display()))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set permissions on {}", self.dir.display()))?;
        Ok(())
    }

    /// Takes the home's lock, or fails with a clear message when another daemon holds it. The lock
    /// is released when the returned file is dropped (or the process dies).
    pub fn lock(&self) -> Result<File> {
        let path = self.lock_path();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => bail!(
                "another btd daemon is already running with home {} (stop it with `btd stop --home {}`)",
                self.dir.display(),
                self.dir.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        file.set_len(0).ok();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(file)
    }

    /// Loads the identity key, creating one (mode 0600) on first start.
    pub fn load_or_create_identity(&self) -> Result<Keypair> {
        let path = self.key_path();
        match fs::read(&path) {
            Ok(bytes) => {
                let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    bail!(
                        "identity key {} is readable by others (mode {mode:o}); run `chmod 600 {}`",
                        path.display(),
                        path.display()
                    );
                }
                Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
                    anyhow!(
                        "identity key {} is corrupt ({e}); restore it from a backup (deleting it gives this node a new identity and loses its memberships)",
                        path.display()
                    )
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Keypair::generate_ed25519();
                let bytes = key
                    .to_protobuf_encoding()
                    .map_err(|e| anyhow!("cannot encode the new identity key: {e}"))?;
                let tmp = path.with_extension("key.tmp");
                {
                    let mut f = OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .write(true)
                        .mode(0o600)
                        .open(&tmp)
                        .with_context(|| format!("cannot create {}", tmp.display()))?;
                    f.write_all(&bytes)?;
                    f.sync_all()?;
                }
                fs::rename(&tmp, &path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        home.ensure_dir().unwrap();
        let a = home.load_or_create_identity().unwrap();
        let b = home.load_or_create_identity().unwrap();
        assert_eq!(a.public(), b.public());
        let mode = fs::metadata(home.key_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::set_permissions(home.key_path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = home.load_or_create_identity().unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn second_lock_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.ensure_dir().unwrap();
        let _held = home.lock().unwrap();
        let err = home.lock().unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
    }
}
