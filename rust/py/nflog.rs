//! `NflogReader` for Python: DNS events from an NFLOG group.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::dns::{to_py_event, DnsEvent};
use super::guarded::Guarded;
use crate::{DnsEventReader, NflogConfig};

/// How often a waiting `read` wakes to let Python handle signals (Ctrl-C).
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

/// Reads DNS packets copied by the kernel's NFLOG target (nfnetlink_log).
#[pyclass(module = "hrneo._core", name = "NflogReader", frozen)]
pub struct PyNflogReader {
    inner: Guarded<DnsEventReader>,
    group: u16,
    fd: i32,
}

#[pymethods]
impl PyNflogReader {
    #[new]
    #[pyo3(signature = (group, *, rcvbuf = 4 * 1024 * 1024, copy_range = 0xFFFF, qthresh = 1, flush_timeout = 0))]
    fn new(
        py: Python<'_>,
        group: u16,
        rcvbuf: usize,
        copy_range: u32,
        qthresh: u32,
        flush_timeout: u32,
    ) -> PyResult<Self> {
        let cfg = NflogConfig { group, rcvbuf, copy_range, qthresh, flush_timeout };
        let reader = py.detach(|| DnsEventReader::open(cfg))?;
        let fd = reader.fd();
        Ok(PyNflogReader { inner: Guarded::new(reader, "NflogReader"), group, fd })
    }

    fn fileno(&self) -> PyResult<i32> {
        if self.inner.is_closed() {
            return Err(PyValueError::new_err("NflogReader is closed"));
        }
        Ok(self.fd)
    }

    /// The NFLOG group this reader is bound to.
    #[getter]
    fn group(&self) -> u16 {
        self.group
    }

    #[pyo3(signature = (max_events = 1024, timeout = None))]
    fn read(
        &self,
        py: Python<'_>,
        max_events: usize,
        timeout: Option<f64>,
    ) -> PyResult<Vec<DnsEvent>> {
        let deadline = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => {
                Some(Instant::now() + Duration::from_secs_f64(t.min(1e9)))
            }
            Some(t) => return Err(PyValueError::new_err(format!("bad timeout {t}"))),
        };
        loop {
            // Wait in short slices with the GIL released, so signals get handled.
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = left.map_or(SIGNAL_SLICE, |l| l.min(SIGNAL_SLICE));
            let events = self.inner.detached(py, |r| {
                if r.wait(Some(slice))? {
                    r.drain(max_events)
                } else {
                    Ok(Vec::new())
                }
            })?;
            if !events.is_empty() {
                return events.into_iter().map(|e| to_py_event(py, e)).collect();
            }
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(Vec::new());
            }
        }
    }

    /// Counters: packets, dns, responses, queries, malformed, incomplete,
    /// non_dns, dropped, enobufs, datagrams, and DNS-over-TCP reassembly's
    /// tcp_reassembled, tcp_flows, tcp_gaps, tcp_unfinished, tcp_dropped_bytes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (c, p, t) = self.inner.with(|r| Ok(r.stats()))?;
        let d = PyDict::new(py);
        for (k, v) in [
            ("packets", c.packets),
            ("dns", p.dns),
            ("responses", p.responses),
            ("queries", p.queries),
            ("malformed", p.malformed + c.malformed),
            ("incomplete", p.incomplete),
            ("non_dns", p.non_dns),
            ("dropped", c.dropped),
            ("enobufs", c.enobufs),
            ("datagrams", c.datagrams),
            ("tcp_reassembled", t.reassembled),
            ("tcp_flows", t.flows),
            ("tcp_gaps", t.gaps),
            ("tcp_unfinished", t.unfinished),
            ("tcp_dropped_bytes", t.dropped_bytes),
        ] {
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
}
