//! Log lines the pipeline (and its conntrack thread) leave for Python's logging.
//!
//! The hot path never calls into Python: it queues lines here, bounded, and
//! the daemon logs them when `run` returns. Lines beyond the bound are counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Severity, with the numbers of Python's `logging` levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Per-address lines.
    Debug = 10,
    /// What changed.
    Info = 20,
    /// Something is off but nothing was lost.
    Warning = 30,
    /// Something failed.
    Error = 40,
}

/// Lines queued beyond this are dropped (and counted).
const CAP: usize = 10_000;

#[derive(Debug, Default)]
struct Queue {
    lines: VecDeque<(Level, String)>,
    dropped: u64,
    /// A warning or error is queued: worth returning to Python for.
    urgent: bool,
}

/// A bounded queue of log lines, shared between threads.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    inner: Arc<Mutex<Queue>>,
}

impl Notes {
    /// Queue a line.
    pub fn push(&self, level: Level, line: String) {
        if let Ok(mut q) = self.inner.lock() {
            if q.lines.len() >= CAP {
                q.dropped += 1;
                return;
            }
            q.urgent |= level >= Level::Warning;
            q.lines.push_back((level, line));
        }
    }

    /// Whether a warning or error waits.
    pub fn urgent(&self) -> bool {
        self.inner.lock().map(|q| q.urgent).unwrap_or(false)
    }

    /// Take every queued line; a line about dropped ones comes last.
    pub fn take(&self) -> Vec<(Level, String)> {
        let Ok(mut q) = self.inner.lock() else { return Vec::new() };
        let mut out: Vec<(Level, String)> = q.lines.drain(..).collect();
        if q.dropped > 0 {
            out.push((Level::Warning, format!("{} log lines dropped (queue full)", q.dropped)));
            q.dropped = 0;
        }
        q.urgent = false;
        out
    }
}

/// An error of one kind is logged at most this often per key (each is counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// Error lines of one kind (a set's commit errors, say), logged at most once
/// per `ERROR_LOG_EVERY` for each key, saying how many were not logged in
/// between: a full set must not flood the log.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    /// Per key: when its last line was logged, and how many were not since.
    per_key: Vec<(Option<Instant>, u64)>,
}

impl Throttle {
    /// Queue `line` at level Error unless a line of `key` was queued within
    /// `ERROR_LOG_EVERY`; then it is only counted.
    pub(super) fn error(&mut self, key: usize, notes: &Notes, line: String) {
        if self.per_key.len() <= key {
            self.per_key.resize(key + 1, (None, 0));
        }
        let (last, quiet) = &mut self.per_key[key];
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < ERROR_LOG_EVERY) {
            *quiet += 1;
            return;
        }
        let more = match std::mem::take(quiet) {
            0 => String::new(),
            n => format!(" ({n} more like it since the last line)"),
        };
        *last = Some(now);
        notes.push(Level::Error, format!("{line}{more}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_counted() {
        let n = Notes::default();
        n.push(Level::Debug, "a".into());
        assert!(!n.urgent());
        for i in 0..CAP + 5 {
            n.push(Level::Error, format!("{i}"));
        }
        assert!(n.urgent());
        let lines = n.take();
        assert_eq!(lines.len(), CAP + 1);
        assert_eq!(lines.last().unwrap().1, "6 log lines dropped (queue full)");
        assert!(!n.urgent() && n.take().is_empty());
    }
}
