//! `ConntrackFlusher` for Python: a thin wrapper over `crate::conntrack`.

use std::sync::Mutex;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::errors::to_pyerr;
use crate::conntrack;

/// Deletes conntrack entries by destination address: one dump per call, or with
/// `track=True` a lookup in an index kept from conntrack events.
#[pyclass(module = "hrneo._core", name = "ConntrackFlusher")]
pub struct ConntrackFlusher {
    // The GIL is released during a flush, so another Python thread may call in:
    // the mutex serialises them on the sockets and the index.
    inner: Mutex<conntrack::ConntrackFlusher>,
    // Outside the mutex: fileno() must not wait for a running flush.
    event_fd: Option<i32>,
}

fn poisoned() -> PyErr {
    PyRuntimeError::new_err("ConntrackFlusher: an earlier call panicked; make a new one")
}

#[pymethods]
impl ConntrackFlusher {
    #[new]
    #[pyo3(signature = (*, track = false, event_rcvbuf = None))]
    fn new(py: Python<'_>, track: bool, event_rcvbuf: Option<usize>) -> PyResult<Self> {
        let inner = if track {
            let rcvbuf = event_rcvbuf.unwrap_or(conntrack::EVENT_RCVBUF);
            // The initial dump takes a while on a big table.
            py.detach(|| conntrack::ConntrackFlusher::open_tracking(rcvbuf))
        } else {
            conntrack::ConntrackFlusher::open()
        }
        .map_err(to_pyerr)?;
        let event_fd = inner.event_fd();
        Ok(ConntrackFlusher { inner: Mutex::new(inner), event_fd })
    }

    /// The event socket's descriptor (for a selector), None when not tracking.
    fn fileno(&self) -> Option<i32> {
        self.event_fd
    }

    /// Read the queued conntrack events into the index; returns how many.
    fn poll_events(&self, py: Python<'_>) -> PyResult<u64> {
        let inner = &self.inner;
        let res = py.detach(|| match inner.lock() {
            Ok(mut f) => Ok(f.poll_events()),
            Err(_) => Err(()),
        });
        res.map_err(|()| poisoned())?.map_err(to_pyerr)
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

    /// Counters: calls, dumped, matched, deleted, already_gone, errors, unparsed,
    /// tracking, index_entries, events, resyncs, lost, index_lookups, index_full.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Detached: a flush in another thread holds the mutex for a while.
        let inner = &self.inner;
        let s = py.detach(|| inner.lock().map(|f| f.stats()).ok()).ok_or_else(poisoned)?;
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
