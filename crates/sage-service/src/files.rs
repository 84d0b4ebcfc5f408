//! Reading and writing the node's own files (the key directory, TLS
//! certificates) under one policy: look before reading (a regular file of a
//! bounded size, never a FIFO or a device), write atomically with the mode
//! asked for, and report a mode that lets others read.

use std::fmt;
use std::fs;
use std::io::{Read as _, Write as _};
use std::path::Path;

use crate::KeyDirError;

/// The files of a key directory, as messages name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyDirFile {
    /// `Name_ed25519.key`, or the node key's systemd credential.
    Key,
    /// `Name_ed25519.lct`.
    Lct,
    /// `peers.toml`.
    Peers,
}

impl fmt::Display for KeyDirFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyDirFile::Key => "key file",
            KeyDirFile::Lct => "LCT id file",
            KeyDirFile::Peers => "peers file",
        })
    }
}

/// What a path is when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A FIFO (named pipe): reading it waits for a writer.
    Fifo,
    /// A character device (`/dev/zero`, a terminal): it may never end.
    CharDevice,
    /// A block device (a disk).
    BlockDevice,
    /// A Unix domain socket.
    Socket,
    /// Another kind of file.
    Other,
}

impl FileKind {
    /// The kind of what `metadata` describes, `None` for a regular file.
    fn of(metadata: &fs::Metadata) -> Option<FileKind> {
        let kind = metadata.file_type();
        if kind.is_file() {
            return None;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt as _;
            if kind.is_fifo() {
                return Some(FileKind::Fifo);
            }
            if kind.is_char_device() {
                return Some(FileKind::CharDevice);
            }
            if kind.is_block_device() {
                return Some(FileKind::BlockDevice);
            }
            if kind.is_socket() {
                return Some(FileKind::Socket);
            }
        }
        Some(if kind.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Other
        })
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Other => "a special file",
        })
    }
}

/// The mode bits of a file that others than its owner may read or write,
/// if any are set.
#[cfg(unix)]
pub(crate) fn loose_mode(metadata: &fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
pub(crate) fn loose_mode(_metadata: &fs::Metadata) -> Option<u32> {
    None
}

/// Why [`read_checked`] read nothing.
#[derive(Debug)]
pub(crate) enum Checked {
    /// The system's error (the caller knows what a missing file means).
    Io(std::io::Error),
    /// Not a regular file, or too large ([`KeyDirError::NotAFile`],
    /// [`KeyDirError::TooLarge`]).
    Refused(KeyDirError),
}

/// Reads the key directory file `path` (a `role` file of at most `limit`
/// bytes), with the metadata of what was read. What is not a regular file,
/// or is larger, is refused before a byte of it is read: a FIFO would
/// block the read until a writer came, a device may never end, and a huge
/// file would be held whole in memory. A symbolic link to a regular file is
/// followed. The buffer is zeroized when dropped, as it may hold a private
/// key.
pub(crate) fn read_checked(
    path: &Path,
    role: KeyDirFile,
    limit: u64,
) -> Result<(zeroize::Zeroizing<Vec<u8>>, fs::Metadata), Checked> {
    // Looked at before it is opened, since opening some devices acts on
    // them, and a socket cannot be opened at all.
    let before = fs::metadata(path).map_err(Checked::Io)?;
    check_metadata(path, role, limit, &before)?;
    let (mut file, metadata) = open_checked(path, role, limit)?;
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(metadata.len() as usize));
    // A file that grows while it is read is still read only up to the bound.
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(Checked::Io)?;
    if bytes.len() as u64 > limit {
        return Err(Checked::Refused(KeyDirError::TooLarge {
            role,
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit,
        }));
    }
    Ok((bytes, metadata))
}

/// Opens `path` for reading without waiting, and checks what was opened:
/// the file may have been replaced since it was looked at, and opening a
/// FIFO that no one writes to would otherwise wait forever.
pub(crate) fn open_checked(
    path: &Path,
    role: KeyDirFile,
    limit: u64,
) -> Result<(fs::File, fs::Metadata), Checked> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        nix::fcntl::OFlag::O_NONBLOCK.bits(),
    );
    let file = options.open(path).map_err(Checked::Io)?;
    let metadata = file.metadata().map_err(Checked::Io)?;
    check_metadata(path, role, limit, &metadata)?;
    Ok((file, metadata))
}

/// Refuses what `metadata` shows is not a regular file of at most `limit`
/// bytes.
fn check_metadata(
    path: &Path,
    role: KeyDirFile,
    limit: u64,
    metadata: &fs::Metadata,
) -> Result<(), Checked> {
    if let Some(kind) = FileKind::of(metadata) {
        return Err(Checked::Refused(KeyDirError::NotAFile {
            role,
            path: path.to_owned(),
            kind,
        }));
    }
    if metadata.len() > limit {
        return Err(Checked::Refused(KeyDirError::TooLarge {
            role,
            path: path.to_owned(),
            size: metadata.len(),
            limit,
        }));
    }
    Ok(())
}

/// Flushes a directory's entries to the disk (a no-op where a directory
/// cannot be opened as a file).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// created with `mode`, synced, then moved into place, and the directory
/// synced: readers never see a half-written file, and a power cut loses
/// neither the bytes nor the name. Without `replace`, an existing `path` is an error.
pub(crate) fn write_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    replace: bool,
) -> Result<(), KeyDirError> {
    let write_err = |source| KeyDirError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let result = (|| {
        fs::create_dir_all(dir)?;
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if replace {
            fs::rename(&tmp, path)?;
        } else {
            // A hard link fails if `path` appeared meanwhile: never clobber.
            fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp))?;
        }
        // The new name must survive a power cut too, not only the bytes.
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyDirError::Exists {
                path: path.to_owned(),
            }
        } else {
            write_err(e)
        }
    })
}
