//! Small readers shared by the collectors: a file that may be absent (`None`), and the
//! `key value` and `key=value` line formats /proc and cgroupfs use. Malformed lines are
//! skipped, never a panic.

use std::io;
use std::path::Path;

/// The file's text, or `None` when it does not exist, cannot be read or is not UTF-8 (a
/// process that vanished, a kernel without the feature).
pub(crate) fn text(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(_) => None,
    }
}

/// The first whitespace-separated number in the file (`memory.current`, `pids.current`).
pub(crate) fn number(path: &Path) -> Option<u64> {
    text(path)?.split_whitespace().next()?.parse().ok()
}

/// `key value [unit]` lines (`/proc/meminfo`, `memory.stat`, `cpu.stat`): the value of `key`.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let k = parts.next()?.trim_end_matches(':');
        if k != key {
            return None;
        }
        parts.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_finds_values_and_skips_garbage() {
        let t = "MemTotal:  100 kB\ngarbage\nMemFree: x kB\nCached: 7 kB\n";
        assert_eq!(keyed(t, "MemTotal"), Some(100));
        assert_eq!(keyed(t, "MemFree"), None);
        assert_eq!(keyed(t, "Cached"), Some(7));
        assert_eq!(keyed(t, "Absent"), None);
    }
}
