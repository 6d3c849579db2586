//! The writer thread: group commit. It blocks for the first queued batch, takes every other
//! batch already queued (up to a cap), applies them all in one `BEGIN IMMEDIATE` transaction
//! and commits (the fsync), then tells each batch's caller. If the group fails, it rolls back
//! and applies the batches one transaction each, so only a failing batch gets an error; unless
//! the cluster's log (the replica) refused the group, which then fails whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use rusqlite::{Connection, TransactionBehavior, params};

use crate::{Batch, Counter, Done, Op, Replica, ReplicaError, StoreError, audit, sqlite};

/// The most operations one group transaction takes.
const GROUP_OPS: usize = 8192;

/// How many transactions, batches and operations the writer committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    pub transactions: u64,
    pub batches: u64,
    pub ops: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) transactions: Counter,
    pub(crate) batches: Counter,
    pub(crate) ops: Counter,
}

pub(crate) fn spawn(
    conn: Connection,
    path: PathBuf,
    rx: mpsc::Receiver<(Batch, Done)>,
    stats: Arc<Counters>,
    replica: Option<Arc<dyn Replica>>,
) -> Result<JoinHandle<()>, StoreError> {
    thread::Builder::new()
        .name("qm-store-writer".to_owned())
        .spawn(move || run(conn, &path, &rx, &stats, replica.as_deref()))
        .map_err(|e| StoreError::Sqlite {
            what: "starting the writer",
            path: PathBuf::new(),
            message: e.to_string(),
        })
}

fn run(
    mut conn: Connection,
    path: &Path,
    rx: &mpsc::Receiver<(Batch, Done)>,
    stats: &Counters,
    replica: Option<&dyn Replica>,
) {
    // The audit chain's end, moved on only by committed transactions.
    let mut head = match audit::head(&conn) {
        Ok(h) => h,
        Err(e) => {
            report_head_error(path, &e);
            audit::Head::default()
        }
    };
    let cap = replica.map_or(GROUP_OPS, |r| r.max_ops().clamp(1, GROUP_OPS));
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let mut n_ops = group[0].0.ops.len();
        while n_ops < cap {
            match rx.try_recv() {
                Ok(next) => {
                    n_ops += next.0.ops.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let result = apply(
            &mut conn,
            path,
            &mut head,
            replica,
            group.iter().map(|(b, _)| b),
        );
        match result {
            Ok(()) => {
                count(stats, &group);
                for (_, done) in group {
                    done(Ok(()));
                }
            }
            // a batch that fails alone fails alone; but what the cluster's log refused (or
            // answered with what this store lacked) fails the whole group: a retry of each
            // batch would commit changes decided on the state before the catch-up. Only the
            // member's own batches (agents, fleets: never in the log, decided on no ledger
            // state) are tried again, alone
            Err(ref e) if group.len() > 1 => {
                let refused = matches!(e, StoreError::Replica { .. });
                for (batch, done) in group {
                    if refused && !batch.is_local() {
                        done(Err(e.clone()));
                        continue;
                    }
                    let r = apply(&mut conn, path, &mut head, replica, std::iter::once(&batch));
                    if r.is_ok() {
                        count(
                            stats,
                            std::slice::from_ref(&(batch, Box::new(|_| {}) as Done)),
                        );
                    }
                    done(r);
                }
            }
            Err(e) => {
                for (_, done) in group {
                    done(Err(e.clone()));
                }
            }
        }
    }
}

fn count(stats: &Counters, group: &[(Batch, Done)]) {
    stats.transactions.fetch_add(1, Ordering::Relaxed);
    stats
        .batches
        .fetch_add(group.len() as u64, Ordering::Relaxed);
    let ops: usize = group.iter().map(|(b, _)| b.ops.len()).sum();
    stats.ops.fetch_add(ops as u64, Ordering::Relaxed);
}

/// Applies `batches` in one transaction, made durable in `replica` first when there is one;
/// `head` moves on only if it commits.
fn apply<'a>(
    conn: &mut Connection,
    path: &Path,
    head: &mut audit::Head,
    replica: Option<&dyn Replica>,
    batches: impl Iterator<Item = &'a Batch> + Clone,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite("beginning a transaction", path))?;
    let mut chain = head.clone();
    // Meta keys are counters rewritten by every batch: only the group's last value of each
    // is written.
    let mut meta: Vec<(&str, &str)> = Vec::new();
    for batch in batches.clone() {
        for op in &batch.ops {
            if let Op::PutMeta { key, value } = op {
                match meta.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = value,
                    None => meta.push((key, value)),
                }
                continue;
            }
            if let Op::Audit { at_ms, body } = op {
                audit::append(&tx, &mut chain, *at_ms, body)
                    .map_err(sqlite("writing the audit log", path))?;
                continue;
            }
            apply_op(&tx, op).map_err(sqlite("writing", path))?;
        }
    }
    if chain.seq != head.seq {
        audit::record_head(&tx, &chain).map_err(sqlite("writing the audit log", path))?;
    }
    for (key, value) in meta {
        tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![key, value]))
            .map_err(sqlite("writing", path))?;
    }
    if let Some(r) = replica {
        // the cluster's log first: what it refuses is never written here
        let ops: Vec<Op> = batches
            .filter(|b| !b.from_log)
            .flat_map(|b| b.ops.iter())
            .filter(|op| !op.is_local())
            .cloned()
            .collect();
        if !ops.is_empty() {
            match r.append(&ops) {
                Ok(here) => {
                    for op in &here {
                        apply_op(&tx, op).map_err(sqlite("writing", path))?;
                    }
                }
                Err(ReplicaError::Refused(message)) => {
                    return Err(StoreError::Replica { message });
                }
                Err(ReplicaError::Behind { entries }) => {
                    // the group was decided on an old state: drop it, take what the log
                    // has, and let the caller re-read and try again
                    drop(tx);
                    catch_up(conn, path, &entries)?;
                    return Err(StoreError::Replica {
                        message: format!(
                            "this member was behind the cluster's log and has caught up ({} \
                             changes); try again",
                            entries.len()
                        ),
                    });
                }
            }
        }
    }
    tx.commit().map_err(sqlite("committing", path))?;
    *head = chain;
    Ok(())
}

