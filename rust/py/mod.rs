//! The PyO3 layer: thin wrappers that turn the core's types into the Python
//! classes of `hrneo._core`. Blocking calls release the GIL (`py.detach`).

use pyo3::prelude::*;

mod conntrack;
mod errors;
mod ipset;
mod nflog;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    nflog::register(m)?;
    ipset::register(m)?;
    conntrack::register(m)?;
    Ok(())
}
