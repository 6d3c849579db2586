//! `GET /v1/cluster` and `qm cluster`: a daemon on its own is a cluster of one on SQLite; three
//! daemons on one real etcd (`--etcd`) agree on a leader and each answers the same view; the
//! leader's writes go through the cluster's log, and a follower relays them to it; when the
//! leader is killed with SIGKILL the other two agree on a new one once its lease lapses, and it
//! serves writes again holding every write the old one acknowledged. Each daemon has its own
//! data dir and cgroup parent.

use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use crate::daemon::{Daemon, eventually, temp_dir};

#[cfg(feature = "etcd")]
const MI: f64 = 1_048_576.0;

#[test]
fn a_daemon_on_its_own_is_a_cluster_of_one() {
    let d = Daemon::start(&temp_dir("cluster-one").join("data"), &[]);
    let c = d.get("/v1/cluster");
    assert_eq!(c.status, 200, "{:?}", c.body);
    assert_eq!(c.body["store"], "sqlite");
    assert_eq!(c.body["leader"], "test-node");
    let members = c.body["members"].as_array().expect("members");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["name"], "test-node");
    assert_eq!(members[0]["url"], d.base);
    assert_eq!(members[0]["leader"], true);
    // no token, no answer
    assert_eq!(d.call_as(None, "GET", "/v1/cluster", None).status, 401);
    d.stop();
}

/// A member daemon `name` on `etcd` with a 2 s lease; members share the admin token file (the
/// spec: cluster members are given the same file).
#[cfg(feature = "etcd")]
fn member(etcd: &qm_cluster::testing::Etcd, name: &str, token: &std::path::Path) -> Daemon {
    member_with(etcd, name, token, &[])
}

/// [`member`] with further flags (`--label`, ...).
#[cfg(feature = "etcd")]
fn member_with(
    etcd: &qm_cluster::testing::Etcd,
    name: &str,
    token: &std::path::Path,
    extra: &[&str],
) -> Daemon {
    member_configured(etcd, name, token, "", extra)
}

