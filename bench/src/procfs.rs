//! Process figures from `/proc`: resident memory and CPU time.

use std::time::Duration;

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, "VmRSS:")
        .ok_or_else(|| std::io::Error::other(format!("no VmRSS for pid {pid}")))
}

/// Proportional set size of `pid` in KiB (`/proc/<pid>/smaps_rollup`):
/// pages shared with other processes (the binary's text, mapped by every
/// gateway) count as a share each, so the PSS of several processes adds up
/// to the memory they really use, where their RSS counts shared pages once
/// per process.
pub fn pss_kib(pid: u32) -> std::io::Result<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    parse_status_kib(&rollup, "Pss:")
        .ok_or_else(|| std::io::Error::other(format!("no Pss for pid {pid}")))
}

/// `RssAnon` of `pid` in KiB: resident memory that is not a file's pages.
pub fn rss_anon_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, "RssAnon:")
        .ok_or_else(|| std::io::Error::other(format!("no RssAnon for pid {pid}")))
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

/// A `kB` line of `/proc/meminfo` (`MemAvailable:`, `Slab:`...), KiB.
pub fn meminfo_kib(key: &str) -> Option<u64> {
    parse_status_kib(&std::fs::read_to_string("/proc/meminfo").ok()?, key)
}

/// The kernel's TCP socket counters from `/proc/net/sockstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpSockstat {
    pub inuse: u64,
    pub alloc: u64,
    /// Pages of socket buffers (`mem`), 4 KiB each.
    pub mem_pages: u64,
}

/// Parses the `TCP:` line of `/proc/net/sockstat`.
pub fn parse_sockstat(text: &str) -> Option<TcpSockstat> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let get = |k: &str| -> Option<u64> {
        let at = words.iter().position(|w| *w == k)?;
        words.get(at + 1)?.parse().ok()
    };
    Some(TcpSockstat {
        inuse: get("inuse")?,
        alloc: get("alloc")?,
        mem_pages: get("mem")?,
    })
}

/// The TCP socket counters now.
pub fn tcp_sockstat() -> Option<TcpSockstat> {
    parse_sockstat(&std::fs::read_to_string("/proc/net/sockstat").ok()?)
}

/// A `TcpExt:` counter of `/proc/net/netstat` (`ListenOverflows`...).
pub fn tcpext(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names.zip(values).find(|(n, _)| *n == key)?.1.parse().ok()
}

/// Busy and total jiffies of `cpu` from a `/proc/stat` text: total is
/// every field of its `cpuN` line, busy is that minus idle and iowait.
pub fn parse_cpu_jiffies(stat: &str, cpu: usize) -> Option<(u64, u64)> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Busy and total jiffies so far of the CPUs in `cpus`, added up.
pub fn cpu_jiffies(cpus: &[usize]) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    cpus.iter().try_fold((0, 0), |(b, t), &c| {
        let (busy, total) = parse_cpu_jiffies(&stat, c)?;
        Some((b + busy, t + total))
    })
}

/// The CPUs this process may run on (its affinity mask).
pub fn own_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and
    // sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Whether `pid` has exited (gone, or a zombie waiting for its parent).
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lines() {
        let stat = "cpu  10 0 10 100 5 0 0 0 0 0\ncpu0 4 0 6 50 0 0 0 0 0 0\ncpu1 6 0 4 50 5 1 0 0 0 0\nintr 1\n";
        assert_eq!(parse_cpu_jiffies(stat, 0), Some((10, 60)));
        assert_eq!(parse_cpu_jiffies(stat, 1), Some((11, 66)));
        assert_eq!(parse_cpu_jiffies(stat, 2), None);
        assert!(!own_cpus().is_empty());
        assert!(cpu_jiffies(&own_cpus()).is_some_and(|(b, t)| b <= t && t > 0));
    }

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
    fn sockstat_and_netstat() {
        let text = "sockets: used 73\nTCP: inuse 26 orphan 0 tw 387 alloc 31 mem 233\nUDP: inuse 0 mem 0\n";
        assert_eq!(
            parse_sockstat(text),
            Some(TcpSockstat {
                inuse: 26,
                alloc: 31,
                mem_pages: 233
            })
        );
        assert!(tcp_sockstat().is_some());
        assert!(tcpext("ListenOverflows").is_some());
        assert!(meminfo_kib("MemAvailable:").is_some_and(|m| m > 0));
        assert!(!exited(std::process::id()));
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(pss_kib(pid).unwrap() > 0);
        assert!(rss_anon_kib(pid).unwrap() > 0);
        cpu_time(pid).unwrap();
    }
}
