//! Reading plugin files from a folder the daemon does not wholly control: only regular files
//! (a FIFO would block the reader, a device never end), a symbolic link only where the
//! operator allows it, and never more than a cap, checked before reading and enforced while
//! reading (a file can grow between the two).
//!
//! The file is opened without blocking and without following a link swapped in after the
//! check, and the checks apply to what was opened, so a rename in between cannot slip a FIFO
//! or a link past them.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

/// The largest sidecar file read.
pub const MAX_SIDECAR_BYTES: u64 = 64 * 1024;

/// What the daemon agrees to read from its plugins folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRules {
    /// The largest plugin file read, in bytes. Default 256 MiB.
    pub max_plugin_bytes: u64,
    /// Whether a symbolic link is followed (to a regular file only). Default: no.
    pub follow_symlinks: bool,
}

impl Default for FileRules {
    fn default() -> Self {
        Self {
            max_plugin_bytes: 256 * MIB,
            follow_symlinks: false,
        }
    }
}

/// A file the rules refuse, or that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path} is a {kind}, not a regular file: only regular files are loaded")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "{path} is a symbolic link: links are followed only when the operator allows it (eventhost run --follow-symlinks)"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is larger than the cap of {cap} bytes")]
    TooLarge { path: PathBuf, cap: u64 },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// Whether the file is simply not there (removed since it was seen).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads the file at `path` under `rules`, at most `cap` bytes.
pub fn read_file(path: &Path, rules: FileRules, cap: u64) -> Result<Vec<u8>, FileError> {
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let link = std::fs::symlink_metadata(path).map_err(io)?;
    if link.file_type().is_symlink() && !rules.follow_symlinks {
        return Err(FileError::Symlink {
            path: path.to_owned(),
        });
    }
    let mut flags = libc::O_NONBLOCK;
    if !rules.follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            // O_NOFOLLOW met a link swapped in after the check above.
            Some(libc::ELOOP) => FileError::Symlink {
                path: path.to_owned(),
            },
            _ => io(source),
        })?;
    let metadata = file.metadata().map_err(io)?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_dir() {
            "directory"
        } else if file_type.is_fifo() {
            "FIFO"
        } else if file_type.is_socket() {
            "socket"
        } else if file_type.is_block_device() || file_type.is_char_device() {
            "device"
        } else {
            "special file"
        };
        return Err(FileError::NotRegular {
            path: path.to_owned(),
            kind,
        });
    }
    let too_large = || FileError::TooLarge {
        path: path.to_owned(),
        cap,
    };
    if metadata.len() > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_regular_file_under_the_cap_is_read() {
        let dir = folder();
        let path = dir.path().join("a.wasm");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(
            read_file(&path, FileRules::default(), 10).unwrap(),
            b"0123456789"
        );
        assert!(matches!(
            read_file(&path, FileRules::default(), 9),
            Err(FileError::TooLarge { cap: 9, .. })
        ));
    }

    #[test]
    fn a_sparse_file_over_the_cap_is_refused_before_reading() {
        let dir = folder();
        let path = dir.path().join("big.wasm");
        let file = File::create(&path).unwrap();
        file.set_len(8 * 1024 * MIB).unwrap();
        let rules = FileRules::default();
        assert!(matches!(
            read_file(&path, rules, rules.max_plugin_bytes),
            Err(FileError::TooLarge { .. })
        ));
    }

    #[test]
    fn links_devices_and_fifos_are_refused() {
        let dir = folder();
        let link = dir.path().join("zero.wasm");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let rules = FileRules::default();
        assert!(matches!(
            read_file(&link, rules, 100),
            Err(FileError::Symlink { .. })
        ));
        let following = FileRules {
            follow_symlinks: true,
            ..rules
        };
        assert!(matches!(
            read_file(&link, following, 100),
            Err(FileError::NotRegular { kind: "device", .. })
        ));
        let fifo = dir.path().join("fifo.wasm");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            read_file(&fifo, rules, 100),
            Err(FileError::NotRegular { kind: "FIFO", .. })
        ));
        assert!(matches!(
            read_file(dir.path(), rules, 100),
            Err(FileError::NotRegular {
                kind: "directory",
                ..
            })
        ));
        assert!(
            read_file(&dir.path().join("missing"), rules, 100)
                .unwrap_err()
                .is_not_found()
        );
    }
}
