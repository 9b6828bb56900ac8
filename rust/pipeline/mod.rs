//! The hot path: DNS answers in, set entries and conntrack flushes out.
//!
//! One call of `run` waits on the capture socket (and the caller's wake-up
//! descriptor) with no Python involved; each wake-up drains what the kernel
//! queued, decodes every answer, matches its chain against the watchlist,
//! sends ONE commit per set, and hands the new addresses of `reconnect`
//! policies to the conntrack thread. There is no queue of our own: under
//! overload the kernel's socket buffer overflows and the source counts the drops.

mod commit;
mod flush;
mod guard;
mod nftwriter;
mod notes;
mod plan;
mod provenance;
mod read;
mod stats;

pub use flush::{FlushTotals, FlushWorker, Flusher};
pub use guard::Guard;
pub use nftwriter::NftWriter;
pub use notes::{Level, Notes};
pub use plan::{IpsetWriter, Learned, Lister, Plan, PolicySpec, Prepared, SetWriter};
pub use provenance::{WhyRecord, MAX_RECORDS};
pub use stats::{Counters, PolicyCounters};

use notes::Throttle;
use provenance::Provenance;
use read::{handle_packet, Ctx, Pending, Scratch};
use stats::PolicyBook;

use std::collections::HashMap;
use std::io;
use std::os::unix::io::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::blind::{Blind, ClientCount};
use crate::capture::{CaptureStats, Captured, HoldStats, PacketSource};
use crate::dns::{TcpStats, TcpStreams};
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
    guard: Guard,
    streams: TcpStreams,
    /// Held packets of this wake-up to accept before the commits.
    early: Vec<u32>,
    /// Commit errors, logged at most once a minute per set.
    error_log: Throttle,
    /// Verdicts that could not be sent, the same.
    verdict_log: Throttle,
    /// What brought each learned address (bounded).
    provenance: Provenance,
    /// Per set of the plan: its name and its policy's, shared by the records.
    set_names: Vec<(Arc<str>, Arc<str>)>,
    /// DNS-blind counting, when the conntrack thread follows events (and it is on).
    blind: Option<Arc<Mutex<Blind>>>,
    /// The counts of sources swapped out: the capture's counters go on across a swap.
    retired: CaptureStats,
}

impl Pipeline {
    /// A pipeline over `source` and a prepared `plan`; `flusher` runs in its own
    /// thread (None: no policy reconnects, or conntrack is unavailable).
    pub fn new(
        mut source: Box<dyn PacketSource>,
        plan: Plan,
        flusher: Option<Box<dyn Flusher>>,
    ) -> Result<Pipeline> {
        let notes = Notes::default();
        source.take_notes().into_iter().for_each(|n| notes.push(Level::Warning, n));
        // New connections come from the conntrack thread's events, when it follows them.
        let mut blind = None;
        let flush = match flusher {
            Some(mut f) => {
                let b = Arc::new(Mutex::new(Blind::default()));
                if f.watch_blind(b.clone()) {
                    blind = Some(b);
                }
                Some(
                    FlushWorker::start(f, notes.clone())
                        .map_err(|e| Error::io("conntrack thread", e))?,
                )
            }
            None => None,
        };
        let mut book = PolicyBook::default();
        book.attach(&plan);
        let set_names = set_names(&plan);
        Ok(Pipeline {
            source,
            plan,
            flush,
            notes,
            verbose: false,
            counters: Counters::default(),
            book,
            scratch: Scratch::default(),
            guard: Guard::default(),
            streams: TcpStreams::new(),
            early: Vec::new(),
            error_log: Throttle::default(),
            verdict_log: Throttle::default(),
            provenance: Provenance::default(),
            set_names,
            blind,
            retired: CaptureStats::default(),
        })
    }

    /// Queue a DEBUG line per address (new or refreshed), with its question name.
    pub fn set_verbose(&mut self, verbose: bool) {
        self.verbose = verbose;
    }

