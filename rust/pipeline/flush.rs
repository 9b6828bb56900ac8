//! Deleting the conntrack entries of new addresses, and the thread that does
//! it when that is slow.
//!
//! The pipeline `submit`s new addresses AFTER their set commit, so an
//! address's entries are only ever deleted once it is in its set. While the
//! flusher's event index is valid a flush is a lookup (and DELETEs only when
//! there are entries): `submit` does it at once, in the caller's thread, which
//! costs far less than waking another thread. Otherwise a flush costs a table
//! dump (~10 ms even for an empty table: the kernel walks a hash shared by
//! every namespace), far too slow for the hot path: the addresses go to the
//! conntrack thread, and everything submitted while a flush runs is coalesced
//! into the next single call: at most one flush in flight and one pending,
//! whatever the load. Between flushes the thread keeps the event index
//! current, so the event socket never overflows.

use std::collections::HashMap;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::notes::{Level, Notes};
use super::provenance::MAX_RECORDS;
use crate::blind::Blind;
use crate::conntrack::{ConntrackFlusher, Flushed, FlusherStats};
use crate::error::Result;
use crate::sys::poll_readable;

/// After a flush the thread rests this many times as long as it took (at most
/// `REST_MAX`) before the next: under load the dumps (pure kernel CPU) then use
/// at most a third of a core, and more addresses share each. When idle the
/// first flush starts at once.
const REST_RATIO: u32 = 2;
const REST_MAX: Duration = Duration::from_millis(50);

/// What the conntrack thread needs of a flusher (the real one, or a fake in tests).
pub trait Flusher: Send {
    /// The event socket to wait on, when the flusher keeps an index.
    fn event_fd(&self) -> Option<RawFd>;
    /// Read queued events into the index.
    fn poll_events(&mut self) -> Result<u64>;
    /// Delete the entries of `addrs`.
    fn flush_counted(&mut self, addrs: &HashSet<IpAddr>) -> Result<Flushed>;
    /// Counters.
    fn stats(&self) -> FlusherStats;
    /// Whether a flush now would be a lookup in a valid index (no dump).
    fn index_ready(&self) -> bool {
        false
    }
    /// Report new connections to `blind`; false if the flusher does not see them.
    fn watch_blind(&mut self, _blind: Arc<Mutex<Blind>>) -> bool {
        false
    }
}

impl Flusher for ConntrackFlusher {
    fn event_fd(&self) -> Option<RawFd> {
        ConntrackFlusher::event_fd(self)
    }
    fn poll_events(&mut self) -> Result<u64> {
        ConntrackFlusher::poll_events(self)
    }
    fn flush_counted(&mut self, addrs: &HashSet<IpAddr>) -> Result<Flushed> {
        ConntrackFlusher::flush_counted(self, addrs)
    }
    fn stats(&self) -> FlusherStats {
        ConntrackFlusher::stats(self)
    }
    fn watch_blind(&mut self, blind: Arc<Mutex<Blind>>) -> bool {
        ConntrackFlusher::watch_blind(self, blind)
    }
    fn index_ready(&self) -> bool {
        ConntrackFlusher::index_ready(self)
    }
}

/// Totals of the conntrack thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushTotals {
    /// Flush calls made.
    pub calls: u64,
    /// Entries deleted.
    pub flushed: u64,
    /// Flushes that failed.
    pub errors: u64,
    /// New addresses that had entries to delete: connections that started
    /// before the set knew the address.
    pub race_misses: u64,
    /// Entries deleted per policy slot (see `Pipeline`).
    pub flushed_by_slot: Vec<u64>,
    /// The flusher's own counters, after its last call.
    pub flusher: FlusherStats,
}

#[derive(Default)]
struct State {
    queue: Vec<(IpAddr, usize)>,
    busy: bool,
    closing: bool,
    totals: FlushTotals,
    /// Entries deleted per address, for `hrneo why` (at most `MAX_RECORDS` addresses).
    by_addr: HashMap<IpAddr, u64>,
}

struct Shared {
    state: Mutex<State>,
    idle: Condvar,
    flusher: Mutex<Box<dyn Flusher>>,
}

/// The thread and the way to hand it work.
pub struct FlushWorker {
    shared: Arc<Shared>,
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
    tracking: bool,
    notes: Notes,
}

