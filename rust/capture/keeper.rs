//! The keeper of a queue: a small child process that holds a copy of the queue's
//! socket and, the moment the daemon is gone (however it went, `kill -9`
//! included), accepts everything queued and unbinds.
//!
//! Without it the kernel unbinds the queue when the daemon's socket closes,
//! and unbinding DROPS every packet still queued: the answers held or waiting
//! to be read at that instant would be lost. With the keeper the socket
//! outlives the daemon by the moment the keeper needs to see the pipe close,
//! release, and unbind in one datagram; answers that come later pass the
//! unbound queue (`--queue-bypass`).

use std::io;
use std::os::unix::io::RawFd;

/// The keeper process of one queue; dropping it lets the keeper release and exit.
pub(crate) struct Keeper {
    pid: libc::pid_t,
    /// The write end of the pipe the keeper waits on: closing it wakes the keeper.
    pipe_w: RawFd,
}

impl Keeper {
    /// Fork the keeper of the queue socket `sock`; it will send `release` (a
    /// datagram that accepts everything queued, then unbinds) when woken.
    pub(crate) fn spawn(sock: RawFd, release: &[u8]) -> io::Result<Keeper> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a live array of two ints, which pipe2 fills in.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let [pipe_r, pipe_w] = fds;
        let max_fd = open_files_limit();
        // SAFETY: fork in a multi-threaded process: the child runs only
        // async-signal-safe system calls (sigprocmask, close, read, send,
        // _exit) on memory that exists before the fork (`release` and locals),
        // allocates nothing, takes no lock and cannot panic; it never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = io::Error::last_os_error();
            close(pipe_r);
            close(pipe_w);
            return Err(e);
        }
        if pid == 0 {
            keep(sock, pipe_r, release, max_fd);
        }
        close(pipe_r);
        Ok(Keeper { pid, pipe_w })
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        close(self.pipe_w);
        // The keeper exits at once when its pipe closes: reap it (bounded).
        for _ in 0..200 {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a live status int.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r != 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this module opened and owns.
    unsafe { libc::close(fd) };
}

fn open_files_limit() -> RawFd {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a live rlimit struct getrlimit fills in.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if ok {
        RawFd::try_from(lim.rlim_cur.min(65_536)).unwrap_or(65_536)
    } else {
        4096
    }
}

/// The keeper's whole life, in the child: hold `sock` until the pipe closes,
/// then send `release` and exit. Async-signal-safe calls only.
fn keep(sock: RawFd, pipe_r: RawFd, release: &[u8], max_fd: RawFd) -> ! {
    // SAFETY: plain system calls on descriptors and memory that exist in this
    // process (a zeroed sigset_t is a valid one to fill); none allocates, locks
    // or unwinds.
    unsafe {
        // Signals meant for the daemon (a group's SIGTERM, SIGHUP) are not ours:
        // the keeper ends when the daemon does. SIGKILL still ends it.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        // Nothing else of the daemon stays open in here (listening sockets, sets).
        for fd in 3..max_fd {
            if fd != sock && fd != pipe_r {
                libc::close(fd);
            }
        }
        let mut b = [0u8; 16];
        loop {
            let n = libc::read(pipe_r, b.as_mut_ptr().cast(), b.len());
            let interrupted =
                n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
            if n == 0 || (n < 0 && !interrupted) {
                break;
            }
        }
        libc::send(sock, release.as_ptr().cast(), release.len(), 0);
        libc::_exit(0)
    }
}
