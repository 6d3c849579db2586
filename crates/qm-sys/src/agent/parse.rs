//! Byte-level parsers for the files of /proc and cgroupfs (`/proc/<pid>/stat` and `io`, the
//! `key value` line formats), working on the reused read buffer without UTF-8 checks or
//! allocation. Malformed input gives `None`.

/// A decimal `u64` (no sign, no spaces).
pub(super) fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

/// The first number of the file (`memory.current`, `pids.current`, `cpuacct.usage`).
pub(super) fn first_u64(b: &[u8]) -> Option<u64> {
    parse_u64(words(b).next()?)
}

/// Whitespace-separated words.
pub(super) fn words(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    b.split(|c| c.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
}

/// `key value` or `key: value` lines: the value of `key`.
pub(super) fn keyed(b: &[u8], key: &[u8]) -> Option<u64> {
    b.split(|&c| c == b'\n').find_map(|line| {
        let mut w = words(line);
        let k = w.next()?;
        let k = k.strip_suffix(b":").unwrap_or(k);
        if k != key {
            return None;
        }
        parse_u64(w.next()?)
    })
}

/// The number of lines holding a number (`cgroup.procs`: one pid a line).
pub(super) fn count_numbers(b: &[u8]) -> u64 {
    b.split(|&c| c == b'\n')
        .filter(|l| parse_u64(l.trim_ascii()).is_some())
        .count() as u64
}

/// The fields of `/proc/<pid>/stat` the collector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    /// `R`, `S`, `Z`, ...
    pub(super) state: u8,
    pub(super) ppid: u32,
    /// User and system CPU time, in clock ticks.
    pub(super) utime: u64,
    pub(super) stime: u64,
    pub(super) num_threads: u64,
    /// Clock ticks after boot.
    pub(super) start_time: u64,
    pub(super) rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and parentheses, so the
/// fields start after the last `)`. `None` for a truncated or garbled line.
pub(super) fn parse_stat(b: &[u8]) -> Option<ProcStat> {
    let close = b.iter().rposition(|&c| c == b')')?;
    let mut fields = b[close + 1..]
        .split(|c| c.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    // Field 3 (state) is the first after the name; `nth(k)` skips k fields.
    let state = *fields.next()?.first()?;
    let ppid = u32::try_from(parse_u64(fields.next()?)?).ok()?; // 4
    let utime = parse_u64(fields.nth(9)?)?; // 14
    let stime = parse_u64(fields.next()?)?; // 15
    let num_threads = parse_u64(fields.nth(4)?)?; // 20
    let start_time = parse_u64(fields.nth(1)?)?; // 22
    let rss_pages = parse_u64(fields.nth(1)?)?; // 24
    Some(ProcStat {
        state,
        ppid,
        utime,
        stime,
        num_threads,
        start_time,
        rss_pages,
    })
}

/// Parses `/proc/<pid>/io`: `(read_bytes, write_bytes)`.
pub(super) fn parse_io(b: &[u8]) -> Option<(u64, u64)> {
    Some((keyed(b, b"read_bytes")?, keyed(b, b"write_bytes")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &[u8] = b"42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 \
        250 50 7 3 20 0 3 0 12345 1000000 256 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1\n";

    #[test]
    fn stat_splits_at_the_last_parenthesis() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!((s.utime, s.stime), (250, 50));
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.start_time, 12345);
        assert_eq!(s.rss_pages, 256);
    }

    #[test]
    fn stat_rejects_truncated_garbled_and_empty() {
        assert_eq!(parse_stat(b""), None);
        assert_eq!(parse_stat(b"42 (sh"), None);
        assert_eq!(parse_stat(b"42 (sh) S 1 42"), None);
        let garbled = String::from_utf8_lossy(STAT).replace(" 250 ", " 2x0 ");
        assert_eq!(parse_stat(garbled.as_bytes()), None);
        let no_rss = b"42 (x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 3 0 12345 1000000";
        assert_eq!(parse_stat(no_rss), None);
        assert_eq!(parse_stat(b"42 (x) S"), None);
        assert_eq!(parse_stat(b")))"), None);
    }

    #[test]
    fn io_needs_both_fields() {
        let io = b"rchar: 5\nwchar: 6\nread_bytes: 4096\nwrite_bytes: 8192\n";
        assert_eq!(parse_io(io), Some((4096, 8192)));
        assert_eq!(parse_io(b"read_bytes: 1\n"), None);
        assert_eq!(parse_io(b"read_bytes: x\nwrite_bytes: 2\n"), None);
        assert_eq!(parse_io(b""), None);
    }

    #[test]
    fn numbers_and_keys() {
        assert_eq!(parse_u64(b"123"), Some(123));
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"99999999999999999999"), None, "overflow");
        assert_eq!(first_u64(b"  42\n"), Some(42));
        assert_eq!(first_u64(b"max\n"), None);
        let t = b"anon 10\nfile: 20\ngarbage\nshmem x\n";
        assert_eq!(keyed(t, b"anon"), Some(10));
        assert_eq!(keyed(t, b"file"), Some(20));
        assert_eq!(keyed(t, b"shmem"), None);
        assert_eq!(keyed(b"", b"anon"), None);
        assert_eq!(count_numbers(b"1\n2\n\nx\n3"), 3);
        assert_eq!(count_numbers(b""), 0);
    }
}
