//! The fakes the pipeline tests run on: a kernel of sets, a packet source,
//! a conntrack flusher, and the rig that ties them to a pipeline.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::super::*;
use crate::conntrack::{Flushed, FlusherStats};
use crate::ipset::{Committed, Family};
use crate::testutil::{udp4_answer, Msg, TYPE_A};
use crate::watchlist::{Origin, Watchlist};

// ------------------------------------------------------------------ fakes

#[derive(Default)]
pub(super) struct FakeSet {
    pub(super) members: HashMap<Entry, Option<u32>>,
    pub(super) family: Option<Family>,
    pub(super) limit: Option<usize>,
}

pub(super) type CommitLog = Arc<Mutex<Vec<(String, Vec<Entry>)>>>;

#[derive(Default, Clone)]
pub(super) struct Kernel {
    pub(super) sets: Arc<Mutex<HashMap<String, FakeSet>>>,
    pub(super) commits: CommitLog,
    pub(super) refuse_create: Arc<AtomicBool>,
    /// Commits, verdicts and flushes in the order they happened.
    pub(super) timeline: Arc<Mutex<Vec<String>>>,
}

impl Kernel {
    pub(super) fn members(&self, set: &str) -> HashSet<String> {
        let sets = self.sets.lock().unwrap();
        sets.get(set).map(|s| s.members.keys().map(|e| e.to_string()).collect()).unwrap_or_default()
    }

    pub(super) fn commits_to(&self, set: &str) -> Vec<Vec<Entry>> {
        let c = self.commits.lock().unwrap();
        c.iter().filter(|(s, _)| s == set).map(|(_, e)| e.clone()).collect()
    }
}

pub(super) struct FakeWriter {
    pub(super) kernel: Kernel,
    pub(super) name: String,
    pub(super) timeout: Option<u32>,
}

impl SetWriter for FakeWriter {
    fn delete(&mut self, entries: &[Entry]) -> Result<usize> {
        self.kernel.timeline.lock().unwrap().push(format!("delete {}", self.name));
        let mut sets = self.kernel.sets.lock().unwrap();
        let set = sets
            .get_mut(&self.name)
            .ok_or_else(|| crate::ipset::consts::kernel_error(&self.name, libc::ENOENT))?;
        Ok(entries.iter().filter(|e| set.members.remove(e).is_some()).count())
    }

    fn prepare(&mut self, family: Family, spec: &PolicySpec) -> Result<Prepared> {
        let mut sets = self.kernel.sets.lock().unwrap();
        if !sets.contains_key(&self.name) {
            if self.kernel.refuse_create.load(Ordering::SeqCst) {
                return Err(Error::io("create", io::Error::from_raw_os_error(libc::EPERM)));
            }
            sets.insert(self.name.clone(), FakeSet { family: Some(family), ..Default::default() });
        }
        let set = sets.get_mut(&self.name).unwrap();
        for e in spec.statics.iter().filter(|e| Family::of(&e.addr) == family) {
            set.members.insert(*e, Some(0));
        }
        self.timeout = (spec.timeout > 0).then_some(spec.timeout);
        Ok(Prepared {
            learned_timeout: self.timeout,
            notes: vec![format!("prepared {}", self.name)],
        })
    }

    fn commit(&mut self, entries: &[Entry]) -> Result<Committed> {
        self.kernel.commits.lock().unwrap().push((self.name.clone(), entries.to_vec()));
        self.kernel.timeline.lock().unwrap().push(format!("commit {}", self.name));
        let mut sets = self.kernel.sets.lock().unwrap();
        let Some(set) = sets.get_mut(&self.name) else {
            return Err(crate::ipset::consts::kernel_error(&self.name, libc::ENOENT));
        };
        let mut c = Committed::default();
        for e in entries {
            if set.members.contains_key(e) {
                c.present += 1;
            } else if set.limit.is_some_and(|l| set.members.len() >= l) {
                c.error.get_or_insert(crate::ipset::consts::kernel_error(&self.name, 4352));
                continue;
            } else {
                c.new.push(*e);
            }
            set.members.insert(*e, self.timeout);
        }
        Ok(c)
    }

    fn members(&mut self) -> Result<Vec<(Entry, Option<u32>)>> {
        let sets = self.kernel.sets.lock().unwrap();
        let Some(set) = sets.get(&self.name) else {
            return Err(crate::ipset::consts::kernel_error(&self.name, libc::ENOENT));
        };
        // As the kernel says it: timeout 0 is a permanent entry.
        Ok(set.members.iter().map(|(e, t)| (*e, t.filter(|&t| t > 0))).collect())
    }

    fn reopen(&self) -> Result<Box<dyn SetWriter>> {
        let (kernel, name) = (self.kernel.clone(), self.name.clone());
        Ok(Box::new(FakeWriter { kernel, name, timeout: self.timeout }))
    }

