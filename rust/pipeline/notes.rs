//! Log lines the pipeline (and its conntrack thread) leave for Python's logging.
//!
//! The hot path never calls into Python: it queues lines here, bounded, and
//! the daemon logs them when `run` returns. Lines beyond the bound are counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

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
