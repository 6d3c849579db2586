//! Unit tests of the history: exact tier means after a known feed, gaps, wrap-around,
//! queries, eviction, pruning, lazy storage and the memory bound.

use qm_sys::metric::{Desc, Kind, Sample};

use super::*;

static MEM: Desc = Desc {
    name: "qm_host_memory_used_ratio",
    help: "memory used",
    kind: Kind::Gauge,
};
static DISK: Desc = Desc {
    name: "qm_host_disk_read_bytes_per_second",
    help: "disk reads",
    kind: Kind::Rate,
};
static READS: Desc = Desc {
    name: "qm_host_disk_read_bytes_total",
    help: "disk reads",
    kind: Kind::Counter,
};
static AGENT_RSS: Desc = Desc {
    name: "qm_agent_memory_bytes",
    help: "agent memory",
    kind: Kind::Gauge,
};

const S: u64 = 1_000;

fn history() -> History {
    History::new(HistoryConfig::default())
}

fn with(config: HistoryConfig) -> History {
    assert!(config.validate().is_empty());
    History::new(config)
}

fn names(h: &History) -> Vec<(String, usize)> {
    h.names()
}

fn name(n: &str, count: usize) -> (String, usize) {
    (n.to_owned(), count)
}

fn q(name: &str, from: UnixMs, to: UnixMs, step_ms: Option<u64>) -> Query {
    Query {
        name: name.to_owned(),
        matchers: Vec::new(),
        from,
        to,
        step_ms,
    }
}

