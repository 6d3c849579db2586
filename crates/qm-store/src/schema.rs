//! Opening connections (WAL, `synchronous=FULL`, a busy timeout) and the schema, migrated by
//! `PRAGMA user_version`.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::{StoreError, sqlite};

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE allocations (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        agent TEXT NOT NULL,
        pool TEXT NOT NULL,
        node TEXT,
        state TEXT NOT NULL,
        live INTEGER NOT NULL,
        ended_at_ms INTEGER,
        body TEXT NOT NULL,
        CHECK (length(id) > 0 AND length(state) > 0 AND live IN (0, 1))
    );
    CREATE INDEX allocations_live ON allocations(seq) WHERE live = 1;
    CREATE TABLE nodes (name TEXT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE pools (name TEXT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE idempotency (key TEXT PRIMARY KEY, body TEXT NOT NULL, at_ms INTEGER NOT NULL);
    CREATE INDEX idempotency_at ON idempotency(at_ms);
",
    "
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        live INTEGER NOT NULL,
        ended_at_ms INTEGER,
        body TEXT NOT NULL,
        CHECK (length(id) > 0 AND live IN (0, 1))
    );
    CREATE TABLE fleets (name TEXT PRIMARY KEY, body TEXT NOT NULL);
",
    "
    CREATE TABLE tokens (id TEXT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        body TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL
    );
",
];

/// A connection to `path` in WAL mode with full syncs.
pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(sqlite("opening the database", path))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sqlite("setting the busy timeout", path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite("switching to WAL", path))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite("setting synchronous=FULL", path))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sqlite("enabling foreign keys", path))?;
    conn.pragma_update(None, "cache_size", -32_768)
        .map_err(sqlite("setting the cache size", path))?;
    // Readers and the checkpointer never checkpoint on their own; the writer's setting is
    // raised in `Store::open`.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(sqlite("turning off automatic checkpoints", path))?;
    Ok(conn)
}

/// Brings the schema up to date.
pub(crate) fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite("reading the schema version", path))?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > known {
        return Err(StoreError::Sqlite {
            what: "checking the schema version",
            path: path.to_owned(),
            message: format!("the database is at version {version}, newer than this qm ({known})"),
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .map_err(sqlite("migrating the schema", path))?;
    }
    Ok(())
}
