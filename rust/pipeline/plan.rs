//! What a config compiles to for the pipeline: the watchlist, each policy's
//! sets, and a writer per set. A reload builds a new `Plan` and swaps it in.

use std::net::IpAddr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ipset::{Committed, CreateSpec, Entry, Family, IpsetBatch};
use crate::watchlist::Watchlist;

/// One policy as the config gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// The policy's name (stats are kept by name across reloads).
    pub name: String,
    /// IPv4 set.
    pub set4: Option<String>,
    /// IPv6 set.
    pub set6: Option<String>,
    /// Seconds an address stays after its last answer; 0 = forever.
    pub timeout: u32,
    /// Most elements of the sets hrneo creates (None: the kernel's default).
    pub maxelem: Option<u32>,
    /// Delete conntrack entries of addresses new to the sets.
    pub reconnect: bool,
    /// Addresses and networks always in the sets.
    pub statics: Vec<Entry>,
}

/// Entries with the seconds each has left, by set name: what `Plan::learned`
/// lists and `Plan::restore` puts back (a state file in between).
pub type Learned = Vec<(String, Vec<(Entry, u32)>)>;

/// What preparing a set decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The timeout sent with learned entries (None: the set has no timeouts).
    pub learned_timeout: Option<u32>,
    /// Lines for the log, in order (what was created, what differs from the config).
    pub notes: Vec<String>,
}

/// A kernel set the pipeline writes to: an ipset (`IpsetWriter`) or an
/// nf_tables set (`NftWriter`).
pub trait SetWriter: Send {
    /// Make the set what `spec` wants: create it if missing, check its family,
    /// decide the timeouts, (re)add the static entries.
    fn prepare(&mut self, family: Family, spec: &PolicySpec) -> Result<Prepared>;

    /// Add `entries` (their family matches the set); refresh the present ones.
    fn commit(&mut self, entries: &[Entry]) -> Result<Committed>;

    /// Remove `entries`; returns how many were in the set.
    fn delete(&mut self, entries: &[Entry]) -> Result<usize>;

    /// The set's members, each with the seconds it has left (None: it never
    /// expires: a static entry, or a set without timeouts).
    fn members(&mut self) -> Result<Vec<(Entry, Option<u32>)>>;

    /// Add `entries` each with its own timeout in seconds (> 0; the state file
    /// kept them across a reboot). An entry already in the set keeps what it
    /// has and counts as present: the kernel's countdown is at least as fresh
    /// as the file, and a static entry stays permanent.
    fn restore(&mut self, entries: &[(Entry, u32)]) -> Result<Committed>;

    /// Another writer of the same set, on a socket of its own: the set is
    /// listed on it while this one goes on committing.
    fn reopen(&self) -> Result<Box<dyn SetWriter>>;
}

/// One set of a plan.
pub struct SetTarget {
    /// The set's name.
    pub name: String,
    /// Its family.
    pub family: Family,
    /// Index of its policy in `Plan::policies`.
    pub policy: usize,
    /// Writes to the kernel.
    pub writer: Box<dyn SetWriter>,
}

/// The compiled config: watchlist, policies and their sets.
pub struct Plan {
    pub(crate) watchlist: Arc<Watchlist>,
    pub(crate) policies: Vec<PolicySpec>,
    pub(crate) sets: Vec<SetTarget>,
    /// For each policy: its (IPv4, IPv6) set indices into `sets`.
    pub(crate) routes: Vec<(Option<usize>, Option<usize>)>,
}

impl Plan {
    /// A plan whose sets are written by `open_writer(set name)`.
    pub fn new(
        watchlist: Arc<Watchlist>,
        policies: Vec<PolicySpec>,
        mut open_writer: impl FnMut(&str) -> Result<Box<dyn SetWriter>>,
    ) -> Result<Plan> {
        if policies.len() > usize::from(u16::MAX) {
            return Err(Error::InvalidArgument("too many policies".to_string()));
        }
        if watchlist.policy_span() > policies.len() {
            return Err(Error::InvalidArgument(format!(
                "the watchlist has domains of policy {} but the plan has {} policies",
                watchlist.policy_span() - 1,
                policies.len()
            )));
        }
        let mut sets = Vec::new();
        let mut routes = Vec::with_capacity(policies.len());
        for (pi, p) in policies.iter().enumerate() {
            let mut route = (None, None);
            for (name, family) in [(&p.set4, Family::Inet), (&p.set6, Family::Inet6)] {
                let Some(name) = name else { continue };
                let writer = open_writer(name)?;
                let slot = if family == Family::Inet { &mut route.0 } else { &mut route.1 };
                *slot = Some(sets.len());
                sets.push(SetTarget { name: name.clone(), family, policy: pi, writer });
            }
            routes.push(route);
        }
        Ok(Plan { watchlist, policies, sets, routes })
    }

