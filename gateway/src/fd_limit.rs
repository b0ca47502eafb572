//! The open-files limit (`RLIMIT_NOFILE`) and how many client connections
//! fit under it.
//!
//! Every client connection is a file descriptor. A gateway whose
//! `server.max_connections` is above what the process may open does not
//! refuse the connection over the limit: `accept(2)` fails with `EMFILE`,
//! the client waits in the backlog until it times out, and so does anything
//! else that needs a descriptor (a Redis reconnect, the API's outgoing
//! requests). In the one-million-connection run (issue #17) gateways hit
//! `accept failed: Too many open files` while reconnecting clients piled on.
//! So the gateway raises its soft limit to the hard one at start, as Go's
//! runtime does, and caps the connections it admits below it, keeping
//! [`RESERVED_FDS`] for its own use; a connection over the cap is answered
//! 503 with a reason (`server::refuse_connection`).

/// Descriptors kept out of the connection cap: the listener, the runtime's
/// epoll and wake-up descriptors, Redis links (bus, subscriber, presence,
/// streams), the HTTP clients of forwarding and client actions, log files,
/// and connections accepted but not yet refused.
pub const RESERVED_FDS: libc::rlim_t = 256;

/// Raises the soft open-files limit to the hard limit and returns the soft
/// limit in effect afterwards; `None` when it cannot be read. A refused
/// raise (a sandbox that forbids `setrlimit`) keeps the old soft limit.
pub fn raise_nofile_limit() -> Option<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid `rlimit`; the call only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Some(lim.rlim_cur)
}

/// The connections to admit: `configured`, capped at `nofile` minus
/// [`RESERVED_FDS`] (at least one). `nofile` of `None` (unknown limit, or
/// `RLIM_INFINITY`) leaves `configured` alone.
pub fn connection_cap(configured: usize, nofile: Option<libc::rlim_t>) -> usize {
    match nofile {
        Some(limit) if limit != libc::RLIM_INFINITY => {
            let room = usize::try_from(limit.saturating_sub(RESERVED_FDS))
                .unwrap_or(usize::MAX)
                .max(1);
            configured.min(room)
        }
        _ => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_the_reserve_below_the_limit() {
        assert_eq!(connection_cap(1_000_000, Some(20_000)), 20_000 - 256);
        assert_eq!(connection_cap(16_384, Some(20_000)), 16_384);
        assert_eq!(connection_cap(16_384, None), 16_384);
        assert_eq!(connection_cap(10, Some(100)), 1, "never zero");
        assert_eq!(connection_cap(16_384, Some(libc::RLIM_INFINITY)), 16_384);
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = raise_nofile_limit().expect("getrlimit works on Linux");
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(soft, lim.rlim_cur);
        assert_eq!(lim.rlim_cur, lim.rlim_max, "soft raised to hard");
    }
}
