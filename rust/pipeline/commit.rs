//! The commits of a wake-up: one per set, with the counters, the provenance
//! records and the log lines they make, and a retry after preparing the set
//! again when a whole commit fails.

use std::collections::HashSet;

use super::{Level, Pipeline};
use crate::ipset::consts::IPSET_ERR_HASH_FULL;
use crate::ipset::Entry;

impl Pipeline {
    /// Commit what the wake-up collected, one commit per set; returns the new
    /// addresses of `reconnect` policies, for the conntrack thread.
    pub(super) fn commit_pending(&mut self) -> Vec<(std::net::IpAddr, usize)> {
        let mut to_flush: Vec<(std::net::IpAddr, usize)> = Vec::new();
        let now = unix_now();
        for si in 0..self.plan.sets.len() {
            let Some(pending) = self.scratch.pending.get_mut(si) else { break };
            if pending.entries.is_empty() {
                continue;
            }
            let entries = std::mem::take(&mut pending.entries);
            let why = std::mem::take(&mut pending.why);
            pending.seen.clear();
            let policy = self.plan.sets[si].policy;
            let committed = self.commit_set(si, &entries);
            let spec = &self.plan.policies[policy];
            let set_name = &self.plan.sets[si].name;
            let stats = self.book.of(policy);
            let Some(c) = committed else {
                stats.errors += 1;
                stats.not_added += entries.len() as u64;
                continue;
            };
            stats.added += entries.len() as u64;
            stats.new += c.new.len() as u64;
            stats.refreshed += c.present as u64;
            if let Some(e) = &c.error {
                stats.errors += 1;
                let lost = entries.len().saturating_sub(c.new.len() + c.present);
                stats.not_added += lost as u64;
                if e.errno() == Some(IPSET_ERR_HASH_FULL) {
                    // Present entries were still refreshed; only new ones are refused.
                    stats.set_full += 1;
                }
                self.counters.commit_errors += 1;
                let line = format!(
                    "set {set_name}: {e}; of {} address(es), {} went in as new, {lost} not added",
                    entries.len(),
                    c.new.len()
                );
                self.error_log.error(si, &self.notes, line);
            }
            let new: HashSet<&Entry> = c.new.iter().collect();
            let (set_arc, policy_arc) = &self.set_names[si];
            for (e, w) in entries.iter().zip(&why) {
                let is_new = new.contains(e);
                // With a partial failure, only the new ones are known to be in.
                if !is_new && c.error.is_some() {
                    continue;
                }
                let Some(answer) = self.scratch.answers.get(*w) else { continue };
                self.provenance.note(e.addr, set_arc, policy_arc, answer, is_new, now);
                if self.verbose {
                    let mark = if is_new { '+' } else { '=' };
                    let qname = &answer.qname;
                    self.notes.push(Level::Debug, format!("{} {mark}{e} {qname}", spec.name));
                }
            }
            if spec.reconnect && !c.new.is_empty() {
                let slot = self.book.slot_of[policy];
                to_flush.extend(c.new.iter().map(|e| (e.addr, slot)));
            }
        }
        self.scratch.answers.clear();
        to_flush
    }

    /// Commit one set's entries; when the whole commit fails, prepare the set
    /// again (it may have been destroyed) and retry once. None if it failed twice.
    fn commit_set(&mut self, si: usize, entries: &[Entry]) -> Option<crate::ipset::Committed> {
        for attempt in 1..=2 {
            let err = match self.plan.sets[si].writer.commit(entries) {
                Ok(c) => return Some(c),
                Err(e) => e,
            };
            self.counters.commit_errors += 1;
            let name = self.plan.sets[si].name.clone();
            if attempt == 2 {
                self.notes.push(
                    Level::Error,
                    format!("set {name}: {err}; {} address(es) not added", entries.len()),
                );
                return None;
            }
            self.notes.push(
                Level::Error,
                format!("set {name}: {err}; preparing it again and retrying once"),
            );
            match self.plan.prepare_set(si) {
                Ok(p) => {
                    self.counters.sets_recreated += 1;
                    p.notes.into_iter().for_each(|n| self.notes.push(Level::Info, n));
                }
                Err(e) => {
                    self.notes.push(Level::Error, format!("set {name}: cannot prepare it: {e}"));
                    return None;
                }
            }
        }
        None
    }
}

/// Seconds since the epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