    /// A plan that writes ipsets over netlink.
    pub fn with_ipsets(watchlist: Arc<Watchlist>, policies: Vec<PolicySpec>) -> Result<Plan> {
        Plan::new(watchlist, policies, |name| Ok(Box::new(IpsetWriter::open(name)?)))
    }

    /// A plan that writes nf_tables sets over netlink: a set named `name` lives
    /// in `inet hrneo`, `family#table#set` names one in another table.
    pub fn with_nftables(watchlist: Arc<Watchlist>, policies: Vec<PolicySpec>) -> Result<Plan> {
        Plan::new(watchlist, policies, |name| Ok(Box::new(super::NftWriter::open(name)?)))
    }

    /// Prepare every set (see `SetWriter::prepare`); returns the log lines.
    pub fn prepare(&mut self) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for s in &mut self.sets {
            notes.extend(s.writer.prepare(s.family, &self.policies[s.policy])?.notes);
        }
        Ok(notes)
    }

    /// Prepare one set again (after the kernel said it is gone).
    pub(crate) fn prepare_set(&mut self, set: usize) -> Result<Prepared> {
        let s = &mut self.sets[set];
        s.writer.prepare(s.family, &self.policies[s.policy])
    }

    /// The plan's sets on sockets of their own, to list their learned entries
    /// without holding up the commits (a dump of 100,000 entries of an nftables
    /// interval set takes the kernel seconds).
    pub fn lister(&self) -> Result<Lister> {
        let sets = self
            .sets
            .iter()
            .map(|s| {
                let statics = self.policies[s.policy].statics.clone();
                Ok((s.name.clone(), statics, s.writer.reopen()?))
            })
            .collect::<Result<_>>()?;
        Ok(Lister { sets })
    }

    /// The learned entries of each set (see `Lister::learned`).
    pub fn learned(&self) -> Result<Learned> {
        self.lister()?.learned()
    }

    /// Put saved entries back: for each set of the plan named in `saved`, its
    /// entries with the seconds they have left, capped at the policy's timeout
    /// (a timeout made shorter since they were saved holds for them too).
    /// Skipped: sets the plan does not have, policies without a timeout (what
    /// they learn never expires and is not saved), static entries, entries
    /// of the other family. Returns how many went in, and a line per set the
    /// kernel refused some of them (the other sets are restored all the same).
    pub fn restore(&mut self, saved: &Learned) -> (usize, Vec<String>) {
        let (mut added, mut notes) = (0, Vec::new());
        for s in &mut self.sets {
            let spec = &self.policies[s.policy];
            if spec.timeout == 0 {
                continue;
            }
            let want6 = s.family == Family::Inet6;
            let entries: Vec<(Entry, u32)> = saved
                .iter()
                .filter(|(name, _)| *name == s.name)
                .flat_map(|(_, entries)| entries.iter())
                .filter(|(e, t)| *t > 0 && e.is_ipv6() == want6 && !spec.statics.contains(e))
                .map(|&(e, t)| (e, t.min(spec.timeout)))
                .collect();
            if entries.is_empty() {
                continue;
            }
            match s.writer.restore(&entries) {
                Ok(c) => {
                    added += c.new.len();
                    if let Some(e) = c.error {
                        let lost = entries.len().saturating_sub(c.new.len() + c.present);
                        notes.push(format!(
                            "set {}: {e}; {lost} saved entries not restored",
                            s.name
                        ));
                    }
                }
                Err(e) => notes.push(format!(
                    "set {}: {e}; its {} saved entries not restored",
                    s.name,
                    entries.len()
                )),
            }
        }
        (added, notes)
    }

    /// The watchlist.
    pub fn watchlist(&self) -> &Arc<Watchlist> {
        &self.watchlist
    }

    /// The policies, in config order.
    pub fn policies(&self) -> &[PolicySpec] {
        &self.policies
    }

    /// The set an address of policy `policy` goes to, if the policy has one of its family.
    pub(crate) fn set_for(&self, policy: usize, addr: &IpAddr) -> Option<usize> {
        let (v4, v6) = self.routes.get(policy).copied()?;
        if addr.is_ipv6() {
            v6
        } else {
            v4
        }
    }
}

