//! The server crate's one error type, grouped by how the operator must react.

/// A result whose error is the server's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a node, by how the operator must react.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing, malformed or out of range: fix the flag, variable or file the
    /// message names, and start again.
    #[error("{0}")]
    Config(String),
    /// The node could not start: fix what the message names (an address in use, a data
    /// directory that is locked, unreadable or damaged) and start again.
    #[error("{what}: {source}")]
    Start {
        /// What the node was doing.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The node stopped on a storage failure after it started. Look at the disk and the log
    /// before starting it again: writes after the failure were not acknowledged.
    #[error("{0}")]
    Stopped(String),
}

impl Error {
    /// An [`Error::Start`] for `what`, caused by `source`.
    pub fn start(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Start { what: what.into(), source: Box::new(source) }
    }
}
