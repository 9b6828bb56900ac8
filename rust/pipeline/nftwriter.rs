//! The `SetWriter` of nf_tables sets: a set named `name` lives in hrneo's own
//! table `inet hrneo` (created with the set when missing); `family#table#set`
//! names a set in a table of the user's firewall (fw4's `inet fw4`, ...).

use super::plan::{PolicySpec, Prepared, SetWriter};
use crate::error::{Error, Result};
use crate::ipset::{Committed, Entry, Family};
use crate::nftables::{NftSetBatch, NftSetRef, NftSetSpec, HRNEO_TABLE};

/// An nf_tables set written over netlink: one batch (and socket) per set.
pub struct NftWriter {
    batch: NftSetBatch,
}

impl NftWriter {
    /// Open the socket for `set` (dnsmasq notation, see `NftSetRef::parse`);
    /// nothing is asked of the kernel yet.
    pub fn open(set: &str) -> Result<NftWriter> {
        Ok(NftWriter { batch: NftSetBatch::new(NftSetRef::parse(set)?, None)? })
    }
}

fn owned(set: &NftSetRef) -> bool {
    set.family == crate::nftables::consts::NFPROTO_INET && set.table == HRNEO_TABLE
}

impl SetWriter for NftWriter {
    fn prepare(&mut self, family: Family, spec: &PolicySpec) -> Result<Prepared> {
        let set = self.batch.set().clone();
        let mut notes = Vec::new();
        self.batch.forget_info();
        let session = self.batch.session();
        if !session.exists(&set)? {
            if !owned(&set) && !session.table_exists(set.family, &set.table)? {
                return Err(Error::InvalidArgument(format!(
                    "set {set} of policy {}: table {} {} does not exist (hrneo makes \
                     tables only for its own sets, in inet {HRNEO_TABLE})",
                    spec.name,
                    crate::nftables::family_name(set.family),
                    set.table
                )));
            }
            // Interval: static networks fit beside learned addresses. Timeouts
            // without a default: learned entries carry theirs, statics stay.
            let create = NftSetSpec {
                set: &set,
                ipv6: family == Family::Inet6,
                interval: true,
                timeout: (spec.timeout > 0).then_some(0),
                size: spec.maxelem,
            };
            session.create(&create, true)?;
            notes.push(format!(
                "created set {set} ({}, flags interval{}, size {})",
                if family == Family::Inet6 { "ipv6_addr" } else { "ipv4_addr" },
                if spec.timeout > 0 { ",timeout" } else { "" },
                spec.maxelem.map_or("unlimited".to_string(), |n| n.to_string()),
            ));
        }
        let info = session.info(&set)?;
        info.check_address_set()?;
        if info.is_ipv6() != (family == Family::Inet6) {
            return Err(Error::InvalidArgument(format!(
                "set {set} of policy {} is {}, expected {}",
                spec.name,
                info.type_name(),
                if family == Family::Inet6 { "ipv6_addr" } else { "ipv4_addr" }
            )));
        }
        // In a timeout set, timeout 0 means permanent (static entries, timeout: 0).
        let (learned, statics_timeout) = if info.has_timeout() {
            (Some(spec.timeout), Some(0))
        } else {
            if spec.timeout > 0 {
                notes.push(format!(
                    "set {set} has no `flags timeout`: entries of {} stay until removed",
                    spec.name
                ));
            }
            (None, None)
        };
        let want6 = family == Family::Inet6;
        let statics: Vec<Entry> =
            spec.statics.iter().filter(|e| e.is_ipv6() == want6).copied().collect();
        self.batch.clear();
        if !statics.is_empty() {
            self.batch.set_timeout(statics_timeout);
            statics.iter().for_each(|e| self.batch.push(*e));
            let mut committed = self.batch.commit_entries();
            if let Ok(Committed { error: Some(e), .. }) = &committed {
                if e.errno() == Some(libc::EEXIST) {
                    // A static network over addresses learned before: it takes their place.
                    let mut replaced = 0;
                    for s in statics.iter().filter(|s| s.prefix.is_some()) {
                        replaced += self.batch.absorb(s)?;
                    }
                    notes.push(format!(
                        "{}: {replaced} entries of {set} now inside static networks: replaced by them",
                        spec.name
                    ));
                    statics.iter().for_each(|e| self.batch.push(*e));
                    committed = self.batch.commit_entries();
                }
            }
            self.batch.set_timeout(learned);
            let committed = committed?;
            if let Some(e) = committed.error {
                return Err(e);
            }
            notes.push(format!(
                "{}: {} static entries in {set} ({} new)",
                spec.name,
                statics.len(),
                committed.new.len()
            ));
        }
        self.batch.set_timeout(learned);
        Ok(Prepared { learned_timeout: learned, notes })
    }

    fn commit(&mut self, entries: &[Entry]) -> Result<Committed> {
        for e in entries {
            self.batch.push(*e);
        }
        self.batch.commit_entries()
    }

    fn delete(&mut self, entries: &[Entry]) -> Result<usize> {
        self.batch.delete(entries)
    }

    fn members(&mut self) -> Result<Vec<(Entry, Option<u32>)>> {
        self.batch.members()
    }

    fn restore(&mut self, entries: &[(Entry, u32)]) -> Result<Committed> {
        self.batch.restore(entries)
    }

    fn reopen(&self) -> Result<Box<dyn SetWriter>> {
        Ok(Box::new(NftWriter { batch: NftSetBatch::new(self.batch.set().clone(), None)? }))
    }
}
