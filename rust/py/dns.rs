//! `DnsEvent`, `DnsAnswer` and `parse_packet` for Python.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::dns;

/// One answer record reachable from the question.
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

/// A DNS message seen in a packet.
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
    hints: Vec<String>,
    min_ttl: u32,
    packet_id: Option<u32>,
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

pub(super) fn to_py_event(py: Python<'_>, e: dns::DnsEvent) -> PyResult<DnsEvent> {
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
        hints: m.hints.iter().map(|a| a.to_string()).collect(),
        min_ttl: m.min_ttl,
        packet_id: e.held,
    })
}

/// Parse one IPv4/IPv6 packet (UDP or TCP, port 53). None if it is not DNS.
#[pyfunction]
pub fn parse_packet(py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<Option<DnsEvent>> {
    match dns::parse_packet(data.as_bytes()) {
        Ok(e) => Ok(Some(to_py_event(py, e)?)),
        Err(_) => Ok(None),
    }
}
