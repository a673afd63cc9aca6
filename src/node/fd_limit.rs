//! Raising the soft file-descriptor limit to the hard limit at start, so that the worker port
//! keeps accepting while the HTTP or cluster port is flooded (each also has its own cap).

use tracing::{info, warn};

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit and logs the outcome.
pub fn raise_to_hard_limit(node: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!(node, error = %std::io::Error::last_os_error(), "cannot read the file descriptor limit");
        return;
    }
    let before = limit.rlim_cur;
    if before >= limit.rlim_max {
        info!(
            node,
            open_files = before,
            "file descriptor limit already at its hard limit"
        );
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        warn!(node, open_files = before, hard_limit = limit.rlim_max,
            error = %std::io::Error::last_os_error(), "cannot raise the file descriptor limit");
        return;
    }
    info!(
        node,
        from = before,
        to = limit.rlim_max,
        "raised the file descriptor limit to the hard limit"
    );
}
