//! Counters of what packets turned into (DNS answers, queries, or why not),
//! for the readers that parse packets into events.

use std::time::Instant;

use super::event::{event, parse_message, parse_packet_into, DnsEvent};
use super::packet::{self, Skip, Transport};
use super::tcp::TcpStreams;

/// Counters of what packets turned into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// DNS messages decoded (a TCP segment may carry several).
    pub dns: u64,
    /// Of those, answers.
    pub responses: u64,
    /// Of those, queries.
    pub queries: u64,
    /// Broken headers or messages that do not decode.
    pub malformed: u64,
    /// Cut short: a first fragment, a truncated copy, a partial TCP message.
    pub incomplete: u64,
    /// Not DNS: other ports or protocols, later fragments, bare TCP segments.
    pub non_dns: u64,
}

impl ParseStats {
    /// Parse one IP packet into `out`, counting what it was.
    pub fn parse_into(&mut self, packet: &[u8], out: &mut Vec<DnsEvent>) {
        let before = out.len();
        match parse_packet_into(packet, out) {
            Ok(n) => {
                self.dns += n as u64;
                for e in &out[before..] {
                    if e.msg.is_response {
                        self.responses += 1;
                    } else {
                        self.queries += 1;
                    }
                }
            }
            Err(skip) => self.count_skip(skip),
        }
    }

    /// `parse_into`, with DNS over TCP read through `streams`: a message split
    /// over several segments is parsed once its last segment arrived.
    pub fn parse_stream(
        &mut self,
        packet: &[u8],
        streams: &mut TcpStreams,
        now: Instant,
        out: &mut Vec<DnsEvent>,
    ) {
        let seg = match packet::parse_ip(packet) {
            Ok(s) if s.transport == Transport::Tcp => s,
            Ok(_) => return self.parse_into(packet, out),
            Err(skip) => return self.count_skip(skip),
        };
        if seg.payload.is_empty() {
            self.count_skip(Skip::NonDns); // a bare FIN or RST
        }
        streams.feed(&seg, now, &mut |raw| match parse_message(raw) {
            Ok(m) => {
                self.dns += 1;
                if m.is_response {
                    self.responses += 1;
                } else {
                    self.queries += 1;
                }
                out.push(event(&seg, m));
            }
            Err(skip) => self.count_skip(skip),
        });
    }

    /// Count a packet that yielded no message.
    pub fn count_skip(&mut self, skip: Skip) {
        match skip {
            Skip::Malformed(_) => self.malformed += 1,
            Skip::Incomplete => self.incomplete += 1,
            Skip::NonDns => self.non_dns += 1,
        }
    }
}
