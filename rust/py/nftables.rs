//! `NftSetBatch`, `NftSetSession` and `nftset_add_message` for Python. Every
//! kernel exchange runs with the GIL released, then checks signals.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use super::guarded::Guarded;
use super::ipset::texts;
use crate::{
    kernel_refresh_mode, newsetelem_batch, Entry, Error, NftSetBatch, NftSetRef, NftSetSession,
    NftSetSpec, RefreshMode, Result,
};

/// Queue addresses for one nf_tables set; commit() adds them and returns the NEW ones.
#[pyclass(module = "hrneo._core", name = "NftSetBatch", frozen)]
pub struct PyNftSetBatch {
    inner: Guarded<NftSetBatch>,
    set_name: String,
    timeout: Option<u32>,
}

#[pymethods]
impl PyNftSetBatch {
    #[new]
    #[pyo3(signature = (set_name, *, timeout = None, refresh = "auto"))]
    fn new(py: Python<'_>, set_name: &str, timeout: Option<u32>, refresh: &str) -> PyResult<Self> {
        let set = NftSetRef::parse(set_name)?;
        let mode = RefreshMode::parse(refresh)?;
        let spec = set.spec();
        let mut inner = py.detach(|| NftSetBatch::new(set, timeout))?;
        inner.set_refresh(mode);
        Ok(PyNftSetBatch { inner: Guarded::new(inner, "NftSetBatch"), set_name: spec, timeout })
    }

    /// The set, as `family#table#name`.
    #[getter]
    fn set_name(&self) -> &str {
        &self.set_name
    }

    #[getter]
    fn timeout(&self) -> Option<u32> {
        self.timeout
    }

    /// How present elements get their timeout reset: "auto", "update" or "readd".
    #[getter]
    fn refresh(&self) -> PyResult<&'static str> {
        self.inner.with(|b| Ok(b.refresh().name()))
    }

    /// Queue an IPv4/IPv6 address, or a network for interval sets. ValueError if unparsable.
    fn add(&self, ip: &str) -> PyResult<()> {
        let e = Entry::parse(ip)?;
        self.inner.with(|b| {
            b.push(e);
            Ok(())
        })
    }

    /// Queue several; nothing is queued if one of them does not parse.
    fn extend(&self, ips: &Bound<'_, PyAny>) -> PyResult<()> {
        let entries = texts(ips)?.iter().map(|t| Entry::parse(t)).collect::<Result<Vec<_>>>()?;
        self.inner.with(|b| {
            entries.into_iter().for_each(|e| b.push(e));
            Ok(())
        })
    }

    fn __len__(&self) -> PyResult<usize> {
        self.inner.with(|b| Ok(b.len()))
    }

    fn clear(&self) -> PyResult<()> {
        self.inner.with(|b| {
            b.clear();
            Ok(())
        })
    }

    /// Send the queue to the kernel; return the addresses that were not present
    /// (or had expired). Present entries of a timeout set get their timeout reset.
    /// On a refusal of some entries (set full, ...), the exception's `new`
    /// attribute lists the entries that were new all the same.
    fn commit(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let new = self.inner.detached(py, |b| b.commit())?;
        Ok(new.iter().map(Entry::to_string).collect())
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
        let queued = self.inner.with(|b| Ok(b.len())).unwrap_or(0);
        format!("<NftSetBatch {:?} queued={queued}>", self.set_name)
    }
}

/// A netlink session for the kernel's nf_tables set verbs (one socket, reused).
#[pyclass(module = "hrneo._core", name = "NftSetSession", frozen)]
pub struct PyNftSetSession {
    inner: Guarded<NftSetSession>,
}

fn set_ref(set_name: &str) -> Result<NftSetRef> {
    NftSetRef::parse(set_name)
}