    fn restore(&mut self, entries: &[(Entry, u32)]) -> Result<Committed> {
        let mut sets = self.kernel.sets.lock().unwrap();
        let Some(set) = sets.get_mut(&self.name) else {
            return Err(crate::ipset::consts::kernel_error(&self.name, libc::ENOENT));
        };
        let mut c = Committed::default();
        for &(e, t) in entries {
            match set.members.entry(e) {
                std::collections::hash_map::Entry::Occupied(_) => c.present += 1,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Some(t));
                    c.new.push(e);
                }
            }
        }
        Ok(c)
    }
}

/// Packets pushed by the test; a socket pair makes the fd readable while any wait.
#[derive(Clone)]
pub(super) struct FakeSource {
    pub(super) queue: Arc<Mutex<VecDeque<Vec<u8>>>>,
    pub(super) tx: Arc<UnixDatagram>,
    pub(super) rx: Arc<UnixDatagram>,
    /// Hold mode: packets get ids from 1 on and verdicts go to this timeline.
    pub(super) holding: Option<Arc<Mutex<Vec<String>>>>,
    pub(super) next_id: u32,
    /// Packets handed to the pipeline.
    pub(super) read: Arc<AtomicUsize>,
}

impl FakeSource {
    pub(super) fn new() -> Self {
        let (tx, rx) = UnixDatagram::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        tx.set_nonblocking(true).unwrap();
        FakeSource {
            queue: Arc::default(),
            tx: Arc::new(tx),
            rx: Arc::new(rx),
            holding: None,
            next_id: 1,
            read: Arc::default(),
        }
    }

    pub(super) fn push(&self, packets: impl IntoIterator<Item = Vec<u8>>) {
        let mut q = self.queue.lock().unwrap();
        for p in packets {
            q.push_back(p);
            // A full socket buffer is readable already: that is all it is for.
            let _ = self.tx.send(b"x");
        }
    }
}

