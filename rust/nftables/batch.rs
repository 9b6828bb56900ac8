//! `NftSetBatch`: queued adds for one nf_tables set; a commit tells which were new.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};

use super::consts::kernel_error;
use super::message::{elements, ElemAttrs, NftElem};
use super::session::{intervals, NftSetInfo, NftSetSession, Op};
use super::NftSetRef;
use crate::error::{Error, Result};
use crate::ipset::{Committed, Entry};

/// How a present element of a timeout set gets its timeout reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// Learn it from the kernel (once per process, at the first refresh).
    Auto,
    /// A plain add resets it (Linux 6.12+, "set element timeout update support").
    Update,
    /// Delete and add again in one transaction (every kernel).
    Readd,
}

impl RefreshMode {
    /// "auto", "update" or "readd".
    pub fn name(self) -> &'static str {
        match self {
            RefreshMode::Auto => "auto",
            RefreshMode::Update => "update",
            RefreshMode::Readd => "readd",
        }
    }

    /// The mode of a name.
    pub fn parse(text: &str) -> Result<RefreshMode> {
        match text {
            "auto" => Ok(RefreshMode::Auto),
            "update" => Ok(RefreshMode::Update),
            "readd" => Ok(RefreshMode::Readd),
            other => Err(Error::InvalidArgument(format!(
                "refresh must be 'auto', 'update' or 'readd', not {other:?}"
            ))),
        }
    }
}

/// What this kernel was found to do (0: not known yet, 1: update, 2: readd).
static KERNEL_REFRESH: AtomicU8 = AtomicU8::new(0);

/// What the kernel was found to do on a plain add of a present element, once a
/// refresh has been tried in this process: `Update` or `Readd` (None: not yet).
pub fn kernel_refresh_mode() -> Option<RefreshMode> {
    match KERNEL_REFRESH.load(Ordering::Relaxed) {
        1 => Some(RefreshMode::Update),
        2 => Some(RefreshMode::Readd),
        _ => None,
    }
}

/// A present element is refreshed when this much of its timeout has run.
const REFRESH_SLACK_MS: u64 = 2000;

/// Queued adds for one nf_tables set; `commit` reports which were new.
pub struct NftSetBatch {
    set: NftSetRef,
    what: String,
    timeout: Option<u32>,
    refresh: RefreshMode,
    queue: Vec<Entry>,
    queued: HashSet<Entry>,
    session: NftSetSession,
    info: Option<NftSetInfo>,
    /// The kernel has no single-element get (before 4.15): look up in a dump.
    dump_lookup: bool,
}

/// What the lookup said of one queued entry.
enum Found {
    Absent,
    /// In the set as it is (with the time it has left, if it expires).
    Exact(Option<u64>),
    /// Inside an interval of the set that is not its own.
    Covered,
}

impl NftSetBatch {
    /// A batch for `set`; `timeout` (seconds) goes with every add (None: the
    /// set's default; 0: never expires).
    pub fn new(set: NftSetRef, timeout: Option<u32>) -> Result<NftSetBatch> {
        Ok(NftSetBatch {
            what: set.to_string(),
            set,
            timeout,
            refresh: RefreshMode::Auto,
            queue: Vec::new(),
            queued: HashSet::new(),
            session: NftSetSession::open()?,
            info: None,
            dump_lookup: false,
        })
    }