/// Applies changes taken from the cluster's log, in a transaction of their own.
fn catch_up(conn: &mut Connection, path: &Path, entries: &[Op]) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite("beginning a transaction", path))?;
    // entries written before agents and fleets were each member's own may still hold them:
    // another member's processes are never this one's
    for op in entries.iter().filter(|op| !op.is_local()) {
        apply_op(&tx, op).map_err(sqlite("catching up with the cluster's log", path))?;
    }
    tx.commit().map_err(sqlite("committing", path))
}

/// The writer has no logger of its own; a chain it cannot read starts from genesis, and
/// `qm audit verify` reports the break.
fn report_head_error(path: &Path, e: &rusqlite::Error) {
    eprintln!(
        "qm-store: cannot read the audit chain's head in {}: {e}",
        path.display()
    );
}

fn apply_op(tx: &rusqlite::Transaction<'_>, op: &Op) -> rusqlite::Result<()> {
    match op {
        Op::PutAllocation(r) => {
            let mut st = tx.prepare_cached(
                "INSERT INTO allocations (id, seq, agent, pool, node, state, live, ended_at_ms, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT(seq) DO UPDATE SET id = excluded.id, agent = excluded.agent, pool = excluded.pool, \
                 node = excluded.node, state = excluded.state, live = excluded.live, \
                 ended_at_ms = excluded.ended_at_ms, body = excluded.body",
            )?;
            st.execute(params![
                r.id,
                r.seq,
                r.agent,
                r.pool,
                r.node,
                r.state,
                i64::from(r.live),
                r.ended_at_ms,
                r.body
            ])?;
        }
        Op::PutNode { name, body } => {
            tx.prepare_cached("INSERT OR REPLACE INTO nodes (name, body) VALUES (?1, ?2)")?
                .execute(params![name, body])?;
        }
        Op::DeleteNode { name } => {
            tx.prepare_cached("DELETE FROM nodes WHERE name = ?1")?
                .execute([name])?;
        }
        Op::PutPool { name, body } => {
            tx.prepare_cached("INSERT OR REPLACE INTO pools (name, body) VALUES (?1, ?2)")?
                .execute(params![name, body])?;
        }
        Op::DeletePool { name } => {
            tx.prepare_cached("DELETE FROM pools WHERE name = ?1")?
                .execute([name])?;
        }
        Op::PutMeta { key, value } => {
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
                .execute(params![key, value])?;
        }
        Op::PutIdempotent { key, body, at_ms } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO idempotency (key, body, at_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, body, at_ms])?;
        }
        Op::PutAgent {
            id,
            live,
            ended_at_ms,
            body,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO agents (id, live, ended_at_ms, body) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, i64::from(*live), ended_at_ms, body])?;
        }
        Op::DeleteAgent { id } => {
            tx.prepare_cached("DELETE FROM agents WHERE id = ?1")?
                .execute([id])?;
        }
        Op::PutFleet { name, body } => {
            tx.prepare_cached("INSERT OR REPLACE INTO fleets (name, body) VALUES (?1, ?2)")?
                .execute(params![name, body])?;
        }
        Op::DeleteFleet { name } => {
            tx.prepare_cached("DELETE FROM fleets WHERE name = ?1")?
                .execute([name])?;
        }
        Op::PutToken { id, body } => {
            tx.prepare_cached("INSERT OR REPLACE INTO tokens (id, body) VALUES (?1, ?2)")?
                .execute(params![id, body])?;
        }
        Op::DeleteToken { id } => {
            tx.prepare_cached("DELETE FROM tokens WHERE id = ?1")?
                .execute([id])?;
        }
        Op::Audit { .. } => {}
        Op::ClearState => {
            tx.execute_batch("DELETE FROM allocations; DELETE FROM nodes; DELETE FROM pools;")?;
        }
        Op::Prune { before_ms } => {
            tx.prepare_cached("DELETE FROM allocations WHERE live = 0 AND ended_at_ms < ?1")?
                .execute([before_ms])?;
            tx.prepare_cached("DELETE FROM idempotency WHERE at_ms < ?1")?
                .execute([before_ms])?;
            tx.prepare_cached("DELETE FROM agents WHERE live = 0 AND ended_at_ms < ?1")?
                .execute([before_ms])?;
        }
    }
    Ok(())
}

/// Copies the WAL back into the database every `every`, passively (never blocking the writer or
/// readers), so commits do not stall on checkpoints; stops when `stop` is dropped.
pub(crate) fn spawn_checkpointer(
    conn: Connection,
    every: std::time::Duration,
    stop: mpsc::Receiver<()>,
) -> Result<JoinHandle<()>, StoreError> {
    thread::Builder::new()
        .name("qm-store-checkpoint".to_owned())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
                // A checkpoint that cannot finish now is retried next round.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(|e| StoreError::Sqlite {
            what: "starting the checkpointer",
            path: PathBuf::new(),
            message: e.to_string(),
        })
}