    /// Only answers from `nets` count from now on (empty: any source).
    pub fn set_trusted(&mut self, nets: Vec<Entry>) {
        self.guard.set_trusted(nets);
    }

    /// Addresses in `nets` are never added (besides the classes that route
    /// nowhere, always left out): the router's own, its resolvers and gateways.
    pub fn set_protected(&mut self, nets: Vec<Entry>) {
        if let Some(Ok(mut b)) = self.blind.as_ref().map(|b| b.lock()) {
            b.set_local(&nets);
        }
        self.guard.set_protected(nets);
    }

    /// Turn DNS-blind counting off (the counts so far are dropped) or back on.
    pub fn set_dns_blind(&mut self, on: bool) {
        if let Some(Ok(mut b)) = self.blind.as_ref().map(|b| b.lock()) {
            b.set_enabled(on);
        }
    }

    /// DNS-blind counts per client, most blind first, and the connections of
    /// clients past the cap; None when not counted (off, or no conntrack events).
    pub fn blind_clients(&self) -> Option<(Vec<(std::net::IpAddr, ClientCount)>, u64)> {
        let b = self.blind.as_ref()?.lock().ok()?;
        b.enabled().then(|| (b.clients(), b.uncounted))
    }

    /// Put a new plan in place; the old one is returned (drop it to close its sockets).
    /// Takes effect between two wake-ups: no answer is half in each plan.
    /// Addresses that no rule of the new plan would bring (their domain or
    /// policy is gone) leave their sets now, instead of at their timeout.
    pub fn swap_plan(&mut self, mut plan: Plan) -> Plan {
        self.book.attach(&plan);
        let gone = self.provenance.take_unless(|r| provenance::still_brought(&plan, r));
        let mut by_set: HashMap<Arc<str>, Vec<Entry>> = HashMap::new();
        for (addr, r) in gone {
            // A static entry of the new plan (prepared already) stays.
            let is_static =
                plan.policies.iter().any(|p| p.statics.iter().any(|s| s.contains(&addr)));
            if !is_static {
                by_set.entry(r.set).or_default().push(Entry::host(addr));
            }
        }
        let mut removed = 0;
        for (set, entries) in by_set {
            // The set of the new plan, or of the old one (its policy is gone).
            let target =
                plan.sets.iter_mut().chain(self.plan.sets.iter_mut()).find(|t| *t.name == *set);
            match target.map(|t| t.writer.delete(&entries)) {
                Some(Ok(n)) => removed += n,
                Some(Err(e)) => self.notes.push(Level::Warning, format!("set {set}: {e}")),
                None => {}
            }
        }
        if removed > 0 {
            let line =
                format!("{removed} address(es) left their sets: no rule brings them any more");
            self.notes.push(Level::Info, line);
        }
        self.set_names = set_names(&plan);
        std::mem::replace(&mut self.plan, plan)
    }

    /// What brought `addr` into each set it was learned into (empty: nothing known).
    pub fn why(&self, addr: &std::net::IpAddr) -> Vec<WhyRecord> {
        self.provenance.of(addr)
    }

    /// Conntrack entries deleted for `addr` so far (its flushes as a new address).
    pub fn flushed_for(&self, addr: &std::net::IpAddr) -> u64 {
        self.flush.as_ref().map_or(0, |w| w.flushed_for(addr))
    }

    /// Records kept in the provenance record.
    pub fn provenance_len(&self) -> usize {
        self.provenance.len()
    }

    /// Read from another source from now on; the old one is returned after
    /// what it had queued was processed.
    pub fn swap_source(&mut self, mut source: Box<dyn PacketSource>) -> Box<dyn PacketSource> {
        source.take_notes().into_iter().for_each(|n| self.notes.push(Level::Warning, n));
        let _ = self.process_queued(usize::MAX);
        let old = std::mem::replace(&mut self.source, source);
        self.retired = self.retired.plus(old.stats());
        old
    }