impl FlushWorker {
    /// Start the thread; it owns `flusher` from now on.
    pub fn start(flusher: Box<dyn Flusher>, notes: Notes) -> io::Result<FlushWorker> {
        let (wake, wake_rx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let tracking = flusher.event_fd().is_some();
        let event_fd = flusher.event_fd();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
            flusher: Mutex::new(flusher),
        });
        let s = Arc::clone(&shared);
        let n = notes.clone();
        let thread = std::thread::Builder::new()
            .name("hrneo-conntrack".to_string())
            .spawn(move || run(event_fd, s, wake_rx, n))?;
        Ok(FlushWorker { shared, wake, thread: Some(thread), tracking, notes })
    }

    /// Whether the flusher keeps an index from conntrack events.
    pub fn tracking(&self) -> bool {
        self.tracking
    }

    /// Queue addresses (already in their sets) for the next flush; `slot` is
    /// the policy counter each is credited to. Never blocks long.
    pub fn submit(&self, addrs: Vec<(IpAddr, usize)>) {
        // At once when the flusher is free and a flush is only a lookup, and
        // nothing submitted earlier still waits (order is kept).
        let queued =
            self.shared.state.lock().map(|s| !s.queue.is_empty() || s.busy).unwrap_or(true);
        if !queued {
            if let Ok(mut f) = self.shared.flusher.try_lock() {
                if f.index_ready() {
                    flush(f.as_mut(), &self.shared, addrs, &self.notes);
                    return;
                }
            }
        }
        if let Ok(mut st) = self.shared.state.lock() {
            st.queue.extend(addrs);
        }
        // A full socket buffer means a wake-up is already pending.
        let _ = (&self.wake).write(&[1]);
    }

    /// Conntrack entries deleted for `addr` so far (bounded record, see `MAX_RECORDS`).
    pub fn flushed_for(&self, addr: &IpAddr) -> u64 {
        self.shared.state.lock().map_or(0, |s| s.by_addr.get(addr).copied().unwrap_or(0))
    }

    /// Flush `addrs` in the caller's thread, now (hold mode: before the answer
    /// is released, so no connection opened after it can be caught).
    pub fn flush_now(&self, addrs: Vec<(IpAddr, usize)>) {
        if let Ok(mut f) = self.shared.flusher.lock() {
            flush(f.as_mut(), &self.shared, addrs, &self.notes);
        }
    }

    /// Addresses waiting, plus one while a flush runs (0: every submitted flush is done).
    pub fn outstanding(&self) -> usize {
        self.shared.state.lock().map(|s| s.queue.len() + usize::from(s.busy)).unwrap_or(0)
    }

    /// The thread's totals so far.
    pub fn totals(&self) -> FlushTotals {
        self.shared.state.lock().map(|s| s.totals.clone()).unwrap_or_default()
    }

    /// Wait until nothing is pending or running; false on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let Ok(guard) = self.shared.state.lock() else { return false };
        self.shared
            .idle
            .wait_timeout_while(guard, timeout, |s| !s.queue.is_empty() || s.busy)
            .map(|(_, t)| !t.timed_out())
            .unwrap_or(false)
    }

    /// Flush what is pending, then stop the thread; false if it did not end in `timeout`.
    pub fn close(&mut self, timeout: Duration) -> bool {
        if let Ok(mut st) = self.shared.state.lock() {
            st.closing = true;
        }
        let _ = (&self.wake).write(&[1]);
        let deadline = Instant::now() + timeout;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        true
    }
}

impl Drop for FlushWorker {
    fn drop(&mut self) {
        self.close(Duration::from_secs(5));
    }
}

/// One flush of `batch`, its totals recorded in `shared`.
fn flush(f: &mut dyn Flusher, shared: &Shared, batch: Vec<(IpAddr, usize)>, notes: &Notes) {
    // An address submitted twice before a flush is flushed (and credited) once.
    let slots: HashMap<IpAddr, usize> = batch.iter().rev().copied().collect();
    let addrs: HashSet<IpAddr> = slots.keys().copied().collect();
    let result = f.flush_counted(&addrs);
    let stats = f.stats();
    let Ok(mut guard) = shared.state.lock() else { return };
    let State { totals: t, by_addr, .. } = &mut *guard;
    t.calls += 1;
    t.flusher = stats;
    match result {
        Ok(done) => {
            t.flushed += done.deleted;
            for (addr, n) in &done.per_address {
                if by_addr.len() < MAX_RECORDS || by_addr.contains_key(addr) {
                    *by_addr.entry(*addr).or_default() += u64::from(*n);
                }
            }
            t.race_misses += done.per_address.len() as u64;
            for (addr, slot) in &slots {
                if let Some(n) = done.per_address.get(addr) {
                    if t.flushed_by_slot.len() <= *slot {
                        t.flushed_by_slot.resize(slot + 1, 0);
                    }
                    t.flushed_by_slot[*slot] += u64::from(*n);
                }
            }
            if done.deleted > 0 {
                let line = format!(
                    "conntrack: {} entries deleted for {} new address(es)",
                    done.deleted,
                    addrs.len()
                );
                notes.push(Level::Debug, line);
            }
        }
        Err(e) => {
            t.errors += 1;
            let line = format!("conntrack flush of {} address(es) failed: {e}", addrs.len());
            notes.push(Level::Error, line);
        }
    }
}

fn run(event_fd: Option<RawFd>, shared: Arc<Shared>, mut wake: UnixStream, notes: Notes) {
    let mut fds = vec![wake.as_raw_fd()];
    fds.extend(event_fd);
    let mut rest_until = Instant::now();
    let mut drain = [0u8; 256];
    loop {
        let (pending, closing) = match shared.state.lock() {
            Ok(s) => (!s.queue.is_empty(), s.closing),
            Err(_) => return,
        };
        if closing && !pending {
            return;
        }
        let now = Instant::now();
        let wait = if pending && !closing {
            Some(rest_until.saturating_duration_since(now))
        } else if pending {
            Some(Duration::ZERO)
        } else {
            None
        };
        let ready = match poll_readable(&fds, wait) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                notes.push(Level::Error, format!("conntrack thread: poll: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                0
            }
        };
        if ready & 1 != 0 {
            while matches!(wake.read(&mut drain), Ok(n) if n > 0) {}
        }
        if ready & 2 != 0 {
            if let Ok(mut f) = shared.flusher.lock() {
                if let Err(e) = f.poll_events() {
                    notes.push(Level::Warning, format!("conntrack events: {e}"));
                }
            }
        }
        let batch = match shared.state.lock() {
            Ok(mut s) if !s.queue.is_empty() && (s.closing || Instant::now() >= rest_until) => {
                s.busy = true;
                std::mem::take(&mut s.queue)
            }
            Ok(_) => continue,
            Err(_) => return,
        };
        let t0 = Instant::now();
        if let Ok(mut f) = shared.flusher.lock() {
            flush(f.as_mut(), &shared, batch, &notes);
        }
        let took = t0.elapsed();
        rest_until = t0 + took + (took * REST_RATIO).min(REST_MAX);
        if let Ok(mut s) = shared.state.lock() {
            s.busy = false;
        }
        shared.idle.notify_all();
    }
}