/// [`member_with`] with more of the config file (`toml`, appended).
#[cfg(feature = "etcd")]
fn member_configured(
    etcd: &qm_cluster::testing::Etcd,
    name: &str,
    token: &std::path::Path,
    toml: &str,
    extra: &[&str],
) -> Daemon {
    let dir = temp_dir(&format!("cluster-{name}"));
    let config = dir.join("qm.toml");
    std::fs::write(
        &config,
        format!(
            "[agents]\ncgroup_parent = \"qm-it-cluster-{name}-{}\"\n[cluster]\nlease_ttl_s = 2\n{toml}",
            std::process::id()
        ),
    )
    .expect("config");
    let mut d = Daemon::start(
        &dir.join("data"),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--node-name",
            name,
            "--etcd",
            &etcd.url,
            "--admin-token-file",
            token.to_str().expect("utf-8"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    d.token = std::fs::read_to_string(token)
        .expect("the shared admin token")
        .trim()
        .to_owned();
    d
}

/// The leader every daemon in `ds` reports, once they agree and each sees `n` members.
#[cfg(feature = "etcd")]
fn agreed(ds: &[&Daemon], n: usize) -> Option<String> {
    let views: Vec<Value> = ds.iter().map(|d| d.get("/v1/cluster").body).collect();
    let leader = views.first()?["leader"].as_str()?.to_owned();
    views
        .iter()
        .all(|v| {
            v["leader"] == leader.as_str()
                && v["store"] == "etcd"
                && v["members"].as_array().is_some_and(|m| m.len() == n)
        })
        .then_some(leader)
}

#[cfg(feature = "etcd")]
#[test]
fn three_members_on_etcd_agree_on_a_leader_and_replace_a_killed_one() {
    let Some(etcd) = qm_cluster::testing::Etcd::start("it-cluster") else {
        return;
    };
    let token = temp_dir("cluster-token").join("admin.token");
    let ds = vec![
        member(&etcd, "m1", &token),
        member(&etcd, "m2", &token),
        member(&etcd, "m3", &token),
    ];
    let all: Vec<&Daemon> = ds.iter().collect();
    let leader = eventually("three members agreeing on a leader", 30, || agreed(&all, 3));
    // every member lists the others with the address it answers on (the leases' expiry once
    // asked for: the next refresh reads them)
    let view = eventually("the leases' expiry", 10, || {
        let v = ds[0].get("/v1/cluster").body;
        v["members"]
            .as_array()?
            .iter()
            .all(|m| m["lease_expires_at"].is_string())
            .then_some(v)
    });
    for d in &ds {
        let name = d.get("/v1/node").body["name"].as_str().unwrap().to_owned();
        let entry = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {view}"));
        assert_eq!(entry["url"], d.base, "{entry}");
        assert_eq!(entry["ready"], true);
        assert_eq!(entry["leader"], (name == leader), "{entry}");
        assert!(entry["lease_expires_at"].is_string(), "{entry}");
    }
    // `qm cluster` prints the same
    let out = Command::new(env!("CARGO_BIN_EXE_qm"))
        .args(["--server", &ds[1].base, "--token", &ds[1].token, "cluster"])
        .output()
        .expect("qm cluster");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("store etcd") && text.contains(&format!("leader {leader}")),
        "{text}"
    );
    // only the leader writes: its store writes through the cluster's log; a follower's is
    // refused (503) and changes nothing
    let mut ds = ds;
    let at = ds
        .iter()
        .position(|d| d.get("/v1/node").body["name"] == leader.as_str())
        .unwrap();
    let request =
        |i: usize| json!({ "agent": format!("w{i}"), "resources": { "cpu": "10m" } }).to_string();
    let first = eventually("the leader to take writes", 20, || {
        let a = ds[at].post("/v1/allocations", &request(0));
        (a.status == 201).then_some(a)
    });
    // (id, agent) of every acknowledged grant
    let ack = |a: &crate::daemon::Answer| {
        (
            a.body["id"].as_str().expect("an id").to_owned(),
            a.body["agent"].as_str().expect("an agent").to_owned(),
        )
    };
    let mut acked = vec![ack(&first)];
    // the leader's ledger holds every member's node (the others as kind `member`, once the
    // leader has registered and watched them)
    let nodes = eventually("the three members' nodes, ready", 20, || {
        let n = ds[at].get("/v1/nodes").body;
        let items = n["items"].as_array()?.clone();
        let members_ok = items
            .iter()
            .filter(|i| i["name"] != leader.as_str())
            .all(|i| i["kind"] == "member");
        (items.len() == 3 && members_ok && items.iter().all(|i| i["ready"] == true))
            .then_some(items)
    });
    let follower_name = nodes
        .iter()
        .find(|n| n["name"] != leader.as_str())
        .and_then(|n| n["name"].as_str())
        .unwrap()
        .to_owned();
    // and places work on them
    let placed = ds[at].post(
        "/v1/allocations",
        &json!({ "agent": "on-member", "resources": { "cpu": "10m" },
                 "node_selector": { "qm.dev/node": follower_name } })
        .to_string(),
    );
    assert_eq!(placed.status, 201, "{:?}", placed.body);
    assert_eq!(placed.body["node"], follower_name.as_str());
    acked.push(ack(&placed));
    // any member answers: a follower relays the ledger's routes to the leader, and its event
    // stream is the leader's, passed on as it comes
    let follower = (at + 1) % ds.len();
    let live = crate::events::read_events(
        format!("{}/v1/events", ds[follower].base),
        ds[follower].bearer(),
        20,
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let watched = ds[at].post(
        "/v1/allocations",
        &json!({ "agent": "watched", "resources": { "cpu": "10m" } }).to_string(),
    );
    assert_eq!(watched.status, 201, "{:?}", watched.body);
    acked.push(ack(&watched));
    let seen = live
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the relayed stream");
    assert!(
        seen.iter()
            .any(|(kind, _, data)| kind.starts_with("allocation") && data.contains("watched")),
        "{seen:?}"
    );
    let relayed = ds[follower].post("/v1/allocations", &request(1));
    assert_eq!(relayed.status, 201, "{:?}", relayed.body);
    let id = relayed.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(ds[at].get(&format!("/v1/allocations/{id}")).status, 200);
    let listed = ds[follower].get("/v1/allocations").body;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );
    acked.push(ack(&relayed));
    // a request already relayed is answered where it lands, never passed on again: a
    // follower's own store refuses it
    let bearer = ds[follower].bearer();
    let once = ds[follower].send(
        "POST",
        "/v1/allocations",
        "application/json",
        request(98).as_bytes(),
        &[("authorization", bearer.as_str()), ("x-qm-relayed", "1")],
    );
    assert_eq!(once.status, 503, "{:?}", once.body);
    // and a bad request is the leader's answer, field named
    let bad = ds[follower].post(
        "/v1/allocations",
        r#"{"agent":"x","resources":{"cpu":"-1"}}"#,
    );
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    for i in 2..22 {
        let d = if i % 2 == 0 { &ds[at] } else { &ds[follower] };
        let a = d.post("/v1/allocations", &request(i));
        assert_eq!(a.status, 201, "{:?}", a.body);
        acked.push(ack(&a));
    }
    // SIGKILL the leader: the others agree on a new one once its 2 s lease lapses
    let killed = ds.remove(at);
    killed.kill9();
    let t0 = Instant::now();
    let rest: Vec<&Daemon> = ds.iter().collect();
    let next = eventually("a new leader among the two left", 30, || agreed(&rest, 2));
    assert_ne!(next, leader);
    let elected = t0.elapsed().as_secs_f64();
    // the new leader takes writes once it holds every acknowledged one
    let new_lead = ds
        .iter()
        .find(|d| d.get("/v1/node").body["name"] == next.as_str())
        .unwrap();
    eventually("the new leader to take writes", 30, || {
        (new_lead.post("/v1/allocations", &request(99)).status == 201).then_some(())
    });
    let served = t0.elapsed().as_secs_f64();
    // the dead leader's node misses its heartbeat: lost, with what it held
    eventually("the dead leader's node lost", 20, || {
        let n = new_lead.get("/v1/nodes").body;
        n["items"]
            .as_array()?
            .iter()
            .any(|i| i["name"] == leader.as_str() && i["ready"] == false)
            .then_some(())
    });
    for (id, agent) in &acked {
        let a = new_lead.get(&format!("/v1/allocations/{id}"));
        assert_eq!(a.status, 200, "{id} was acknowledged: {:?}", a.body);
        assert_eq!(
            a.body["agent"],
            agent.as_str(),
            "the same grant: {:?}",
            a.body
        );
        let on_dead = a.body["node"] == leader.as_str();
        let want = if on_dead { "lost" } else { "granted" };
        assert_eq!(a.body["state"], want, "{:?}", a.body);
    }
    eprintln!(
        "leader killed: a new leader agreed in {elected:.1} s, writes served again in \
         {served:.1} s (lease 2 s), all {} acknowledged writes there",
        acked.len()
    );
    for d in ds {
        d.stop();
    }
}

/// `Some` once no member of `ds` lists an agent that `which` picks as running.
#[cfg(feature = "etcd")]
fn running_nowhere(ds: &[Daemon], which: impl Fn(&Value) -> bool) -> Option<()> {
    ds.iter()
        .all(|d| {
            d.get("/v1/agents").body["items"]
                .as_array()
                .is_some_and(|l| l.iter().all(|a| !which(a) || a["state"] != "running"))
        })
        .then_some(())
}

/// The member daemon in `ds` whose node is `name`.
#[cfg(feature = "etcd")]
fn named<'a>(ds: &'a [Daemon], name: &str) -> &'a Daemon {
    ds.iter()
        .find(|d| d.get("/v1/node").body["name"] == name)
        .unwrap_or_else(|| panic!("no member {name}"))
}

