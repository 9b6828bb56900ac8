//! `IpsetBatch`, `IpsetSession` and `ipset_add_message` for Python. Every
//! kernel exchange runs with the GIL released, then checks signals.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use super::guarded::Guarded;
use crate::{add_datagram, CreateSpec, Entry, Family, IpsetBatch, IpsetSession, Result};

/// Queue addresses for one set; commit() adds them and returns the NEW ones.
#[pyclass(module = "hrneo._core", name = "IpsetBatch", frozen)]
pub struct PyIpsetBatch {
    inner: Guarded<IpsetBatch>,
    set_name: String,
    timeout: Option<u32>,
}

pub(super) fn texts(ips: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    // A str is iterable too; its characters are never what the caller meant.
    if ips.is_instance_of::<PyString>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "expected an iterable of addresses, not a str",
        ));
    }
    ips.try_iter()?.map(|item| item?.extract::<String>()).collect()
}

#[pymethods]
impl PyIpsetBatch {
    #[new]
    #[pyo3(signature = (set_name, *, timeout = None))]
    fn new(py: Python<'_>, set_name: &str, timeout: Option<u32>) -> PyResult<Self> {
        let inner = py.detach(|| IpsetBatch::new(set_name, timeout))?;
        Ok(PyIpsetBatch {
            inner: Guarded::new(inner, "IpsetBatch"),
            set_name: set_name.to_string(),
            timeout,
        })
    }

    #[getter]
    fn set_name(&self) -> &str {
        &self.set_name
    }

    #[getter]
    fn timeout(&self) -> Option<u32> {
        self.timeout
    }

    /// Queue an IPv4/IPv6 address, or a network for hash:net sets. ValueError if unparsable.
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
    /// (or had expired). Present entries of a timeout set get their timeout refreshed.
    /// On a kernel error for some entries (set full, ...), the exception's `new`
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
        format!("<IpsetBatch {:?} queued={queued}>", self.set_name)
    }
}

/// A netlink session for the kernel's ipset verbs (one socket, reused).
#[pyclass(module = "hrneo._core", name = "IpsetSession", frozen)]
pub struct PyIpsetSession {
    inner: Guarded<IpsetSession>,
}

