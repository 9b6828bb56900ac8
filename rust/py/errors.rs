//! `crate::Error` -> Python exceptions.
//!
//! errno-carrying errors become `OSError(errno, msg)`, so Python picks the
//! subclass (`PermissionError`, `FileNotFoundError`, ...); ipset refusals
//! become `hrneo.errors.IpsetError` and nf_tables refusals `NftSetError` (both
//! `OSError`s, under `SetError`) with `set_name` and `new`; bad arguments
//! `ValueError`. The Python classes live in one Python module, so
//! `except hrneo.errors.HrneoError` catches every hrneo error.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::Error;

static IPSET_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static NFTSET_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// An instance of `hrneo.errors.<name>(code, msg, set, new)`; an `OSError`
/// with the code if the package could not be imported.
fn set_error(
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    code: i32,
    msg: String,
    set: String,
    new: Vec<String>,
) -> PyErr {
    Python::attach(|py| match cell.import(py, "hrneo.errors", name) {
        Ok(cls) => match cls.call1((code, msg.clone(), set, new)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        },
        // The package is always there beside its core; if it was not,
        // the error would still be an OSError with the kernel's code.
        Err(_) => PyOSError::new_err((code, msg)),
    })
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let msg = err.to_string();
        match err {
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(errno) => PyOSError::new_err((errno, msg)),
                None => PyOSError::new_err(msg),
            },
            Error::Ipset { set, code, new, .. } => {
                set_error(&IPSET_ERROR, "IpsetError", code, msg, set, new)
            }
            Error::Nftables { set, code, new, .. } => {
                set_error(&NFTSET_ERROR, "NftSetError", code, msg, set, new)
            }
            Error::InvalidArgument(_) | Error::Closed(_) => PyValueError::new_err(msg),
        }
    }
}
