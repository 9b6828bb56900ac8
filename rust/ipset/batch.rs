//! `IpsetBatch`: queued adds for one set; a commit tells which were new.

use std::collections::HashSet;

use super::consts::{check_name, kernel_error, IPSET_ERR_TIMEOUT};
use super::entry::{Entry, SetHeader};
use super::session::IpsetSession;
use crate::error::{Error, Result};

/// What one commit did: the entries that were new, and the error that kept
/// some others out (the rest went in all the same).
#[derive(Debug, Default)]
pub struct Committed {
    /// Entries that were absent (or expired), in queue order.
    pub new: Vec<Entry>,
    /// Entries sent that were already present (their timeout was refreshed).
    pub present: usize,
    /// The first refusal, if any entry was refused.
    pub error: Option<Error>,
}

/// Queued adds for one set; `commit` reports which were new.
pub struct IpsetBatch {
    set: String,
    timeout: Option<u32>,
    queue: Vec<Entry>,
    queued: HashSet<Entry>,
    session: IpsetSession,
    header: Option<SetHeader>,
}

impl IpsetBatch {
    /// A batch for `set`; `timeout` (seconds) goes with every add (None: the set's default).
    pub fn new(set: &str, timeout: Option<u32>) -> Result<IpsetBatch> {
        check_name(set)?;
        Ok(IpsetBatch {
            set: set.to_string(),
            timeout,
            queue: Vec::new(),
            queued: HashSet::new(),
            session: IpsetSession::open()?,
            header: None,
        })
    }

    /// The set this batch adds to.
    pub fn set_name(&self) -> &str {
        &self.set
    }

    /// The timeout sent with every add.
    pub fn timeout(&self) -> Option<u32> {
        self.timeout
    }

    /// Change the timeout sent with the adds of later commits.
    pub fn set_timeout(&mut self, timeout: Option<u32>) {
        self.timeout = timeout;
    }

    /// The batch's netlink session, for other requests on the same socket.
    pub fn session(&mut self) -> &mut IpsetSession {
        &mut self.session
    }

    /// Forget the cached header (the set was re-created, or may have been).
    pub fn forget_header(&mut self) {
        self.header = None;
    }

    /// Queue an address or network; duplicates are kept once, in first-seen order.
    pub fn add(&mut self, text: &str) -> Result<()> {
        self.push(Entry::parse(text)?);
        Ok(())
    }

    /// Queue a parsed entry.
    pub fn push(&mut self, e: Entry) {
        if self.queued.insert(e) {
            self.queue.push(e);
        }
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drop everything queued.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.queued.clear();
    }

    /// The set's header, asked once and cached.
    pub fn header(&mut self) -> Result<&SetHeader> {
        if self.header.is_none() {
            self.header = Some(self.session.header(&self.set)?);
        }
        self.header.as_ref().ok_or_else(|| kernel_error(&self.set, libc::ENOENT))
    }

    /// Add everything queued. Returns the entries that were new (absent or
    /// expired), in queue order; a refusal of some entries is an `Error::Ipset`
    /// whose `new` still lists the new ones. See `commit_entries`.
    pub fn commit(&mut self) -> Result<Vec<Entry>> {
        let c = self.commit_entries()?;
        match c.error {
            None => Ok(c.new),
            Some(Error::Ipset { set, code, reason, .. }) => Err(Error::Ipset {
                set,
                code,
                reason,
                new: c.new.iter().map(Entry::to_string).collect(),
            }),
            Some(other) => Err(other),
        }
    }

