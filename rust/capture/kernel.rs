//! What the kernel itself counts about a capture socket, read at any moment:
//! the messages it could not queue on the socket (SO_MEMINFO's drops, or
//! /proc/net/netlink before Linux 4.12), and a queue's packet ids and drops
//! (/proc/net/netfilter/nfnetlink_queue).
//!
//! Sequence (or id) gaps tell the same, but only once a later packet arrives:
//! a flood that ends while the socket is full leaves its last drops to these
//! counters alone, and `status` would show them missing until the next answer.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{FromRawFd, RawFd};

/// A 32-bit counter of the kernel's, followed across wraps. The kernel's
/// counter starts at 0 with the socket (or queue instance) it belongs to.
#[derive(Debug, Default)]
pub(crate) struct Wide {
    last: Cell<u32>,
    total: Cell<u64>,
}

impl Wide {
    /// The total so far, given the kernel's value now.
    pub(crate) fn update(&self, now: u32) -> u64 {
        let total = self.total.get() + u64::from(now.wrapping_sub(self.last.get()));
        self.last.set(now);
        self.total.set(total);
        total
    }
}

/// A file of the opening thread's network namespace (the socket's, which
/// may differ from the process's when a library user entered a namespace).
fn open_proc_net(name: &str) -> io::Result<File> {
    File::open(format!("/proc/thread-self/net/{name}"))
        .or_else(|_| File::open(format!("/proc/self/net/{name}")))
}

/// The whole file again, from its start (seq files regenerate on every read).
fn read_again(mut f: &File) -> io::Result<String> {
    f.seek(SeekFrom::Start(0))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(text)
}

/// The socket's inode number: its row in /proc/net/netlink.
fn socket_inode(fd: RawFd) -> io::Result<u64> {
    // SAFETY: the descriptor is borrowed for metadata() only; ManuallyDrop
    // keeps the File from closing it.
    let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    Ok(f.metadata()?.ino())
}

/// SO_MEMINFO's drop count (Linux 4.12+).
fn meminfo_drops(fd: RawFd) -> io::Result<u32> {
    let mut mem = [0u32; 16];
    let mut len = std::mem::size_of_val(&mem) as libc::socklen_t;
    // SAFETY: `mem` and `len` are live locals; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            mem.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let at = libc::SK_MEMINFO_DROPS as usize;
    if (len as usize) < (at + 1) * 4 {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "SO_MEMINFO without drops"));
    }
    Ok(mem[at])
}

/// The Drops column of socket `inode` in /proc/net/netlink (columns found by
/// the header's names; None if the kernel prints no Drops column).
pub(crate) fn netlink_drops(text: &str, inode: u64) -> Option<u32> {
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next()?.split_whitespace().collect();
    let drops = head.iter().position(|&c| c == "Drops")?;
    let ino = head.iter().position(|&c| c == "Inode")?;
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(ino).and_then(|v| v.parse::<u64>().ok()) == Some(inode) {
            // Printed as a signed int: a wrapped count shows negative.
            return f.get(drops)?.parse::<i64>().ok().map(|v| v as u32);
        }
    }
    None
}

enum DropSource {
    Meminfo,
    Proc { file: File, inode: u64 },
    Unknown,
}

/// The kernel's count of messages it could not queue on one socket.
pub(crate) struct SocketDrops {
    source: DropSource,
    count: Wide,
}

impl SocketDrops {
    /// Find how this kernel tells the drops of socket `fd`.
    pub(crate) fn open(fd: RawFd) -> Self {
        let source = if meminfo_drops(fd).is_ok() {
            DropSource::Meminfo
        } else {
            match (open_proc_net("netlink"), socket_inode(fd)) {
                (Ok(file), Ok(inode)) => DropSource::Proc { file, inode },
                _ => DropSource::Unknown,
            }
        };
        SocketDrops { source, count: Wide::default() }
    }

    /// Drops so far (None: this kernel does not tell).
    pub(crate) fn total(&self, fd: RawFd) -> Option<u64> {
        let now = match &self.source {
            DropSource::Meminfo => meminfo_drops(fd).ok()?,
            DropSource::Proc { file, inode } => netlink_drops(&read_again(file).ok()?, *inode)?,
            DropSource::Unknown => return None,
        };
        Some(self.count.update(now))
    }
}

/// One queue's row of /proc/net/netfilter/nfnetlink_queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueRow {
    /// Dropped because the queue was full (only without fail-open).
    pub(crate) queue_dropped: u32,
    /// Dropped because the socket was full (only without fail-open; they used ids).
    pub(crate) user_dropped: u32,
    /// The last packet id given out (ids start at 1).
    pub(crate) id_sequence: u32,
}

