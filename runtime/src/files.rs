//! The files a command reads and writes. Reading checks the file type first, so that a FIFO
//! cannot block a run and a device cannot feed it without end; writing refuses a path that is
//! one of the command's own inputs or is not a regular file, and replaces the old file in one
//! rename, keeping its mode.

use std::fs::{File, Metadata, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a path cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The OS refused to open or read the file.
    #[error("cannot read `{path}`: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (not a `source`: the message already says it).
        error: std::io::Error,
    },
    /// The OS refused to write the file.
    #[error("cannot write `{path}`: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error (not a `source`: the message already says it).
        error: std::io::Error,
    },
    /// The path names a directory, a device, a FIFO, a socket or (for outputs) a symlink.
    #[error("`{path}` is {what}, not a regular file")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// The file is larger than the command reads.
    #[error("`{path}` is larger than {limit} bytes; is it the right file?")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The most bytes read.
        limit: u64,
    },
    /// An output path is also one of the command's inputs.
    #[error("`{path}` is also {role} of this command; writing it would destroy it")]
    OutputIsInput {
        /// The output path.
        path: PathBuf,
        /// Which input it is (`the --weights file`, `the .arch source`, ...).
        role: String,
    },
}

/// What a file type is, in words, or `None` for a regular file.
fn irregular(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else {
        Some("not a file")
    }
}

/// Checks that `path` (after following symlinks) is a regular file that can be opened, and
/// opens it. Checking the type before opening keeps a FIFO from blocking.
pub fn open_regular(path: &Path) -> Result<File, FileError> {
    let read = |error| FileError::Read {
        path: path.to_path_buf(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if let Some(what) = irregular(&meta) {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            what,
        });
    }
    File::open(path).map_err(read)
}

/// Reads a regular text file of at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String, FileError> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    // Read one byte past the limit, so a file that grows after the check is still caught.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| FileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    String::from_utf8(bytes).map_err(|e| FileError::Read {
        path: path.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Checks that `output` may be written: if something is there it must be a regular file (not a
/// symlink, device, FIFO or directory), and it must not be any of `inputs` (role, path).
pub fn check_output(output: &Path, inputs: &[(&str, &Path)]) -> Result<(), FileError> {
    let Ok(meta) = std::fs::symlink_metadata(output) else {
        return Ok(());
    };
    if let Some(what) = irregular(&meta) {
        return Err(FileError::NotRegular {
            path: output.to_path_buf(),
            what,
        });
    }
    for (role, input) in inputs {
        if let Ok(m) = std::fs::metadata(input) {
            if (m.dev(), m.ino()) == (meta.dev(), meta.ino()) {
                return Err(FileError::OutputIsInput {
                    path: output.to_path_buf(),
                    role: role.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Writes `output` through a temporary file in the same directory and one rename, so that a
/// failed or interrupted write leaves the old file whole. An existing file keeps its mode. The
/// temporary file is removed on every error.
pub fn write_atomically(output: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let write = |error| FileError::Write {
        path: output.to_path_buf(),
        error,
    };
    let mode = std::fs::metadata(output)
        .ok()
        .map(|m| m.permissions().mode());
    let tmp = temporary_path(output);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        if let Some(mode) = mode {
            f.set_permissions(Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, output)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(write)
}

/// Moves a finished file (made at [`temporary_path`]) over `output`, keeping the mode of a
/// file that was there; the temporary file is removed if that fails.
pub fn replace_with(output: &Path, tmp: &Path) -> Result<(), FileError> {
    let result = (|| {
        if let Ok(m) = std::fs::metadata(output) {
            std::fs::set_permissions(tmp, m.permissions())?;
        }
        std::fs::rename(tmp, output)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result.map_err(|error| FileError::Write {
        path: output.to_path_buf(),
        error,
    })
}

/// A hidden sibling of `output` for writing it in full before the rename: same directory (so
/// the rename stays on one file system), named after the process so runs do not collide.
pub fn temporary_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.{}.archc-tmp", std::process::id()))
}