    /// Add everything queued: one round trip when all are new; present
    /// entries of a timeout set get a second one that refreshes their timeout.
    /// The queue is emptied once sent. Entries the set cannot take (family,
    /// a network into hash:ip) leave the queue and are reported as an error
    /// before anything is sent; the others stay queued for the next commit, so
    /// one bad address neither poisons the batch nor loses the good ones.
    /// `Err` only when nothing could be sent.
    pub fn commit_entries(&mut self) -> Result<Committed> {
        if self.queue.is_empty() {
            return Ok(Committed::default());
        }
        let header = match self.header() {
            Ok(h) => h.clone(),
            Err(e) => return Err(e),
        };
        let mut refused: Option<(Error, usize)> = None;
        self.queue.retain(|e| match header.check_entry(e) {
            Ok(()) => true,
            Err(err) => {
                refused.get_or_insert((err, 0)).1 += 1;
                false
            }
        });
        if let Some((err, n)) = refused {
            self.queued = self.queue.iter().copied().collect();
            return Err(match err {
                Error::Ipset { set, code, reason, new } => Error::Ipset {
                    set,
                    code,
                    reason: format!(
                        "{reason} ({n} refused entr{}; {} still queued)",
                        if n == 1 { "y" } else { "ies" },
                        self.queue.len()
                    ),
                    new,
                },
                other => other,
            });
        }
        // timeout 0 on a set without timeouts means "forever", which it is anyway.
        let timeout = match self.timeout {
            Some(0) if header.timeout.is_none() => None,
            Some(_) if header.timeout.is_none() => {
                return Err(kernel_error(&self.set, IPSET_ERR_TIMEOUT));
            }
            t => t,
        };
        let queue = std::mem::take(&mut self.queue);
        self.queued.clear();
        let all: Vec<usize> = (0..queue.len()).collect();
        let (new, present, mut err) =
            match self.session.add_round(&self.set, &queue, &all, timeout, true) {
                Ok(r) => r,
                Err(e) => {
                    self.forget_header_on(&e);
                    return Err(e);
                }
            };
        if err == Some(libc::ENOENT) && new.is_empty() && present.is_empty() {
            // The set went away since its header was read: nothing is in it.
            self.header = None;
            return Err(kernel_error(&self.set, libc::ENOENT));
        }
        if header.timeout.is_some() && !present.is_empty() {
            // Without EXCL the kernel sets IPSET_FLAG_EXIST and resets the timeout.
            // Without EXCL every success acks 0, so this round tells nothing about
            // newness (an entry expiring between the rounds is re-added, unreported).
            match self.session.add_round(&self.set, &queue, &present, timeout, false) {
                Ok((_, _, e2)) => err = err.or(e2),
                Err(e) => err = err.or(Some(e.errno().unwrap_or(libc::EIO))),
            }
        }
        let error = err.map(|code| kernel_error(&self.set, code));
        if let Some(e) = &error {
            self.forget_header_on(e);
        }
        Ok(Committed {
            new: new.into_iter().map(|i| queue[i]).collect(),
            present: present.len(),
            error,
        })
    }

    fn forget_header_on(&mut self, e: &Error) {
        // The set may have been destroyed and re-created: ask again next time.
        if e.errno() == Some(libc::ENOENT) {
            self.header = None;
        }
    }

    /// The members, each with the seconds it has left (None: it never expires).
    pub fn members(&mut self) -> Result<Vec<(Entry, Option<u32>)>> {
        match self.session.list_timeouts(&self.set) {
            Ok((_, members)) => Ok(members),
            Err(e) => {
                self.forget_header_on(&e);
                Err(e)
            }
        }
    }

    /// Add `entries`, each with its own timeout in seconds (addresses kept in a
    /// state file across a reboot), outside the queue. Sent with EXCL: an entry
    /// already in the set keeps what it has, as its own countdown is at least
    /// as fresh as a file (and a permanent static entry must not start to
    /// expire); those count as `present`. Entries of the other family and
    /// timeouts of 0 (which would make them permanent) are left out; timeouts
    /// are capped at the kernel's most (IPSET_MAX_TIMEOUT). `Err` only when
    /// nothing could be sent (no such set, no timeout support).
    pub fn restore(&mut self, entries: &[(Entry, u32)]) -> Result<Committed> {
        let header = self.header()?.clone();
        if header.timeout.is_none() {
            return Err(kernel_error(&self.set, IPSET_ERR_TIMEOUT));
        }
        let (all, timeouts): (Vec<Entry>, Vec<u32>) = entries
            .iter()
            .filter(|(e, t)| *t > 0 && header.check_entry(e).is_ok())
            .map(|&(e, t)| (e, t.min(IPSET_MAX_TIMEOUT)))
            .unzip();
        if all.is_empty() {
            return Ok(Committed::default());
        }
        let idx: Vec<usize> = (0..all.len()).collect();
        let (new, present, err) = match self.session.add_round_with(
            &self.set,
            &all,
            &idx,
            |i| timeouts.get(i).copied(),
            true,
        ) {
            Ok(r) => r,
            Err(e) => {
                self.forget_header_on(&e);
                return Err(e);
            }
        };
        if err == Some(libc::ENOENT) && new.is_empty() && present.is_empty() {
            self.header = None;
            return Err(kernel_error(&self.set, libc::ENOENT));
        }
        let error = err.map(|code| kernel_error(&self.set, code));
        Ok(Committed {
            new: new.into_iter().map(|i| all[i]).collect(),
            present: present.len(),
            error,
        })
    }
}

/// The longest timeout the kernel keeps, in seconds (IPSET_MAX_TIMEOUT in
/// ip_set_timeout.h: (UINT_MAX >> 1) / MSEC_PER_SEC); it caps longer ones itself.
const IPSET_MAX_TIMEOUT: u32 = (u32::MAX >> 1) / 1000;
