//! The hot path: DNS answers in, set entries and conntrack flushes out.
//!
//! One call of `run` waits on the capture socket (and the caller's wake-up
//! descriptor) with no Python involved; each wake-up drains what the kernel
//! queued, decodes every answer, matches its chain against the watchlist,
//! sends ONE commit per set, and hands the new addresses of `reconnect`
//! policies to the conntrack thread. There is no queue of our own: under
//! overload the kernel's socket buffer overflows and the source counts the drops.

mod flush;
mod nftwriter;
mod notes;
mod plan;
mod stats;

pub use flush::{FlushTotals, FlushWorker, Flusher};
pub use nftwriter::NftWriter;
pub use notes::{Level, Notes};
pub use plan::{IpsetWriter, Plan, PolicySpec, Prepared, SetWriter};
pub use stats::{Counters, PolicyCounters};

use std::collections::HashSet;
use std::io;
use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

use crate::capture::{CaptureStats, Captured, PacketSource};
use crate::dns::decode::{decode, Chain};
use crate::dns::name::{match_key, name_text};
use crate::dns::packet::{self, Skip};
use crate::error::{Error, Result};
use crate::ipset::Entry;
use crate::sys::poll_readable;

/// Datagrams read per wake-up at most, so the caller's descriptor is looked
/// at between bursts; what is left is read on the next turn at once.
const MAX_DATAGRAMS_PER_WAKE: usize = 1024;

/// Why `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The time given ran out.
    Timeout,
    /// The caller's descriptor became readable.
    WakeFd,
    /// A signal interrupted the wait.
    Interrupted,
    /// A warning or error waits to be logged.
    Notes,
}

/// Addresses of one set collected during a wake-up.
#[derive(Default)]
struct Pending {
    entries: Vec<Entry>,
    seen: HashSet<Entry>,
    /// With verbose notes: the index in `Scratch::qnames` of the answer that brought each.
    why: Vec<usize>,
}

/// Buffers reused from one wake-up to the next.
#[derive(Default)]
struct Scratch {
    keys: Vec<Vec<u8>>,
    pending: Vec<Pending>,
    qnames: Vec<String>,
}

/// Per-policy counters kept by policy name, so they survive a reload.
#[derive(Default)]
struct PolicyBook {
    slots: Vec<(String, PolicyCounters)>,
    /// Plan policy index -> slot.
    slot_of: Vec<usize>,
}

impl PolicyBook {
    fn attach(&mut self, plan: &Plan) {
        self.slot_of = plan
            .policies
            .iter()
            .map(|p| match self.slots.iter().position(|(n, _)| *n == p.name) {
                Some(i) => i,
                None => {
                    self.slots.push((p.name.clone(), PolicyCounters::default()));
                    self.slots.len() - 1
                }
            })
            .collect();
    }

    fn of(&mut self, policy: usize) -> &mut PolicyCounters {
        &mut self.slots[self.slot_of[policy]].1
    }
}

/// Reader, plan and conntrack thread: the daemon's hot path.
pub struct Pipeline {
    source: Box<dyn PacketSource>,
    plan: Plan,
    flush: Option<FlushWorker>,
    notes: Notes,
    verbose: bool,
    counters: Counters,
    book: PolicyBook,
    scratch: Scratch,
}

impl Pipeline {
    /// A pipeline over `source` and a prepared `plan`; `flusher` runs in its own
    /// thread (None: no policy reconnects, or conntrack is unavailable).
    pub fn new(
        source: Box<dyn PacketSource>,
        plan: Plan,
        flusher: Option<Box<dyn Flusher>>,
    ) -> Result<Pipeline> {
        let notes = Notes::default();
        let flush = match flusher {
            Some(f) => Some(
                FlushWorker::start(f, notes.clone())
                    .map_err(|e| Error::io("conntrack thread", e))?,
            ),
            None => None,
        };
        let mut book = PolicyBook::default();
        book.attach(&plan);
        Ok(Pipeline {
            source,
            plan,
            flush,
            notes,
            verbose: false,
            counters: Counters::default(),
            book,
            scratch: Scratch::default(),
        })
    }

    /// Queue a DEBUG line per address (new or refreshed), with its question name.
    pub fn set_verbose(&mut self, verbose: bool) {
        self.verbose = verbose;
    }

    /// Put a new plan in place; the old one is returned (drop it to close its sockets).
    /// Takes effect between two wake-ups: no answer is half in each plan.
    pub fn swap_plan(&mut self, plan: Plan) -> Plan {
        self.book.attach(&plan);
        std::mem::replace(&mut self.plan, plan)
    }

