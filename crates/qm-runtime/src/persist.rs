//! Turning the ledger's events into store operations, and stored rows back into documents and
//! a snapshot to restore from.

use qm_core::{AllocId, Allocation, Event, Ledger, ResourceCatalog, Snapshot};
use qm_proto::{AllocationDoc, PoolDoc, Stored, StoredNode, from_json, to_json};
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
        .map_err(|e| EngineError::Store(format!("a stored allocation is unreadable: {e}")))
}

/// A stored node's name, kind and heartbeat ttl.
pub(crate) type NodeKind = (String, String, Option<u64>);

/// The snapshot stored rows describe, and each node's kind and heartbeat ttl.
pub(crate) fn snapshot(
    loaded: &Loaded,
    catalog: &ResourceCatalog,
) -> Result<(Snapshot, Vec<NodeKind>), String> {
    let mut snap = Snapshot::default();
    let mut kinds = Vec::new();
    for (name, body) in &loaded.nodes {
        let node: StoredNode = from_json(body).map_err(|e| format!("node {name}: {e}"))?;
        let spec = node
            .to_spec(catalog)
            .map_err(|e| format!("node {name}: {e}"))?;
        kinds.push((name.clone(), node.doc.kind.clone(), node.heartbeat_ttl_ms));
        snap.nodes.push((spec, node.doc.ready));
    }
    for (name, body) in &loaded.pools {
        let pool: PoolDoc = from_json(body).map_err(|e| format!("pool {name}: {e}"))?;
        snap.pools.push(
            pool.to_spec(catalog)
                .map_err(|e| format!("pool {name}: {e}"))?,
        );
    }
    for row in &loaded.live_allocations {
        let stored: Stored =
            from_json(&row.body).map_err(|e| format!("allocation {}: {e}", row.id))?;
        snap.allocations.push(
            stored
                .to_record(catalog)
                .map_err(|e| format!("allocation {}: {e}", row.id))?,
        );
    }
    let counter = |k: &str| loaded.meta.get(k).and_then(|v| v.parse().ok()).unwrap_or(1);
    snap.next_seq = counter("next_seq");
    snap.next_grant = counter("next_grant");
    Ok((snap, kinds))
}
