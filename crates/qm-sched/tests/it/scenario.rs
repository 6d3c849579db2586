//! A small scenario language for golden tests: each line is one ledger command, and the
//! transcript shows what the ledger answered and which events followed, with allocations named
//! by their agent. Lines:
//!
//! ```text
//! strategy NAME                     (first; default priority)
//! config backfill=N reserve_after=S
//! node NAME cpu=Q memory=Q [gpu=N] [label.K=V ...]
//! pool NAME [weight=W] [guaranteed.R=Q ...] [limit.R=Q ...]
//! at SECONDS                        (the time of the following commands)
//! submit AGENT[xN] [pool=P] [prio=N] [queue] [ttl=S] [fixed] [sel.K=V] [label.K=V]
//!        [spread=KEY:SKEW:K=V] [aff=KEY:K=V] [anti=KEY:K=V] cpu=Q memory=Q ...
//! release AGENT | renew AGENT [ttl=S] | evict AGENT | expire | drain
//! lose NODE | unready NODE | ready NODE | remove NODE [force]
//! show                              (every node's and pool's allocated amounts)
//! ```
//! `AGENTxN` submits N requests named AGENT-1..AGENT-N.

use std::collections::BTreeMap;
use std::fmt::Write;

use qm_core::{
    AllocId, Decision, Event, Ledger, LedgerConfig, NodeSpec, PoolSpec, Priority, Request,
    ResourceCatalog, Resources, SubmitError, Timestamp,
};

/// Spread and affinity rules: `spread=KEY:SKEW:K=V`, `aff=KEY:K=V`, `anti=KEY:K=V` (one
/// label each; repeatable).
fn topology(args: &[&str]) -> qm_core::Topology {
    let term = |v: &str| {
        let (key, label) = v.split_once(':').expect("KEY:K=V");
        let (k, lv) = label.split_once('=').expect("K=V");
        qm_core::Term {
            topology_key: key.to_owned(),
            match_labels: [(k.to_owned(), lv.to_owned())].into(),
        }
    };
    let mut t = qm_core::Topology::default();
    for a in args {
        if let Some(v) = a.strip_prefix("spread=") {
            let (key, rest) = v.split_once(':').expect("KEY:SKEW:K=V");
            let (skew, label) = rest.split_once(':').expect("SKEW:K=V");
            let (k, lv) = label.split_once('=').expect("K=V");
            t.spread.push(qm_core::Spread {
                topology_key: key.to_owned(),
                max_skew: skew.parse().expect("skew"),
                match_labels: [(k.to_owned(), lv.to_owned())].into(),
            });
        } else if let Some(v) = a.strip_prefix("aff=") {
            t.affinity.push(term(v));
        } else if let Some(v) = a.strip_prefix("anti=") {
            t.anti_affinity.push(term(v));
        }
    }
    t
}

/// Runs a scenario and returns its transcript.
pub(crate) fn run(script: &str) -> String {
    let mut sc = Scenario::new();
    for line in script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        sc.line(line);
    }
    sc.out
}

struct Scenario {
    ledger: Option<Ledger>,
    strategy: String,
    config: LedgerConfig,
    catalog: ResourceCatalog,
    now: Timestamp,
    ids: BTreeMap<String, AllocId>,
    names: BTreeMap<AllocId, String>,
    out: String,
}

fn resources(catalog: &ResourceCatalog, args: &[&str], prefix: &str) -> Resources {
    let pairs: Vec<(&str, &str)> = args
        .iter()
        .filter_map(|a| a.strip_prefix(prefix)?.split_once('='))
        .filter(|(k, _)| catalog.lookup(k).is_some())
        .collect();
    catalog
        .parse(prefix.trim_end_matches('.'), pairs)
        .expect("scenario resources parse")
}

fn flag<'a>(args: &[&'a str], key: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
}

