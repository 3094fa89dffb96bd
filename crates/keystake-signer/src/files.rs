//! The one way this program writes a file: a fresh temporary file beside the target, created
//! with its final mode (never widened after the fact), written, `fsync`ed, then moved into place
//! and the directory `fsync`ed. A reader — or a crash — sees the old file or the whole new one,
//! never half of either, and never a file that was briefly world-readable.
//!
//! Refuses: overwriting an existing file unless [`Overwrite::Replace`] is asked for (under
//! [`Overwrite::Refuse`] the file is linked into place with `link(2)`, which fails if the target
//! appeared in the meantime, so a racing writer is not clobbered either); targets without a file
//! name. Directories are created owner-only ([`create_private_dir`]).
#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

/// Owner read/write only: keys, PINs, tokens, PKCS#12 files and their passwords.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// World-readable: certificates, manifests, exports.
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// Owner-only directories (data, HSM token, PKI).
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// What to do when the target file already exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Fail with [`FileError::WouldOverwrite`] and leave the existing file alone.
    #[default]
    Refuse,
    /// Replace it atomically.
    Replace,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0} already exists (refusing to overwrite it)")]
    WouldOverwrite(PathBuf),
    #[error("creating directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Write `contents` to `path` with `mode` (see the module doc for the guarantees).
pub fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: Overwrite,
) -> Result<(), FileError> {
    write_file_streamed(path, mode, overwrite, &mut |out| out.write_all(contents))
}

/// [`write_file`] of contents too large to hold in memory: `fill` writes them (buffered) and
/// may be called a second time, from the start, on a file system without hard links under
/// [`Overwrite::Refuse`], so it must write the same bytes each time. An error from `fill`
/// leaves nothing behind.
pub fn write_file_streamed(
    path: &Path,
    mode: u32,
    overwrite: Overwrite,
    fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FileError> {
    let write_error = |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| write_error(io::Error::other("path has no file name")))?;
    let mut suffix = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let temporary = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        hex::encode(suffix)
    ));
    let written = create_exclusive(&temporary, mode).and_then(|file| fill_and_sync(file, fill));
    let placed = written.and_then(|()| match overwrite {
        Overwrite::Replace => fs::rename(&temporary, path),
        // link(2) never replaces an existing target: the check and the write are one step.
        Overwrite::Refuse => match fs::hard_link(&temporary, path) {
            Ok(()) => {
                if let Err(error) = fs::remove_file(&temporary) {
                    // The file is in place; only a spare copy with the same mode is left.
                    tracing::warn!(%error, file = %temporary.display(), "could not remove a temporary file");
                }
                Ok(())
            }
            Err(error) if links_unsupported(&error) => {
                let _ = fs::remove_file(&temporary);
                write_exclusive(path, mode, fill)
            }
            Err(error) => Err(error),
        },
    });
    if let Err(source) = placed {
        // Best effort: the temporary file is ours and useless after a failure.
        let _ = fs::remove_file(&temporary);
        return Err(if source.kind() == io::ErrorKind::AlreadyExists {
            FileError::WouldOverwrite(path.to_path_buf())
        } else {
            write_error(source)
        });
    }
    sync_parent(path).map_err(write_error)
}

/// Create a directory (and missing parents) accessible only by its owner. An existing directory
/// is left as it is.
pub fn create_private_dir(path: &Path) -> Result<(), FileError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(|source| FileError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

/// File systems without hard links (FAT/exFAT media, some FUSE and virtiofs mounts) refuse
/// `link(2)` with one of these.
fn links_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if code == rustix::io::Errno::PERM.raw_os_error()
            || code == rustix::io::Errno::NOTSUP.raw_os_error()
            || code == rustix::io::Errno::OPNOTSUPP.raw_os_error()
            || code == rustix::io::Errno::MLINK.raw_os_error()
    )
}

/// Without hard links: create the target itself exclusively (still never clobbering, mode set
/// at creation), at the cost of a partial file if the write fails half-way — removed then.
fn write_exclusive(
    path: &Path,
    mode: u32,
    fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let written = create_exclusive(path, mode).and_then(|file| fill_and_sync(file, fill));
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

/// Write through a buffer, flush, and `fsync`.
fn fill_and_sync(
    file: fs::File,
    fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut buffered = io::BufWriter::new(file);
    fill(&mut buffered)?;
    let file = buffered.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()
}

fn create_exclusive(path: &Path, mode: u32) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Make the new directory entry durable (a rename is only as durable as its directory).
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn refuse_keeps_an_existing_file_and_replace_swaps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_file(&path, b"first", PRIVATE_FILE_MODE, Overwrite::Refuse).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let refused = write_file(&path, b"second", PRIVATE_FILE_MODE, Overwrite::Refuse);
        assert!(matches!(refused, Err(FileError::WouldOverwrite(ref p)) if *p == path));
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_file(&path, b"third", PUBLIC_FILE_MODE, Overwrite::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"third");
        assert_eq!(mode_of(&path), 0o644);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn replacing_never_keeps_the_old_wider_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        write_file(&path, b"new", PRIVATE_FILE_MODE, Overwrite::Replace).unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("file");
        let error = write_file(&missing, b"x", PRIVATE_FILE_MODE, Overwrite::Replace).unwrap_err();
        assert!(matches!(error, FileError::Write { .. }), "{error}");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn private_dirs_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b");
        create_private_dir(&nested).unwrap();
        assert_eq!(mode_of(&nested), 0o700);
        create_private_dir(&nested).unwrap();
    }
}
