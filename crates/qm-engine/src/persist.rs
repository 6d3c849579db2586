//! Turning the ledger's events into store operations, and stored rows back into documents and
//! a snapshot to restore from.

use qm_core::{AllocId, Allocation, AllocationRecord, Event, Ledger, ResourceCatalog, Snapshot};
use qm_proto::{
    AllocationDoc, PoolDoc, STATE_VERSION, StateDoc, Stored, StoredNode, from_json, to_json,
};
use qm_store::{AllocationRow, Loaded, Op};

use crate::EngineError;

/// The store row of an allocation (live or ended), and its document.
pub(crate) fn row(
    alloc: &Allocation,
    ledger: &Ledger,
    catalog: &ResourceCatalog,
) -> (AllocationRow, AllocationDoc) {
    let st = ledger.state();
    let stored = Stored::of(alloc, st, catalog);
    let row = AllocationRow {
        id: stored.doc.id.clone(),
        seq: i64::try_from(alloc.id().seq()).unwrap_or(i64::MAX),
        agent: stored.doc.agent.clone(),
        pool: stored.doc.pool.clone(),
        node: stored.doc.node.clone(),
        state: stored.doc.state.clone(),
        live: alloc.state().is_live(),
        ended_at_ms: alloc
            .ended_at()
            .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
        body: to_json(&stored),
    };
    (row, stored.doc)
}

/// The operations that record `events` (taken from `ledger` just now). The document of
/// allocation `want`, if an event touched it, is kept in `found` (its latest state).
pub(crate) fn ops_for(
    events: &[Event],
    ledger: &Ledger,
    catalog: &ResourceCatalog,
    nodes: &dyn Fn(&str) -> Option<Op>,
    want: Option<AllocId>,
    found: &mut Option<AllocationDoc>,
) -> Vec<Op> {
    let st = ledger.state();
    let mut ops = Vec::with_capacity(events.len() + 2);
    let mut put = |a: &Allocation, ops: &mut Vec<Op>| {
        let (row, doc) = row(a, ledger, catalog);
        if want == Some(a.id()) {
            *found = Some(doc);
        }
        ops.push(Op::PutAllocation(row));
    };
    for e in events {
        match e {
            Event::Granted { id, .. } | Event::Queued { id } => {
                if let Some(a) = st.alloc(*id) {
                    put(a, &mut ops);
                }
            }
            Event::Ended(a) => put(a, &mut ops),
            Event::NodeReady { node } | Event::NodeNotReady { node } => {
                if let Some(op) = nodes(st.node_name(*node)) {
                    ops.push(op);
                }
            }
            Event::Held { .. } => {}
        }
    }
    let (next_seq, next_grant) = ledger.counters();
    ops.push(Op::PutMeta {
        key: "next_seq".to_owned(),
        value: next_seq.to_string(),
    });
    ops.push(Op::PutMeta {
        key: "next_grant".to_owned(),
        value: next_grant.to_string(),
    });
    ops
}

/// The document in a stored allocation row.
pub(crate) fn doc_of_row(body: &str) -> Result<AllocationDoc, EngineError> {
    from_json::<Stored>(body)
        .map(|s| s.doc)
        .map_err(|e| EngineError::Internal(format!("a stored allocation is unreadable: {e}")))
}

/// A stored node's name, kind and heartbeat ttl.
pub(crate) type NodeKind = (String, String, Option<u64>);

/// The snapshot stored rows describe, and each node's kind and heartbeat ttl.
pub(crate) fn snapshot(
    loaded: &Loaded,
    catalog: &ResourceCatalog,
) -> Result<(Snapshot, Vec<NodeKind>), String> {
    let mut nodes = Vec::new();
    for (name, body) in &loaded.nodes {
        nodes.push(from_json::<StoredNode>(body).map_err(|e| format!("node {name}: {e}"))?);
    }
    let mut pools = Vec::new();
    for (name, body) in &loaded.pools {
        pools.push(from_json::<PoolDoc>(body).map_err(|e| format!("pool {name}: {e}"))?);
    }
    let counter = |k: &str| loaded.meta.get(k).and_then(|v| v.parse().ok()).unwrap_or(1);
    let doc = StateDoc {
        version: STATE_VERSION,
        next_seq: counter("next_seq"),
        next_grant: counter("next_grant"),
        nodes,
        pools,
        allocations: Vec::new(),
        agents: Vec::new(),
        fleets: Vec::new(),
        imported: None,
    };
    let (mut snap, kinds) = snapshot_of(&doc, catalog)?;
    snap.allocations = records(&loaded.live_allocations, catalog)?;
    Ok((snap, kinds))
}

