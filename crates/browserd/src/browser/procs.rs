//! Finding and killing Chromium processes by what is on their command line.
//!
//! Chromium's helpers can leave the browser's process group (the crash handler double-forks
//! and calls `setsid`), so killing the group is not proof that nothing is left. Every
//! process browserd starts carries the session's unique profile path in its arguments or
//! inherits it from a parent that did; a sweep of `/proc` for that path catches the rest.

use rustix::process::{Pid, Signal, kill_process};
use std::path::Path;

/// Pids of live processes whose command line contains `needle`.
pub fn find_by_cmdline(needle: &Path) -> Vec<u32> {
    let needle = needle.as_os_str().as_encoded_bytes();
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmd| memchr::memmem::find(&cmd, needle).is_some())
                .unwrap_or(false)
        })
        .collect()
}

/// How long [`kill_by_cmdline`] waits for killed processes to be gone.
const KILL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// SIGKILLs every process whose command line contains `needle`, and waits (blocking, at
/// most [`KILL_PATIENCE`]) until none is left: a killed process keeps its command line
/// until it has exited, and the folder it names is removed next. Returns how many it hit.
#[expect(
    clippy::disallowed_methods,
    reason = "a blocking wait: every caller runs it on spawn_blocking (or at start, before serving)"
)]
pub fn kill_by_cmdline(needle: &Path) -> usize {
    let deadline = std::time::Instant::now() + KILL_PATIENCE;
    let mut hit = std::collections::HashSet::new();
    loop {
        let pids = find_by_cmdline(needle);
        if pids.is_empty() || std::time::Instant::now() >= deadline {
            return hit.len();
        }
        for &pid in &pids {
            hit.insert(pid);
            if let Some(pid) = Pid::from_raw(pid as i32) {
                // ESRCH (already gone) is the outcome we want anyway.
                let _ = kill_process(pid, Signal::KILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The fields of `/proc/<pid>/stat` after the parenthesised command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// When the process started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
/// With the pid, it names one process for the life of the machine: a recycled pid has a
/// later start.
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `ticks` and names `needle` on its
/// command line.
pub fn is_same_process(pid: u32, ticks: u64, needle: &Path) -> bool {
    is_alive(pid)
        && start_ticks(pid) == Some(ticks)
        && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
            memchr::memmem::find(&cmd, needle.as_os_str().as_encoded_bytes()).is_some()
        })
}

/// Whether a process with this pid exists (zombies count as gone).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "a synchronous test waiting for /proc"
    )]
    fn finds_and_kills_a_process_by_an_argument() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker-arg");
        // sh takes the marker as its $0, so it shows in the command line; `read` is a
        // builtin, so sh never forks a child that would carry the marker too.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("read line")
            .arg(&marker)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // The new process's command line can take a moment to show in /proc.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while find_by_cmdline(&marker).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(find_by_cmdline(&marker), vec![pid]);
        assert!(is_alive(pid));
        let ticks = start_ticks(pid).unwrap();
        assert!(is_same_process(pid, ticks, &marker));
        assert!(
            !is_same_process(pid, ticks + 1, &marker),
            "a later start is another process"
        );
        assert!(!is_same_process(pid, ticks, Path::new("/elsewhere")));
        assert_eq!(kill_by_cmdline(&marker), 1);
        child.wait().unwrap();
        assert!(!is_alive(pid));
        assert!(!is_same_process(pid, ticks, &marker));
        assert!(find_by_cmdline(&marker).is_empty());
    }
}
