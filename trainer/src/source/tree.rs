//! Directory walking and tree writing.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use btd_protocol::patch::{check_path, File, Files};

use super::{check_tree, SourceError, MAX_TREE_FILES};

/// Reads the regular files under `dir` into a tree, under the rules in the module docs: refuses
/// symbolic links, devices, sockets, FIFOs, non-UTF-8 names, paths failing [`check_path`], more
/// than [`MAX_TREE_FILES`] files or more than `max_bytes` bytes of content; skips only a
/// top-level `.git`. A file is executable when any execute bit of its mode is set.
pub fn read_dir(dir: &Path, max_bytes: u64) -> Result<Files, SourceError> {
    let mut walk = Walk {
        files: Files::new(),
        bytes: 0,
        max_bytes,
    };
    walk.dir(dir, "")?;
    Ok(walk.files)
}

struct Walk {
    files: Files,
    bytes: u64,
    max_bytes: u64,
}

impl Walk {
    /// Walks `abs`, whose tree path is `rel` (empty for the root).
    fn dir(&mut self, abs: &Path, rel: &str) -> Result<(), SourceError> {
        let entries = fs::read_dir(abs).map_err(|e| SourceError::io(abs, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SourceError::io(abs, e))?;
            let name = entry.file_name().into_string().map_err(|raw| {
                SourceError::refused(
                    abs.join(&raw).display().to_string(),
                    "the name is not UTF-8; tree paths are UTF-8",
                )
            })?;
            if rel.is_empty() && name == ".git" {
                continue;
            }
            names.push(name);
        }
        // Sorted, so that which error a bad tree reports does not depend on directory order.
        names.sort_unstable();
        for name in names {
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            check_path(&path)?;
            let child = abs.join(&name);
            let meta = fs::symlink_metadata(&child).map_err(|e| SourceError::io(&child, e))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                self.dir(&child, &path)?;
            } else if kind.is_file() {
                self.file(&child, path, meta.len(), meta.permissions().mode())?;
            } else {
                let what = if kind.is_symlink() {
                    "is a symbolic link; bundles hold only regular files (copy the target in)"
                } else {
                    "is not a regular file (a device, socket or FIFO); bundles hold only regular \
                     files"
                };
                return Err(SourceError::refused(path, what));
            }
        }
        Ok(())
    }

    fn file(&mut self, abs: &Path, path: String, len: u64, mode: u32) -> Result<(), SourceError> {
        if self.files.len() >= MAX_TREE_FILES {
            return Err(SourceError::TooManyFiles {
                limit: MAX_TREE_FILES,
            });
        }
        let over = |bytes| SourceError::TooLarge {
            bytes,
            limit: self.max_bytes,
        };
        let room = self.max_bytes - self.bytes;
        if len > room {
            return Err(over(self.bytes.saturating_add(len)));
        }
        let f = fs::File::open(abs).map_err(|e| SourceError::io(abs, e))?;
        // The file may grow while it is read: never read more than the room left, plus one byte
        // to notice.
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        f.take(room.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| SourceError::io(abs, e))?;
        let n = data.len() as u64;
        if n > room {
            return Err(over(self.bytes.saturating_add(n)));
        }
        self.bytes += n;
        self.files.insert(
            path,
            File {
                data,
                executable: mode & 0o111 != 0,
            },
        );
        Ok(())
    }
}

/// Writes `files` under `dir`, which must not exist or be an empty directory: creates the
/// directories (mode 0755) and the files (0755 when executable, else 0644, whatever the umask).
/// Every path is checked with [`check_path`] first (so nothing is written outside `dir`), as is
/// that no path is both a file and a directory; nothing is written if a check fails.
pub fn write_tree(files: &Files, dir: &Path) -> Result<(), SourceError> {
    check_tree(files, u64::MAX)?;
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(SourceError::NotEmpty {
                    path: dir.display().to_string(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| SourceError::io(dir, e))?;
        }
        Err(e) => return Err(SourceError::io(dir, e)),
    }
    for (path, file) in files {
        let target = dir.join(path);
        if let Some((parent, _)) = path.rsplit_once('/') {
            create_dirs(dir, parent)?;
        }
        let mode = if file.executable { 0o755 } else { 0o644 };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&target)
            .map_err(|e| SourceError::io(&target, e))?;
        f.write_all(&file.data)
            .map_err(|e| SourceError::io(&target, e))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| SourceError::io(&target, e))?;
    }
    Ok(())
}

/// Creates `root/rel` and its missing parents, each as a real directory with mode 0755.
fn create_dirs(root: &Path, rel: &str) -> Result<(), SourceError> {
    let mut at = root.to_path_buf();
    for component in rel.split('/') {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                return Err(SourceError::refused(
                    at.display().to_string(),
                    "exists and is not a directory",
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SourceError::io(&at, e)),
        }
        fs::create_dir(&at).map_err(|e| SourceError::io(&at, e))?;
        fs::set_permissions(&at, fs::Permissions::from_mode(0o755))
            .map_err(|e| SourceError::io(&at, e))?;
    }
    Ok(())
}