/// A plan's sets with a writer each of their own (see `Plan::lister`).
pub struct Lister {
    /// Per set: its name, its policy's static entries, a writer.
    sets: Vec<(String, Vec<Entry>, Box<dyn SetWriter>)>,
}

impl Lister {
    /// The learned entries of each set, by set name, in plan order: members
    /// with time left that are no static entry of their policy (statics stay
    /// permanent; a policy with timeout 0 has nothing learned to list). A set
    /// that is gone lists nothing.
    pub fn learned(self) -> Result<Learned> {
        let mut out = Vec::with_capacity(self.sets.len());
        for (name, statics, mut writer) in self.sets {
            let members = match writer.members() {
                Ok(m) => m,
                Err(e) if e.errno() == Some(libc::ENOENT) => Vec::new(),
                Err(e) => return Err(e),
            };
            let learned = members
                .into_iter()
                .filter_map(|(e, left)| Some((e, left?)))
                .filter(|(e, _)| !statics.contains(e))
                .collect();
            out.push((name, learned));
        }
        Ok(out)
    }
}

/// An ipset written over netlink: one batch (and socket) per set.
pub struct IpsetWriter {
    batch: IpsetBatch,
}

impl IpsetWriter {
    /// Open the socket for `set`; nothing is asked of the kernel yet.
    pub fn open(set: &str) -> Result<IpsetWriter> {
        Ok(IpsetWriter { batch: IpsetBatch::new(set, None)? })
    }
}

impl SetWriter for IpsetWriter {
    fn prepare(&mut self, family: Family, spec: &PolicySpec) -> Result<Prepared> {
        let name = self.batch.set_name().to_string();
        let mut notes = Vec::new();
        self.batch.forget_header();
        let session = self.batch.session();
        if !session.exists(&name)? {
            let create = CreateSpec {
                name: &name,
                settype: "hash:net",
                family: family.nfproto(),
                timeout: (spec.timeout > 0).then_some(spec.timeout),
                maxelem: spec.maxelem,
            };
            session.create(&create, true)?;
            notes.push(format!(
                "created set {name} (hash:net {} timeout {})",
                family.name(),
                spec.timeout
            ));
        }
        let header = session.header(&name)?;
        if header.family != family.nfproto() {
            return Err(Error::InvalidArgument(format!(
                "set {name} of policy {} is {}, expected {}",
                spec.name,
                header.family_name(),
                family.name()
            )));
        }
        // In a timeout set, timeout 0 means permanent (static entries, timeout: 0).
        let (learned, statics_timeout) = match header.timeout {
            None => {
                if spec.timeout > 0 {
                    notes.push(format!(
                        "set {name} has no timeout support: entries of {} stay until removed",
                        spec.name
                    ));
                }
                (None, None)
            }
            Some(t) => {
                if t != spec.timeout {
                    notes.push(format!(
                        "set {name} has default timeout {t}, policy {} says {}: using the policy's",
                        spec.name, spec.timeout
                    ));
                }
                (Some(spec.timeout), Some(0))
            }
        };
        let want6 = family == Family::Inet6;
        let statics: Vec<Entry> =
            spec.statics.iter().filter(|e| e.is_ipv6() == want6).copied().collect();
        self.batch.clear();
        if !statics.is_empty() {
            self.batch.set_timeout(statics_timeout);
            statics.iter().for_each(|e| self.batch.push(*e));
            let committed = self.batch.commit_entries();
            self.batch.set_timeout(learned);
            let committed = committed?;
            if let Some(e) = committed.error {
                return Err(e);
            }
            notes.push(format!(
                "{}: {} static entries in {name} ({} new)",
                spec.name,
                statics.len(),
                committed.new.len()
            ));
        }
        self.batch.set_timeout(learned);
        Ok(Prepared { learned_timeout: learned, notes })
    }

    fn commit(&mut self, entries: &[Entry]) -> Result<Committed> {
        for e in entries {
            self.batch.push(*e);
        }
        self.batch.commit_entries()
    }

    fn delete(&mut self, entries: &[Entry]) -> Result<usize> {
        let name = self.batch.set_name().to_string();
        self.batch.session().delete(&name, entries)
    }

    fn members(&mut self) -> Result<Vec<(Entry, Option<u32>)>> {
        self.batch.members()
    }

    fn restore(&mut self, entries: &[(Entry, u32)]) -> Result<Committed> {
        self.batch.restore(entries)
    }

    fn reopen(&self) -> Result<Box<dyn SetWriter>> {
        Ok(Box::new(IpsetWriter::open(self.batch.set_name())?))
    }
}
