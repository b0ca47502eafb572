//! Small helpers shared by the process wrappers.

use std::{
    io::Read,
    process::{Child, ExitStatus},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

/// Sends `signal` to the process `pid`.
pub(crate) fn signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::other("pid does not fit pid_t"))?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// SIGKILLs every process left in the process group `pgid` (a child
/// started with `process_group(0)` leads its own group, `pgid` = its pid).
pub(crate) fn kill_group(pgid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: kill(2) has no memory-safety preconditions; a negative pid
        // addresses the group, which only holds processes this test started.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// Polls `child` until it exits or `timeout` passes; `None` on timeout.
pub(crate) fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs and reaps `child`, ignoring errors (it may already be gone).
pub(crate) fn kill_and_reap(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = child.kill();
    let _ = wait_timeout(child, Duration::from_secs(10));
}

/// A buffer that background threads append a process's output to.
#[derive(Clone, Default)]
pub(crate) struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Copies everything readable from `reader` into the buffer on a
    /// background thread, until EOF.
    pub(crate) fn capture(&self, mut reader: impl Read + Send + 'static, name: &str) {
        let buf = self.0.clone();
        let _ = thread::Builder::new()
            .name(format!("capture-{name}"))
            .spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match reader.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend_from_slice(&chunk[..n]),
                    }
                }
            });
    }

    /// Everything captured so far, lossily decoded as UTF-8.
    pub(crate) fn text(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The last `max_lines` lines captured so far.
    pub(crate) fn tail(&self, max_lines: usize) -> String {
        tail_lines(&self.text(), max_lines)
    }
}

/// The last `max_lines` lines of `text`.
pub(crate) fn tail_lines(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}
