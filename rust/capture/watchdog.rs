//! The deadline of hold mode: no packet waits in the queue longer than
//! `hold_max`, whatever the reader is doing (a slow commit, a reload in Python,
//! a library user who never calls `accept`). A thread looks every quarter of
//! `hold_max` while packets come, and when the oldest one read is overdue, or
//! packets wait unread while the reader made no progress for `hold_max`, it
//! accepts everything queued with one batch verdict.
//!
//! The reader's hot path only stores a few atomics: no lock, no wake-up. When
//! no packet came for eight ticks the thread sleeps in poll(2) on the queue's
//! socket (and its stop pipe) instead of ticking.

use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::nl::NetfilterSocket;
use crate::sys::poll_readable;

/// Ticks with nothing held and nothing queued before the thread sleeps in poll(2).
const IDLE_TICKS_BEFORE_SLEEP: u32 = 8;
/// How long the sleeping thread waits on the socket at most.
const SLEEP: Duration = Duration::from_secs(1);

/// What the reader and the watchdog thread share.
struct Shared {
    sock: Arc<NetfilterSocket>,
    queue: u16,
    /// `hold_max` in nanoseconds (a reload may change it).
    hold_max_ns: AtomicU64,
    origin: Instant,
    /// When the oldest outstanding packet was read: ns since `origin`, plus one; 0: none.
    oldest: AtomicU64,
    /// The highest packet id read so far.
    through: AtomicU32,
    /// Drains so far: the reader's heartbeat.
    progress: AtomicU64,
    /// Set by the thread when it released everything up to this id (plus one); 0: not.
    fired: AtomicU64,
    /// Packets the deadline released.
    timeouts: AtomicU64,
    stop: AtomicBool,
}

/// The deadline thread of one queue.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    stop_tx: UnixDatagram,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Start the thread for `queue`, whose socket is `sock`.
    pub(crate) fn start(
        sock: Arc<NetfilterSocket>,
        queue: u16,
        hold_max: Duration,
    ) -> std::io::Result<Watchdog> {
        let shared = Arc::new(Shared {
            sock,
            queue,
            hold_max_ns: AtomicU64::new(nanos(hold_max)),
            origin: Instant::now(),
            oldest: AtomicU64::new(0),
            through: AtomicU32::new(0),
            progress: AtomicU64::new(0),
            fired: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let (stop_tx, stop_rx) = UnixDatagram::pair()?;
        stop_rx.set_nonblocking(true)?;
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("hrneo-hold-{queue}"))
            .spawn(move || watch(&s, &stop_rx))?;
        Ok(Watchdog { shared, stop_tx, thread: Some(thread) })
    }

    /// After a drain: the newest id read, and when the oldest outstanding packet was read.
    pub(crate) fn drained(&self, through: Option<u32>, oldest: Option<Instant>) {
        if let Some(id) = through {
            self.shared.through.store(id, Relaxed);
        }
        self.set_oldest(oldest);
        self.shared.progress.fetch_add(1, Relaxed);
    }

    /// After verdicts: when the oldest outstanding packet was read (None: none left).
    pub(crate) fn set_oldest(&self, oldest: Option<Instant>) {
        let ns = oldest.map_or(0, |t| {
            u64::try_from(t.saturating_duration_since(self.shared.origin).as_nanos())
                .unwrap_or(u64::MAX - 1)
                + 1
        });
        self.shared.oldest.store(ns, Relaxed);
    }

    /// If the deadline released packets since the last call: up to which id.
    pub(crate) fn take_fired(&self) -> Option<u32> {
        match self.shared.fired.swap(0, Relaxed) {
            0 => None,
            v => Some((v - 1) as u32),
        }
    }

    /// Packets the deadline released so far.
    pub(crate) fn timeouts(&self) -> u64 {
        self.shared.timeouts.load(Relaxed)
    }

    /// A new deadline, from the next tick on.
    pub(crate) fn set_hold_max(&self, hold_max: Duration) {
        self.shared.hold_max_ns.store(nanos(hold_max), Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        let _ = self.stop_tx.send(&[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(s: &Shared, stop_rx: &UnixDatagram) {
    let sock_fd = s.sock.fd();
    let stop_fd = stop_rx.as_raw_fd();
    let mut last_progress = s.progress.load(Relaxed);
    let mut progress_at = Instant::now();
    let mut idle_ticks = 0;
    while !s.stop.load(Relaxed) {
        let hold_max = Duration::from_nanos(s.hold_max_ns.load(Relaxed));
        let tick = (hold_max / 4).clamp(Duration::from_millis(1), Duration::from_millis(250));
        let both = [stop_fd, sock_fd];
        let (fds, wait) = if idle_ticks >= IDLE_TICKS_BEFORE_SLEEP {
            (&both[..], SLEEP)
        } else {
            (&both[..1], tick)
        };
        let ready = poll_readable(fds, Some(wait)).unwrap_or(0);
        if ready & 1 != 0 {
            let mut b = [0u8; 8];
            let _ = stop_rx.recv(&mut b);
            continue;
        }
        let now = Instant::now();
        let progress = s.progress.load(Relaxed);
        let moved = progress != last_progress;
        if moved {
            (last_progress, progress_at) = (progress, now);
        }
        let oldest = s.oldest.load(Relaxed);
        let overdue = oldest != 0
            && now.saturating_duration_since(s.origin)
                >= Duration::from_nanos(oldest - 1) + hold_max;
        let queued = poll_readable(&[sock_fd], Some(Duration::ZERO)).unwrap_or(0) != 0;
        let stalled = queued && now.saturating_duration_since(progress_at) >= hold_max;
        if overdue || stalled {
            release_everything(s);
            progress_at = now;
        }
        // Ticking costs a wake-up per tick, sleeping one per packet: sleep only
        // when no packet came for a while.
        idle_ticks = if !moved && oldest == 0 && !queued { idle_ticks + 1 } else { 0 };
    }
}

/// Accept every packet in the queue, read or not, with one batch verdict.
fn release_everything(s: &Shared) {
    let through = s.through.load(Relaxed);
    let queued = queue_total(s.queue).unwrap_or(1).max(1);
    let d = super::queue_msg::release_all(s.queue);
    if s.sock.send(d.as_bytes()).is_ok() {
        s.timeouts.fetch_add(queued, Relaxed);
        s.fired.store(u64::from(through) + 1, Relaxed);
    }
}

/// Packets in queue `queue` now, from /proc/net/netfilter/nfnetlink_queue
/// (`queue_number peer_portid queue_total ...` per line).
fn queue_total(queue: u16) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        (f.next()?.parse::<u16>().ok()? == queue).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}