    /// Read from another source from now on; the old one is returned after
    /// what it had queued was processed.
    pub fn swap_source(&mut self, source: Box<dyn PacketSource>) -> Box<dyn PacketSource> {
        let _ = self.process_queued(usize::MAX);
        std::mem::replace(&mut self.source, source)
    }

    /// The plan in use.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Wait for packets at most `timeout` and process them as they come;
    /// return when `wake_fd` becomes readable, a signal interrupts, a warning
    /// waits to be logged, or the time is up.
    pub fn run(&mut self, timeout: Duration, wake_fd: Option<RawFd>) -> Result<Wake> {
        let deadline = Instant::now() + timeout;
        let mut fds = vec![self.source.fd()];
        fds.extend(wake_fd);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = match poll_readable(&fds, Some(left)) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Wake::Interrupted),
                Err(e) => return Err(Error::io("pipeline: poll", e)),
            };
            if ready & 1 != 0 {
                self.process_queued(MAX_DATAGRAMS_PER_WAKE);
            }
            if ready & 2 != 0 {
                return Ok(Wake::WakeFd);
            }
            if self.notes.urgent() {
                return Ok(Wake::Notes);
            }
            if Instant::now() >= deadline {
                return Ok(Wake::Timeout);
            }
        }
    }

    /// Process what is queued now, without waiting; returns the datagrams read.
    pub fn process_queued(&mut self, max_datagrams: usize) -> usize {
        let Pipeline { source, plan, book, counters, scratch, verbose, .. } = self;
        if scratch.pending.len() < plan.sets.len() {
            scratch.pending.resize_with(plan.sets.len(), Pending::default);
        }
        let mut on_packet =
            |c: Captured<'_>| handle_packet(c.payload, plan, book, counters, scratch, *verbose);
        let read = match source.drain(max_datagrams, &mut on_packet) {
            Ok(n) => n,
            Err(e) => {
                counters.read_errors += 1;
                self.notes.push(Level::Error, format!("capture: {e}"));
                0
            }
        };
        if read > 0 {
            self.counters.wakeups += 1;
        }
        self.commit_pending();
        read
    }

    fn commit_pending(&mut self) {
        let mut to_flush: Vec<(std::net::IpAddr, usize)> = Vec::new();
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
                continue;
            };
            stats.added += entries.len() as u64;
            stats.new += c.new.len() as u64;
            stats.refreshed += c.present as u64;
            if let Some(e) = &c.error {
                stats.errors += 1;
                self.counters.commit_errors += 1;
                self.notes.push(
                    Level::Error,
                    format!(
                        "set {set_name}: {e}; of {} address(es), {} went in as new",
                        entries.len(),
                        c.new.len()
                    ),
                );
            }
            if self.verbose {
                let new: HashSet<&Entry> = c.new.iter().collect();
                for (e, w) in entries.iter().zip(&why) {
                    let mark = if new.contains(e) { '+' } else { '=' };
                    let qname = self.scratch.qnames.get(*w).map_or("?", String::as_str);
                    self.notes.push(Level::Debug, format!("{} {mark}{e} {qname}", spec.name));
                }
            }
            if spec.reconnect && !c.new.is_empty() {
                let slot = self.book.slot_of[policy];
                to_flush.extend(c.new.iter().map(|e| (e.addr, slot)));
            }
        }
        self.scratch.qnames.clear();
        if let (Some(w), false) = (&self.flush, to_flush.is_empty()) {
            // After the commits: the thread deletes entries of addresses already in their sets.
            w.submit(to_flush);
        }
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

    /// Prepare every set of the plan again (the periodic check, or a firmware
    /// hook): vanished sets are created, static entries re-added. Returns the log lines.
    pub fn prepare_plan(&mut self) -> Result<Vec<String>> {
        self.plan.prepare()
    }

    /// Queue a line for the log (the caller's own, beside the pipeline's).
    pub fn note(&self, level: Level, line: String) {
        self.notes.push(level, line);
    }

    /// The queue the pipeline's log lines go to (it outlives the pipeline).
    pub fn notes(&self) -> Notes {
        self.notes.clone()
    }

    /// Log lines queued since the last call.
    pub fn take_notes(&self) -> Vec<(Level, String)> {
        self.notes.take()
    }

    /// Counters of the whole pipeline.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Counters of the capture socket.
    pub fn capture_stats(&self) -> CaptureStats {
        self.source.stats()
    }

    /// Per-policy counters of the policies in the plan, in plan order, by name.
    pub fn policy_counters(&self) -> Vec<(String, PolicyCounters)> {
        let flushed = self.flush.as_ref().map(|w| w.totals().flushed_by_slot).unwrap_or_default();
        self.book
            .slot_of
            .iter()
            .map(|&slot| {
                let (name, mut c) = self.book.slots[slot].clone();
                c.flushed = flushed.get(slot).copied().unwrap_or(0);
                (name, c)
            })
            .collect()
    }

    /// The conntrack thread's totals (None without one).
    pub fn flush_totals(&self) -> Option<FlushTotals> {
        self.flush.as_ref().map(FlushWorker::totals)
    }

    /// Addresses waiting for (or in) a conntrack flush.
    pub fn flush_pending(&self) -> usize {
        self.flush.as_ref().map_or(0, FlushWorker::outstanding)
    }

    /// Whether the conntrack thread keeps an index from events.
    pub fn flush_tracking(&self) -> bool {
        self.flush.as_ref().is_some_and(FlushWorker::tracking)
    }

    /// Wait until every submitted flush is done; false on timeout.
    pub fn wait_flushed(&self, timeout: Duration) -> bool {
        self.flush.as_ref().is_none_or(|w| w.wait_idle(timeout))
    }

    /// Process what is queued, finish pending flushes (bounded), stop the thread.
    pub fn close(&mut self) {
        self.process_queued(MAX_DATAGRAMS_PER_WAKE);
        if let Some(mut w) = self.flush.take() {
            if !w.close(Duration::from_secs(5)) {
                self.notes.push(Level::Warning, "conntrack thread did not stop within 5 s".into());
            }
        }
    }
}

