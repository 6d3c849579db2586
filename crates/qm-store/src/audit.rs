//! The audit log's hash chain: each entry's hash covers the hash of the entry before it, its
//! sequence number, its time and its body, so editing, inserting or deleting a row breaks the
//! chain from there on. The writer extends the chain inside the transaction that holds the
//! change the entry records; [`verify`] checks a database offline.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::{StoreError, sqlite};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The meta key holding the chain's head (`seq:hash`), written with each entry.
pub(crate) const HEAD_KEY: &str = "audit_head";

/// One stored entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    /// The entry itself (opaque JSON).
    pub body: String,
    /// The hash of the entry before (hex), or [`GENESIS`].
    pub prev: String,
    /// This entry's hash (hex).
    pub hash: String,
}

/// The hash of an entry (lowercase hex SHA-256).
pub fn entry_hash(prev: &str, seq: i64, at_ms: i64, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(at_ms.to_string().as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex(&h.finalize())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// The end of the chain: the last entry's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: i64,
    pub(crate) hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// The chain's head as the table has it.
pub(crate) fn head(conn: &Connection) -> rusqlite::Result<Head> {
    Ok(conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok(Head {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default())
}

/// Appends an entry after `head` and moves `head` on; the caller records the head once the
/// transaction's entries are in ([`record_head`]).
pub(crate) fn append(
    tx: &rusqlite::Transaction<'_>,
    head: &mut Head,
    at_ms: i64,
    body: &str,
) -> rusqlite::Result<()> {
    let seq = head.seq + 1;
    let hash = entry_hash(&head.hash, seq, at_ms, body);
    tx.prepare_cached(
        "INSERT INTO audit (seq, at_ms, body, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![seq, at_ms, body, head.hash, hash])?;
    *head = Head { seq, hash };
    Ok(())
}

/// Records `head` as the chain's end (once per transaction, after its last entry).
pub(crate) fn record_head(tx: &rusqlite::Transaction<'_>, head: &Head) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute(params![HEAD_KEY, format!("{}:{}", head.seq, head.hash)])?;
    Ok(())
}

/// Entries after `after_seq`, oldest first, at most `limit`.
pub(crate) fn list(
    conn: &Connection,
    after_seq: i64,
    limit: i64,
) -> rusqlite::Result<Vec<AuditRow>> {
    let mut st = conn.prepare_cached(
        "SELECT seq, at_ms, body, prev, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    st.query_map(params![after_seq, limit], |r| {
        Ok(AuditRow {
            seq: r.get(0)?,
            at_ms: r.get(1)?,
            body: r.get(2)?,
            prev: r.get(3)?,
            hash: r.get(4)?,
        })
    })?
    .collect()
}

/// Why the chain does not verify.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Entry `seq` does not verify.
    #[error("audit entry {seq} does not verify: {reason}")]
    Broken { seq: i64, reason: String },
}

/// What a verification found: how many entries, and the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub head_seq: i64,
    pub head_hash: String,
}

/// Checks the audit chain of the database in `data_dir` (`qm.db`), read only: every entry's
/// `prev` is the hash before it, its hash is what its content hashes to, sequence numbers
/// have no gaps, and the head recorded with the last write is the last entry.
pub fn verify(data_dir: &Path) -> Result<Verified, AuditError> {
    let path = data_dir.join("qm.db");
    if !path.exists() {
        return Err(StoreError::Dir {
            path,
            message: "no database here".to_owned(),
        }
        .into());
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("opening the database", &path))?;
    let mut st = conn
        .prepare("SELECT seq, at_ms, body, prev, hash FROM audit ORDER BY seq")
        .map_err(sqlite("reading the audit log", &path))?;
    let rows = st
        .query_map([], |r| {
            Ok(AuditRow {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                body: r.get(2)?,
                prev: r.get(3)?,
                hash: r.get(4)?,
            })
        })
        .map_err(sqlite("reading the audit log", &path))?;
    let mut head = Head::default();
    let mut entries = 0_u64;
    for row in rows {
        let row = row.map_err(sqlite("reading the audit log", &path))?;
        let broken = |reason: String| AuditError::Broken {
            seq: row.seq,
            reason,
        };
        if row.seq != head.seq + 1 {
            return Err(broken(format!(
                "follows entry {} (entries are missing or were added)",
                head.seq
            )));
        }
        if row.prev != head.hash {
            return Err(broken(
                "its link does not match the hash of the entry before".to_owned(),
            ));
        }
        let want = entry_hash(&row.prev, row.seq, row.at_ms, &row.body);
        if row.hash != want {
            return Err(broken(
                "its content does not match its hash (it was edited)".to_owned(),
            ));
        }
        head = Head {
            seq: row.seq,
            hash: row.hash,
        };
        entries += 1;
    }
    let recorded: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [HEAD_KEY], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sqlite("reading the audit head", &path))?;
    if let Some(rec) = recorded
        && rec != format!("{}:{}", head.seq, head.hash)
    {
        let seq = rec
            .split(':')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(head.seq);
        return Err(AuditError::Broken {
            seq,
            reason: format!(
                "the log ends at entry {} but its recorded head is {rec} (entries were removed or rewritten)",
                head.seq
            ),
        });
    }
    Ok(Verified {
        entries,
        head_seq: head.seq,
        head_hash: head.hash,
    })
}