/// The agent `name` as `d` lists it, once `ok` holds of it.
#[cfg(feature = "etcd")]
fn agent_where(d: &Daemon, name: &str, ok: impl Fn(&Value) -> bool) -> Option<Value> {
    let a = d.get(&format!("/v1/agents/{name}"));
    (a.status == 200 && ok(&a.body)).then_some(a.body)
}

#[cfg(feature = "etcd")]
fn pid_of(a: &Value) -> u64 {
    a["pid"].as_u64().expect("a pid")
}

/// Agents follow their node: a spawn asked of any member is placed by the leader on a
/// worker's node (its `node_selector`) and run there, in that member's cgroup parent; every
/// member lists it; a second of the same name is refused. When that worker is killed with
/// SIGKILL, its allocation is `lost` once its lease lapses and the agent runs on the other
/// worker. When that one is paused (SIGSTOP) past its lease, nothing is left to run it: it
/// waits in the queue; resumed (SIGCONT), the member finds its lease lapsed, stops its stale
/// run (never two at once) and rejoins, and the agent is placed on it again. A stop asked of
/// any member ends the run and gives its allocation back.
#[cfg(feature = "etcd")]
#[test]
fn agents_follow_their_node_across_members() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: needs root (agents in cgroups)");
        return;
    }
    let Some(etcd) = qm_cluster::testing::Etcd::start("it-placed") else {
        return;
    };
    let token = temp_dir("placed-token").join("admin.token");
    // the first member leads (it is alone when it campaigns); the two workers join after
    let lead = member_with(&etcd, "pl-lead", &token, &["--label", "role=leader"]);
    eventually("pl-lead leading", 20, || {
        (lead.get("/v1/cluster").body["leader"] == "pl-lead").then_some(())
    });
    let worker = |name: &str, zone: &str| {
        member_with(
            &etcd,
            name,
            &token,
            &[
                "--label",
                "role=worker",
                "--label",
                &format!("topology.qm.dev/zone={zone}"),
            ],
        )
    };
    let mut ds = vec![lead, worker("pl-w1", "a"), worker("pl-w2", "b")];
    let all: Vec<&Daemon> = ds.iter().collect();
    assert_eq!(
        agreed(&all, 3).as_deref().or(Some("pl-lead")),
        Some("pl-lead")
    );
    eventually("three ready nodes in the leader's ledger", 30, || {
        let n = ds[0].get("/v1/nodes").body;
        let items = n["items"].as_array()?.clone();
        (items.len() == 3 && items.iter().all(|i| i["ready"] == true)).then_some(())
    });
    // asked of a worker, placed by the leader on a worker
    let spec = json!({
        "name": "pa", "command": ["sleep", "300"], "restart": "always",
        "resources": { "cpu": "10m", "memory": "16Mi" },
        "node_selector": { "role": "worker" }
    });
    let made = ds[1].post("/v1/agents", &spec.to_string());
    assert!(made.status == 201 || made.status == 202, "{:?}", made.body);
    assert_eq!(made.body["placed"], true, "{:?}", made.body);
    let first_node = made.body["node"]
        .as_str()
        .expect("placed on a node")
        .to_owned();
    assert!(first_node.starts_with("pl-w"), "{first_node}");
    let first_alloc = made.body["allocation"]
        .as_str()
        .expect("an allocation")
        .to_owned();
    // its member runs it, in its own cgroup parent
    let owner = named(&ds, &first_node);
    let running = eventually("pa running on its node's member", 20, || {
        agent_where(owner, "pa", |a| {
            a["state"] == "running" && a["pid"].is_u64()
        })
    });
    let first_pid = pid_of(&running);
    assert_eq!(running["node"], first_node.as_str());
    let cgroup = std::fs::read_to_string(format!("/proc/{first_pid}/cgroup")).unwrap_or_default();
    assert!(
        cgroup.contains(&format!("qm-it-cluster-{first_node}-")),
        "{cgroup}"
    );
    // every member lists it, as its member reports it
    for d in &ds {
        let seen = eventually("pa listed by every member", 10, || {
            let l = d.get("/v1/agents").body;
            l["items"]
                .as_array()?
                .iter()
                .find(|a| a["name"] == "pa" && a["state"] == "running")
                .cloned()
        });
        assert_eq!(seen["node"], first_node.as_str(), "{seen}");
        assert_eq!(seen["pid"], first_pid, "{seen}");
    }
    // adopting a process is the leader's host's only, for now: a follower says so
    let adopt = ds[1].post(
        "/v1/agents",
        &json!({ "name": "adopted", "pid": std::process::id() }).to_string(),
    );
    assert_eq!(adopt.status, 503, "{:?}", adopt.body);
    assert!(
        adopt.body["detail"].as_str().unwrap_or("").contains("pid"),
        "{:?}",
        adopt.body
    );
    // one agent per name, cluster-wide
    let again = ds[0].post("/v1/agents", &spec.to_string());
    assert_eq!(again.status, 409, "{:?}", again.body);
    // a bad spawn is refused by the leader, naming the field, wherever it is asked
    let bad = ds[2].post(
        "/v1/agents",
        &json!({ "name": "bad", "command": ["true"], "restart": "sometimes" }).to_string(),
    );
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert!(bad.body.to_string().contains("restart"), "{:?}", bad.body);

    // spread across the zones (max skew 1): two replicas, one per worker, although the
    // default strategy packs
    let mut spread_nodes = Vec::new();
    for i in 1..=2 {
        let r = ds[0].post(
            "/v1/agents",
            &json!({
                "name": format!("sp-{i}"), "command": ["sleep", "300"],
                "resources": { "cpu": "10m" }, "labels": { "app": "sp" },
                "node_selector": { "role": "worker" },
                "spread": [{ "topology_key": "topology.qm.dev/zone", "max_skew": 1,
                             "match_labels": { "app": "sp" } }]
            })
            .to_string(),
        );
        assert!(r.status == 201 || r.status == 202, "{:?}", r.body);
        spread_nodes.push(r.body["node"].as_str().expect("a node").to_owned());
    }
    spread_nodes.sort();
    assert_eq!(spread_nodes, ["pl-w1", "pl-w2"], "one replica per zone");
    // a third that must share no node with a replica finds no worker: refused, saying why
    let third = ds[0].post(
        "/v1/agents",
        &json!({
            "name": "sp-3", "command": ["sleep", "300"], "resources": { "cpu": "10m" },
            "labels": { "app": "sp" }, "node_selector": { "role": "worker" }, "queue": false,
            "anti_affinity": [{ "topology_key": "qm.dev/node", "match_labels": { "app": "sp" } }]
        })
        .to_string(),
    );
    assert_eq!(third.status, 409, "{:?}", third.body);
    assert!(
        third.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("affinity"),
        "{:?}",
        third.body
    );
    for i in 1..=2 {
        let name = format!("sp-{i}");
        eventually("the replica running", 20, || {
            agent_where(&ds[0], &name, |a| a["state"] == "running")
        });
        let stopped = ds[1].delete(&format!("/v1/agents/{name}"));
        assert_eq!(stopped.status, 200, "{:?}", stopped.body);
        assert_eq!(stopped.body["state"], "stopped", "{:?}", stopped.body);
    }

    // a fleet held by a worker: its members placed by the leader, kept apart by their fleet
    // label (one per worker node), listed by the fleet where it is held
    let fleet = ds[2].post(
        "/v1/fleets",
        &json!({
            "name": "fl", "replicas": 2,
            "template": {
                "name": "fl", "command": ["sleep", "300"], "resources": { "cpu": "10m" },
                "node_selector": { "role": "worker" },
                "anti_affinity": [{ "topology_key": "qm.dev/node",
                                    "match_labels": { "qm.dev/fleet": "fl" } }]
            }
        })
        .to_string(),
    );
    assert_eq!(fleet.status, 201, "{:?}", fleet.body);
    let members = eventually("the fleet's two members running", 30, || {
        let f = ds[2].get("/v1/fleets/fl").body;
        (f["ready"] == 2).then_some(f["members"].clone())
    });
    let mut nodes: Vec<String> = members
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let a = ds[0].get(&format!("/v1/agents/{}", m.as_str().expect("a name")));
            assert_eq!(a.body["fleet"], "fl", "{:?}", a.body);
            a.body["node"].as_str().expect("a node").to_owned()
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["pl-w1", "pl-w2"], "one member per worker");
    let gone = ds[2].delete("/v1/fleets/fl");
    assert_eq!(gone.status, 200, "{:?}", gone.body);
    eventually("the fleet's members stopped", 20, || {
        running_nowhere(&ds, |a| a["fleet"] == "fl")
    });

    // SIGKILL the worker running it: its allocation lost, the agent running on the other
    let at = ds
        .iter()
        .position(|d| d.get("/v1/node").body["name"] == first_node.as_str())
        .unwrap();
    let killed = ds.remove(at);
    let t0 = Instant::now();
    killed.kill9();
    let other_node = if first_node == "pl-w1" {
        "pl-w2"
    } else {
        "pl-w1"
    };
    let other = named(&ds, other_node);
    let moved = eventually("pa running on the other worker", 30, || {
        agent_where(other, "pa", |a| {
            a["state"] == "running" && a["node"] == other_node
        })
    });
    let restarted_in = t0.elapsed().as_secs_f64();
    let lost = ds[0].get(&format!("/v1/allocations/{first_alloc}"));
    assert_eq!(lost.body["state"], "lost", "{:?}", lost.body);
    let second_pid = pid_of(&moved);
    assert_ne!(second_pid, first_pid);
    // the killed member's own process outlived it (agents outlive their daemon); gone now
    let _ = Command::new("kill")
        .args(["-KILL", &first_pid.to_string()])
        .status();

    // SIGSTOP the second worker past its lease: nowhere left to run it, it waits
    let paused = other.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &paused])
            .status()
            .unwrap()
            .success()
    );
    let queued = eventually("pa waiting for a node", 30, || {
        agent_where(&ds[0], "pa", |a| {
            a["state"] == "pending" && a["node"].is_null()
        })
    });
    assert!(
        queued["reason"]
            .as_str()
            .unwrap_or("")
            .contains("admission"),
        "{queued}"
    );
    assert!(
        crate::agents::alive(second_pid),
        "a paused member's run goes on until it wakes"
    );
    // SIGCONT: the member stops its stale run, rejoins, and the agent is placed on it again
    assert!(
        Command::new("kill")
            .args(["-CONT", &paused])
            .status()
            .unwrap()
            .success()
    );
    let back = eventually("pa running again on the resumed worker", 40, || {
        agent_where(other, "pa", |a| {
            a["state"] == "running" && a["pid"].as_u64().is_some_and(|p| p != second_pid)
        })
    });
    assert!(
        !crate::agents::alive(second_pid),
        "the stale run was stopped"
    );
    let third_pid = pid_of(&back);
    assert!(crate::agents::alive(third_pid));

    // stopped through a member that does not run it: the run ends, the allocation is given back
    let alloc = back["allocation"]
        .as_str()
        .expect("an allocation")
        .to_owned();
    let stopped = ds[0].delete("/v1/agents/pa");
    assert_eq!(stopped.status, 200, "{:?}", stopped.body);
    assert_eq!(stopped.body["state"], "stopped", "{:?}", stopped.body);
    eventually("the run's process gone", 10, || {
        (!crate::agents::alive(third_pid)).then_some(())
    });
    eventually("pa's allocation released", 10, || {
        let a = ds[0].get(&format!("/v1/allocations/{alloc}"));
        (a.body["state"] == "released").then_some(())
    });
    eventually("pa listed nowhere live", 10, || {
        running_nowhere(&ds, |a| a["name"] == "pa")
    });
    eprintln!(
        "worker killed: its agent running on another member {restarted_in:.1} s later (lease 2 s)"
    );
    for d in ds {
        d.stop();
    }
}

