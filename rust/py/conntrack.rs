//! `ConntrackFlusher` for Python: a thin wrapper over `crate::ConntrackFlusher`.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::guarded::Guarded;
use crate::conntrack::{parse_addrs, EVENT_RCVBUF};
use crate::ConntrackFlusher;

/// Deletes conntrack entries by destination address: one dump per call, or with
/// `track=True` a lookup in an index kept from conntrack events.
#[pyclass(module = "hrneo._core", name = "ConntrackFlusher", frozen)]
pub struct PyConntrackFlusher {
    // The GIL is released during a flush, so another Python thread may call in:
    // the lock serialises them on the sockets and the index.
    inner: Guarded<ConntrackFlusher>,
    // Outside the lock: fileno() must not wait for a running flush.
    event_fd: Option<i32>,
}

#[pymethods]
impl PyConntrackFlusher {
    #[new]
    #[pyo3(signature = (*, track = false, event_rcvbuf = None))]
    fn new(py: Python<'_>, track: bool, event_rcvbuf: Option<usize>) -> PyResult<Self> {
        // The initial dump of a tracking flusher takes a while on a big table.
        let inner = py.detach(|| {
            if track {
                ConntrackFlusher::open_tracking(event_rcvbuf.unwrap_or(EVENT_RCVBUF))
            } else {
                ConntrackFlusher::open()
            }
        })?;
        let event_fd = inner.event_fd();
        Ok(PyConntrackFlusher { inner: Guarded::new(inner, "ConntrackFlusher"), event_fd })
    }

    /// The event socket's descriptor (for a selector), None when not tracking.
    fn fileno(&self) -> Option<i32> {
        self.event_fd
    }

    /// Read the queued conntrack events into the index; returns how many.
    fn poll_events(&self, py: Python<'_>) -> PyResult<u64> {
        self.inner.detached(py, |f| f.poll_events())
    }

    /// Delete every entry whose original destination or reply source is in `ips`.
    /// Returns the number of entries deleted.
    fn flush(&self, py: Python<'_>, ips: &Bound<'_, PyAny>) -> PyResult<u64> {
        if ips.is_instance_of::<pyo3::types::PyString>() {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "flush() takes an iterable of addresses, not a str",
            ));
        }
        let texts = ips
            .try_iter()?
            .map(|item| item?.extract::<String>())
            .collect::<PyResult<Vec<String>>>()?;
        let addrs = parse_addrs(&texts)?;
        if addrs.is_empty() {
            return Ok(0);
        }
        self.inner.detached(py, |f| f.flush(&addrs))
    }

    /// Counters: calls, dumped, matched, deleted, already_gone, errors, unparsed,
    /// tracking, index_entries, events, resyncs, lost, index_lookups, index_full,
    /// dns_filtered (`hrneo.status.FlusherStats`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Detached: a flush in another thread holds the lock for a while.
        let s = self.inner.detached(py, |f| Ok(f.stats()))?;
        let d = PyDict::new(py);
        for (k, v) in s.as_pairs() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn close(&self, py: Python<'_>) {
        self.inner.close(py);
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.close(py);
    }

    fn __repr__(&self) -> String {
        match self.inner.with(|f| Ok(f.stats())) {
            Ok(s) => format!("<ConntrackFlusher calls={} deleted={}>", s.calls, s.deleted),
            Err(_) => "<ConntrackFlusher (closed)>".to_string(),
        }
    }
}
