//! `NflogReader`, `DnsEvent`, `DnsAnswer` and `parse_packet` for Python.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::errors::to_pyerr;
use crate::dns;
use crate::nflog::{self, NflogConfig};

/// How often a waiting `read` wakes to let Python handle signals (Ctrl-C).
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

#[pyclass(module = "hrneo._core", frozen, get_all)]
pub struct DnsAnswer {
    name: String,
    rtype: String,
    ttl: u32,
    data: String,
}

#[pymethods]
impl DnsAnswer {
    fn __repr__(&self) -> String {
        format!("DnsAnswer({} {} {} {})", self.name, self.ttl, self.rtype, self.data)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<DnsAnswer>().is_ok_and(|o| {
            let o = o.get();
            (&o.name, &o.rtype, o.ttl, &o.data) == (&self.name, &self.rtype, self.ttl, &self.data)
        })
    }
}

#[pyclass(module = "hrneo._core", frozen, get_all)]
pub struct DnsEvent {
    is_response: bool,
    txid: u16,
    rcode: u16,
    qname: String,
    qtype: String,
    src: String,
    dst: String,
    sport: u16,
    dport: u16,
    transport: &'static str,
    answers: Vec<Py<DnsAnswer>>,
    chain: Vec<String>,
    addresses: Vec<String>,
    min_ttl: u32,
}

#[pymethods]
impl DnsEvent {
    fn __repr__(&self) -> String {
        format!(
            "DnsEvent({} txid={} rcode={} {} {} {}:{} -> {}:{} {} addresses={:?})",
            if self.is_response { "response" } else { "query" },
            self.txid,
            self.rcode,
            self.qname,
            self.qtype,
            self.src,
            self.sport,
            self.dst,
            self.dport,
            self.transport,
            self.addresses,
        )
    }
}

fn to_py_event(py: Python<'_>, e: dns::DnsEvent) -> PyResult<DnsEvent> {
    let m = e.msg;
    let answers = m
        .answers
        .into_iter()
        .map(|a| {
            Py::new(
                py,
                DnsAnswer { name: a.name, rtype: a.rtype.into_owned(), ttl: a.ttl, data: a.data },
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(DnsEvent {
        is_response: m.is_response,
        txid: m.txid,
        rcode: m.rcode,
        qname: m.qname,
        qtype: m.qtype.into_owned(),
        src: e.src.to_string(),
        dst: e.dst.to_string(),
        sport: e.sport,
        dport: e.dport,
        transport: e.transport.as_str(),
        answers,
        chain: m.chain,
        addresses: m.addresses.iter().map(|a| a.to_string()).collect(),
        min_ttl: m.min_ttl,
    })
}

/// Parse one IPv4/IPv6 packet (UDP or TCP, port 53). None if it is not DNS.
#[pyfunction]
fn parse_packet(py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<Option<DnsEvent>> {
    match dns::parse_packet(data.as_bytes()) {
        Ok(e) => Ok(Some(to_py_event(py, e)?)),
        Err(_) => Ok(None),
    }
}

#[pyclass(module = "hrneo._core", name = "NflogReader")]
pub struct PyNflogReader {
    inner: Option<nflog::NflogReader>,
}

impl PyNflogReader {
    fn reader(&mut self) -> PyResult<&mut nflog::NflogReader> {
        self.inner.as_mut().ok_or_else(|| PyValueError::new_err("NflogReader is closed"))
    }
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
        let reader = py.detach(|| nflog::NflogReader::open(cfg)).map_err(to_pyerr)?;
        Ok(PyNflogReader { inner: Some(reader) })
    }

    fn fileno(&mut self) -> PyResult<i32> {
        Ok(self.reader()?.fd())
    }

    #[pyo3(signature = (max_events = 1024, timeout = None))]
    fn read(
        &mut self,
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
        let reader = self.reader()?;
        loop {
            // Wait in short slices with the GIL released, so signals get handled.
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = left.map_or(SIGNAL_SLICE, |l| l.min(SIGNAL_SLICE));
            let ready = py.detach(|| reader.wait(Some(slice))).map_err(to_pyerr)?;
            if ready {
                let events = py.detach(|| reader.drain(max_events)).map_err(to_pyerr)?;
                if !events.is_empty() {
                    return events.into_iter().map(|e| to_py_event(py, e)).collect();
                }
            }
            py.check_signals()?;
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(Vec::new());
            }
        }
    }

    fn stats<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.reader()?.stats();
        let d = PyDict::new(py);
        for (k, v) in stats.as_pairs() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// The NFLOG group this reader is bound to.
    #[getter]
    fn group(&mut self) -> PyResult<u16> {
        Ok(self.reader()?.group())
    }

    fn close(&mut self, py: Python<'_>) {
        if let Some(r) = self.inner.take() {
            py.detach(|| drop(r));
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.close(py);
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DnsAnswer>()?;
    m.add_class::<DnsEvent>()?;
    m.add_class::<PyNflogReader>()?;
    m.add_function(wrap_pyfunction!(parse_packet, m)?)?;
    Ok(())
}