impl PacketSource for FakeSource {
    fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    fn drain(&mut self, max: usize, on_packet: &mut dyn FnMut(Captured<'_>)) -> Result<usize> {
        let mut n = 0;
        let mut b = [0u8; 8];
        while n < max {
            let Some(p) = self.queue.lock().unwrap().pop_front() else { break };
            let _ = self.rx.recv(&mut b);
            let held = self.holding.is_some().then_some(self.next_id);
            self.next_id += 1;
            on_packet(Captured { payload: &p, held });
            self.read.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
        Ok(n)
    }

    fn stats(&self) -> CaptureStats {
        CaptureStats { packets: self.read.load(Ordering::Relaxed) as u64, ..Default::default() }
    }

    fn accept(&mut self, ids: &[u32]) -> Result<()> {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        if let Some(t) = &self.holding {
            t.lock().unwrap().push(format!("accept {}", list.join(",")));
        }
        Ok(())
    }

    fn accept_through(&mut self, id: u32) -> Result<()> {
        if let Some(t) = &self.holding {
            t.lock().unwrap().push(format!("through {id}"));
        }
        Ok(())
    }
}

/// Where a fake flusher puts the DNS-blind counter the pipeline hands over.
pub(super) type BlindSink = Arc<Mutex<Option<Arc<Mutex<crate::Blind>>>>>;

/// Records flush calls; 3 entries per address; calls may block on a gate or fail.
#[derive(Clone, Default)]
pub(super) struct FakeFlusher {
    pub(super) calls: Arc<Mutex<Vec<Vec<String>>>>,
    pub(super) gate_closed: Arc<AtomicBool>,
    pub(super) entered: Arc<AtomicUsize>,
    pub(super) fail_first: usize,
    pub(super) kernel: Option<Kernel>,
    pub(super) in_set_at_flush: Arc<Mutex<Vec<bool>>>,
    /// Pretend the event index is valid: flushes are done in the submitter's thread.
    pub(super) ready: bool,
    /// Pretend to follow conntrack events: the DNS-blind counter handed over lands here.
    pub(super) blind: Option<BlindSink>,
    pub(super) threads: Arc<Mutex<Vec<std::thread::ThreadId>>>,
}

impl Flusher for FakeFlusher {
    fn event_fd(&self) -> Option<RawFd> {
        None
    }
    fn poll_events(&mut self) -> Result<u64> {
        Ok(0)
    }
    fn flush_counted(&mut self, addrs: &HashSet<IpAddr>) -> Result<Flushed> {
        self.threads.lock().unwrap().push(std::thread::current().id());
        let mut ips: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        ips.sort();
        if let Some(k) = &self.kernel {
            let sets = k.sets.lock().unwrap();
            let present: HashSet<String> =
                sets.values().flat_map(|s| s.members.keys().map(|e| e.to_string())).collect();
            self.in_set_at_flush.lock().unwrap().extend(ips.iter().map(|a| present.contains(a)));
        }
        if let Some(k) = &self.kernel {
            k.timeline.lock().unwrap().push(format!("flush {}", ips.join(",")));
        }
        let n = {
            let mut c = self.calls.lock().unwrap();
            c.push(ips);
            c.len()
        };
        self.entered.fetch_add(1, Ordering::SeqCst);
        for _ in 0..5000 {
            if !self.gate_closed.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if n <= self.fail_first {
            return Err(Error::io("flush", io::Error::from_raw_os_error(libc::ENOBUFS)));
        }
        let per_address = addrs.iter().map(|a| (*a, 3)).collect();
        Ok(Flushed { deleted: 3 * addrs.len() as u64, per_address })
    }
    fn stats(&self) -> FlusherStats {
        FlusherStats::default()
    }
    fn index_ready(&self) -> bool {
        self.ready
    }
    fn watch_blind(&mut self, blind: Arc<Mutex<crate::Blind>>) -> bool {
        let Some(sink) = &self.blind else { return false };
        *sink.lock().unwrap() = Some(blind);
        true
    }
}

// ------------------------------------------------------------------ setup

pub(super) fn policies() -> Vec<PolicySpec> {
    vec![
        PolicySpec {
            name: "vpn1".into(),
            set4: Some("hr_vpn1".into()),
            set6: Some("hr_vpn1_v6".into()),
            timeout: 600,
            maxelem: None,
            reconnect: true,
            statics: vec![Entry::parse("203.0.113.0/24").unwrap()],
        },
        PolicySpec {
            name: "plain".into(),
            set4: Some("hr_plain".into()),
            set6: None,
            timeout: 3600,
            maxelem: None,
            reconnect: false,
            statics: vec![],
        },
    ]
}

pub(super) fn watchlist(domains: &[(&str, u16)]) -> Arc<Watchlist> {
    let mut w = Watchlist::new();
    w.add_source("test.yaml");
    for (i, (d, p)) in domains.iter().enumerate() {
        w.add(d, *p, Origin { source: 0, line: i as u32 + 1 }).unwrap();
    }
    Arc::new(w)
}

pub(super) fn plan(kernel: &Kernel, pols: Vec<PolicySpec>, domains: &[(&str, u16)]) -> Plan {
    let k = kernel.clone();
    let mut p = Plan::new(watchlist(domains), pols, |name| {
        Ok(Box::new(FakeWriter { kernel: k.clone(), name: name.into(), timeout: None }))
    })
    .unwrap();
    p.prepare().unwrap();
    p
}

pub(super) struct Rig {
    pub(super) kernel: Kernel,
    pub(super) source: FakeSource,
    pub(super) flusher: FakeFlusher,
    pub(super) p: Pipeline,
}

pub(super) const DOMAINS: &[(&str, u16)] =
    &[("example.org", 0), ("example.net", 1), ("www.example.org", 1)];

pub(super) fn rig_with(flusher: FakeFlusher) -> Rig {
    let kernel = Kernel::default();
    let source = FakeSource::new();
    let p = Pipeline::new(
        Box::new(source.clone()),
        plan(&kernel, policies(), DOMAINS),
        Some(Box::new(flusher.clone())),
    )
    .unwrap();
    Rig { kernel, source, flusher, p }
}

pub(super) fn rig() -> Rig {
    rig_with(FakeFlusher::default())
}

/// An answer packet: qname -> CNAMEs along `chain` -> the addresses on the last name.
pub(super) fn answer(chain: &[&str], addrs: &[&str]) -> Vec<u8> {
    let last = chain[chain.len() - 1];
    let mut m = Msg::new(1, true, chain[0], TYPE_A, (chain.len() - 1 + addrs.len()) as u16);
    for w in chain.windows(2) {
        m = m.cname(w[0], 60, w[1]);
    }
    for a in addrs {
        m = match a.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => m.a(last, 60, v4.octets()),
            IpAddr::V6(_) => m.aaaa(last, 60, a),
        };
    }
    udp4_answer(&m.buf)
}

impl Rig {
    pub(super) fn feed(&mut self, packets: Vec<Vec<u8>>) {
        self.source.push(packets);
        self.p.process_queued(usize::MAX);
    }

    pub(super) fn stats(&self, policy: &str) -> PolicyCounters {
        self.p.policy_counters().into_iter().find(|(n, _)| n == policy).unwrap().1
    }

    pub(super) fn flush_calls(&self) -> Vec<Vec<String>> {
        assert!(self.p.wait_flushed(Duration::from_secs(5)));
        self.flusher.calls.lock().unwrap().clone()
    }
}

pub(super) fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}
