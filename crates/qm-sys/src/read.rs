//! Small readers shared by the collectors: a file that may be absent (`None`), and the
//! `key value` and `key=value` line formats /proc and cgroupfs use. Malformed lines are
//! skipped, never a panic.

use std::io::{self, Read};
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

/// Reads the whole file into `buf` (cleared first, its allocation reused): `false` when it does
/// not exist, cannot be read or is not UTF-8, and `buf` is then empty. For collectors that read
/// the same files every second.
pub(crate) fn text_into(path: &Path, buf: &mut String) -> bool {
    buf.clear();
    let ok = std::fs::File::open(path).and_then(|mut f| f.read_to_string(buf));
    if ok.is_err() {
        buf.clear();
    }
    ok.is_ok()
}

/// Like [`text_into`] for files whose names may not be UTF-8 (`/proc/self/mounts`).
pub(crate) fn bytes_into(path: &Path, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let ok = std::fs::File::open(path).and_then(|mut f| f.read_to_end(buf));
    if ok.is_err() {
        buf.clear();
    }
    ok.is_ok()
}

/// The value of `key` in a line of `key=value` words (`some avg10=0.12 total=345`).
pub(crate) fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.split_once('=').filter(|(k, _)| *k == key))
        .map(|(_, v)| v)
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

    #[test]
    fn field_finds_key_value_words() {
        let line = "some avg10=1.50 avg60=x total=42";
        assert_eq!(field(line, "avg10"), Some("1.50"));
        assert_eq!(field(line, "avg60"), Some("x"));
        assert_eq!(field(line, "total"), Some("42"));
        assert_eq!(field(line, "some"), None);
        assert_eq!(field("", "total"), None);
    }

    #[test]
    fn into_readers_reuse_the_buffer_and_report_absence() {
        let mut s = String::from("stale");
        assert!(!text_into(Path::new("/nonexistent/qm-sys/file"), &mut s));
        assert!(s.is_empty());
        let mut b = b"stale".to_vec();
        assert!(!bytes_into(Path::new("/nonexistent/qm-sys/file"), &mut b));
        assert!(b.is_empty());
        assert!(text_into(Path::new("/proc/self/stat"), &mut s) || !Path::new("/proc").exists());
    }
}