/// The row of `queue` bound by `portid`: "queue portid total copy_mode
/// copy_range queue_dropped user_dropped id_sequence 1".
pub(crate) fn queue_row(text: &str, queue: u16, portid: u32) -> Option<QueueRow> {
    text.lines().find_map(|line| {
        let f: Vec<u32> = line.split_whitespace().map_while(|v| v.parse().ok()).collect();
        match f[..] {
            [q, p, _, _, _, queue_dropped, user_dropped, id_sequence, ..]
                if q == u32::from(queue) && p == portid =>
            {
                Some(QueueRow { queue_dropped, user_dropped, id_sequence })
            }
            _ => None,
        }
    })
}

/// What the kernel counts of one queue instance (ours: bound at open).
pub(crate) struct QueueCounters {
    file: Option<File>,
    queue: u16,
    portid: u32,
    ids: Wide,
    dropped: Wide,
}

impl QueueCounters {
    pub(crate) fn open(queue: u16, portid: u32) -> Self {
        let file = open_proc_net("netfilter/nfnetlink_queue").ok();
        QueueCounters { file, queue, portid, ids: Wide::default(), dropped: Wide::default() }
    }

    /// (packet ids given out, packets dropped by a full queue) so far; None if
    /// the kernel does not tell.
    pub(crate) fn read(&self) -> Option<(u64, u64)> {
        let text = read_again(self.file.as_ref()?).ok()?;
        let row = queue_row(&text, self.queue, self.portid)?;
        Some((self.ids.update(row.id_sequence), self.dropped.update(row.queue_dropped)))
    }
}

/// The netlink port id the kernel gave socket `fd` (its row in the proc files).
pub(crate) fn portid(fd: RawFd) -> Option<u32> {
    // SAFETY: all-zero is a valid sockaddr_nl.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are live locals of the sizes given.
    let rc =
        unsafe { libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_nl).cast(), &mut len) };
    (rc == 0).then_some(addr.nl_pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETLINK: &str = "\
sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
0000000079ca93df 12  32353      00000000 0        0        0     2        0        2162940
00000000222fae9b 12  3257865068 00000000 0        0        0     2        41992    2164344
000000008ac5b9a2 12  0          00000000 0        0        0     2        -2       2164345
";

    #[test]
    fn netlink_drops_by_inode() {
        assert_eq!(netlink_drops(NETLINK, 2164344), Some(41992));
        assert_eq!(netlink_drops(NETLINK, 2162940), Some(0));
        assert_eq!(netlink_drops(NETLINK, 2164345), Some(u32::MAX - 1), "wrapped");
        assert_eq!(netlink_drops(NETLINK, 1), None, "no such socket");
        assert_eq!(netlink_drops("", 1), None);
        // A kernel without the Drops column.
        let old = "sk Eth Pid Groups Rmem Wmem Dump Locks Inode\nff 12 1 0 0 0 0 2 7\n";
        assert_eq!(netlink_drops(old, 7), None);
    }

    #[test]
    fn queue_row_by_queue_and_port() {
        let text = "  100 2787979326     3 2 65531     0     0    20000  1\n\
                    \x20 101      77     0 2 65531     5     6        9  1\n";
        let row = queue_row(text, 100, 2787979326).unwrap();
        assert_eq!(row, QueueRow { queue_dropped: 0, user_dropped: 0, id_sequence: 20000 });
        let row = queue_row(text, 101, 77).unwrap();
        assert_eq!((row.queue_dropped, row.user_dropped, row.id_sequence), (5, 6, 9));
        assert_eq!(queue_row(text, 101, 78), None, "another socket's queue");
        assert_eq!(queue_row(text, 7, 77), None);
        assert_eq!(queue_row("  100 1 2\n", 100, 1), None, "short row");
        assert_eq!(queue_row("", 100, 1), None);
    }

    #[test]
    fn wide_follows_wraps() {
        let w = Wide::default();
        assert_eq!(w.update(5), 5);
        assert_eq!(w.update(5), 5);
        assert_eq!(w.update(u32::MAX), u64::from(u32::MAX));
        assert_eq!(w.update(3), u64::from(u32::MAX) + 4);
    }

    #[test]
    fn socket_drops_of_a_fresh_socket() {
        let s = match crate::nl::NetfilterSocket::open() {
            Ok(s) => s,
            // qemu-user refuses NETLINK_NETFILTER; a real kernel (the VM) must not.
            Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
                assert!(std::env::var_os("HRNEO_REQUIRE_KERNEL").is_none(), "{e}");
                eprintln!("socket_drops_of_a_fresh_socket: skipped, no NETLINK_NETFILTER: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let drops = SocketDrops::open(s.fd());
        assert_eq!(drops.total(s.fd()), Some(0));
        assert!(portid(s.fd()).is_some_and(|p| p != 0));
    }
}
