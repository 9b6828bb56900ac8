//! `IpsetBatch` and the `ipset_*` management functions of `hrneo._core`.
//! Every kernel exchange runs with the GIL released, then checks signals.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::errors::to_pyerr;
use crate::ipset::{self, CreateSpec, Entry, Ipset, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::Result;

/// Run `f` without the GIL, then let a pending Ctrl-C surface.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    let out = py.detach(f).map_err(to_pyerr);
    py.check_signals()?;
    out
}

fn session<T: Send>(py: Python<'_>, f: impl FnOnce(&mut Ipset) -> Result<T> + Send) -> PyResult<T> {
    detached(py, || f(&mut Ipset::open()?))
}

#[pyclass(module = "hrneo._core", name = "IpsetBatch")]
pub struct PyIpsetBatch {
    inner: ipset::IpsetBatch,
}

#[pymethods]
impl PyIpsetBatch {
    #[new]
    #[pyo3(signature = (set_name, *, timeout = None))]
    fn new(py: Python<'_>, set_name: &str, timeout: Option<u32>) -> PyResult<Self> {
        let inner = detached(py, || ipset::IpsetBatch::new(set_name, timeout))?;
        Ok(PyIpsetBatch { inner })
    }

    #[getter]
    fn set_name(&self) -> &str {
        self.inner.set_name()
    }

    #[getter]
    fn timeout(&self) -> Option<u32> {
        self.inner.timeout()
    }

    /// Queue an IPv4/IPv6 address, or a network for hash:net sets. ValueError if unparsable.
    fn add(&mut self, ip: &str) -> PyResult<()> {
        self.inner.add(ip).map_err(to_pyerr)
    }

    fn extend(&mut self, ips: &Bound<'_, PyAny>) -> PyResult<()> {
        for item in ips.try_iter()? {
            let item = item?;
            let text: String = item.extract()?;
            self.inner.add(&text).map_err(to_pyerr)?;
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn clear(&mut self) {
        self.inner.clear()
    }

    /// Send the queue to the kernel; return the addresses that were not present
    /// (or had expired). Present entries of a timeout set get their timeout refreshed.
    /// On a kernel error for some entries (set full, ...), the exception's `new`
    /// attribute lists the entries that were new all the same.
    fn commit(&mut self, py: Python<'_>) -> PyResult<Vec<String>> {
        let inner = &mut self.inner;
        match detached(py, || inner.commit()) {
            Ok(new) => Ok(new),
            Err(err) => {
                err.value(py).setattr("new", self.inner.take_partial_new())?;
                Err(err)
            }
        }
    }

    fn __repr__(&self) -> String {
        format!("<IpsetBatch {:?} queued={}>", self.inner.set_name(), self.inner.len())
    }
}

fn family_code(family: &str) -> PyResult<u8> {
    match family {
        "inet" | "ipv4" => Ok(NFPROTO_IPV4),
        "inet6" | "ipv6" => Ok(NFPROTO_IPV6),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "family must be 'inet' or 'inet6', not {other:?}"
        ))),
    }
}

#[pyfunction]
#[pyo3(signature = (name, settype = "hash:net", family = "inet", *, timeout = None, maxelem = None, exist_ok = false))]
fn ipset_create(
    py: Python<'_>,
    name: &str,
    settype: &str,
    family: &str,
    timeout: Option<u32>,
    maxelem: Option<u32>,
    exist_ok: bool,
) -> PyResult<()> {
    let spec = CreateSpec { name, settype, family: family_code(family)?, timeout, maxelem };
    session(py, |s| s.create(&spec, exist_ok))
}

#[pyfunction]
fn ipset_exists(py: Python<'_>, name: &str) -> PyResult<bool> {
    session(py, |s| s.exists(name))
}

#[pyfunction]
fn ipset_info<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
    let (h, entries) = session(py, |s| {
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

#[pyfunction]
fn ipset_test(py: Python<'_>, name: &str, ip: &str) -> PyResult<bool> {
    let e = Entry::parse(ip).map_err(to_pyerr)?;
    session(py, |s| s.test(name, &e))
}

#[pyfunction]
fn ipset_list(py: Python<'_>, name: &str) -> PyResult<Vec<String>> {
    session(py, |s| Ok(s.list(name)?.1.iter().map(|e| e.to_string()).collect()))
}

#[pyfunction]
fn ipset_flush(py: Python<'_>, name: &str) -> PyResult<()> {
    session(py, |s| s.flush(name))
}

#[pyfunction]
fn ipset_destroy(py: Python<'_>, name: &str) -> PyResult<()> {
    session(py, |s| s.destroy(name))
}

#[pyfunction]
fn ipset_swap(py: Python<'_>, name_a: &str, name_b: &str) -> PyResult<()> {
    session(py, |s| s.swap(name_a, name_b))
}

/// The netlink datagram of ADD messages `IpsetBatch.commit()` would send first
/// (no kernel involved): for tools, tests and checking byte order on a new platform.
#[pyfunction]
#[pyo3(signature = (set_name, ips, *, timeout = None, excl = true, seq = 1))]
fn ipset_add_message(
    py: Python<'_>,
    set_name: &str,
    ips: Vec<String>,
    timeout: Option<u32>,
    excl: bool,
    seq: u32,
) -> PyResult<Py<pyo3::types::PyBytes>> {
    let entries =
        ips.iter().map(|t| Entry::parse(t)).collect::<Result<Vec<_>>>().map_err(to_pyerr)?;
    let bytes = ipset::add_datagram(set_name, &entries, timeout, excl, seq).map_err(to_pyerr)?;
    Ok(pyo3::types::PyBytes::new(py, &bytes).unbind())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyIpsetBatch>()?;
    m.add_function(wrap_pyfunction!(ipset_create, m)?)?;
    m.add_function(wrap_pyfunction!(ipset_exists, m)?)?;
    m.add_function(wrap_pyfunction!(ipset_info, m)?)?;
    m.add_function(wrap_pyfunction!(ipset_test, m)?)?;
    m.add_function(wrap_pyfunction!(ipset_list, m)?)?;
    m.add_function(wrap_pyfunction!(ipset_flush, m)?)?;
    m.add_function(wrap_pyfunction!(ipset_destroy, m)?)?;
    m.add_function(wrap_pyfunction!(ipset_swap, m)?)?;
    m.add_function(wrap_pyfunction!(ipset_add_message, m)?)?;
    Ok(())
}