/// Fewer live allocations than this are read on one thread.
const PARALLEL_FROM: usize = 20_000;

/// The ledger's records of the live allocations' rows, in the rows' order; at scale the rows
/// are read on every core (a million take seconds on one).
fn records(
    rows: &[AllocationRow],
    catalog: &ResourceCatalog,
) -> Result<Vec<AllocationRecord>, String> {
    let read = |rows: &[AllocationRow]| -> Result<Vec<AllocationRecord>, String> {
        rows.iter()
            .map(|row| {
                from_json::<Stored>(&row.body)
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.to_record(catalog))
                    .map_err(|e| format!("allocation {}: {e}", row.id))
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if threads < 2 || rows.len() < PARALLEL_FROM {
        return read(rows);
    }
    let chunk = rows.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = rows
            .chunks(chunk)
            .map(|c| s.spawn(move || read(c)))
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for part in parts {
            out.extend(
                part.join()
                    .map_err(|_| "reading the allocations failed".to_owned())??,
            );
        }
        Ok(out)
    })
}

/// The snapshot a state document describes, and each node's kind and heartbeat ttl; errors
/// name the part that is wrong.
pub(crate) fn snapshot_of(
    doc: &StateDoc,
    catalog: &ResourceCatalog,
) -> Result<(Snapshot, Vec<NodeKind>), String> {
    if doc.version != STATE_VERSION {
        return Err(format!("version: {} is not {STATE_VERSION}", doc.version));
    }
    let mut snap = Snapshot {
        next_seq: doc.next_seq,
        next_grant: doc.next_grant,
        ..Snapshot::default()
    };
    let mut kinds = Vec::new();
    for (i, node) in doc.nodes.iter().enumerate() {
        let spec = node
            .to_spec(catalog)
            .map_err(|e| format!("nodes[{i}] ({}): {e}", node.doc.name))?;
        kinds.push((
            node.doc.name.clone(),
            node.doc.kind.clone(),
            node.heartbeat_ttl_ms,
        ));
        snap.nodes.push((spec, node.doc.ready));
    }
    for (i, pool) in doc.pools.iter().enumerate() {
        snap.pools.push(
            pool.to_spec(catalog)
                .map_err(|e| format!("pools[{i}] ({}): {e}", pool.name))?,
        );
    }
    for (i, a) in doc.allocations.iter().enumerate() {
        snap.allocations.push(
            a.to_record(catalog)
                .map_err(|e| format!("allocations[{i}] ({}): {e}", a.doc.id))?,
        );
    }
    Ok((snap, kinds))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger of `n` grants on one node, and their rows as the store keeps them.
    fn rows(n: usize) -> (Ledger, Vec<AllocationRow>) {
        let mut l = qm_sched::ledger("priority", qm_core::LedgerConfig::default()).expect("ledger");
        let now = qm_core::Timestamp::from_millis(1_700_000_000_000);
        l.register_node(
            now,
            qm_core::NodeSpec::new("n", qm_core::Resources::new(1_000_000, 1 << 40)),
        )
        .expect("node");
        for i in 0..n {
            l.submit(
                now,
                qm_core::Request::new(&format!("a{i}"), qm_core::Resources::new(1, 1 << 20)),
            )
            .expect("granted");
        }
        let catalog = ResourceCatalog::default();
        let rows = l
            .state()
            .allocations()
            .map(|a| row(a, &l, &catalog).0)
            .collect();
        (l, rows)
    }

    #[test]
    fn many_rows_read_on_every_core_come_back_whole_and_in_order() {
        let n = PARALLEL_FROM + 5_000;
        let (l, rows) = rows(n);
        let catalog = ResourceCatalog::default();
        let got = records(&rows, &catalog).expect("records");
        let want: Vec<AllocationRecord> = l
            .state()
            .allocations()
            .map(|a| AllocationRecord::of(a, "default", Some("n")))
            .collect();
        assert_eq!(got.len(), n);
        assert_eq!(got, want);
    }

    #[test]
    fn a_broken_row_among_many_is_named() {
        let (_, mut rows) = rows(PARALLEL_FROM + 100);
        let i = PARALLEL_FROM + 50;
        rows[i].body = "{\"doc\": 1}".to_owned();
        let err = records(&rows, &ResourceCatalog::default()).unwrap_err();
        assert!(
            err.starts_with(&format!("allocation {}:", rows[i].id)),
            "{err}"
        );
    }
}
