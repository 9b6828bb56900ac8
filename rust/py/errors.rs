//! `crate::Error` → Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::Error;

create_exception!(
    hrneo._core,
    IpsetError,
    PyOSError,
    "The kernel refused an ipset request; `errno` holds the kernel's code, `set_name` the set."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("IpsetError", m.py().get_type::<IpsetError>())?;
    Ok(())
}

pub fn to_pyerr(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::Io { source, .. } => match source.raw_os_error() {
            // OSError(errno, msg) picks the subclass (PermissionError, FileNotFoundError...).
            Some(errno) => PyOSError::new_err((errno, msg)),
            None => PyOSError::new_err(msg),
        },
        Error::Ipset { set, code, .. } => Python::attach(|py| {
            let e = IpsetError::new_err((code, msg.clone()));
            let _ = e.value(py).setattr("set_name", set);
            e
        }),
        Error::InvalidArgument(_) => PyValueError::new_err(msg),
    }
}
