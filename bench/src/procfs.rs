//! Process figures from `/proc`: resident memory and CPU time.

use std::time::Duration;

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, "VmRSS:")
        .ok_or_else(|| std::io::Error::other(format!("no VmRSS for pid {pid}")))
}

/// A `kB` line of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime of `pid` (all its threads).
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&stat)
        .ok_or_else(|| std::io::Error::other(format!("unparsable /proc/{pid}/stat")))?;
    Ok(Duration::from_micros(
        ticks * 1_000_000 / clock_ticks_per_s(),
    ))
}

/// utime + stime in clock ticks from a `/proc/<pid>/stat` line (fields 14
/// and 15; the command name in parentheses may contain spaces).
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field 14 is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of several processes added up.
pub fn cpu_time_sum(pids: &[u32]) -> std::io::Result<Duration> {
    pids.iter().map(|&p| cpu_time(p)).sum()
}

/// RSS of several processes added up, KiB.
pub fn rss_sum_kib(pids: &[u32]) -> std::io::Result<u64> {
    pids.iter().map(|&p| rss_kib(p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let line = "1234 (my prog) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 37 0 0 20 0 3 0 100 200000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(287));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t  4242 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(4242));
        assert_eq!(parse_status_kib(status, "VmHWM:"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        cpu_time(pid).unwrap();
    }
}
