//! The one poll(2) wrapper the core uses.

use std::io;
use std::os::unix::io::RawFd;
use std::time::Duration;

/// Wait until one of `fds` is readable, at most `timeout` (`None`: forever).
/// Returns a bit per fd (bit i set: `fds[i]` is readable or in error), 0 on
/// timeout. EINTR is returned as `ErrorKind::Interrupted`, so a caller that
/// serves signals can go back to its owner.
pub(crate) fn poll_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<u32> {
    const MAX: usize = 8;
    if fds.len() > MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "poll: too many descriptors"));
    }
    let mut pfds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; MAX];
    for (p, &fd) in pfds.iter_mut().zip(fds) {
        *p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    }
    let ms = match timeout {
        None => -1,
        // Round up, so a wait of 0.4 ms is not a busy loop of zero-timeout polls.
        Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
    };
    // SAFETY: `pfds` is a live array of MAX initialised pollfd structs and the
    // count passed (fds.len() <= MAX) never exceeds it; poll does not keep the pointer.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ready = 0;
    for (i, p) in pfds[..fds.len()].iter().enumerate() {
        if p.revents != 0 {
            ready |= 1 << i;
        }
    }
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn readable_bits_and_timeout() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let (c, _d) = UnixDatagram::pair().unwrap();
        let fds = [b.as_raw_fd(), c.as_raw_fd()];
        assert_eq!(poll_readable(&fds, Some(Duration::from_millis(1))).unwrap(), 0);
        a.send(b"x").unwrap();
        assert_eq!(poll_readable(&fds, None).unwrap(), 0b01);
        assert!(poll_readable(&[0; 9], Some(Duration::ZERO)).is_err());
    }
}
