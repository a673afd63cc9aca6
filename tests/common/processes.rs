//! Processes seen from outside, through `/proc` (the only place another process's end
//! shows): whether one still runs, which run in a process group, and waiting for a condition
//! on them. Shared by the managed-worker and fault tests.

use std::time::Duration;

/// Field `n` after the `(comm)` of a `/proc/PID/stat` line (0 is the state, 2 the group).
pub fn stat_field(stat: &str, n: usize) -> Option<&str> {
    stat.rsplit_once(") ")?.1.split(' ').nth(n)
}

/// Whether process `pid` runs: it has a `/proc` entry and is no zombie (a zombie runs no
/// code and holds no socket, so it is dead for every test's purpose).
pub fn alive(pid: impl std::fmt::Display) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_field(&stat, 0) != Some("Z"),
        Err(_) => false,
    }
}

/// Every pid in `/proc` now, running or not.
pub fn all_pids() -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The processes of process group `group` that still run.
pub fn group_members(group: i32) -> Vec<u64> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            stat_field(&stat, 0) != Some("Z")
                && stat_field(&stat, 2).and_then(|g| g.parse().ok()) == Some(group)
        })
        .collect()
}

/// Polls `done` until it holds, or panics after `deadline` (see [`super::eventually`]).
pub async fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    super::eventually(what, deadline, || std::future::ready(done().then_some(()))).await
}
