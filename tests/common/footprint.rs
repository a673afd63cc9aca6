//! What a node process costs the machine, read from outside: its memory from `/proc` and
//! its data directory's size on disk. Used by the adversarial tests and the churn benchmark
//! (which includes this file by path), so it depends on nothing else in the harness.

use std::path::Path;

/// One mebibyte, the unit the bounds are written in.
pub const MIB: u64 = 1024 * 1024;

/// Resident memory of a process now, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:") * 1024
}

/// The most resident memory the process ever had, in bytes (`VmHWM`).
pub fn peak_rss_bytes(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:") * 1024
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes the files under `path` occupy on disk (allocated blocks, so sparse files count what
/// they hold).
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The process's peak RSS, after asserting it stayed within `allowance` bytes over `idle`.
pub fn assert_peak_within(pid: u32, idle: u64, allowance: u64) -> u64 {
    let peak = peak_rss_bytes(pid);
    assert!(
        peak <= idle + allowance,
        "peak RSS {} MiB over idle {} MiB + {} MiB",
        peak / MIB,
        idle / MIB,
        allowance / MIB
    );
    peak
}

/// CPU time the process has used so far (user and system), from `/proc/PID/stat`; zero when
/// it cannot be read.
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::time::Duration::from_millis(ticks * 1000 / per_second)
}
