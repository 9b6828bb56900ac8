//! What the acks of a bind say. NFLOG and NFQUEUE bind the same way: four
//! PF_(UN)BIND commands, the BIND of the group or queue, then its settings,
//! each with its own sequence number and NLM_F_ACK.

use std::io;

use crate::error::{Error, Result};

/// An error from the kernel's (negative) ack code.
pub(crate) fn errno_err(context: String, code: i32) -> Error {
    Error::io(context, io::Error::from_raw_os_error(code.saturating_abs()))
}

/// Check the acks of a bind: `code(i)` is the ack of message `i` (0-3 the PF
/// commands, 4 the BIND), `settings` the required settings after it. `name`
/// says what was bound ("nflog group 100", "nfqueue 100").
pub(crate) fn check_bind_acks(
    name: &str,
    code: impl Fn(usize) -> i32,
    settings: &[(usize, &str)],
) -> Result<()> {
    // PF_(UN)BIND errors are ignored (new kernels may refuse or ignore them),
    // but they tell why a BIND got EPERM: nfnetlink refuses every message
    // without CAP_NET_ADMIN, while nfnetlink_log and nfnetlink_queue answer
    // EPERM to a BIND of a group or queue another socket owns (and EBUSY when
    // this socket owns it).
    let no_permission = (0..4).all(|i| -code(i) == libc::EPERM);
    match code(4) {
        0 => {}
        c if -c == libc::EPERM && no_permission => {
            return Err(errno_err(format!("{name}: binding needs CAP_NET_ADMIN (root)"), c))
        }
        c if -c == libc::EBUSY || -c == libc::EPERM => {
            return Err(errno_err(
                format!("{name} is already bound by another process"),
                -libc::EBUSY,
            ))
        }
        c => return Err(errno_err(format!("{name}: bind"), c)),
    }
    for &(i, what) in settings {
        if code(i) != 0 {
            return Err(errno_err(format!("{name}: setting {what}"), code(i)));
        }
    }
    Ok(())
}