/// What the clients were told, by allocation id: granted (201), then released (200).
#[cfg(feature = "etcd")]
#[derive(Debug, Default)]
struct Acked {
    granted: std::collections::BTreeSet<String>,
    released: std::collections::BTreeSet<String>,
    refused: u64,
    /// Refused for want of room (409).
    full: u64,
}

/// A client writing through the members `bases` in turn until `stop`: grants of 100m, held
/// up to 40 at a time and the oldest given back when the cluster is full; every answer that
/// acknowledged a write is recorded.
#[cfg(feature = "etcd")]
fn client(
    id: usize,
    bases: Vec<String>,
    token: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Acked>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .new_agent();
        let auth = format!("Bearer {token}");
        let mut held: std::collections::VecDeque<(String, String)> = Default::default();
        let mut i = 0usize;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            i += 1;
            let base = &bases[i % bases.len()];
            let body = json!({ "agent": format!("c{id}-{i}"), "resources": { "cpu": "100m" } });
            let answer = agent
                .post(&format!("{base}/v1/allocations"))
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.to_string());
            let mut full = false;
            if let Ok(mut r) = answer {
                let status = r.status().as_u16();
                let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
                match (status, v["id"].as_str()) {
                    (201, Some(id)) => {
                        acked
                            .lock()
                            .expect("the acks")
                            .granted
                            .insert(id.to_owned());
                        held.push_back((id.to_owned(), base.clone()));
                    }
                    (409, _) => {
                        full = true;
                        acked.lock().expect("the acks").full += 1;
                    }
                    _ => acked.lock().expect("the acks").refused += 1,
                }
            }
            // hold up to 40 (the two clients ask for more than the three nodes have), and
            // give the oldest back when the cluster is full
            if (held.len() > 40 || full)
                && let Some((id, _)) = held.pop_front()
            {
                let base = &bases[(i + 1) % bases.len()];
                let r = agent
                    .delete(&format!("{base}/v1/allocations/{id}"))
                    .header("authorization", &auth)
                    .call();
                match r {
                    // a release answers the allocation's final state: `released`, or
                    // `lost` when its node was lost first (nothing to give back then)
                    Ok(mut r) if r.status().as_u16() == 200 => {
                        let v: Value = r.body_mut().read_json().unwrap_or(Value::Null);
                        if v["state"] == "released" {
                            acked.lock().expect("the acks").released.insert(id);
                        }
                    }
                    _ => held.push_front((id, base.clone())),
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    })
}

