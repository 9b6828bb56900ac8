//! `Pipeline` for Python: it takes over a `Plan` (see `plan`) and runs the hot
//! path with the GIL released; what it reports becomes dicts in `reports`.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::guarded::Guarded;
use super::plan::{learned_dict, saved_entries, PyPlan};
use super::reports::{blind_dict, why_dict, StatsSnapshot};
use crate::conntrack::EVENT_RCVBUF;
use crate::{
    ConntrackFlusher, Entry, Error, Flusher, Level, NflogConfig, NflogReader, NfqueueConfig,
    NfqueueReader, Notes, PacketSource, Pipeline, Result, Wake,
};

/// Reader, plan and conntrack thread: the daemon's hot path (see the Rust docs).
#[pyclass(module = "hrneo._core", name = "Pipeline", frozen)]
pub struct PyPipeline {
    inner: Guarded<Pipeline>,
    // Outside the lock, and kept after close(): the last lines are read then.
    notes: Notes,
}

/// Which packet source a pipeline reads.
enum SourceSpec {
    Nflog(NflogConfig),
    Nfqueue(NfqueueConfig),
}

impl SourceSpec {
    fn parse(
        capture: &str,
        group: u16,
        queue: u16,
        hold_max_ms: u64,
        rcvbuf: usize,
    ) -> Result<Self> {
        match capture {
            "nflog" => {
                let mut cfg = NflogConfig::new(group);
                cfg.rcvbuf = rcvbuf;
                Ok(SourceSpec::Nflog(cfg))
            }
            "nfqueue" if (1..=60_000).contains(&hold_max_ms) => {
                let mut cfg = NfqueueConfig::new(queue);
                cfg.hold_max = Duration::from_millis(hold_max_ms);
                cfg.rcvbuf = cfg.rcvbuf.max(rcvbuf);
                Ok(SourceSpec::Nfqueue(cfg))
            }
            "nfqueue" => Err(Error::InvalidArgument(format!(
                "hold_max_ms must be 1-60000, not {hold_max_ms}"
            ))),
            other => Err(Error::InvalidArgument(format!(
                "capture must be 'nflog' or 'nfqueue', not {other:?}"
            ))),
        }
    }

    fn open(self) -> Result<Box<dyn PacketSource>> {
        Ok(match self {
            SourceSpec::Nflog(cfg) => Box::new(NflogReader::open(cfg)?),
            SourceSpec::Nfqueue(cfg) => Box::new(NfqueueReader::open(cfg)?),
        })
    }
}

/// The conntrack flusher of a mode, and a line to log about it.
type OpenedFlusher = (Option<Box<dyn Flusher>>, Option<String>);

fn open_flusher(mode: &str) -> Result<OpenedFlusher> {
    let open = match mode {
        "off" => return Ok((None, None)),
        "events" => ConntrackFlusher::open_tracking(EVENT_RCVBUF),
        "dump" => ConntrackFlusher::open(),
        other => {
            return Err(Error::InvalidArgument(format!(
                "conntrack must be 'events', 'dump' or 'off', not {other:?}"
            )))
        }
    };
    match open {
        Ok(f) => {
            let note = match (mode, f.event_fd()) {
                ("events", None) => {
                    Some("conntrack: no conntrack events here: each flush dumps the table")
                }
                ("events", Some(_)) => {
                    Some("conntrack: flushes use an index kept from conntrack events")
                }
                _ => None,
            };
            Ok((Some(Box::new(f)), note.map(str::to_string)))
        }
        Err(e) => Ok((None, Some(format!("conntrack unavailable ({e}): reconnect is off")))),
    }
}

