//! The PyO3 layer: thin wrappers that turn the core's types into the Python
//! classes of `hrneo._core`. Blocking calls release the GIL.

mod conntrack;
mod dns;
mod errors;
mod guarded;
mod ipset;
mod nflog;
mod nfqueue;
mod nftables;
mod pipeline;
mod plan;
mod reports;
mod watchlist;

use pyo3::prelude::*;

#[pymodule]
mod _core {
    #[pymodule_export]
    use super::conntrack::PyConntrackFlusher;
    #[pymodule_export]
    use super::dns::{parse_packet, DnsAnswer, DnsEvent};
    #[pymodule_export]
    use super::ipset::rules::{canonical, code_reason, refusal, valid_name};
    #[pymodule_export]
    use super::ipset::{ipset_add_message, PyIpsetBatch, PyIpsetSession};
    #[pymodule_export]
    use super::nflog::PyNflogReader;
    #[pymodule_export]
    use super::nfqueue::PyNfqueueReader;
    #[pymodule_export]
    use super::nftables::{nft_refresh_mode, nftset_add_message, PyNftSetBatch, PyNftSetSession};
    #[pymodule_export]
    use super::pipeline::PyPipeline;
    #[pymodule_export]
    use super::plan::PyPlan;
    #[pymodule_export]
    use super::watchlist::{PyWatchlist, WatchMatch};

    #[pymodule_export]
    #[allow(non_upper_case_globals)]
    const __version__: &str = env!("CARGO_PKG_VERSION");

    /// Addresses the pipeline's provenance record (`Pipeline.why`) keeps at most.
    #[pymodule_export]
    const WHY_RECORDS: usize = crate::MAX_RECORDS;

    /// Clients DNS-blind counting (`Pipeline.blind_clients`) follows at most.
    #[pymodule_export]
    const BLIND_CLIENTS: usize = crate::MAX_CLIENTS;
}