/// Chaos over a three-member etcd: three qm members take writes from two clients through any
/// of them, while one etcd member is killed (SIGKILL), then the qm leader, which then comes
/// back. After every step the invariant checker replays the cluster's log from etcd: no node
/// is ever over-committed. At the end every acknowledged grant is there (granted, or `lost`
/// with the killed leader's node, or released when its release was acknowledged) and every
/// acknowledged release is released.
#[cfg(feature = "etcd")]
#[test]
fn chaos_on_a_three_member_etcd_keeps_capacity_exact_and_acknowledged_writes() {
    let Some(mut etcd) = qm_cluster::testing::EtcdCluster::start("it-chaos", 3) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let check = |etcd: &qm_cluster::testing::EtcdCluster, step: &str| {
        // the members left: a killed etcd no longer answers
        let urls = etcd.live_urls();
        let c = rt
            .block_on(qm_cluster::testing::check_ledger(&urls, "/qm"))
            .unwrap_or_else(|e| panic!("after {step}: {e}"));
        eprintln!(
            "after {step}: {} log entries, {} nodes, {} granted, none over-committed",
            c.entries, c.nodes, c.granted
        );
        c
    };
    let token = temp_dir("chaos-token").join("admin.token");
    let endpoints = etcd.endpoints();
    let start = |name: &str| chaos_member(&endpoints, name, &token);
    let mut ds = vec![start("ch1"), start("ch2"), start("ch3")];
    let all: Vec<&Daemon> = ds.iter().collect();
    let leader = eventually("three members agreeing on a leader", 30, || agreed(&all, 3));
    eventually("three ready nodes", 30, || {
        let at = ds
            .iter()
            .find(|d| d.get("/v1/node").body["name"] == leader.as_str())?;
        let n = at.get("/v1/nodes").body;
        let items = n["items"].as_array()?.clone();
        (items.len() == 3 && items.iter().all(|i| i["ready"] == true)).then_some(())
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Acked::default()));
    let bases: Vec<String> = ds.iter().map(|d| d.base.clone()).collect();
    let clients: Vec<_> = (0..2)
        .map(|i| {
            client(
                i,
                bases.clone(),
                ds[0].token.clone(),
                stop.clone(),
                acked.clone(),
            )
        })
        .collect();
    let granted_now = || acked.lock().expect("the acks").granted.len();
    let wait_for_more = |what: &str, n: usize| {
        eventually(what, 30, || (granted_now() >= n).then_some(()));
    };
    wait_for_more("the clients' first grants", 20);
    check(&etcd, "the first writes");
    // 1. kill -9 one etcd member: the other two keep a quorum and the cluster serves on
    etcd.kill(2);
    let before = granted_now();
    wait_for_more("grants after an etcd member died", before + 20);
    check(&etcd, "killing an etcd member");
    // 2. kill -9 the qm leader while the clients write
    let at = ds
        .iter()
        .position(|d| d.get("/v1/node").body["name"] == leader.as_str())
        .unwrap();
    let killed = ds.remove(at);
    let killed_dir = killed.dir_of();
    killed.kill9();
    let rest: Vec<&Daemon> = ds.iter().collect();
    let next = eventually("a new leader", 30, || agreed(&rest, 2));
    assert_ne!(next, leader);
    let before = granted_now();
    wait_for_more("grants under the new leader", before + 20);
    check(&etcd, "killing the qm leader");
    // 3. the old leader comes back (its own data dir): it follows, and writes go on
    let back = chaos_member_in(&endpoints, &leader, &token, &killed_dir);
    ds.push(back);
    let all: Vec<&Daemon> = ds.iter().collect();
    eventually("three members again", 30, || agreed(&all, 3));
    let before = granted_now();
    wait_for_more("grants with the old leader back", before + 20);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in clients {
        c.join().expect("a client");
    }
    let last = check(&etcd, "the old leader's return");
    // every acknowledged write is in the log, as acknowledged
    let acked = acked.lock().expect("the acks");
    assert!(acked.granted.len() >= 60, "{} grants", acked.granted.len());
    for id in &acked.granted {
        let state = last.states.get(id).map(String::as_str);
        let ok = if acked.released.contains(id) {
            state == Some("released")
        } else {
            matches!(state, Some("granted" | "lost" | "released" | "preempted"))
        };
        assert!(ok, "acknowledged grant {id} is {state:?}");
    }
    eprintln!(
        "chaos: {} grants and {} releases acknowledged ({} refused for want of room, {} while \
         a leader was being chosen), all in the log; no node over-committed after any step",
        acked.granted.len(),
        acked.released.len(),
        acked.full,
        acked.refused
    );
    assert!(acked.full > 0, "the clients filled the cluster");
    for d in ds {
        d.stop();
    }
}