#[pymethods]
impl PyIpsetSession {
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let s = py.detach(IpsetSession::open)?;
        Ok(PyIpsetSession { inner: Guarded::new(s, "IpsetSession") })
    }

    /// Create a hash:ip or hash:net set of family "inet" or "inet6".
    #[pyo3(signature = (name, settype = "hash:net", family = "inet", *, timeout = None, maxelem = None, exist_ok = false))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        py: Python<'_>,
        name: &str,
        settype: &str,
        family: &str,
        timeout: Option<u32>,
        maxelem: Option<u32>,
        exist_ok: bool,
    ) -> PyResult<()> {
        let family = Family::parse(family)?.nfproto();
        let spec = CreateSpec { name, settype, family, timeout, maxelem };
        self.inner.detached(py, |s| s.create(&spec, exist_ok))
    }

    /// Whether a set called `name` exists.
    fn exists(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        self.inner.detached(py, |s| s.exists(name))
    }

    /// The set's name, type, revision, family, timeout (None without timeout
    /// support), maxelem, hashsize, size (bytes), references and entries.
    fn info<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
        let (h, entries) = self.inner.detached(py, |s| {
            let h = s.header(name)?;
            // IPSET_ATTR_ELEMENTS is recent (4.14+): count the members on older kernels.
            let entries = match h.elements {
                Some(n) => n as usize,
                None => s.list(name)?.1.len(),
            };
            Ok((h, entries))
        })?;
        let d = PyDict::new(py);
        d.set_item("name", &h.name)?;
        d.set_item("type", &h.typename)?;
        d.set_item("revision", h.revision)?;
        d.set_item("family", h.family_name())?;
        d.set_item("timeout", h.timeout)?;
        d.set_item("maxelem", h.maxelem)?;
        d.set_item("hashsize", h.hashsize)?;
        d.set_item("size", h.memsize)?;
        d.set_item("references", h.references)?;
        d.set_item("entries", entries)?;
        Ok(d)
    }

    /// Whether `ip` (an address, or a network for hash:net) is in the set.
    fn test(&self, py: Python<'_>, name: &str, ip: &str) -> PyResult<bool> {
        let e = Entry::parse(ip)?;
        self.inner.detached(py, |s| s.test(name, &e))
    }

    /// The members as text; networks as "a/len", single addresses without a prefix.
    fn members(&self, py: Python<'_>, name: &str) -> PyResult<Vec<String>> {
        self.inner.detached(py, |s| Ok(s.list(name)?.1.iter().map(Entry::to_string).collect()))
    }

    /// Remove every member.
    fn flush(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.inner.detached(py, |s| s.flush(name))
    }

    /// Destroy the set (the kernel refuses while a rule references it).
    fn destroy(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.inner.detached(py, |s| s.destroy(name))
    }

    /// Exchange the contents (and names) of two sets of the same type.
    fn swap(&self, py: Python<'_>, name_a: &str, name_b: &str) -> PyResult<()> {
        self.inner.detached(py, |s| s.swap(name_a, name_b))
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

/// The netlink datagram of ADD messages `IpsetBatch.commit()` would send first
/// (no kernel involved): for tools, tests and checking byte order on a new platform.
#[pyfunction]
#[pyo3(signature = (set_name, ips, *, timeout = None, excl = true, seq = 1))]
pub fn ipset_add_message<'py>(
    py: Python<'py>,
    set_name: &str,
    ips: Vec<String>,
    timeout: Option<u32>,
    excl: bool,
    seq: u32,
) -> PyResult<Bound<'py, PyBytes>> {
    let entries = ips.iter().map(|t| Entry::parse(t)).collect::<Result<Vec<_>>>()?;
    let bytes = add_datagram(set_name, &entries, timeout, excl, seq)?;
    Ok(PyBytes::new(py, &bytes))
}

/// The core's ipset rules for the `ipset`-program fallback, so both paths
/// refuse the same entries with the same words.
pub mod rules {
    use pyo3::prelude::*;

    use crate::ipset::consts::{check_name, reason, NFPROTO_IPV4, NFPROTO_IPV6};
    use crate::{Entry, Family, SetHeader};

    /// The canonical text of an address or network (host bits cleared);
    /// ValueError if it is neither.
    #[pyfunction]
    #[pyo3(name = "_ipset_canonical")]
    pub fn canonical(text: &str) -> PyResult<String> {
        Ok(Entry::parse(text)?.to_string())
    }

    /// Why a set of `family` ("inet"/"inet6") and `settype` cannot take
    /// `entry`: (kernel code, words), or None.
    #[pyfunction]
    #[pyo3(name = "_ipset_refusal")]
    pub fn refusal(entry: &str, family: &str, settype: &str) -> PyResult<Option<(i32, String)>> {
        let family = match Family::parse(family)? {
            Family::Inet => NFPROTO_IPV4,
            Family::Inet6 => NFPROTO_IPV6,
        };
        let header = SetHeader { typename: settype.to_string(), family, ..Default::default() };
        match header.check_entry(&Entry::parse(entry)?) {
            Ok(()) => Ok(None),
            Err(crate::Error::Ipset { code, reason, .. }) => Ok(Some((code, reason))),
            Err(e) => Err(e.into()),
        }
    }

    /// The kernel's ipset (or errno) code in words.
    #[pyfunction]
    #[pyo3(name = "_ipset_reason")]
    pub fn code_reason(code: i32) -> String {
        reason(code)
    }

    /// ValueError unless `name` is a set name the kernel takes.
    #[pyfunction]
    #[pyo3(name = "_ipset_check_name")]
    pub fn valid_name(name: &str) -> PyResult<()> {
        Ok(check_name(name)?)
    }
}
