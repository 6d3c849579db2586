//! `can_fit`: how many copies of a request fit now, without allocating. The scheduler's dry
//! run (`POST /v1/allocations?dry_run=true`) gives the verdict for one request, with what it
//! would preempt or what is missing; the count is arithmetic on the ready nodes' available
//! vectors, capped by the pool's limit, and never counts preemption.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::http::Method;
use qm_core::quantity::{self, Unit};
use qm_proto::{NodeDoc, PoolDoc};
use serde_json::{Value, json};

use super::args::{CanFitArgs, Wanted};
use super::tools::{Api, Failure, Reply, request_body, show};

/// How many requests of `amounts` fit into `available`, and the resource that binds;
/// `None` when the request asks for nothing.
pub(crate) fn copies(
    available: &BTreeMap<String, String>,
    amounts: &BTreeMap<String, u64>,
) -> Option<(u64, String)> {
    amounts
        .iter()
        .filter(|(_, amt)| **amt > 0)
        .map(|(r, amt)| {
            let free = available
                .get(r)
                .and_then(|v| quantity::parse(Unit::for_resource(r), v).ok())
                .unwrap_or(0);
            (free / amt, r.clone())
        })
        .min()
}

/// How many requests of `amounts` the pool's limit still allows; `None` without a limit on
/// the requested resources.
fn pool_copies(pool: &PoolDoc, amounts: &BTreeMap<String, u64>) -> Option<(u64, String)> {
    let limit = pool.limit.as_ref()?;
    amounts
        .iter()
        .filter(|(r, amt)| **amt > 0 && limit.contains_key(*r))
        .map(|(r, amt)| {
            let parse = |m: &BTreeMap<String, String>| {
                m.get(r)
                    .and_then(|v| quantity::parse(Unit::for_resource(r), v).ok())
                    .unwrap_or(0)
            };
            let room = parse(limit).saturating_sub(parse(&pool.allocated));
            (room / amt, r.clone())
        })
        .min()
}

fn selected(node: &NodeDoc, selector: Option<&BTreeMap<String, String>>) -> bool {
    selector
        .into_iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v))
}

/// The dry run's verdict on one request.
struct Verdict {
    fits: bool,
    node: Option<String>,
    preempt: Vec<String>,
    shortfall: Option<BTreeMap<String, String>>,
    reason: Option<String>,
}