/// A member for the chaos test: 2 cores, a 2 s lease, no agents.
#[cfg(feature = "etcd")]
fn chaos_member(endpoints: &str, name: &str, token: &std::path::Path) -> Daemon {
    let dir = temp_dir(&format!("chaos-{name}")).join("data");
    chaos_member_in(endpoints, name, token, &dir)
}

#[cfg(feature = "etcd")]
fn chaos_member_in(
    endpoints: &str,
    name: &str,
    token: &std::path::Path,
    data: &std::path::Path,
) -> Daemon {
    let config = data.with_file_name("qm.toml");
    std::fs::create_dir_all(data).expect("data dir");
    std::fs::write(
        &config,
        "[agents]\nenabled = false\n[cluster]\nlease_ttl_s = 2\n",
    )
    .expect("config");
    let mut d = Daemon::start(
        data,
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--node-name",
            name,
            "--capacity",
            "cpu=2,memory=4Gi",
            "--etcd",
            endpoints,
            "--admin-token-file",
            token.to_str().expect("utf-8"),
        ],
    );
    d.token = std::fs::read_to_string(token)
        .expect("the shared admin token")
        .trim()
        .to_owned();
    d
}

/// Members that serve HTTPS with certificates of a private CA relay to each other when
/// `[cluster] ca_file` names it: a write asked of a follower is granted by the leader.
#[cfg(feature = "etcd")]
#[test]
fn members_on_https_relay_to_the_leader_trusting_the_cluster_ca() {
    let Some(etcd) = qm_cluster::testing::Etcd::start("it-tls") else {
        return;
    };
    let (ca, cert, key) = crate::transport::certificates("cluster");
    let files = temp_dir("cluster-tls-files");
    for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(files.join(name), pem).expect("write pem");
    }
    let path = |name: &str| files.join(name).display().to_string();
    let token = temp_dir("cluster-tls-token").join("admin.token");
    let start = |name: &str| {
        let dir = temp_dir(&format!("cluster-tls-{name}"));
        let config = dir.join("qm.toml");
        std::fs::write(
            &config,
            format!(
                "[agents]\nenabled = false\n[cluster]\nlease_ttl_s = 2\nca_file = {:?}\n",
                path("ca.pem")
            ),
        )
        .expect("config");
        Daemon::start(
            &dir.join("data"),
            &[
                "--config",
                config.to_str().expect("utf-8"),
                "--node-name",
                name,
                "--etcd",
                &etcd.url,
                "--admin-token-file",
                token.to_str().expect("utf-8"),
                "--tls-cert",
                &path("cert.pem"),
                "--tls-key",
                &path("key.pem"),
            ],
        )
    };
    let ds = [start("tls1"), start("tls2")];
    let admin = std::fs::read_to_string(&token)
        .expect("the shared admin token")
        .trim()
        .to_owned();
    let roots: Vec<_> = ureq::tls::parse_pem(ca.as_bytes())
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let https = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::from(roots))
                .build(),
        )
        .build()
        .new_agent();
    let base = |d: &Daemon| d.base.replacen("http://", "https://", 1);
    let get = |d: &Daemon, p: &str| -> Value {
        https
            .get(&format!("{}{p}", base(d)))
            .header("authorization", &format!("Bearer {admin}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json().ok())
            .unwrap_or(Value::Null)
    };
    let leader = eventually("two members agreeing on a leader", 30, || {
        let views: Vec<Value> = ds.iter().map(|d| get(d, "/v1/cluster")).collect();
        let l = views[0]["leader"].as_str()?.to_owned();
        views
            .iter()
            .all(|v| {
                v["leader"] == l.as_str() && v["members"].as_array().is_some_and(|m| m.len() == 2)
            })
            .then_some(l)
    });
    assert!(
        get(&ds[0], "/v1/cluster")["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["url"].as_str().is_some_and(|u| u.starts_with("https://"))),
        "members advertise https"
    );
    let follower = ds
        .iter()
        .find(|d| get(d, "/v1/node")["name"] != leader.as_str())
        .expect("a follower");
    let granted = eventually("a grant relayed over https", 20, || {
        let mut r = https
            .post(&format!("{}/v1/allocations", base(follower)))
            .header("authorization", &format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .send(json!({ "agent": "over-tls", "resources": { "cpu": "10m" } }).to_string())
            .ok()?;
        (r.status().as_u16() == 201).then(|| r.body_mut().read_json::<Value>().ok())?
    });
    assert_eq!(granted["agent"], "over-tls", "{granted}");
    for d in ds {
        d.stop();
    }
}

/// Learning is shared: an agent labelled `qm.dev/template: coder` runs on a worker, which
/// learns what it holds (about 100 MiB of the 1 GiB asked); the leader, which runs no coder,
/// lists the template's recommendation as one learned on another node, and under `--strategy
/// learned` admits a request labelled so at that size.
#[cfg(feature = "etcd")]
#[test]
fn members_share_what_they_learned_and_the_leader_sizes_by_it() {
    if !crate::agents::can_confine() {
        return;
    }
    let Some(etcd) = qm_cluster::testing::Etcd::start("it-learned") else {
        return;
    };
    let token = temp_dir("learned-token").join("admin.token");
    let learning = "[monitor]\ninterval_s = 0.2\nagent_interval_s = 0.2\n\
                    [recommender]\nmin_samples = 5\nmin_confidence = 0\nmax_overcommit = 8\n";
    let flags = ["--strategy", "learned", "--capacity", "cpu=4,memory=8Gi"];
    let lead = member_configured(&etcd, "ln-lead", &token, learning, &flags);
    eventually("ln-lead leading", 20, || {
        (lead.get("/v1/cluster").body["leader"] == "ln-lead").then_some(())
    });
    let worker = member_configured(&etcd, "ln-w", &token, learning, &flags);
    eventually("two ready nodes in the leader's ledger", 30, || {
        let n = lead.get("/v1/nodes").body;
        let items = n["items"].as_array()?.clone();
        (items.len() == 2 && items.iter().all(|i| i["ready"] == true)).then_some(())
    });
    let made = lead.post(
        "/v1/agents",
        &json!({
            "name": "ln-coder",
            "labels": { "qm.dev/template": "coder" },
            "node_selector": { "qm.dev/node": "ln-w" },
            "command": ["python3", "-c",
                "b = bytearray(100 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nimport time; time.sleep(300)"],
            "resources": { "cpu": "500m", "memory": "1Gi" }
        })
        .to_string(),
    );
    assert!(made.status == 201 || made.status == 202, "{:?}", made.body);
    assert_eq!(made.body["node"], "ln-w", "{:?}", made.body);
    let shared = eventually("the worker's learning at the leader", 40, || {
        let r = lead.get("/v1/recommendations?target=template/coder");
        let item = r.body["items"].as_array()?.first()?.clone();
        let mem = crate::recommend::bytes(&item["resources"]["memory"]);
        (item["reason"].as_str()?.contains("on other nodes") && mem > 100.0 * MI).then_some(item)
    });
    let mem = crate::recommend::bytes(&shared["resources"]["memory"]);
    assert!(mem < 200.0 * MI, "{shared}");
    let sized = lead.post(
        "/v1/allocations",
        &json!({
            "agent": "ln-next",
            "resources": { "cpu": "500m", "memory": "1Gi" },
            "labels": { "qm.dev/template": "coder" }
        })
        .to_string(),
    );
    assert_eq!(sized.status, 201, "{:?}", sized.body);
    let mem = crate::recommend::bytes(&sized.body["resources"]["memory"]);
    assert!((128.0 * MI..=200.0 * MI).contains(&mem), "{:?}", sized.body);
    let id = sized.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(lead.delete(&format!("/v1/allocations/{id}")).status, 200);
    assert_eq!(lead.delete("/v1/agents/ln-coder").status, 200);
    eventually("ln-coder stopped on the worker", 20, || {
        let a = worker.get("/v1/agents/ln-coder").body;
        (a["state"] != "running").then_some(())
    });
    worker.stop();
    lead.stop();
}
