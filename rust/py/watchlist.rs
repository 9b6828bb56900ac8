//! `Watchlist` for Python: the config loader fills it, the daemon's plans
//! share it, `hrneo match` and `replay` ask it.

use std::sync::{Arc, RwLock};

use pyo3::prelude::*;

use crate::dns::name::text_match_key;
use crate::{Added, Error, Origin, Result, Watchlist};

/// The watched domain a name (or a chain of names) goes to.
#[pyclass(module = "hrneo._core", frozen, get_all)]
pub struct WatchMatch {
    /// Index of the policy in the config.
    policy: u16,
    /// The name that matched (for a chain: which of them).
    name: String,
    /// The watched domain it equals or is under.
    domain: String,
    /// The file the domain was written in.
    source: String,
    /// Its line there (0: unknown).
    line: u32,
}

#[pymethods]
impl WatchMatch {
    fn __repr__(&self) -> String {
        format!(
            "WatchMatch(policy={}, name={:?}, domain={:?}, at {}:{})",
            self.policy, self.name, self.domain, self.source, self.line
        )
    }
}

/// Every policy's domains compiled into one suffix matcher (see the Rust docs).
#[pyclass(module = "hrneo._core", name = "Watchlist", frozen)]
pub struct PyWatchlist {
    inner: RwLock<Arc<Watchlist>>,
}

impl PyWatchlist {
    /// The compiled watchlist, shared (for plans).
    pub fn shared(&self) -> Result<Arc<Watchlist>> {
        self.inner.read().map(|w| Arc::clone(&w)).map_err(|_| Error::Closed("Watchlist"))
    }

    fn read<R>(&self, f: impl FnOnce(&Watchlist) -> R) -> PyResult<R> {
        let w = self.shared()?;
        Ok(f(&w))
    }

    fn make_match(w: &Watchlist, domain: u32, name: &str) -> WatchMatch {
        let o = w.origin(domain);
        WatchMatch {
            policy: w.policy_of(domain),
            name: name.to_string(),
            domain: w.domain(domain).to_string(),
            source: w.sources().get(o.source as usize).cloned().unwrap_or_default(),
            line: o.line,
        }
    }
}

#[pymethods]
impl PyWatchlist {
    #[new]
    fn new() -> Self {
        PyWatchlist { inner: RwLock::new(Arc::new(Watchlist::new())) }
    }

    /// Register a file domains come from; returns its index for `add`.
    fn add_source(&self, path: &str) -> PyResult<u32> {
        let mut w = self.inner.write().map_err(|_| Error::Closed("Watchlist"))?;
        Ok(Arc::make_mut(&mut w).add_source(path))
    }

    /// Name source `index` anew (a converted or moved file). IndexError if there is none.
    fn set_source(&self, index: u32, path: &str) -> PyResult<()> {
        let mut w = self.inner.write().map_err(|_| Error::Closed("Watchlist"))?;
        if Arc::make_mut(&mut w).set_source(index, path) {
            Ok(())
        } else {
            Err(pyo3::exceptions::PyIndexError::new_err(format!("no source {index}")))
        }
    }

    /// Add a normalized domain of `policy`, written at `source`:`line`.
    /// Returns None if it is new, else (policy, source, line) of the first one,
    /// which keeps it.
    #[pyo3(signature = (domain, policy, source = 0, line = 0))]
    fn add(
        &self,
        domain: &str,
        policy: u16,
        source: u32,
        line: u32,
    ) -> PyResult<Option<(u16, u32, u32)>> {
        let mut w = self.inner.write().map_err(|_| Error::Closed("Watchlist"))?;
        match Arc::make_mut(&mut w).add(domain, policy, Origin { source, line })? {
            Added::New => Ok(None),
            Added::Present { policy, origin } => Ok(Some((policy, origin.source, origin.line))),
        }
    }

    /// Give back memory reserved for growth once every domain is in.
    fn shrink_to_fit(&self) -> PyResult<()> {
        let mut w = self.inner.write().map_err(|_| Error::Closed("Watchlist"))?;
        Arc::make_mut(&mut w).shrink_to_fit();
        Ok(())
    }

    /// The most specific watched domain `name` equals or is under.
    #[pyo3(name = "match")]
    fn match_name(&self, name: &str) -> PyResult<Option<WatchMatch>> {
        let mut key = Vec::new();
        text_match_key(name, &mut key);
        self.read(|w| w.lookup(&key).map(|d| Self::make_match(w, d, name)))
    }

    /// The policy index of `name`, -1 if it is on no watchlist.
    fn policy_of(&self, name: &str) -> PyResult<i32> {
        let mut key = Vec::new();
        text_match_key(name, &mut key);
        self.read(|w| w.lookup(&key).map_or(-1, |d| i32::from(w.policy_of(d))))
    }

    /// The match an answer with these names (question first, then CNAME and
    /// SVCB targets) goes to: the most labels, then the longest, then the first.
    fn match_chain(&self, names: Vec<String>) -> PyResult<Option<WatchMatch>> {
        let keys: Vec<Vec<u8>> = names
            .iter()
            .map(|n| {
                let mut k = Vec::new();
                text_match_key(n, &mut k);
                k
            })
            .collect();
        self.read(|w| {
            w.best(keys.iter().map(Vec::as_slice))
                .map(|h| Self::make_match(w, h.domain, &names[h.name_index]))
        })
    }

    /// The domains of `policy`, in the order they were added.
    fn domains(&self, policy: u16) -> PyResult<Vec<String>> {
        self.read(|w| w.domains_of(policy).map(str::to_string).collect())
    }

    /// Number of domains of `policy`.
    fn count(&self, policy: u16) -> PyResult<usize> {
        self.read(|w| w.count(policy))
    }

    /// The files domains came from, by index.
    #[getter]
    fn sources(&self) -> PyResult<Vec<String>> {
        self.read(|w| w.sources().to_vec())
    }

    /// Heap bytes the compiled watchlist holds.
    fn heap_bytes(&self) -> PyResult<usize> {
        self.read(Watchlist::heap_bytes)
    }

    fn __len__(&self) -> PyResult<usize> {
        self.read(Watchlist::len)
    }
}