#[pymethods]
impl PyPipeline {
    /// Bind the capture source, start the conntrack thread (`conntrack`:
    /// "events" keeps an index from conntrack events, "dump" dumps the table per
    /// flush, "off" never flushes), and take `plan` over. `capture` is "nflog"
    /// (copies from group `nflog_group`) or "nfqueue" (hold mode: answers held in
    /// queue `nfqueue_num` until their addresses are in the sets, `hold_max_ms` at most).
    #[new]
    #[pyo3(signature = (plan, *, nflog_group = 100, rcvbuf = 4 * 1024 * 1024, conntrack = "events", capture = "nflog", nfqueue_num = 100, hold_max_ms = 50))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        plan: &PyPlan,
        nflog_group: u16,
        rcvbuf: usize,
        conntrack: &str,
        capture: &str,
        nfqueue_num: u16,
        hold_max_ms: u64,
    ) -> PyResult<Self> {
        let spec = SourceSpec::parse(capture, nflog_group, nfqueue_num, hold_max_ms, rcvbuf)?;
        let plan = plan.inner.take(py).ok_or(Error::Closed("Plan"))?;
        let pipeline = py.detach(|| -> Result<Pipeline> {
            // The conntrack dump first: once the source is bound, answers wait
            // (held ones count against hold_max_ms) until the loop reads them.
            let (flusher, note) = open_flusher(conntrack)?;
            let source = spec.open()?;
            let p = Pipeline::new(source, plan, flusher)?;
            if let Some(n) = note {
                let level = if p.flush_totals().is_some() { Level::Info } else { Level::Warning };
                p.note(level, n);
            }
            Ok(p)
        })?;
        let notes = pipeline.notes();
        Ok(PyPipeline { inner: Guarded::new(pipeline, "Pipeline"), notes })
    }

    /// Wait for packets at most `timeout` seconds, processing them as they
    /// come; return early when `wake_fd` is readable ("wake"), a signal
    /// arrived ("signal") or a warning waits in `take_notes()` ("notes");
    /// "timeout" otherwise.
    #[pyo3(signature = (timeout, wake_fd = None))]
    fn run(&self, py: Python<'_>, timeout: f64, wake_fd: Option<i32>) -> PyResult<&'static str> {
        if !(timeout.is_finite() && timeout >= 0.0) {
            return Err(PyValueError::new_err(format!("bad timeout {timeout}")));
        }
        let t = Duration::from_secs_f64(timeout.min(86_400.0));
        let wake = self.inner.detached(py, |p| p.run(t, wake_fd))?;
        Ok(match wake {
            Wake::Timeout => "timeout",
            Wake::WakeFd => "wake",
            Wake::Interrupted => "signal",
            Wake::Notes => "notes",
        })
    }

    /// Process what is queued now, without waiting; returns the datagrams read.
    fn process_queued(&self, py: Python<'_>) -> PyResult<usize> {
        self.inner.detached(py, |p| Ok(p.process_queued(usize::MAX)))
    }

    /// Take `plan` over; the old plan's sockets are closed.
    fn swap_plan(&self, py: Python<'_>, plan: &PyPlan) -> PyResult<()> {
        let plan = plan.inner.take(py).ok_or(Error::Closed("Plan"))?;
        let old = self.inner.detached(py, |p| Ok(p.swap_plan(plan)))?;
        py.detach(move || drop(old));
        Ok(())
    }

    /// Read another source from now on (what the old one queued is processed
    /// first; a queue accepts everything it still holds before it unbinds).
    #[pyo3(signature = (number, *, capture = "nflog", hold_max_ms = 50, rcvbuf = 4 * 1024 * 1024))]
    fn swap_source(
        &self,
        py: Python<'_>,
        number: u16,
        capture: &str,
        hold_max_ms: u64,
        rcvbuf: usize,
    ) -> PyResult<()> {
        let spec = SourceSpec::parse(capture, number, number, hold_max_ms, rcvbuf)?;
        let old = self.inner.detached(py, |p| Ok(p.swap_source(spec.open()?)))?;
        py.detach(move || drop(old));
        Ok(())
    }

    /// What brought `address` into each set it was learned into: a dict per set
    /// (set, policy, qname, names, rule, first_seen, last_seen, answers, added);
    /// [] when no answer seen (among the last `WHY_RECORDS` addresses) carried it.
    fn why<'py>(&self, py: Python<'py>, address: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let addr: std::net::IpAddr = address
            .parse()
            .map_err(|_| PyValueError::new_err(format!("not an IP address: {address:?}")))?;
        let records = self.inner.with(|p| Ok(p.why(&addr)))?;
        records.into_iter().map(|r| why_dict(py, r)).collect()
    }

    /// Turn DNS-blind counting off (the counts so far are dropped) or on.
    fn set_dns_blind(&self, on: bool) -> PyResult<()> {
        self.inner.with(|p| {
            p.set_dns_blind(on);
            Ok(())
        })
    }

    /// DNS-blind counts: {"clients": [{"client", "connections", "blind",
    /// "last_blind"}, ...] (most blind first), "uncounted"}; None when not counted
    /// (off, or the conntrack thread follows no events).
    fn blind_clients<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some((clients, uncounted)) = self.inner.with(|p| Ok(p.blind_clients()))? else {
            return Ok(None);
        };
        blind_dict(py, clients, uncounted).map(Some)
    }

    /// Conntrack entries deleted for `address` so far (as a new address).
    fn flushed_for(&self, address: &str) -> PyResult<u64> {
        let addr: std::net::IpAddr = address
            .parse()
            .map_err(|_| PyValueError::new_err(format!("not an IP address: {address:?}")))?;
        self.inner.with(|p| Ok(p.flushed_for(&addr)))
    }

    /// A new longest hold, in ms (hold mode); False if the source holds nothing.
    fn set_hold_max(&self, hold_max_ms: u64) -> PyResult<bool> {
        if !(1..=60_000).contains(&hold_max_ms) {
            return Err(PyValueError::new_err(format!(
                "hold_max_ms must be 1-60000, not {hold_max_ms}"
            )));
        }
        self.inner.with(|p| Ok(p.set_hold_max(Duration::from_millis(hold_max_ms))))
    }

    /// Re-run `prepare()` of the plan in use: sets that vanished are created
    /// again, static entries re-added. Returns the lines to log.
    fn prepare(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.inner.detached(py, Pipeline::prepare_plan)
    }

    /// The learned entries of every set of the plan in use, by set name:
    /// members with time left that are no static entry, each with its seconds
    /// left (what a state file keeps across a reboot). One dump per set, on
    /// sockets of its own: the pipeline goes on committing meanwhile.
    fn learned<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // The lock only while the sockets are opened: the dumps (seconds for a
        // large nftables interval set) run beside the commits.
        let lister = self.inner.detached(py, |p| p.lister())?;
        let learned = py.detach(move || lister.learned())?;
        learned_dict(py, learned)
    }

    /// Put saved entries back into the sets of the plan in use: `state` maps a
    /// set name to its (entry, seconds left) pairs. Unknown sets, policies with
    /// timeout 0, static entries and the other family are skipped; times are
    /// capped at the policy's timeout; an entry already in its set keeps its
    /// own. Returns how many went in, and the lines to log of sets that refused some.
    fn restore(&self, py: Python<'_>, state: &Bound<'_, PyDict>) -> PyResult<(usize, Vec<String>)> {
        let saved = saved_entries(py, state)?;
        self.inner.detached(py, |p| Ok(p.restore(&saved)))
    }

    /// Only answers from these addresses or networks count from now on (empty: any).
    fn set_trusted(&self, nets: Vec<String>) -> PyResult<()> {
        let nets = nets.iter().map(|n| Entry::parse(n)).collect::<Result<Vec<_>>>()?;
        self.inner.with(|p| {
            p.set_trusted(nets);
            Ok(())
        })
    }

    /// Addresses in these networks never go into a set (the router's own, its
    /// resolvers and gateways); the classes that route nowhere are always out.
    fn set_protected(&self, nets: Vec<String>) -> PyResult<()> {
        let nets = nets.iter().map(|n| Entry::parse(n)).collect::<Result<Vec<_>>>()?;
        self.inner.with(|p| {
            p.set_protected(nets);
            Ok(())
        })
    }

    /// Queue a DEBUG line per address added (new "+" or refreshed "=").
    fn set_verbose(&self, verbose: bool) -> PyResult<()> {
        self.inner.with(|p| {
            p.set_verbose(verbose);
            Ok(())
        })
    }

    /// Log lines queued since the last call: (logging level, text). Works
    /// after close() too, for the lines closing left.
    fn take_notes(&self) -> Vec<(u8, String)> {
        self.notes.take().into_iter().map(|(l, s)| (l as u8, s)).collect()
    }

    /// Counters: the pipeline's, the capture socket's ("capture"), DNS-over-TCP
    /// reassembly's ("tcp"), holding's ("hold", None over NFLOG), each
    /// policy's ("policies", by name) and the conntrack thread's ("conntrack",
    /// None without one).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let snapshot = self.inner.with(|p| Ok(StatsSnapshot::of(p)))?;
        snapshot.into_dict(py)
    }

    /// Wait until every conntrack flush submitted so far is done; False on timeout.
    fn wait_flushed(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let t = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        self.inner.detached(py, |p| Ok(p.wait_flushed(t)))
    }

    /// Process what is queued, finish pending flushes (at most 5 s), close the sockets.
    fn close(&self, py: Python<'_>) {
        if let Some(mut p) = self.inner.take(py) {
            py.detach(move || {
                p.close();
                drop(p);
            });
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.close(py);
    }
}