#[pymethods]
impl PyNftSetSession {
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let s = py.detach(NftSetSession::open)?;
        Ok(PyNftSetSession { inner: Guarded::new(s, "NftSetSession") })
    }

    /// Create an address set (and its table, if missing).
    #[pyo3(signature = (set_name, key = "ipv4_addr", *, interval = true, timeout = None, size = None, exist_ok = false))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        py: Python<'_>,
        set_name: &str,
        key: &str,
        interval: bool,
        timeout: Option<u32>,
        size: Option<u32>,
        exist_ok: bool,
    ) -> PyResult<()> {
        let set = set_ref(set_name)?;
        let ipv6 = match key {
            "ipv4_addr" => false,
            "ipv6_addr" => true,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "key must be 'ipv4_addr' or 'ipv6_addr', not {other:?}"
                ))
                .into())
            }
        };
        let spec = NftSetSpec { set: &set, ipv6, interval, timeout, size };
        self.inner.detached(py, |s| s.create(&spec, exist_ok))
    }

    /// Whether the set exists.
    fn exists(&self, py: Python<'_>, set_name: &str) -> PyResult<bool> {
        let set = set_ref(set_name)?;
        self.inner.detached(py, |s| s.exists(&set))
    }

    /// Whether table `family table` exists.
    fn table_exists(&self, py: Python<'_>, family: &str, table: &str) -> PyResult<bool> {
        let fam = crate::nftables::parse_family(family)?;
        self.inner.detached(py, |s| s.table_exists(fam, table))
    }

    /// Create table `family table` unless it exists.
    fn create_table(&self, py: Python<'_>, family: &str, table: &str) -> PyResult<()> {
        let fam = crate::nftables::parse_family(family)?;
        self.inner.detached(py, |s| s.create_table(fam, table))
    }

    /// family, table, name, key ("ipv4_addr"/"ipv6_addr"), interval, timeout
    /// (True/False: the set has `flags timeout`), default_timeout (seconds, None
    /// without one), size (None: no limit), handle, entries.
    fn info<'py>(&self, py: Python<'py>, set_name: &str) -> PyResult<Bound<'py, PyDict>> {
        let set = set_ref(set_name)?;
        let (info, entries) = self.inner.detached(py, |s| {
            let info = s.info(&set)?;
            let entries = s.members_with_expiry(&set)?.len();
            Ok((info, entries))
        })?;
        let d = PyDict::new(py);
        d.set_item("family", crate::nftables::family_name(info.set.family))?;
        d.set_item("table", &info.set.table)?;
        d.set_item("name", &info.set.name)?;
        d.set_item("key", info.type_name())?;
        d.set_item("interval", info.is_interval())?;
        d.set_item("timeout", info.has_timeout())?;
        d.set_item("default_timeout", info.timeout_ms.map(|ms| ms as f64 / 1000.0))?;
        d.set_item("size", info.size)?;
        d.set_item("handle", info.handle)?;
        d.set_item("entries", entries)?;
        Ok(d)
    }

    /// Whether `ip` is in the set (in an interval set: inside one of its intervals).
    fn test(&self, py: Python<'_>, set_name: &str, ip: &str) -> PyResult<bool> {
        let set = set_ref(set_name)?;
        let e = Entry::parse(ip)?;
        self.inner.detached(py, |s| s.test(&set, &e))
    }

    /// The members as text: addresses, networks as "a/len", other ranges as "a-b".
    fn members(&self, py: Python<'_>, set_name: &str) -> PyResult<Vec<String>> {
        let set = set_ref(set_name)?;
        self.inner.detached(py, |s| {
            Ok(s.members_with_expiry(&set)?.into_iter().map(|(m, _)| m).collect())
        })
    }

    /// Each member and the seconds it has left (None: it never expires).
    fn expiries(&self, py: Python<'_>, set_name: &str) -> PyResult<Vec<(String, Option<f64>)>> {
        let set = set_ref(set_name)?;
        self.inner.detached(py, |s| {
            Ok(s.members_with_expiry(&set)?
                .into_iter()
                .map(|(m, ms)| (m, ms.map(|ms| ms as f64 / 1000.0)))
                .collect())
        })
    }

    /// Remove every member.
    fn flush(&self, py: Python<'_>, set_name: &str) -> PyResult<()> {
        let set = set_ref(set_name)?;
        self.inner.detached(py, |s| s.flush(&set))
    }

    /// Destroy the set (the kernel refuses while a rule references it).
    fn destroy(&self, py: Python<'_>, set_name: &str) -> PyResult<()> {
        let set = set_ref(set_name)?;
        self.inner.detached(py, |s| s.destroy(&set))
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

/// The transaction `NftSetBatch.commit()` sends for entries found absent (no
/// kernel involved): BEGIN, NEWSETELEM messages of up to `per_message` entries,
/// END. For tools, tests and checking byte order on a new platform. `timeout`
/// in seconds.
#[pyfunction]
#[pyo3(signature = (set_name, ips, *, interval = true, timeout = None, seq = 1, per_message = 256))]
pub fn nftset_add_message<'py>(
    py: Python<'py>,
    set_name: &str,
    ips: Vec<String>,
    interval: bool,
    timeout: Option<u32>,
    seq: u32,
    per_message: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let set = set_ref(set_name)?;
    let entries = ips.iter().map(|t| Entry::parse(t)).collect::<Result<Vec<_>>>()?;
    let ms = timeout.map(|t| u64::from(t) * 1000);
    let bytes = newsetelem_batch(&set, &entries, interval, ms, seq, per_message)?;
    Ok(PyBytes::new(py, &bytes))
}

/// How this kernel resets the timeout of a present element, once a commit in
/// this process had to: "update" (a plain add, Linux 6.12+) or "readd"
/// (delete and add in one transaction); None before the first refresh.
#[pyfunction]
pub fn nft_refresh_mode() -> Option<&'static str> {
    kernel_refresh_mode().map(RefreshMode::name)
}
