//! The shape every `hrneo._core` class shares: a frozen Python object holding
//! its Rust value behind a mutex, `close()` that drops it, and calls that run
//! with the GIL released while the value is locked.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::{Error, Result};

/// A Rust value owned by a frozen Python object.
pub struct Guarded<T> {
    inner: Mutex<Option<T>>,
    what: &'static str,
}

impl<T: Send> Guarded<T> {
    /// Wrap `value`; `what` names it in "is closed" errors.
    pub fn new(value: T, what: &'static str) -> Self {
        Guarded { inner: Mutex::new(Some(value)), what }
    }

    /// Run `f` on the value with the GIL released (for anything that talks to
    /// the kernel), then let a pending signal (Ctrl-C) surface.
    pub fn detached<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut T) -> Result<R> + Send,
    ) -> PyResult<R> {
        let out = py.detach(|| self.locked(f));
        py.check_signals()?;
        Ok(out?)
    }

    /// Run `f` on the value, GIL held (for quick in-memory work). A call of
    /// another thread that holds the lock never waits for the GIL, so this
    /// cannot deadlock.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> PyResult<R> {
        Ok(self.locked(f)?)
    }

    fn locked<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        // A poisoned lock only follows a panic, which the core is written never
        // to have; the value is then refused rather than trusted.
        let mut guard = self.inner.lock().map_err(|_| Error::Closed(self.what))?;
        match guard.as_mut() {
            Some(v) => f(v),
            None => Err(Error::Closed(self.what)),
        }
    }

    /// Take the value out (closing the object); None if it was closed already.
    pub fn take(&self, py: Python<'_>) -> Option<T> {
        py.detach(|| self.inner.lock().ok().and_then(|mut g| g.take()))
    }

    /// Drop the value with the GIL released (closing sockets, joining threads).
    pub fn close(&self, py: Python<'_>) {
        if let Some(v) = self.take(py) {
            py.detach(move || drop(v));
        }
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().map(|g| g.is_none()).unwrap_or(true)
    }
}