    /// The set this batch adds to.
    pub fn set(&self) -> &NftSetRef {
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

    /// How present elements are refreshed (tests; kernels known to need one way).
    pub fn set_refresh(&mut self, mode: RefreshMode) {
        self.refresh = mode;
    }

    /// The refresh mode asked for.
    pub fn refresh(&self) -> RefreshMode {
        self.refresh
    }

    /// The batch's netlink session, for other requests on the same socket.
    pub fn session(&mut self) -> &mut NftSetSession {
        &mut self.session
    }

    /// Forget the cached set info (the set was re-created, or may have been).
    pub fn forget_info(&mut self) {
        self.info = None;
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

    /// The set's info, asked once and cached.
    pub fn info(&mut self) -> Result<&NftSetInfo> {
        if self.info.is_none() {
            let info = self.session.info(&self.set)?;
            info.check_address_set()?;
            self.info = Some(info);
        }
        self.info.as_ref().ok_or_else(|| kernel_error(&self.what, libc::ENOENT))
    }

    /// Add everything queued. Returns the entries that were new (absent or
    /// expired), in queue order; a refusal of some entries is an
    /// `Error::Nftables` whose `new` still lists the new ones.
    pub fn commit(&mut self) -> Result<Vec<Entry>> {
        let c = self.commit_entries()?;
        match c.error {
            None => Ok(c.new),
            Some(Error::Nftables { set, code, reason, .. }) => Err(Error::Nftables {
                set,
                code,
                reason,
                new: c.new.iter().map(Entry::to_string).collect(),
            }),
            Some(other) => Err(other),
        }
    }

    /// Add everything queued: one lookup round (which entries are present, and
    /// how long they have left), then one transaction with the absent ones and
    /// the refreshes; one more only when something was refused. Entries the
    /// set cannot take (family, a network into a set without `flags interval`)
    /// leave the queue and are reported before anything is sent; the others
    /// stay queued for the next commit. `Err` only when nothing could be sent.
    pub fn commit_entries(&mut self) -> Result<Committed> {
        if self.queue.is_empty() {
            return Ok(Committed::default());
        }
        let info = match self.info() {
            Ok(i) => i.clone(),
            Err(e) => {
                self.forget_on(&e);
                return Err(e);
            }
        };
        self.refuse_unfit(&info)?;
        let (elem_timeout, target_ms) = self.timeouts(&info)?;
        let queue = std::mem::take(&mut self.queue);
        self.queued.clear();
        let found = match self.find(&info, &queue) {
            Ok(f) => f,
            Err(e) => {
                self.forget_on(&e);
                return Err(e);
            }
        };
        let interval = info.is_interval();
        let mut new_idx: Vec<usize> = Vec::new();
        let mut refresh: Vec<(usize, u64)> = Vec::new(); // (queue index, ms it had left)
        let mut present = 0;
        for (i, f) in found.iter().enumerate() {
            match f {
                Found::Absent => new_idx.push(i),
                Found::Covered => present += 1,
                Found::Exact(left) => {
                    present += 1;
                    if let (Some(left), Some(target)) = (*left, target_ms) {
                        if left + REFRESH_SLACK_MS < target {
                            refresh.push((i, left));
                        }
                    }
                }
            }
        }
        let mode = match self.refresh {
            RefreshMode::Auto => kernel_refresh_mode().unwrap_or(RefreshMode::Auto),
            m => m,
        };
        // A refresh names its timeout even where new entries take the set's default.
        let refresh_timeout = elem_timeout.or(target_ms);
        // Deletes (a refresh by delete and add) first, then the adds: the kernel
        // sends consecutive ops of a kind in one message.
        let mut ops: Vec<Op> = Vec::new();
        let mut op_entry: Vec<(usize, bool)> = Vec::new(); // (queue index, is a new entry)
        if mode == RefreshMode::Readd {
            for &(i, _) in &refresh {
                ops.push(Op { del: true, elems: elements(&queue[i], interval, None) });
                op_entry.push((i, false));
            }
        }
        for &i in &new_idx {
            ops.push(Op { del: false, elems: elements(&queue[i], interval, elem_timeout) });
            op_entry.push((i, true));
        }
        for &(i, _) in &refresh {
            ops.push(Op { del: false, elems: elements(&queue[i], interval, refresh_timeout) });
            op_entry.push((i, false));
        }
        let refused = match self.session.apply(&self.set, &ops) {
            Ok(r) => r,
            Err(e) => {
                self.forget_on(&e);
                return Err(e);
            }
        };
        let mut error: Option<i32> = None;
        let mut new = Vec::new();
        let mut refused_new = 0;
        for ((i, is_new), r) in op_entry.iter().zip(&refused) {
            match (r, is_new) {
                (None, true) => new.push(queue[*i]),
                (Some(code), true) => {
                    refused_new += 1;
                    error.get_or_insert(*code);
                }
                (Some(code), false) => {
                    error.get_or_insert(*code);
                }
                (None, false) => {}
            }
        }
        let all_gone = refused_new > 0 && new.is_empty() && present == 0;
        if all_gone && error == Some(libc::ENOENT) {
            // The set went away since its info was read: nothing is in it.
            self.info = None;
            return Err(kernel_error(&self.what, libc::ENOENT));
        }
        if mode == RefreshMode::Auto && !refresh.is_empty() {
            if let Err(e) = self.learn_refresh(&queue, &refresh, interval, refresh_timeout) {
                error.get_or_insert(e.errno().unwrap_or(libc::EIO));
            }
        }
        let error = error.map(|code| kernel_error(&self.what, code));
        if let Some(e) = &error {
            self.forget_on(e);
        }
        Ok(Committed { new, present, error })
    }

    /// Put network `e` in place of the intervals of the set it holds (a static
    /// network written over addresses learned before: the kernel refuses an
    /// interval over others). One transaction; returns how many it replaced.
    /// An interval that reaches out of `e` is left, and the add stays refused.
    pub fn absorb(&mut self, e: &Entry) -> Result<usize> {
        let info = self.info()?.clone();
        if !info.is_interval() || e.prefix.is_none() {
            return Ok(0);
        }
        info.check_entry(e)?;
        let (elem_timeout, _) = self.timeouts(&info)?;
        let first = addr_key(e.addr);
        let last = last_addr(e).map_or(first, addr_key);
        let inner: Vec<_> = intervals(self.session.elements(&self.set)?)
            .into_iter()
            .filter(|iv| {
                let end_ok = iv.end.is_some_and(|end| addr_key(end) - 1 <= last);
                iv.start.is_ipv6() == e.is_ipv6() && addr_key(iv.start) >= first && end_ok
            })
            .collect();
        if inner.is_empty() {
            return Ok(0);
        }
        let mut ops: Vec<Op> = inner
            .iter()
            .map(|iv| {
                let mut elems = vec![NftElem::of_addr(iv.start, false, None)];
                elems.extend(iv.end.map(|end| NftElem::of_addr(end, true, None)));
                Op { del: true, elems }
            })
            .collect();
        ops.push(Op { del: false, elems: elements(e, true, elem_timeout) });
        match self.session.apply(&self.set, &ops)?.into_iter().flatten().next() {
            Some(code) => Err(kernel_error(&self.what, code)),
            None => Ok(inner.len()),
        }
    }

    /// Remove `entries` from the set; returns how many were there. One
    /// transaction each: an absent element would abort a shared one.
    pub fn delete(&mut self, entries: &[Entry]) -> Result<usize> {
        let interval = self.info()?.is_interval();
        let mut removed = 0;
        for e in entries {
            let op = Op { del: true, elems: elements(e, interval, None) };
            match self
                .session
                .apply(&self.set, std::slice::from_ref(&op))?
                .into_iter()
                .flatten()
                .next()
            {
                None => removed += 1,
                Some(code) if code == libc::ENOENT => {}
                Some(code) => return Err(kernel_error(&self.what, code)),
            }
        }
        Ok(removed)
    }

    /// Entries the set cannot take leave the queue, as one error.
    fn refuse_unfit(&mut self, info: &NftSetInfo) -> Result<()> {
        let mut refused: Option<(Error, usize)> = None;
        self.queue.retain(|e| match info.check_entry(e) {
            Ok(()) => true,
            Err(err) => {
                refused.get_or_insert((err, 0)).1 += 1;
                false
            }
        });
        let Some((err, n)) = refused else { return Ok(()) };
        self.queued = self.queue.iter().copied().collect();
        Err(match err {
            Error::Nftables { set, code, reason, new } => Error::Nftables {
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
        })
    }

    /// The timeout sent with each element, and the one a present element is
    /// refreshed towards (both in ms).
    fn timeouts(&self, info: &NftSetInfo) -> Result<(Option<u64>, Option<u64>)> {
        let ms = |t: u32| u64::from(t) * 1000;
        Ok(match (self.timeout, info.has_timeout()) {
            // Forever: what a set without timeouts does anyway; in a timeout set
            // with a default, timeout 0 keeps the element from taking the default.
            (Some(0), true) => (info.timeout_ms.map(|_| 0), None),
            (Some(0), false) | (None, false) => (None, None),
            (Some(t), true) => (Some(ms(t)), Some(ms(t))),
            (Some(_), false) => {
                return Err(Error::Nftables {
                    set: self.what.clone(),
                    code: libc::EINVAL,
                    reason: "set has no timeout support (no `flags timeout`)".to_string(),
                    new: Vec::new(),
                })
            }
            (None, true) => (None, info.timeout_ms),
        })
    }

    /// Which queued entries are present: one get per entry (a second, of its
    /// last address, for a network in an interval set, to see that one interval
    /// holds all of it).
    fn find(&mut self, info: &NftSetInfo, queue: &[Entry]) -> Result<Vec<Found>> {
        if !self.dump_lookup {
            match self.find_by_get(info, queue) {
                Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => self.dump_lookup = true,
                other => return other,
            }
        }
        self.find_in_dump(info, queue)
    }

    fn find_by_get(&mut self, info: &NftSetInfo, queue: &[Entry]) -> Result<Vec<Found>> {
        let interval = info.is_interval();
        let mut keys = Vec::with_capacity(queue.len());
        let mut second: Vec<Option<usize>> = vec![None; queue.len()];
        for e in queue {
            keys.push(NftElem::of_addr(e.addr, false, None));
        }
        for (i, e) in queue.iter().enumerate() {
            if let (true, Some(_)) = (interval, e.prefix) {
                if let Some(last) = last_addr(e) {
                    second[i] = Some(keys.len());
                    keys.push(NftElem::of_addr(last, false, None));
                }
            }
        }
        let got = self.session.lookup(&self.set, &keys)?;
        Ok((0..queue.len())
            .map(|i| {
                let Some(el) = &got[i] else { return Found::Absent };
                let own = el.key.as_slice() == keys[i].key();
                match second[i] {
                    // A network: present if the interval holding its first
                    // address also holds its last one.
                    Some(j) => match &got[j] {
                        Some(l) if l.key == el.key && own => Found::Exact(el.expiration_ms),
                        Some(l) if l.key == el.key => Found::Covered,
                        _ => Found::Absent,
                    },
                    None if own || !interval => Found::Exact(el.expiration_ms),
                    None => Found::Covered,
                }
            })
            .collect())
    }

    /// Kernels before 4.15 cannot get one element: read the whole set once per
    /// commit and look the entries up in it (costs O(set size)).
    fn find_in_dump(&mut self, info: &NftSetInfo, queue: &[Entry]) -> Result<Vec<Found>> {
        let elems = self.session.elements(&self.set)?;
        if !info.is_interval() {
            let by_key: HashMap<Vec<u8>, Option<u64>> =
                elems.into_iter().map(|e| (e.key, e.expiration_ms)).collect();
            return Ok(queue
                .iter()
                .map(|e| match by_key.get(NftElem::of_addr(e.addr, false, None).key()) {
                    Some(left) => Found::Exact(*left),
                    None => Found::Absent,
                })
                .collect());
        }
        let ivs = intervals(elems);
        Ok(queue
            .iter()
            .map(|e| {
                let first = e.addr;
                let last = last_addr(e).unwrap_or(first);
                let holder = ivs.iter().find(|iv| {
                    let after_start = addr_key(first) >= addr_key(iv.start);
                    let before_end = iv.end.is_none_or(|end| addr_key(last) < addr_key(end));
                    after_start && before_end && first.is_ipv6() == iv.start.is_ipv6()
                });
                match holder {
                    None => Found::Absent,
                    Some(iv) if iv.start == first && iv.end == super::message::after(e) => {
                        Found::Exact(iv.expiration_ms)
                    }
                    Some(_) => Found::Covered,
                }
            })
            .collect())
    }

    /// After the first refresh by a plain add in this process: look one of the
    /// refreshed elements up again. Its time left went up on a kernel that
    /// updates timeouts; else refresh them again by delete and add, and
    /// remember that for every later commit.
    fn learn_refresh(
        &mut self,
        queue: &[Entry],
        refresh: &[(usize, u64)],
        interval: bool,
        elem_timeout: Option<u64>,
    ) -> Result<()> {
        let Some(&(probe, before)) = refresh.iter().min_by_key(|(_, left)| *left) else {
            return Ok(());
        };
        let key = NftElem::of_addr(queue[probe].addr, false, None);
        let after: Option<ElemAttrs> = self.session.lookup(&self.set, &[key])?.pop().flatten();
        let updated = after.and_then(|a| a.expiration_ms).is_some_and(|left| left > before + 1000);
        if updated {
            KERNEL_REFRESH.store(1, Ordering::Relaxed);
            return Ok(());
        }
        KERNEL_REFRESH.store(2, Ordering::Relaxed);
        let mut ops = Vec::with_capacity(refresh.len() * 2);
        for &(i, _) in refresh {
            ops.push(Op { del: true, elems: elements(&queue[i], interval, None) });
        }
        for &(i, _) in refresh {
            ops.push(Op { del: false, elems: elements(&queue[i], interval, elem_timeout) });
        }
        match self.session.apply(&self.set, &ops)?.into_iter().flatten().next() {
            Some(code) => Err(kernel_error(&self.what, code)),
            None => Ok(()),
        }
    }

    fn forget_on(&mut self, e: &Error) {
        // The set may have been destroyed and re-created: ask again next time.
        if e.errno() == Some(libc::ENOENT) {
            self.info = None;
        }
    }

    /// The members, each with the seconds it has left (None: it never
    /// expires); one dump. Intervals that are no network (`a-b` ranges made by
    /// other tools) are left out.
    pub fn members(&mut self) -> Result<Vec<(Entry, Option<u32>)>> {
        let interval = match self.info() {
            Ok(i) => i.is_interval(),
            Err(e) => {
                self.forget_on(&e);
                return Err(e);
            }
        };
        let elems = match self.session.elements(&self.set) {
            Ok(e) => e,
            Err(e) => {
                self.forget_on(&e);
                return Err(e);
            }
        };
        // Seconds as ipset says them: rounded down, at least 1 while it counts
        // down; an element whose time is up (0 ms left, not yet collected) is gone.
        let left = |ms: Option<u64>| match ms {
            None => Some(None),
            Some(0) => None,
            Some(ms) => Some(Some(u32::try_from(ms / 1000).unwrap_or(u32::MAX).max(1))),
        };
        Ok(if interval {
            intervals(elems)
                .iter()
                .filter_map(|iv| Some((Entry::parse(&iv.text()).ok()?, left(iv.expiration_ms)?)))
                .collect()
        } else {
            elems
                .iter()
                .filter(|e| !e.end)
                .filter_map(|e| Some((Entry::host(e.addr()?), left(e.expiration_ms)?)))
                .collect()
        })
    }

    /// Add `entries`, each with its own timeout in seconds (addresses kept in a
    /// state file across a reboot), outside the queue, in transactions as
    /// `commit` sends them. An entry already in the set, or inside one of its
    /// intervals (a static network), is left as it is and counted `present`:
    /// its own countdown is at least as fresh as a file, and a permanent static
    /// entry must not start to expire. Which are there is read from one dump
    /// (after a reboot the set holds only its static entries). Entries of the
    /// other family and timeouts of 0 (which would make them permanent) are
    /// left out. `Err` only when nothing could be sent.
    pub fn restore(&mut self, entries: &[(Entry, u32)]) -> Result<Committed> {
        let info = match self.info() {
            Ok(i) => i.clone(),
            Err(e) => {
                self.forget_on(&e);
                return Err(e);
            }
        };
        if !info.has_timeout() {
            return Err(Error::Nftables {
                set: self.what.clone(),
                code: libc::EINVAL,
                reason: "set has no timeout support (no `flags timeout`)".to_string(),
                new: Vec::new(),
            });
        }
        let fit: Vec<(Entry, u32)> = entries
            .iter()
            .filter(|(e, t)| *t > 0 && info.check_entry(e).is_ok())
            .copied()
            .collect();
        if fit.is_empty() {
            return Ok(Committed::default());
        }
        let there = match self.session.elements(&self.set) {
            Ok(elems) => present_in(elems, info.is_interval(), &fit),
            Err(e) => {
                self.forget_on(&e);
                return Err(e);
            }
        };
        let interval = info.is_interval();
        let absent: Vec<(Entry, u32)> =
            fit.iter().zip(&there).filter(|(_, &p)| !p).map(|(e, _)| *e).collect();
        let ops: Vec<Op> = absent
            .iter()
            .map(|(e, t)| Op {
                del: false,
                elems: elements(e, interval, Some(u64::from(*t) * 1000)),
            })
            .collect();
        let refused = match self.session.apply(&self.set, &ops) {
            Ok(r) => r,
            Err(e) => {
                self.forget_on(&e);
                return Err(e);
            }
        };
        let mut new = Vec::with_capacity(absent.len());
        let mut error = None;
        for ((e, _), r) in absent.iter().zip(&refused) {
            match r {
                None => new.push(*e),
                Some(code) => {
                    error.get_or_insert(*code);
                }
            }
        }
        let present = fit.len() - absent.len();
        if new.is_empty() && present == 0 && error == Some(libc::ENOENT) {
            self.info = None;
            return Err(kernel_error(&self.what, libc::ENOENT));
        }
        let error = error.map(|code| kernel_error(&self.what, code));
        Ok(Committed { new, present, error })
    }
}

/// Per entry: whether the set as dumped (`elems`) holds it, as itself or
/// inside one interval. Intervals are searched by bisection: a set of 100,000
/// entries is checked in O(n log n), not O(n²) as `find_in_dump` would.
fn present_in(elems: Vec<ElemAttrs>, interval: bool, entries: &[(Entry, u32)]) -> Vec<bool> {
    if !interval {
        let keys: HashSet<Vec<u8>> = elems.into_iter().filter(|e| !e.end).map(|e| e.key).collect();
        return entries
            .iter()
            .map(|(e, _)| keys.contains(NftElem::of_addr(e.addr, false, None).key()))
            .collect();
    }
    // In key order (`intervals` sorts); a set holds one family only.
    let ivs = intervals(elems);
    entries
        .iter()
        .map(|(e, _)| {
            let first = addr_key(e.addr);
            let last = last_addr(e).map_or(first, addr_key);
            let at = ivs.partition_point(|iv| addr_key(iv.start) <= first);
            let Some(iv) = at.checked_sub(1).and_then(|i| ivs.get(i)) else { return false };
            iv.start.is_ipv6() == e.is_ipv6() && iv.end.is_none_or(|end| last < addr_key(end))
        })
        .collect()
}

fn addr_key(a: std::net::IpAddr) -> u128 {
    match a {
        std::net::IpAddr::V4(v) => u128::from(u32::from(v)),
        std::net::IpAddr::V6(v) => u128::from(v),
    }
}

/// The last address of a network (None for a single address).
fn last_addr(e: &Entry) -> Option<std::net::IpAddr> {
    e.prefix?;
    let last = match super::message::after(e) {
        Some(next) => addr_key(next) - 1,
        None if e.addr.is_ipv4() => u128::from(u32::MAX),
        None => u128::MAX,
    };
    Some(match e.addr {
        std::net::IpAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::from(last as u32)),
        std::net::IpAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::from(last)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_addresses() {
        let last = |t: &str| last_addr(&Entry::parse(t).unwrap()).map(|a| a.to_string());
        assert_eq!(last("192.0.2.1"), None);
        assert_eq!(last("203.0.113.0/24").as_deref(), Some("203.0.113.255"));
        assert_eq!(last("0.0.0.0/0").as_deref(), Some("255.255.255.255"));
        assert_eq!(last("2001:db8::/127").as_deref(), Some("2001:db8::1"));
        assert_eq!(last("::/0").as_deref(), Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    }

    fn dumped(key: &str, end: bool) -> ElemAttrs {
        let a: std::net::IpAddr = key.parse().unwrap();
        let key = NftElem::of_addr(a, false, None).key().to_vec();
        ElemAttrs { key, end, timeout_ms: None, expiration_ms: None }
    }

    #[test]
    fn restore_sees_what_a_dump_holds() {
        let want = |texts: &[&str]| -> Vec<(Entry, u32)> {
            texts.iter().map(|t| (Entry::parse(t).unwrap(), 60)).collect()
        };
        // An interval set: a static /24, one address, as the kernel dumps them (any order).
        let elems = vec![
            dumped("203.0.114.0", true),
            dumped("192.0.2.8", true),
            dumped("203.0.113.0", false),
            dumped("192.0.2.7", false),
        ];
        let entries = want(&[
            "203.0.113.9",    // inside the static network
            "203.0.113.0/25", // inside it too
            "203.0.112.0/23", // reaches out of it: absent (the kernel will refuse the overlap)
            "192.0.2.7",      // itself
            "192.0.2.8",      // right after it
            "192.0.2.6",
            "10.0.0.1",
        ]);
        let got = present_in(elems.clone(), true, &entries);
        assert_eq!(got, [true, true, false, true, false, false, false]);
        assert_eq!(present_in(Vec::new(), true, &entries), vec![false; 7]);
        // A plain set: keys only (an interval end is no member).
        let got = present_in(elems, false, &want(&["192.0.2.7", "192.0.2.8", "203.0.113.9"]));
        assert_eq!(got, [true, false, false]);
        // An interval that runs to the last address has no end element.
        let got = present_in(vec![dumped("255.255.255.0", false)], true, &want(&["255.255.255.9"]));
        assert_eq!(got, [true]);
    }

    #[test]
    fn refresh_modes_by_name() {
        for m in [RefreshMode::Auto, RefreshMode::Update, RefreshMode::Readd] {
            assert_eq!(RefreshMode::parse(m.name()).unwrap(), m);
        }
        assert!(RefreshMode::parse("sometimes").is_err());
    }
}
