//! The core's one error type. The PyO3 layer maps it onto Python exceptions
//! (`impl From<Error> for PyErr` in `py::errors`): errno-carrying variants
//! become `OSError(errno, msg)` (so Python sees `PermissionError`,
//! `FileNotFoundError`, ...), ipset failures `hrneo.errors.IpsetError`,
//! nf_tables set failures `hrneo.errors.NftSetError`.

use std::io;

/// `Result` with the core's error.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or netlink exchange failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The kernel's ipset code refused a request. `code` is the positive
    /// errno or IPSET_ERR_* value; `reason` says it in words.
    #[error("ipset '{set}': {reason}")]
    Ipset {
        /// The set the request was for.
        set: String,
        /// errno or IPSET_ERR_* (positive).
        code: i32,
        /// The code in words.
        reason: String,
        /// For a batch commit that failed part-way: the entries that went in as
        /// new all the same (their conntrack flush is still due).
        new: Vec<String>,
    },

    /// The kernel's nf_tables code refused a request about a set. `code` is
    /// the positive errno; `reason` says it in words, for nf_tables.
    #[error("nftables set {set}: {reason}")]
    Nftables {
        /// The set, as `family table name`.
        set: String,
        /// errno (positive).
        code: i32,
        /// The code in words.
        reason: String,
        /// For a batch commit that failed part-way: the entries that went in as
        /// new all the same (their conntrack flush is still due).
        new: Vec<String>,
    },

    /// An argument that could not be used (bad address, set name too long, ...).
    #[error("{0}")]
    InvalidArgument(String),

    /// The object was closed; nothing can be done with it any more.
    #[error("{0} is closed")]
    Closed(&'static str),
}

impl Error {
    /// An `Io` error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// The errno this error corresponds to, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Ipset { code, .. } | Error::Nftables { code, .. } => Some(*code),
            Error::InvalidArgument(_) | Error::Closed(_) => None,
        }
    }
}
