//! The local API's socket: where it is, and taking it over at start.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Why the socket cannot be listened on.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Something that is not a socket is at the path: never removed.
    #[error("{} exists and is not a socket: the local API does not replace it; move it away or set [local] socket", .path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A live process answers on the socket.
    #[error("another process is listening on {}: is another node using this socket? set [local] socket to another path", .path.display())]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// Binding, removing the stale socket or setting its mode failed.
    #[error("cannot listen on {}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The socket's default path: `$RUNTIME_DIRECTORY/sage.sock` under
/// systemd (its first directory), else `STATE_DIR/sage.sock`.
pub fn default_socket(state_dir: &Path) -> PathBuf {
    let runtime = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|dirs| {
            dirs.to_str()
                .and_then(|d| d.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|dir| !dir.as_os_str().is_empty());
    runtime
        .unwrap_or_else(|| state_dir.to_owned())
        .join("sage.sock")
}

/// Listens on `path` with mode 0660. A socket left by a node that stopped
/// (no one answers on it) is removed first; a live one, or anything but a
/// socket, is refused. Must run within a tokio runtime.
///
/// # Errors
/// [`SocketError`].
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    let io = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(io)?;
            tracing::info!(path = %path.display(), "removed the stale socket of a stopped node");
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
    // Connecting needs write permission: the owner and its group may; the
    // caller check decides who is served.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}
