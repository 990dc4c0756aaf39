//! The core's one error type, grouped by how the caller must react.

use std::path::PathBuf;

/// A result whose error is the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the core, by how the caller must react.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file holds bytes that fail their check somewhere other than a torn tail. Stop: an
    /// operator must look; nothing is skipped in silence.
    #[error("corrupt data in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// The byte offset of the damaged record in that file.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A request read `key`'s record and found it damaged on disk: the store answers that
    /// request with an error and stays up, or stops the node, as `corruption` says (see
    /// `kv::damage`). Outside a request it is [`Error::Corrupt`].
    #[error("damaged record of key {key:?} in {path} at offset {offset}: {reason}")]
    Damaged {
        /// The key whose record is damaged, as the store names it (physical).
        key: bytes::Bytes,
        /// The damaged file.
        path: PathBuf,
        /// The byte offset of the damaged record in that file.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The files in a data directory disagree with the list of segments its engine committed
    /// (the log engine's `MANIFEST`): a segment it lists is missing or not of the length it
    /// recorded when the segment was sealed, or a segment it does not list is there. Stop: an
    /// operator must look (put the file back, or move the stray one away); a missing or cut
    /// segment's records are never dropped, nor a stray one's used, in silence.
    #[error("{path} {reason}")]
    Inconsistent {
        /// The missing, changed or unexpected file.
        path: PathBuf,
        /// What is wrong with it, naming the manifest.
        reason: String,
    },
    /// An I/O call failed. Stop: the node cannot tell what reached the disk.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the engine was doing: "open", "write", "fsync", ...
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An earlier fsync or write failed and the engine refuses all writes since, because the
    /// kernel may have dropped the dirty pages (the PostgreSQL fsync lesson). Stop the node.
    #[error("storage stopped after an earlier failure: {0}")]
    Stopped(String),
    /// The caller's input breaks a limit or a rule; reject it and carry on.
    #[error("{0}")]
    InvalidInput(String),
}

impl Error {
    /// An [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { op, path: path.into(), source }
    }

    /// True when the node must stop rather than carry on (damaged or unknown disk state).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Error::InvalidInput(_))
    }

    /// This error as met while reading `key` for a request: an [`Error::Corrupt`] becomes an
    /// [`Error::Damaged`] naming the key; any other error is itself.
    pub fn reading(self, key: &[u8]) -> Error {
        match self {
            Error::Corrupt { path, offset, reason } => {
                Error::Damaged { key: bytes::Bytes::copy_from_slice(key), path, offset, reason }
            }
            other => other,
        }
    }
}
