//! `ConntrackFlusher` for Python: a thin wrapper over `crate::conntrack`.

use std::sync::Mutex;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::errors::to_pyerr;
use crate::conntrack;

/// Deletes conntrack entries by destination address (one dump per family per call).
#[pyclass(module = "hrneo._core", name = "ConntrackFlusher")]
pub struct ConntrackFlusher {
    // The GIL is released during a flush, so another Python thread may call in:
    // the mutex serialises them on the one socket.
    inner: Mutex<conntrack::ConntrackFlusher>,
}

fn poisoned() -> PyErr {
    PyRuntimeError::new_err("ConntrackFlusher: an earlier call panicked; make a new one")
}

#[pymethods]
impl ConntrackFlusher {
    #[new]
    fn new() -> PyResult<Self> {
        let inner = conntrack::ConntrackFlusher::open().map_err(to_pyerr)?;
        Ok(ConntrackFlusher { inner: Mutex::new(inner) })
    }

    /// Delete every entry whose original destination or reply source is in `ips`.
    /// Returns the number of entries deleted.
    fn flush(&self, py: Python<'_>, ips: &Bound<'_, PyAny>) -> PyResult<u64> {
        // A str is iterable too; its characters are never what the caller meant.
        if ips.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err("flush() takes an iterable of addresses, not a str"));
        }
        let texts = ips
            .try_iter()?
            .map(|item| item?.extract::<String>())
            .collect::<PyResult<Vec<String>>>()?;
        let addrs = conntrack::parse_addrs(&texts).map_err(to_pyerr)?;
        if addrs.is_empty() {
            return Ok(0);
        }
        let inner = &self.inner;
        let res = py.detach(|| match inner.lock() {
            Ok(mut f) => Ok(f.flush(&addrs)),
            Err(_) => Err(()),
        });
        py.check_signals()?;
        res.map_err(|()| poisoned())?.map_err(to_pyerr)
    }

    /// Counters: calls, dumped, matched, deleted, already_gone, errors, unparsed.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.lock().map_err(|_| poisoned())?.stats();
        let d = PyDict::new(py);
        for (k, v) in s.as_pairs() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        match self.inner.lock() {
            Ok(f) => {
                let s = f.stats();
                format!("<ConntrackFlusher calls={} deleted={}>", s.calls, s.deleted)
            }
            Err(_) => "<ConntrackFlusher (poisoned)>".to_string(),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ConntrackFlusher>()?;
    Ok(())
}