fn only(h: &History, query: &Query) -> SeriesData {
    let mut v = h.query(query);
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

fn agent(id: &str, desc: &'static Desc, value: f64) -> Sample {
    Sample::with_label(desc, "agent", id, value)
}

/// Seconds 1..=120 at times 0 s..119 s, the value being the second's number.
fn feed_120(h: &mut History) {
    for n in 1..=120u64 {
        h.record((n - 1) * S, &[Sample::new(&MEM, n as f64)]);
    }
}

#[test]
fn tiers_hold_exact_means() {
    let mut h = history();
    feed_120(&mut h);
    let fine = only(&h, &q(MEM.name, 0, 200 * S, None));
    assert_eq!(fine.step_ms, S);
    assert_eq!(fine.points.len(), 120);
    assert_eq!(fine.points.first(), Some(&(0, 1.0)));
    assert_eq!(fine.points.last(), Some(&(119 * S, 120.0)));

    let ten = only(&h, &q(MEM.name, 0, 200 * S, Some(10 * S)));
    assert_eq!(ten.step_ms, 10 * S);
    let expect: Vec<(u64, f64)> = (0..12)
        .map(|i| (i * 10 * S, 5.5 + 10.0 * i as f64))
        .collect();
    assert_eq!(ten.points, expect);

    let minute = only(&h, &q(MEM.name, 0, 200 * S, Some(60 * S)));
    assert_eq!(minute.step_ms, 60 * S);
    assert_eq!(minute.points, vec![(0, 30.5), (60 * S, 90.5)]);

    // 20 s: the 10 s tier's pairs averaged.
    let twenty = only(&h, &q(MEM.name, 0, 200 * S, Some(20 * S)));
    assert_eq!(twenty.step_ms, 20 * S);
    assert_eq!(twenty.points.first(), Some(&(0, 10.5)));
    assert_eq!(twenty.points.len(), 6);
}

#[test]
fn two_samples_in_one_step_average() {
    let mut h = history();
    h.record(1_000, &[Sample::new(&MEM, 1.0)]);
    h.record(1_500, &[Sample::new(&MEM, 3.0)]);
    assert_eq!(
        only(&h, &q(MEM.name, 0, 2 * S, None)).points,
        vec![(S, 2.0)]
    );
    let latest = h.latest(MEM.name, &[]);
    assert_eq!(
        latest,
        vec![(vec![], 1_500, 3.0)],
        "latest is the raw sample"
    );
}

#[test]
fn gaps_give_no_points() {
    let mut h = history();
    for t in (0..10).chain(20..30) {
        h.record(t * S, &[Sample::new(&MEM, 1.0)]);
    }
    let fine = only(&h, &q(MEM.name, 0, 30 * S, None));
    assert_eq!(fine.points.len(), 20);
    assert!(
        fine.points
            .iter()
            .all(|(t, _)| !(10 * S..20 * S).contains(t))
    );
    let ten = only(&h, &q(MEM.name, 0, 30 * S, Some(10 * S)));
    assert_eq!(ten.points, vec![(0, 1.0), (20 * S, 1.0)]);
    assert!(h.query(&q(MEM.name, 10 * S, 19 * S, None)).is_empty());
}

#[test]
fn ring_wraps_keeping_the_newest_points() {
    let mut h = with(HistoryConfig {
        host_tiers: vec![Tier::new(S, 5)],
        ..HistoryConfig::default()
    });
    for t in 0..12 {
        h.record(t * S, &[Sample::new(&MEM, t as f64)]);
    }
    let d = only(&h, &q(MEM.name, 0, 20 * S, None));
    let expect: Vec<(u64, f64)> = (7..12).map(|t| (t * S, t as f64)).collect();
    assert_eq!(d.points, expect);
    assert_eq!(h.stats().points_held, 5);
}

#[test]
fn agent_series_get_agent_tiers() {
    let mut h = history();
    for t in 0..400 {
        h.record(
            t * S,
            &[Sample::new(&MEM, 1.0), agent("a1", &AGENT_RSS, 2.0)],
        );
    }
    // from = 150 s: both 1 s tiers reach back that far (5 min for agents).
    assert_eq!(only(&h, &q(MEM.name, 150 * S, 400 * S, None)).step_ms, S);
    let a = only(&h, &q(AGENT_RSS.name, 150 * S, 400 * S, None));
    assert_eq!((a.step_ms, a.points.len()), (S, 250));
    // from = 0: the host 1 s tier reaches back 15 min, the agent one only 5.
    assert_eq!(only(&h, &q(MEM.name, 0, 400 * S, None)).points.len(), 400);
    let a = only(&h, &q(AGENT_RSS.name, 0, 400 * S, None));
    assert_eq!((a.step_ms, a.points.len()), (10 * S, 40));
    assert_eq!(a.labels, vec![("agent".to_owned(), "a1".to_owned())]);
}

#[test]
fn query_range_and_step() {
    let mut h = history();
    feed_120(&mut h);
    let d = only(&h, &q(MEM.name, 10 * S, 14 * S, None));
    assert_eq!(
        d.points,
        vec![
            (10 * S, 11.0),
            (11 * S, 12.0),
            (12 * S, 13.0),
            (13 * S, 14.0),
            (14 * S, 15.0)
        ]
    );
    // 15 s on the 10 s tier rounds up to 20 s.
    let d = only(&h, &q(MEM.name, 0, 39 * S, Some(15 * S)));
    assert_eq!(d.step_ms, 20 * S);
    assert_eq!(d.points, vec![(0, 10.5), (20 * S, 30.5)]);
    // A step finer than every tier answers at the finest.
    assert_eq!(only(&h, &q(MEM.name, 0, 5 * S, Some(10))).step_ms, S);
    // from after to, or an unknown name: nothing.
    assert!(h.query(&q(MEM.name, 5 * S, 4 * S, None)).is_empty());
    assert!(h.query(&q("qm_nothing", 0, 5 * S, None)).is_empty());
}

#[test]
fn matchers_select_series() {
    let mut h = history();
    let mk = |dev: &str, mode: &str, v: f64| Sample {
        desc: &DISK,
        labels: vec![("mode", mode.to_owned()), ("device", dev.to_owned())],
        value: v,
    };
    h.record(
        0,
        &[
            mk("sda", "r", 1.0),
            mk("sdb", "r", 2.0),
            mk("sda", "w", 3.0),
        ],
    );
    let mut query = q(DISK.name, 0, S, None);
    assert_eq!(h.query(&query).len(), 3);
    query.matchers = vec![("device".to_owned(), "sda".to_owned())];
    assert_eq!(h.query(&query).len(), 2);
    query.matchers.push(("mode".to_owned(), "w".to_owned()));
    let d = only(&h, &query);
    assert_eq!(d.points, vec![(0, 3.0)]);
    assert_eq!(
        d.labels,
        vec![
            ("device".to_owned(), "sda".to_owned()),
            ("mode".to_owned(), "w".to_owned())
        ],
        "sorted by label name"
    );
    query.matchers = vec![("cpu".to_owned(), "0".to_owned())];
    assert!(h.query(&query).is_empty());
    assert_eq!(
        h.series(DISK.name)
            .iter()
            .map(|l| format!("{l:?}"))
            .collect::<Vec<_>>(),
        vec![
            r#"[("device", "sda"), ("mode", "r")]"#,
            r#"[("device", "sda"), ("mode", "w")]"#,
            r#"[("device", "sdb"), ("mode", "r")]"#,
        ]
    );
    let latest = h.latest(DISK.name, &[("device".to_owned(), "sdb".to_owned())]);
    assert_eq!(latest.len(), 1);
    assert_eq!((latest[0].1, latest[0].2), (0, 2.0));
}

#[test]
fn counters_and_non_finite_values_are_ignored() {
    let mut h = history();
    h.record(
        0,
        &[
            Sample::new(&READS, 10.0),
            Sample::new(&MEM, f64::NAN),
            Sample::new(&DISK, f64::INFINITY),
        ],
    );
    assert!(h.names().is_empty());
    h.record(S, &[Sample::new(&READS, 20.0), Sample::new(&DISK, 5.0)]);
    assert_eq!(names(&h), vec![name(DISK.name, 1)]);
    assert_eq!(h.stats().series, 1);
}

#[test]
fn max_series_evicts_the_stalest() {
    let mut h = with(HistoryConfig {
        max_series: 3,
        ..HistoryConfig::default()
    });
    let s = |id: &str| agent(id, &AGENT_RSS, 1.0);
    h.record(0, &[s("a"), s("b"), s("c")]);
    h.record(S, &[s("b"), s("c")]);
    h.record(2 * S, &[s("b"), s("c"), s("d")]);
    let ids = |h: &History| -> Vec<String> {
        h.series(AGENT_RSS.name)
            .into_iter()
            .map(|l| l[0].1.clone())
            .collect()
    };
    assert_eq!(ids(&h), ["b", "c", "d"], "a was the stalest");
    assert_eq!(h.stats().evicted, 1);
    // b, c and e are live at 3 s; d is stale and goes, not a live one.
    h.record(3 * S, &[s("b"), s("c"), s("e")]);
    assert_eq!(ids(&h), ["b", "c", "e"]);
    assert_eq!(h.stats().evicted, 2);
    assert_eq!(h.stats().series, 3);
}

#[test]
fn prune_drops_expired_series() {
    let mut h = with(HistoryConfig {
        host_tiers: vec![Tier::new(S, 10), Tier::new(2 * S, 10)],
        ..HistoryConfig::default()
    });
    h.record(0, &[Sample::new(&MEM, 1.0)]);
    h.record(5 * S, &[Sample::new(&DISK, 1.0)]);
    assert_eq!(h.prune(19 * S), 0, "the 2 s tier still holds step 0");
    assert_eq!(h.names().len(), 2);
    assert_eq!(h.prune(20 * S), 1);
    assert_eq!(names(&h), vec![name(DISK.name, 1)]);
    assert_eq!(h.stats().pruned, 1);
    // record prunes on its own once a minute of recorded time has passed.
    h.record(90 * S, &[Sample::new(&MEM, 1.0)]);
    assert_eq!(names(&h), vec![name(MEM.name, 1)]);
}

#[test]
fn storage_grows_lazily() {
    let mut short = history();
    for t in 0..10 {
        short.record(t * S, &[agent("a", &AGENT_RSS, 1.0)]);
    }
    let mut full = history();
    for t in 0..86_400 {
        full.record(t * S, &[agent("a", &AGENT_RSS, t as f64)]);
    }
    let (s, f) = (short.memory_bytes(), full.memory_bytes());
    eprintln!("agent series: 10 s of samples {s} bytes, 24 h {f} bytes");
    assert!(s * 15 < f, "{s} vs {f}");
    assert!(f < 2_100 * 4 + 600, "{f}");
    assert_eq!(full.stats().points_held, 2_100);
}

#[test]
fn validate_names_fields() {
    let bad = HistoryConfig {
        host_tiers: vec![
            Tier::new(1_000, 0),
            Tier::new(1_000, 10),
            Tier::new(1_500, 10),
        ],
        agent_tiers: vec![],
        max_series: 0,
        agent_series: vec![],
    };
    let errors = bad
        .validate()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    assert_eq!(
        errors,
        "host_tiers[0].points: must be 1 to 16777216; \
         host_tiers[1].step_ms: must be greater than the previous tier's step (1000 ms); \
         host_tiers[2].step_ms: must be a multiple of the previous tier's step (1000 ms); \
         agent_tiers: at least one tier is needed; \
         max_series: must be at least 1"
    );
    assert!(HistoryConfig::default().validate().is_empty());
    // An invalid config is clamped, not a panic.
    let mut h = History::new(bad);
    h.record(0, &[Sample::new(&MEM, 1.0)]);
    assert_eq!(h.config().host_tiers[0].points, 1);
    assert_eq!(h.config().agent_tiers, HistoryConfig::default().agent_tiers);
    assert_eq!(h.config().max_series, 1);
    let zero_step = HistoryConfig {
        host_tiers: vec![Tier::new(0, 1)],
        ..HistoryConfig::default()
    };
    assert_eq!(
        zero_step.validate()[0].to_string(),
        "host_tiers[0].step_ms: must be at least 1"
    );
    let mut h = History::new(zero_step);
    h.record(5, &[Sample::new(&MEM, 1.0)]);
    assert_eq!(h.stats().series, 1);
}

/// 1,000 agents × 6 series with every agent tier's storage fully grown. Four collections
/// suffice: each gap is one short of a tier's points, so the gap's missing steps fill it.
#[test]
fn memory_bound_for_a_thousand_agents() {
    static DESCS: [Desc; 6] = [
        Desc {
            name: "qm_agent_cpu_usage_cores",
            help: "",
            kind: Kind::Rate,
        },
        Desc {
            name: "qm_agent_memory_bytes",
            help: "",
            kind: Kind::Gauge,
        },
        Desc {
            name: "qm_agent_io_read_bytes_per_second",
            help: "",
            kind: Kind::Rate,
        },
        Desc {
            name: "qm_agent_io_write_bytes_per_second",
            help: "",
            kind: Kind::Rate,
        },
        Desc {
            name: "qm_agent_threads",
            help: "",
            kind: Kind::Gauge,
        },
        Desc {
            name: "qm_agent_open_files",
            help: "",
            kind: Kind::Gauge,
        },
    ];
    let samples: Vec<Sample> = (0..1_000)
        .flat_map(|a| {
            let id = format!("agent-{a:04}");
            DESCS.iter().map(move |d| agent(&id, d, 1.0))
        })
        .collect();
    let mut h = history();
    let t1 = 1_439 * 60 * S;
    let t2 = t1 + 359 * 10 * S;
    let t3 = t2 + 299 * S;
    for at in [0, t1, t2, t3] {
        h.record(at, &samples);
    }
    let stats = h.stats();
    assert_eq!(stats.series, 6_000);
    assert_eq!(stats.points_held, 6_000 * 2_100, "every ring full");
    let bytes = h.memory_bytes();
    let per_series = bytes / 6_000;
    eprintln!(
        "1000 agents x 6 series, agent tiers full: {bytes} bytes ({:.1} MB, {per_series} per series)",
        bytes as f64 / 1e6
    );
    // 2,100 points × 4 B = 8,400 B of slots plus at most 512 B of key, map and headers.
    assert!(per_series <= 2_100 * 4 + 512, "{per_series}");
    assert!(bytes <= 54_000_000, "{bytes}");
}

#[test]
fn only_the_configured_agent_series_are_kept() {
    static PROCESSES: Desc = Desc {
        name: "qm_agent_processes",
        help: "",
        kind: Kind::Gauge,
    };
    let mut h = history();
    h.record(
        0,
        &[
            agent("a", &AGENT_RSS, 1.0),
            agent("a", &PROCESSES, 3.0),
            Sample::new(&MEM, 1.0),
        ],
    );
    let kept: Vec<String> = h.names().into_iter().map(|(n, _)| n).collect();
    assert_eq!(kept, [AGENT_RSS.name, MEM.name]);
    let mut all = with(HistoryConfig {
        agent_series: vec![],
        ..HistoryConfig::default()
    });
    all.record(0, &[agent("a", &PROCESSES, 3.0)]);
    assert_eq!(
        all.names().len(),
        1,
        "an empty list keeps every agent series"
    );
}
