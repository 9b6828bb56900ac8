//! Any byte string as an IP packet, and as an NFLOG datagram: no panic allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hrneo::dns::parse_packet(data);
    let mut stats = hrneo::nflog::NflogStats::default();
    let mut next_seq = Some(0);
    let mut out = Vec::new();
    hrneo::nflog::handle_datagram(data, &mut stats, &mut next_seq, &mut out);
});