    /// A new longest hold for the source (hold mode); false if it holds nothing.
    pub fn set_hold_max(&mut self, hold_max: Duration) -> bool {
        self.source.set_hold_max(hold_max)
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
    /// Held packets (hold mode) that sent nothing to a set are accepted before
    /// the commits, the others after the commits and the conntrack flush of
    /// the new addresses.
    pub fn process_queued(&mut self, max_datagrams: usize) -> usize {
        let Pipeline { source, plan, book, counters, scratch, guard, streams, early, .. } = self;
        if scratch.pending.len() < plan.sets.len() {
            scratch.pending.resize_with(plan.sets.len(), Pending::default);
        }
        let note_seen = self.blind.is_some();
        let ctx = Ctx { plan, guard, now: Instant::now(), note_seen };
        let (mut newest, mut waiting) = (None, false);
        let mut on_packet = |c: Captured<'_>| {
            let routed = handle_packet(c.payload, &ctx, book, counters, scratch, streams);
            if let Some(id) = c.held {
                newest = Some(id);
                if routed {
                    waiting = true;
                } else {
                    early.push(id);
                }
            }
        };
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
        if let (Some(b), false) = (&self.blind, self.scratch.seen.is_empty()) {
            if let Ok(mut b) = b.lock() {
                self.scratch.seen.iter().for_each(|ip| b.saw(ip));
            }
            self.scratch.seen.clear();
        }
        if waiting && !self.early.is_empty() {
            let r = self.source.accept(&self.early);
            self.verdict_done(r);
        }
        self.early.clear();
        let to_flush = self.commit_pending();
        if let Some(id) = newest {
            // Held answers: the flush comes before their release. Once released, a
            // client connects at once, and a flush after that would delete its
            // new (and already rightly routed) connection.
            if let (Some(w), false) = (&self.flush, to_flush.is_empty()) {
                w.flush_now(to_flush);
            }
            let r = self.source.accept_through(id);
            self.verdict_done(r);
        } else if let (Some(w), false) = (&self.flush, to_flush.is_empty()) {
            // After the commits: the thread deletes entries of addresses already in their sets.
            w.submit(to_flush);
        }
        read
    }

    fn verdict_done(&mut self, r: Result<()>) {
        if let Err(e) = r {
            let line = format!("{e}; the deadline lets those answers through");
            self.verdict_log.error(0, &self.notes, line);
        }
    }

    /// Prepare every set of the plan again (the periodic check, or a firmware
    /// hook): vanished sets are created, static entries re-added. Returns the log lines.
    pub fn prepare_plan(&mut self) -> Result<Vec<String>> {
        self.plan.prepare()
    }

    /// The learned entries of the plan's sets, with the seconds each has left
    /// (see `Lister::learned`): what a state file keeps across a reboot.
    pub fn learned(&self) -> Result<Learned> {
        self.plan.learned()
    }

    /// The plan's sets on sockets of their own, to list them outside the
    /// pipeline's lock (see `Plan::lister`).
    pub fn lister(&self) -> Result<Lister> {
        self.plan.lister()
    }

    /// Put saved entries back into the plan's sets (see `Plan::restore`).
    pub fn restore(&mut self, saved: &Learned) -> (usize, Vec<String>) {
        self.plan.restore(saved)
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

    /// Counters of the capture socket (and of those it replaced).
    pub fn capture_stats(&self) -> CaptureStats {
        self.retired.plus(self.source.stats())
    }

    /// Counters of holding (hold mode), None when the source holds nothing.
    pub fn hold_stats(&self) -> Option<HoldStats> {
        self.source.hold_stats()
    }

    /// Counters of DNS-over-TCP reassembly.
    pub fn tcp_stats(&self) -> TcpStats {
        self.streams.stats
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

/// Each set's name and its policy's, shared by the provenance records.
fn set_names(plan: &Plan) -> Vec<(Arc<str>, Arc<str>)> {
    plan.sets
        .iter()
        .map(|t| (Arc::from(t.name.as_str()), Arc::from(plan.policies[t.policy].name.as_str())))
        .collect()
}

#[cfg(test)]
mod tests;
