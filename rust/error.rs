//! The core's one error type. `py::errors` maps it onto Python exceptions:
//! errno-carrying variants become `OSError(errno, msg)` (so Python sees
//! `PermissionError`, `FileNotFoundError`, ...), ipset failures `IpsetError`.

use std::io;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or netlink exchange failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// The kernel's ipset code refused a request. `code` is the positive
    /// errno or IPSET_ERR_* value; `reason` says it in words.
    #[error("ipset '{set}': {reason}")]
    Ipset { set: String, code: i32, reason: String },

    /// An argument that could not be used (bad address, set name too long, ...).
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// The errno this error corresponds to, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Ipset { code, .. } => Some(*code),
            Error::InvalidArgument(_) => None,
        }
    }
}
