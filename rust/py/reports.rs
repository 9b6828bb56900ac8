//! What a pipeline reports, as the Python dicts `hrneo.status` and `hrneo.why`
//! type: `Pipeline.stats()` (`PipelineStats`), `Pipeline.why()` (`WhyRecord`)
//! and `Pipeline.blind_clients()` (`BlindReport`).

use std::net::IpAddr;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::dns::TcpStats;
use crate::{
    CaptureStats, ClientCount, Counters, FlushTotals, HoldStats, Pipeline, PolicyCounters,
    WhyRecord,
};

/// A dict of `(name, count)` pairs.
fn counts<'py>(
    py: Python<'py>,
    pairs: impl IntoIterator<Item = (&'static str, u64)>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in pairs {
        d.set_item(k, v)?;
    }
    Ok(d)
}

/// Every counter of a pipeline, taken under its lock; made into dicts after.
pub(super) struct StatsSnapshot {
    counters: Counters,
    tcp: TcpStats,
    hold: Option<HoldStats>,
    capture: CaptureStats,
    policies: Vec<(String, PolicyCounters)>,
    flush: Option<FlushTotals>,
    pending: usize,
    tracking: bool,
}

impl StatsSnapshot {
    pub(super) fn of(p: &Pipeline) -> Self {
        StatsSnapshot {
            counters: p.counters(),
            tcp: p.tcp_stats(),
            hold: p.hold_stats(),
            capture: p.capture_stats(),
            policies: p.policy_counters(),
            flush: p.flush_totals(),
            pending: p.flush_pending(),
            tracking: p.flush_tracking(),
        }
    }

    /// The pipeline's counters, the capture socket's ("capture"), DNS-over-TCP
    /// reassembly's ("tcp"), holding's ("hold", None over NFLOG), each policy's
    /// ("policies", by name) and the conntrack thread's ("conntrack", None
    /// without one).
    pub(super) fn into_dict(self, py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let d = counts(py, self.counters.as_pairs())?;
        let c = self.capture;
        let capture = [
            ("packets", c.packets),
            ("dropped", c.dropped),
            ("enobufs", c.enobufs),
            ("datagrams", c.datagrams),
            ("malformed", c.malformed),
        ];
        d.set_item("capture", counts(py, capture)?)?;
        d.set_item("tcp", counts(py, self.tcp.as_pairs())?)?;
        match self.hold {
            None => d.set_item("hold", py.None())?,
            Some(h) => d.set_item("hold", counts(py, h.as_pairs())?)?,
        }
        let pd = PyDict::new(py);
        for (name, pc) in self.policies {
            pd.set_item(name, counts(py, pc.as_pairs())?)?;
        }
        d.set_item("policies", pd)?;
        match self.flush {
            None => d.set_item("conntrack", py.None())?,
            Some(t) => {
                let ct = PyDict::new(py);
                ct.set_item("calls", t.calls)?;
                ct.set_item("flushed", t.flushed)?;
                ct.set_item("errors", t.errors)?;
                ct.set_item("race_misses", t.race_misses)?;
                ct.set_item("pending", self.pending)?;
                ct.set_item("tracking", self.tracking)?;
                ct.set_item("flusher", counts(py, t.flusher.as_pairs())?)?;
                d.set_item("conntrack", ct)?;
            }
        }
        Ok(d)
    }
}

/// One record of `Pipeline.why()`.
pub(super) fn why_dict(py: Python<'_>, r: WhyRecord) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("set", &*r.set)?;
    d.set_item("policy", &*r.policy)?;
    d.set_item("qname", r.qname)?;
    d.set_item("names", r.names)?;
    d.set_item("rule", r.rule)?;
    d.set_item("first_seen", r.first_seen)?;
    d.set_item("last_seen", r.last_seen)?;
    d.set_item("answers", r.answers)?;
    d.set_item("added", r.added)?;
    Ok(d)
}

/// `Pipeline.blind_clients()`: {"clients": [{"client", "connections", "blind",
/// "last_blind"}, ...] (most blind first), "uncounted"}.
pub(super) fn blind_dict(
    py: Python<'_>,
    clients: Vec<(IpAddr, ClientCount)>,
    uncounted: u64,
) -> PyResult<Bound<'_, PyDict>> {
    let list = clients
        .into_iter()
        .map(|(ip, c)| {
            let d = PyDict::new(py);
            d.set_item("client", ip.to_string())?;
            d.set_item("connections", c.connections)?;
            d.set_item("blind", c.blind)?;
            d.set_item("last_blind", c.last_blind.map(|a| a.to_string()))?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    let d = PyDict::new(py);
    d.set_item("clients", list)?;
    d.set_item("uncounted", uncounted)?;
    Ok(d)
}