fn labels(args: &[&str], prefix: &str) -> qm_core::Labels {
    args.iter()
        .filter_map(|a| a.strip_prefix(prefix)?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl Scenario {
    fn new() -> Self {
        let mut catalog = ResourceCatalog::default();
        catalog
            .intern("example.com/license")
            .expect("extended resource");
        Self {
            ledger: None,
            strategy: "priority".to_owned(),
            config: LedgerConfig::default(),
            catalog,
            now: Timestamp::from_millis(0),
            ids: BTreeMap::new(),
            names: BTreeMap::new(),
            out: String::new(),
        }
    }

    fn ledger(&mut self) -> &mut Ledger {
        if self.ledger.is_none() {
            let ledger = qm_sched::ledger(&self.strategy, self.config.clone()).expect("strategy");
            self.ledger = Some(ledger);
        }
        self.ledger.as_mut().expect("ledger")
    }

    fn name(&self, id: AllocId) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("{id}"))
    }

    fn id(&self, agent: &str) -> AllocId {
        *self
            .ids
            .get(agent)
            .unwrap_or_else(|| panic!("no allocation named {agent}"))
    }

    fn line(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (cmd, args) = (words[0], &words[1..]);
        let now = self.now;
        match cmd {
            "strategy" => self.strategy = args[0].to_owned(),
            "config" => {
                if let Some(n) = flag(args, "backfill") {
                    self.config.backfill_depth = n.parse().expect("backfill");
                }
                if let Some(s) = flag(args, "reserve_after") {
                    self.config.reserve_after_ms = s.parse::<u64>().expect("reserve_after") * 1000;
                }
            }
            "at" => {
                self.now = Timestamp::from_millis(args[0].parse::<u64>().expect("seconds") * 1000);
            }
            "node" => {
                let mut spec = NodeSpec::new(args[0], resources(&self.catalog, args, ""));
                spec.labels = labels(args, "label.");
                let r = self.ledger().register_node(now, spec).map(|_| ());
                self.answer(line, r.map_err(|e| e.to_string()));
            }
            "pool" => {
                let mut spec = PoolSpec::new(args[0]);
                spec.weight = flag(args, "weight").map_or(1, |w| w.parse().expect("weight"));
                spec.guaranteed = resources(&self.catalog, args, "guaranteed.");
                let limit = resources(&self.catalog, args, "limit.");
                spec.limit = (!limit.is_empty()).then_some(limit);
                let r = self.ledger().create_pool(spec).map(|_| ());
                self.answer(line, r.map_err(|e| e.to_string()));
            }
            "submit" => {
                let (base, count) = match args[0].split_once('x') {
                    Some((b, n)) if n.parse::<usize>().is_ok() => (b, n.parse().expect("count")),
                    _ => (args[0], 0),
                };
                let agents: Vec<String> = if count == 0 {
                    vec![base.to_owned()]
                } else {
                    (1..=count).map(|i| format!("{base}-{i}")).collect()
                };
                let res = resources(&self.catalog, args, "");
                let _ = writeln!(self.out, "> {line}");
                for agent in agents {
                    let mut req = Request::new(&agent, res.clone());
                    if let Some(p) = flag(args, "pool") {
                        req.pool = p.to_owned();
                    }
                    if let Some(p) = flag(args, "prio") {
                        req.priority = Priority::new(p.parse().expect("prio")).expect("prio range");
                    }
                    req.queue = args.contains(&"queue");
                    req.preemptible = !args.contains(&"fixed");
                    req.ttl_ms = flag(args, "ttl").map(|s| s.parse::<u64>().expect("ttl") * 1000);
                    req.node_selector = labels(args, "sel.");
                    req.labels = labels(args, "label.");
                    req.topology = topology(args);
                    let result = self.ledger().submit(now, req);
                    match result {
                        Ok(s) => {
                            let id = s.id.expect("id");
                            self.ids.insert(agent.clone(), id);
                            self.names.insert(id, agent.clone());
                            if let Decision::Queued { shortfall } = &s.decision {
                                let missing = self.catalog.display(&shortfall.missing).to_string();
                                let _ = writeln!(
                                    self.out,
                                    "  {agent}: queued ({:?}: {missing})",
                                    shortfall.reason
                                );
                            }
                        }
                        Err(SubmitError::Insufficient(s)) => {
                            let missing = self.catalog.display(&s.missing).to_string();
                            let _ = writeln!(
                                self.out,
                                "  {agent}: refused ({:?}: {missing})",
                                s.reason
                            );
                        }
                        Err(e) => {
                            let _ = writeln!(self.out, "  {agent}: error: {e}");
                        }
                    }
                    self.flush_events();
                }
            }
            "release" => {
                let id = self.id(args[0]);
                let r = self.ledger().release(now, id);
                let _ = writeln!(self.out, "> {line}: {}", r.map_or("not live", |s| s.name()));
                self.flush_events();
            }
            "renew" => {
                let id = self.id(args[0]);
                let ttl = flag(args, "ttl").map(|s| s.parse::<u64>().expect("ttl") * 1000);
                let r = self.ledger().renew(now, id, ttl);
                let text = match r {
                    Ok(t) => format!("expires at {}s", t.as_millis() / 1000),
                    Err(e) => format!("error: {e}"),
                };
                let _ = writeln!(self.out, "> {line}: {text}");
            }
            "evict" => {
                let id = self.id(args[0]);
                let r = self
                    .ledger()
                    .evict(now, id, "memory pressure")
                    .map_err(|e| e.to_string());
                self.answer(line, r);
            }
            "expire" => {
                let n = self.ledger().expire(now);
                let _ = writeln!(self.out, "> {line}: {n}");
                self.flush_events();
            }
            "drain" => {
                let n = self.ledger().drain(now);
                let _ = writeln!(self.out, "> {line}: {n} granted");
                self.flush_events();
            }
            "lose" | "remove" => {
                let force = args.contains(&"force");
                let r = if cmd == "lose" {
                    self.ledger().lose_node(now, args[0])
                } else {
                    self.ledger().remove_node(now, args[0], force)
                };
                self.answer(line, r.map(|_| ()).map_err(|e| e.to_string()));
            }
            "ready" | "unready" => {
                let r = self.ledger().set_node_ready(now, args[0], cmd == "ready");
                self.answer(line, r.map_err(|e| e.to_string()));
            }
            "show" => {
                let _ = writeln!(self.out, "> show");
                self.show();
            }
            other => panic!("unknown scenario command {other:?}"),
        }
    }

    fn answer(&mut self, line: &str, r: Result<(), String>) {
        match r {
            Ok(()) => {
                let _ = writeln!(self.out, "> {line}");
            }
            Err(e) => {
                let _ = writeln!(self.out, "> {line}: error: {e}");
            }
        }
        self.flush_events();
    }

    fn flush_events(&mut self) {
        let events = self.ledger().take_events();
        let ledger = self.ledger.as_ref().expect("ledger");
        let st = ledger.state();
        for e in events {
            let text = match e {
                Event::Granted {
                    id,
                    node,
                    preempted,
                } => {
                    let mut t = format!("granted {} on {}", self.name(id), st.node_name(node));
                    if !preempted.is_empty() {
                        let v: Vec<String> = preempted.iter().map(|p| self.name(*p)).collect();
                        let _ = write!(t, " preempting {}", v.join(" "));
                    }
                    t
                }
                Event::Queued { .. } | Event::NodeReady { .. } => continue,
                Event::Held { id, node } => {
                    format!("held {} for {}", st.node_name(node), self.name(id))
                }
                Event::Ended(a) => {
                    let mut t = format!("{} {}", a.state().name(), self.name(a.id()));
                    if let Some(r) = a.reason() {
                        let r = match a.preempted_by() {
                            Some(by) => r.replace(&by.to_string(), &self.name(by)),
                            None => r.to_owned(),
                        };
                        let _ = write!(t, " ({r})");
                    }
                    t
                }
                Event::NodeNotReady { node } => format!("node {} not ready", st.node_name(node)),
            };
            let _ = writeln!(self.out, "  {text}");
        }
    }

    fn show(&mut self) {
        let ledger = self.ledger.as_ref().expect("ledger");
        let st = ledger.state();
        for (_, n) in st.nodes() {
            let held = n
                .held_for()
                .map(|h| format!(" held for {}", self.name(h)))
                .unwrap_or_default();
            let _ = writeln!(
                self.out,
                "  node {}: {} of {}{held}",
                n.name(),
                self.catalog.display(n.allocated()),
                self.catalog.display(n.allocatable())
            );
        }
        for (_, p) in st.pools() {
            let _ = writeln!(
                self.out,
                "  pool {}: {} granted, {} queued, {}",
                p.name(),
                p.n_granted(),
                p.n_queued(),
                self.catalog.display(p.allocated())
            );
        }
        assert_eq!(
            st.refused_placements(),
            0,
            "a built-in strategy proposed an invalid placement"
        );
    }
}
