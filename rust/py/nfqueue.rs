//! `NfqueueReader` for Python: hold mode. DNS answers are held in the kernel
//! until accepted; each event carries the id of its packet.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::dns::DnsEvent;
use super::guarded::Guarded;
use super::nflog::{read_events, stats_pairs};
use crate::{DnsEventReader, NfqueueConfig};

/// Reads DNS packets queued by the kernel's NFQUEUE target (nfnetlink_queue)
/// and holds them until `accept`.
#[pyclass(module = "hrneo._core", name = "NfqueueReader", frozen)]
pub struct PyNfqueueReader {
    inner: Guarded<DnsEventReader>,
    queue_num: u16,
    fd: i32,
    notes: Vec<String>,
}

#[pymethods]
impl PyNfqueueReader {
    #[new]
    #[pyo3(signature = (queue_num, *, hold_max_ms = 50, rcvbuf = 8 * 1024 * 1024, copy_range = 0xFFFF, maxlen = 65_536))]
    fn new(
        py: Python<'_>,
        queue_num: u16,
        hold_max_ms: u64,
        rcvbuf: usize,
        copy_range: u32,
        maxlen: u32,
    ) -> PyResult<Self> {
        if !(1..=60_000).contains(&hold_max_ms) {
            return Err(PyValueError::new_err(format!(
                "hold_max_ms must be 1-60000, not {hold_max_ms}"
            )));
        }
        let cfg = NfqueueConfig {
            queue: queue_num,
            rcvbuf,
            copy_range,
            maxlen,
            hold_max: Duration::from_millis(hold_max_ms),
        };
        let mut reader = py.detach(|| DnsEventReader::open_queue(cfg))?;
        let notes = reader.take_notes();
        let fd = reader.fd();
        Ok(PyNfqueueReader { inner: Guarded::new(reader, "NfqueueReader"), queue_num, fd, notes })
    }

    fn fileno(&self) -> PyResult<i32> {
        if self.inner.is_closed() {
            return Err(PyValueError::new_err("NfqueueReader is closed"));
        }
        Ok(self.fd)
    }

    /// The queue this reader is bound to.
    #[getter]
    fn queue_num(&self) -> u16 {
        self.queue_num
    }

    /// What the bind found missing in this kernel (fail-open or GSO flags).
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// Events with their `packet_id`; packets with no DNS message are accepted at once.
    #[pyo3(signature = (max_events = 1024, timeout = None))]
    fn read(
        &self,
        py: Python<'_>,
        max_events: usize,
        timeout: Option<f64>,
    ) -> PyResult<Vec<DnsEvent>> {
        read_events(py, &self.inner, max_events, timeout)
    }

    /// Let the packets with these ids go on (ids already released are ignored).
    fn accept(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<()> {
        self.inner.detached(py, |r| r.accept(&ids))
    }

    /// Let every packet read so far go on.
    fn accept_all(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.detached(py, DnsEventReader::accept_all)
    }

    /// The counters of `NflogReader.stats()`, and of holding: held, released,
    /// outstanding, hold_timeouts, fail_opens, verdict_errors, hold_p50_us,
    /// hold_p99_us, hold_max_us.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (mut pairs, hold) = self.inner.with(|r| Ok((stats_pairs(r), r.hold_stats())))?;
        if let Some(h) = hold {
            pairs.extend([
                ("held", h.held),
                ("released", h.released),
                ("outstanding", h.outstanding),
                ("hold_timeouts", h.timeouts),
                ("fail_opens", h.fail_opens),
                ("verdict_errors", h.verdict_errors),
                ("hold_p50_us", h.p50_us),
                ("hold_p99_us", h.p99_us),
                ("hold_max_us", h.max_us),
            ]);
        }
        let d = PyDict::new(py);
        pairs.into_iter().try_for_each(|(k, v)| d.set_item(k, v))?;
        Ok(d)
    }

    /// Accept everything queued, then unbind the queue.
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
