//! `Plan` for Python: a config compiled for the pipeline (the daemon builds one
//! from its config and hands it to a pipeline), and the conversions of a state
//! file's `{set name: [(entry, seconds left), ...]}` both ways.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::guarded::Guarded;
use super::watchlist::PyWatchlist;
use crate::{Entry, Learned, Plan, PolicySpec, Result};

/// The spec of one policy, read from any object with the config's attribute
/// names (`hrneo.config.Policy`): name, ipset, ipset6 (the `nftables` backend:
/// nft_set4, nft_set6), timeout, maxelem, reconnect, static.
fn policy_spec(p: &Bound<'_, PyAny>, nftables: bool) -> PyResult<PolicySpec> {
    let statics: Vec<String> = p.getattr("static")?.extract()?;
    let (a4, a6) = if nftables { ("nft_set4", "nft_set6") } else { ("ipset", "ipset6") };
    Ok(PolicySpec {
        name: p.getattr("name")?.extract()?,
        set4: p.getattr(a4)?.extract()?,
        set6: p.getattr(a6)?.extract()?,
        timeout: p.getattr("timeout")?.extract()?,
        maxelem: p.getattr("maxelem")?.extract()?,
        reconnect: p.getattr("reconnect")?.extract()?,
        statics: statics.iter().map(|s| Entry::parse(s)).collect::<Result<_>>()?,
    })
}

/// `{set name: [(address or network, seconds left), ...]}` as Python gives it
/// (a state file's content), parsed with the GIL released.
pub(super) fn saved_entries(py: Python<'_>, state: &Bound<'_, PyDict>) -> PyResult<Learned> {
    let raw: Vec<(String, Vec<(String, u32)>)> =
        state.iter().map(|(k, v)| Ok((k.extract()?, v.extract()?))).collect::<PyResult<_>>()?;
    let parsed = py.detach(|| {
        raw.into_iter()
            .map(|(set, entries)| {
                let entries = entries
                    .iter()
                    .map(|(e, t)| Ok((Entry::parse(e)?, *t)))
                    .collect::<Result<Vec<_>>>()?;
                Ok((set, entries))
            })
            .collect::<Result<Learned>>()
    })?;
    Ok(parsed)
}

/// `Learned` for Python: `{set name: [(entry, seconds left), ...]}`.
pub(super) fn learned_dict<'py>(py: Python<'py>, learned: Learned) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (set, entries) in learned {
        let items: Vec<(String, u32)> =
            entries.into_iter().map(|(e, t)| (e.to_string(), t)).collect();
        d.set_item(set, items)?;
    }
    Ok(d)
}

/// A config compiled for the pipeline: the watchlist, each policy's sets and a
/// netlink writer per set. `prepare()` makes the sets; a pipeline takes it over.
#[pyclass(module = "hrneo._core", name = "Plan", frozen)]
pub struct PyPlan {
    pub(super) inner: Guarded<Plan>,
    backend: &'static str,
}

#[pymethods]
impl PyPlan {
    /// `backend`: "ipset" (the policies' ipset/ipset6) or "nftables" (their
    /// nft_set4/nft_set6: `name` in `inet hrneo`, or `family#table#set`).
    #[new]
    #[pyo3(signature = (watchlist, policies, *, backend = "ipset"))]
    fn new(
        py: Python<'_>,
        watchlist: &PyWatchlist,
        policies: &Bound<'_, PyAny>,
        backend: &str,
    ) -> PyResult<Self> {
        let (nft, backend) = match backend {
            "ipset" => (false, "ipset"),
            "nftables" => (true, "nftables"),
            other => {
                return Err(PyValueError::new_err(format!(
                    "backend must be 'ipset' or 'nftables', not {other:?}"
                )))
            }
        };
        let specs =
            policies.try_iter()?.map(|p| policy_spec(&p?, nft)).collect::<PyResult<Vec<_>>>()?;
        let wl = watchlist.shared()?;
        let plan = py.detach(|| {
            if nft {
                Plan::with_nftables(wl, specs)
            } else {
                Plan::with_ipsets(wl, specs)
            }
        })?;
        Ok(PyPlan { inner: Guarded::new(plan, "Plan"), backend })
    }

    /// "ipset" or "nftables".
    #[getter]
    fn backend(&self) -> &'static str {
        self.backend
    }

    /// Create missing sets, check families, decide timeouts, add static
    /// entries. Returns the lines to log. Safe to call again (the periodic check).
    fn prepare(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.inner.detached(py, Plan::prepare)
    }

    /// Put saved entries back (after `prepare()`): `state` maps a set name to
    /// its (entry, seconds left) pairs. Returns how many went in, and the lines
    /// to log of sets that refused some (see `Pipeline.restore`).
    fn restore(&self, py: Python<'_>, state: &Bound<'_, PyDict>) -> PyResult<(usize, Vec<String>)> {
        let saved = saved_entries(py, state)?;
        self.inner.detached(py, |p| Ok(p.restore(&saved)))
    }
}
