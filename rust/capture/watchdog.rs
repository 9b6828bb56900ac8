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
//!
//! Every atomic is 32 bits wide: 32-bit MIPS has no 64-bit atomics. Times are
//! microseconds since the watchdog started, compared with wrapping arithmetic
//! (a u32 of microseconds wraps after 71 minutes; no packet is held that long).

use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{
    AtomicBool, AtomicU32, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex};
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
    /// `hold_max` in microseconds (a reload may change it; at most 60 s).
    hold_max_us: AtomicU32,
    origin: Instant,
    /// When the oldest outstanding packet was read: µs since `origin` (never 0); 0: none.
    oldest: AtomicU32,
    /// The highest packet id read so far.
    through: AtomicU32,
    /// Drains so far (wrapping): the reader's heartbeat.
    progress: AtomicU32,
    /// Set by the thread when it released everything up to `fired_through`.
    fired: AtomicBool,
    fired_through: AtomicU32,
    /// Packets the deadline released (the thread adds, stats read: no hot path).
    timeouts: Mutex<u64>,
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
            hold_max_us: AtomicU32::new(micros(hold_max)),
            origin: Instant::now(),
            oldest: AtomicU32::new(0),
            through: AtomicU32::new(0),
            progress: AtomicU32::new(0),
            fired: AtomicBool::new(false),
            fired_through: AtomicU32::new(0),
            timeouts: Mutex::new(0),
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
        let us = oldest.map_or(0, |t| since(self.shared.origin, t).max(1));
        self.shared.oldest.store(us, Relaxed);
    }

    /// If the deadline released packets since the last call: up to which id.
    pub(crate) fn take_fired(&self) -> Option<u32> {
        // Acquire pairs with the thread's Release: the id stored before the flag is seen.
        self.shared.fired.swap(false, Acquire).then(|| self.shared.fired_through.load(Relaxed))
    }

    /// Packets the deadline released so far.
    pub(crate) fn timeouts(&self) -> u64 {
        self.shared.timeouts.lock().map_or(0, |t| *t)
    }

    /// A new deadline, from the next tick on.
    pub(crate) fn set_hold_max(&self, hold_max: Duration) {
        self.shared.hold_max_us.store(micros(hold_max), Relaxed);
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// `t` in µs since `origin`, wrapping.
fn since(origin: Instant, t: Instant) -> u32 {
    // Truncation is the wrap: ages are taken with wrapping_sub.
    t.saturating_duration_since(origin).as_micros() as u32
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
        let hold_max = Duration::from_micros(u64::from(s.hold_max_us.load(Relaxed)));
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
        let age = Duration::from_micros(u64::from(since(s.origin, now).wrapping_sub(oldest)));
        let overdue = oldest != 0 && age >= hold_max;
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
        if let Ok(mut t) = s.timeouts.lock() {
            *t += queued;
        }
        s.fired_through.store(through, Relaxed);
        s.fired.store(true, Release);
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