async fn dry_run(api: &Api<'_>, a: &CanFitArgs, wanted: &Wanted) -> Result<Verdict, Failure> {
    let mut body = request_body(
        "can-fit",
        wanted,
        a.pool.as_ref(),
        a.priority,
        a.priority_class.as_ref(),
        a.node_selector.as_ref(),
    );
    body.insert("queue".into(), json!(false));
    let answer = api
        .send(
            Method::POST,
            "/v1/allocations?dry_run=true",
            Some(Value::Object(body)),
        )
        .await;
    match answer {
        Ok((_, v)) => Ok(Verdict {
            fits: v["state"] == "granted",
            node: v["node"].as_str().map(str::to_owned),
            preempt: v["preempted"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect(),
            shortfall: None,
            reason: None,
        }),
        Err(Failure::Refused(p))
            if p.code == "insufficient_resources" || p.code == "admission_paused" =>
        {
            Ok(Verdict {
                fits: false,
                node: None,
                preempt: Vec::new(),
                shortfall: p.shortfall.clone(),
                reason: Some(p.detail.clone()),
            })
        }
        Err(e) => Err(e),
    }
}

pub(crate) async fn can_fit(api: &Api<'_>, a: CanFitArgs) -> Result<Reply, Failure> {
    let wanted = Wanted::of(
        a.cpu.as_ref(),
        a.memory.as_ref(),
        a.gpu.as_ref(),
        a.extended.as_ref(),
    )?;
    let verdict = dry_run(api, &a, &wanted).await?;
    let nodes: Vec<NodeDoc> = api.get::<qm_proto::NodeList>("/v1/nodes").await?.items;
    let pools: Vec<PoolDoc> = api.get::<qm_proto::PoolList>("/v1/pools").await?.items;
    let pool_name = a.pool.clone().unwrap_or_else(|| "default".to_owned());
    let pool = pools.iter().find(|p| p.name == pool_name);

    let mut per_node = Vec::new();
    let mut sum: Option<u64> = None;
    for n in &nodes {
        let eligible = n.ready && selected(n, a.node_selector.as_ref());
        let fit = if eligible {
            copies(&n.available, &wanted.amounts)
        } else {
            Some((
                0,
                if n.ready {
                    "node_selector"
                } else {
                    "not ready"
                }
                .to_owned(),
            ))
        };
        if let Some((c, _)) = &fit {
            sum = Some(sum.unwrap_or(0).saturating_add(*c));
        }
        per_node.push(json!({
            "node": n.name,
            "count": fit.as_ref().map(|f| f.0),
            "limited_by": fit.as_ref().map(|f| f.1.clone()),
            "available": n.available,
        }));
    }
    let pool_cap = pool.and_then(|p| pool_copies(p, &wanted.amounts));
    // a request of nothing reserves nothing: no count binds it
    let count = match (sum, &pool_cap) {
        _ if wanted.amounts.values().all(|a| *a == 0) => None,
        (Some(s), Some((c, _))) => Some(s.min(*c)),
        (s, _) => s,
    };
    let request = show(
        &wanted
            .wire
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
    );

    let mut text = match count {
        None => format!(
            "a request of {request} (best-effort) reserves no capacity: any number fits while \
             admission is open\n"
        ),
        Some(c) => {
            let nodes_text: Vec<String> = per_node
                .iter()
                .filter(|n| n["count"].as_u64().is_some())
                .map(|n| {
                    format!(
                        "{}: {} (limited by {})",
                        n["node"].as_str().unwrap_or_default(),
                        n["count"],
                        n["limited_by"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            format!(
                "{c} requests of {request} fit now without preempting anything ({})\n",
                nodes_text.join("; ")
            )
        }
    };
    if let Some((c, r)) = &pool_cap {
        let _ = writeln!(
            text,
            "pool {pool_name}'s limit allows {c} more (limited by {r})"
        );
    }
    if verdict.fits {
        let _ = write!(
            text,
            "one request would be granted now on {}",
            verdict.node.as_deref().unwrap_or("a node")
        );
        if !verdict.preempt.is_empty() {
            let _ = write!(text, " by preempting {}", verdict.preempt.join(", "));
        }
        text.push('\n');
    } else {
        let _ = write!(
            text,
            "one request would be refused now: {}",
            verdict.reason.as_deref().unwrap_or("it does not fit")
        );
        if let Some(s) = &verdict.shortfall {
            let _ = write!(text, "; shortfall: {}", show(s));
        }
        text.push('\n');
    }
    Ok(Reply {
        text,
        structured: json!({
            "request": Value::Object(wanted.wire.clone()),
            "count": count,
            "fits_now": verdict.fits,
            "node": verdict.node,
            "would_preempt": verdict.preempt,
            "shortfall": verdict.shortfall,
            "reason": verdict.reason,
            "per_node": per_node,
            "pool": { "name": pool_name, "count": pool_cap.as_ref().map(|c| c.0) },
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn copies_are_bound_by_the_scarcest_resource() {
        let avail = map(&[("cpu", "4"), ("memory", "3Gi")]);
        let mut want = BTreeMap::new();
        want.insert("cpu".to_owned(), 1000);
        assert_eq!(copies(&avail, &want), Some((4, "cpu".to_owned())));
        want.insert("memory".to_owned(), 1 << 30);
        assert_eq!(copies(&avail, &want), Some((3, "memory".to_owned())));
        want.insert("gpu".to_owned(), 1);
        assert_eq!(copies(&avail, &want), Some((0, "gpu".to_owned())));
        assert_eq!(copies(&avail, &BTreeMap::new()), None);
    }
}
