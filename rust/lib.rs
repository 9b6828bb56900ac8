//! hrneo's compiled core: read DNS answers from NFLOG, add addresses to ipsets
//! and learn which were new, delete the conntrack entries of new addresses.
//!
//! The modules below are plain Rust (no PyO3), tested by `cargo test`, also
//! under qemu on big-endian MIPS. `py` wraps them as `hrneo._core`.

pub mod conntrack;
pub mod dns;
pub mod error;
pub mod ipset;
pub mod nflog;
pub mod nl;
pub mod packet;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