/// One IP packet: every DNS message in it.
fn handle_packet(
    payload: &[u8],
    plan: &Plan,
    book: &mut PolicyBook,
    counters: &mut Counters,
    scratch: &mut Scratch,
    verbose: bool,
) {
    let msgs = packet::parse_ip(payload).and_then(|seg| seg.dns_messages());
    let msgs = match msgs {
        Ok(m) => m,
        Err(skip) => return count_skip(counters, skip),
    };
    for (i, raw) in msgs.enumerate() {
        match decode(raw) {
            Ok(d) => handle_message(&d, plan, book, counters, scratch, verbose),
            // Later messages of a segment are a bonus; the first decides the verdict.
            Err(skip) if i == 0 => return count_skip(counters, skip),
            Err(_) => return,
        }
    }
}

fn count_skip(counters: &mut Counters, skip: Skip) {
    match skip {
        Skip::Malformed(_) => counters.malformed += 1,
        Skip::Incomplete => counters.incomplete += 1,
        Skip::NonDns => counters.non_dns += 1,
    }
}

fn handle_message(
    d: &crate::dns::decode::Decoded,
    plan: &Plan,
    book: &mut PolicyBook,
    counters: &mut Counters,
    scratch: &mut Scratch,
    verbose: bool,
) {
    counters.events += 1;
    if !d.is_response {
        // A spoofed query may carry answer records: it must add nothing.
        counters.queries_ignored += 1;
        return;
    }
    counters.answers += 1;
    if d.rcode != 0 {
        counters.rcode_skipped += 1;
        return;
    }
    let chain = Chain::follow(d);
    let n = chain.names.len();
    if scratch.keys.len() < n {
        scratch.keys.resize_with(n, Vec::new);
    }
    for (name, key) in chain.names.iter().zip(&mut scratch.keys) {
        match_key(name, key);
    }
    let Some(hit) = plan.watchlist.best(scratch.keys[..n].iter().map(Vec::as_slice)) else {
        counters.unwatched += 1;
        return;
    };
    let policy = usize::from(hit.policy);
    let stats = book.of(policy);
    stats.matched += 1;
    let why = if verbose {
        scratch.qnames.push(chain.names.first().map(|q| name_text(q)).unwrap_or_default());
        scratch.qnames.len() - 1
    } else {
        0
    };
    chain.addresses(|ip, from_hint| match plan.set_for(policy, &ip) {
        None => stats.v6_dropped += u64::from(ip.is_ipv6()),
        Some(si) => {
            stats.hint_addresses += u64::from(from_hint);
            // process_queued sized `pending` for the plan: always there.
            let Some(p) = scratch.pending.get_mut(si) else { return };
            let e = Entry::host(ip);
            if p.seen.insert(e) {
                p.entries.push(e);
                if verbose {
                    p.why.push(why);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests;
