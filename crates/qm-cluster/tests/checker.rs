//! The chaos tests' invariant checker catches what it is there for: a node granted more than
//! it has, in the log as etcd holds it.

use qm_cluster::testing::{Etcd, check_ledger};
use qm_store::{AllocationRow, Op};

fn grant(seq: i64, node: &str, cpu: &str) -> Op {
    Op::PutAllocation(AllocationRow {
        id: format!("a{seq}"),
        seq,
        agent: format!("agent-{seq}"),
        pool: "default".to_owned(),
        node: Some(node.to_owned()),
        state: "granted".to_owned(),
        live: true,
        ended_at_ms: None,
        body: format!(r#"{{"id":"a{seq}","resources":{{"cpu":"{cpu}"}}}}"#),
    })
}

fn node(name: &str, cpu: &str) -> Op {
    Op::PutNode {
        name: name.to_owned(),
        body: format!(r#"{{"name":"{name}","allocatable":{{"cpu":"{cpu}"}}}}"#),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_finds_an_over_committed_node_and_passes_an_exact_one() {
    let Some(etcd) = Etcd::start("checker") else {
        return;
    };
    let mut client = etcd_client::Client::connect([etcd.url.as_str()], None)
        .await
        .expect("etcd");
    let put = |seq: u64, ops: Vec<Op>| {
        let mut c = client.clone();
        async move {
            c.put(
                format!("/qm/log/{seq:020}"),
                serde_json::to_vec(&ops).unwrap(),
                None,
            )
            .await
            .expect("put");
        }
    };
    put(1, vec![node("n1", "1"), grant(1, "n1", "600m")]).await;
    put(2, vec![grant(2, "n1", "400m")]).await;
    let ok = check_ledger(std::slice::from_ref(&etcd.url), "/qm")
        .await
        .expect("exactly full is fine");
    assert_eq!((ok.entries, ok.nodes, ok.granted), (2, 1, 2));
    // one more millicore than the node has
    put(3, vec![grant(3, "n1", "1m")]).await;
    let e = check_ledger(std::slice::from_ref(&etcd.url), "/qm")
        .await
        .expect_err("over-committed");
    assert!(
        e.contains("n1 is over-committed in cpu: 1001 granted of 1000"),
        "{e}"
    );
    // released again: fine
    let mut released = grant(3, "n1", "1m");
    if let Op::PutAllocation(r) = &mut released {
        r.state = "released".to_owned();
    }
    put(4, vec![released]).await;
    check_ledger(std::slice::from_ref(&etcd.url), "/qm")
        .await
        .expect("released again");
    client.delete("/qm", None).await.ok();
}
