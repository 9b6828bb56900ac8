//! The part of a DNS message hrneo reads (header, question, answer section),
//! and the chain of names an answer speaks for.
//!
//! hickory-proto decodes; only the header, the questions and the answer
//! records are read (authority and additional sections are never used, so
//! their cost is not paid). A hostile answer may carry records for names nobody
//! asked about: only records owned by a name on the chain (the question, CNAME
//! targets, SVCB/HTTPS targets) count, and only of class IN.

use std::net::IpAddr;

use hickory_proto::op::{Header, MessageType, Query};
use hickory_proto::rr::rdata::svcb::{SvcParamValue, SVCB};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::packet::Skip;

/// Longest chain followed (question name included); real chains are 1-5 names.
pub const MAX_CHAIN: usize = 16;

/// A decoded message: what hrneo needs of its header, first question and answers.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Transaction id.
    pub id: u16,
    /// QR bit: an answer, not a query.
    pub is_response: bool,
    /// RCODE of the header (NOERROR = 0).
    pub rcode: u16,
    /// The first question (messages carry one in practice).
    pub question: Option<Query>,
    /// The answer section, in wire order.
    pub answers: Vec<Record>,
}

/// Decode the header, the questions and the answer section of one DNS message.
pub fn decode(raw: &[u8]) -> Result<Decoded, Skip> {
    // The header alone is 12 bytes; hickory would reject it too, this is just cheaper.
    if raw.len() < 12 {
        return Err(Skip::Malformed("DNS message shorter than its header"));
    }
    let bad = |_| Skip::Malformed("DNS message does not decode");
    let mut dec = BinDecoder::new(raw);
    let Header { metadata, counts } = Header::read(&mut dec).map_err(bad)?;
    let mut question = None;
    for i in 0..counts.queries {
        let q = Query::read(&mut dec).map_err(bad)?;
        if i == 0 {
            question = Some(q);
        }
    }
    let mut answers = Vec::with_capacity(usize::from(counts.answers).min(16));
    for _ in 0..counts.answers {
        answers.push(Record::read(&mut dec).map_err(bad)?);
    }
    Ok(Decoded {
        id: metadata.id,
        is_response: metadata.message_type == MessageType::Response,
        rcode: u16::from(metadata.response_code),
        question,
        answers,
    })
}

/// The names an answer speaks for, and the records reachable from its question.
#[derive(Debug, Default)]
pub struct Chain<'m> {
    /// The question name first, then every CNAME and SVCB/HTTPS target, in the
    /// order found. Empty when the question is not of class IN.
    pub names: Vec<&'m Name>,
    /// Answer records of class IN owned by a name of `names`, in wire order.
    pub records: Vec<&'m Record>,
}

impl<'m> Chain<'m> {
    /// Follow the chain from the question through the answer records.
    /// Stops at `MAX_CHAIN` names; a name already on the chain is not added
    /// again (a loop ends there).
    pub fn follow(d: &'m Decoded) -> Chain<'m> {
        let mut chain = Chain::default();
        let Some(q) = d.question.as_ref().filter(|q| q.query_class == DNSClass::IN) else {
            return chain;
        };
        chain.names.push(&q.name);
        let on_chain = |names: &[&Name], n: &Name| names.contains(&n);
        // Names are added while scanning, so one pass in wire order handles
        // well-ordered answers; more passes catch records listed before the
        // record that leads to them. Each pass that adds nothing ends it.
        loop {
            let before = chain.names.len();
            for r in d.answers.iter().filter(|r| r.dns_class == DNSClass::IN) {
                if chain.names.len() >= MAX_CHAIN {
                    break;
                }
                if !on_chain(&chain.names, &r.name) {
                    continue;
                }
                let target = match &r.data {
                    RData::CNAME(c) => Some(&c.0),
                    RData::HTTPS(h) => svcb_target(&h.0),
                    RData::SVCB(s) => svcb_target(s),
                    _ => None,
                };
                if let Some(t) = target.filter(|t| !on_chain(&chain.names, t)) {
                    chain.names.push(t);
                }
            }
            if chain.names.len() == before || chain.names.len() >= MAX_CHAIN {
                break;
            }
        }
        chain.records = d
            .answers
            .iter()
            .filter(|r| r.dns_class == DNSClass::IN && on_chain(&chain.names, &r.name))
            .collect();
        chain
    }

    /// Every address the chain gives: A/AAAA records, then SVCB/HTTPS hints;
    /// `visit(addr, from_hint)` once per record or hint, duplicates included.
    pub fn addresses(&self, mut visit: impl FnMut(IpAddr, bool)) {
        for r in &self.records {
            match &r.data {
                RData::A(a) => visit(IpAddr::V4(a.0), false),
                RData::AAAA(a) => visit(IpAddr::V6(a.0), false),
                _ => {}
            }
        }
        for r in &self.records {
            let svcb = match &r.data {
                RData::HTTPS(h) => &h.0,
                RData::SVCB(s) => s,
                _ => continue,
            };
            // AliasMode (priority 0) records carry no parameters to use.
            if svcb.svc_priority == 0 {
                continue;
            }
            for (_, value) in &svcb.svc_params {
                match value {
                    SvcParamValue::Ipv4Hint(h) => {
                        h.0.iter().for_each(|a| visit(IpAddr::V4(a.0), true));
                    }
                    SvcParamValue::Ipv6Hint(h) => {
                        h.0.iter().for_each(|a| visit(IpAddr::V6(a.0), true));
                    }
                    _ => {}
                }
            }
        }
    }

    /// The smallest TTL among the records (0 when there are none).
    pub fn min_ttl(&self) -> u32 {
        self.records.iter().map(|r| r.ttl).min().unwrap_or(0)
    }
}

/// The target an SVCB/HTTPS record points at, unless it is "." (the owner itself).
fn svcb_target(s: &SVCB) -> Option<&Name> {
    (!s.target_name.is_root()).then_some(&s.target_name)
}
