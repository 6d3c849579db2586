//! The monitoring routes: the latest collection as JSON (`GET /v1/metrics`), what history
//! holds (`GET /v1/metrics/series`), a series' points over a range (`GET /v1/metrics/query`)
//! and alerts (`GET /v1/alerts`). Reads only: they load the monitor's last published
//! collection or take its history lock briefly, never waiting for a collection.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use qm_engine::Engine;
use qm_monitor::history::Query as HistoryQuery;
use qm_monitor::{Monitor, alert_doc};
#[allow(unused_imports, reason = "the OpenAPI annotations name these types")]
use qm_proto::{AlertDoc, Problem};
use qm_proto::{
    AlertList, MetricsSnapshotDoc, QueryDoc, SampleDoc, SeriesDoc, SeriesListDoc, SeriesNameDoc,
    format_rfc3339, parse_rfc3339, to_json,
};
use qm_sys::metric::Kind;

use crate::auth::{Caller, Operation};
use crate::error::ApiError;
use crate::routes::json;

type ApiResult = Result<Response, ApiError>;

fn monitor(engine: &Engine) -> Result<&Monitor, ApiError> {
    engine.monitor().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "monitoring_off",
            "this daemon runs without its monitor",
        )
    })
}

/// Refuses query parameters other than `known`, naming the first one.
fn only(params: &BTreeMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::field(
            k,
            format!("unknown query parameter (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Gauge => "gauge",
        Kind::Counter => "counter",
        Kind::Rate => "rate",
    }
}

/// `k=v,k2=v2` label matchers.
fn matchers(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(ApiError::field(
                "match",
                format!("{pair:?} is not label=value"),
            )),
        })
        .collect()
}

/// A positive number of seconds, at most `max`.
fn seconds(field: &str, text: &str, max: f64) -> Result<f64, ApiError> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= max => Ok(v),
        _ => Err(ApiError::field(
            field,
            format!("{text:?} is not a number of seconds in (0, {max}]"),
        )),
    }
}

#[utoipa::path(get, path = "/v1/metrics", tag = "metrics",
    params(("name" = Option<String>, Query, description = "only series whose name starts with this")),
    responses((status = 200, body = MetricsSnapshotDoc)))]
pub(crate) async fn snapshot(
    State(engine): State<Engine>,
    caller: Caller,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult {
    caller.allow(Operation::ReadCluster)?;
    only(&params, &["name"])?;
    let latest = monitor(&engine)?.latest();
    let prefix = params.get("name").map_or("", String::as_str);
    let samples = latest
        .all()
        .filter(|s| s.desc.name.starts_with(prefix))
        .map(|s| SampleDoc {
            name: s.desc.name.to_owned(),
            kind: kind_name(s.desc.kind).to_owned(),
            labels: s
                .labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            value: s.value,
        })
        .collect();
    let doc = MetricsSnapshotDoc {
        at: latest.at_ms.map(format_rfc3339),
        collection_ms: latest.collection_wall.as_secs_f64() * 1e3,
        collection_cpu_ms: latest.collection_cpu.as_secs_f64() * 1e3,
        agents: latest.agents,
        samples,
    };
    Ok(json(StatusCode::OK, to_json(&doc)))
}

#[utoipa::path(get, path = "/v1/metrics/series", tag = "metrics",
    responses((status = 200, body = SeriesListDoc)))]
pub(crate) async fn series(
    State(engine): State<Engine>,
    caller: Caller,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult {
    caller.allow(Operation::ReadCluster)?;
    only(&params, &[])?;
    let (names, stats, memory_bytes) = monitor(&engine)?.series();
    let doc = SeriesListDoc {
        items: names
            .into_iter()
            .map(|(name, series)| SeriesNameDoc { name, series })
            .collect(),
        series: stats.series,
        points: stats.points_held,
        evicted: stats.evicted,
        memory_bytes,
    };
    Ok(json(StatusCode::OK, to_json(&doc)))
}

/// Seven days, the longest default tier.
const MAX_RANGE_S: f64 = 366.0 * 86_400.0;

#[utoipa::path(get, path = "/v1/metrics/query", tag = "metrics",
    params(
        ("name" = String, Query, min_length = 1, description = "the series name, e.g. qm_host_memory_used_bytes"),
        ("match" = Option<String>, Query, description = "label matchers, `label=value,label2=value2`"),
        ("since_s" = Option<f64>, Query, description = "from this many seconds ago (default 900)"),
        ("from" = Option<String>, Query, description = "RFC 3339 start (instead of since_s)"),
        ("to" = Option<String>, Query, description = "RFC 3339 end (default now)"),
        ("step_s" = Option<f64>, Query, description = "seconds between points (default: the finest tier that covers the range)"),
    ),
    responses((status = 200, body = QueryDoc), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn query(
    State(engine): State<Engine>,
    caller: Caller,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult {
    if caller.needs_owner(Operation::ReadAgentMetrics) {
        // An agent token reads its own series: the query must match on its agent label.
        let agent = params
            .get("match")
            .into_iter()
            .flat_map(|m| m.split(','))
            .find_map(|kv| kv.trim().strip_prefix("agent="))
            .ok_or_else(|| {
                ApiError::forbidden("an agent token queries its own series: add match=agent=NAME")
            })?;
        caller.allow_for(Operation::ReadAgentMetrics, agent, None)?;
    } else {
        caller.allow(Operation::ReadAgentMetrics)?;
        if !params.get("match").is_some_and(|m| m.contains("agent=")) {
            caller.allow(Operation::ReadCluster)?;
        }
    }
    only(
        &params,
        &["name", "match", "since_s", "from", "to", "step_s"],
    )?;
    let name = params
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::field("name", "required: the series name"))?
        .clone();
    let time = |field: &str| -> Result<Option<u64>, ApiError> {
        params
            .get(field)
            .map(|t| {
                parse_rfc3339(t)
                    .ok_or_else(|| ApiError::field(field, format!("{t:?} is not an RFC 3339 time")))
            })
            .transpose()
    };
    let to = time("to")?.unwrap_or_else(qm_engine::unix_ms);
    let from = match (time("from")?, params.get("since_s")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field("since_s", "give since_s or from, not both"));
        }
        (Some(from), None) => from,
        (None, since) => {
            let s = since.map_or(Ok(900.0), |t| seconds("since_s", t, MAX_RANGE_S))?;
            to.saturating_sub((s * 1e3) as u64)
        }
    };
    if from > to {
        return Err(ApiError::field("from", "is after to"));
    }
    let step_ms = params
        .get("step_s")
        .map(|t| seconds("step_s", t, MAX_RANGE_S).map(|s| (s * 1e3) as u64))
        .transpose()?;
    let q = HistoryQuery {
        name: name.clone(),
        matchers: matchers(params.get("match").map_or("", String::as_str))?,
        from,
        to,
        step_ms,
    };
    let items = monitor(&engine)?
        .query(&q)
        .into_iter()
        .map(|d| SeriesDoc {
            name: d.name,
            labels: d.labels.into_iter().collect(),
            step_s: d.step_ms as f64 / 1e3,
            points: d
                .points
                .into_iter()
                .map(|(t, v)| [t as f64 / 1e3, v])
                .collect(),
        })
        .collect();
    Ok(json(StatusCode::OK, to_json(&QueryDoc { items })))
}

#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    params(("state" = Option<String>, Query, pattern = "^(pending|firing|resolved)$", description = "pending, firing or resolved")),
    responses((status = 200, body = AlertList)))]
pub(crate) async fn alerts(
    State(engine): State<Engine>,
    caller: Caller,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult {
    caller.allow(Operation::ReadCluster)?;
    only(&params, &["state"])?;
    let state = params.get("state").map(String::as_str);
    if let Some(s) = state
        && !["pending", "firing", "resolved"].contains(&s)
    {
        return Err(ApiError::field(
            "state",
            format!("{s:?} is not pending, firing or resolved"),
        ));
    }
    let items = monitor(&engine)?
        .alerts()
        .iter()
        .map(alert_doc)
        .filter(|a| state.is_none_or(|s| a.state == s))
        .collect();
    Ok(json(StatusCode::OK, to_json(&AlertList { items })))
}

#[utoipa::path(get, path = "/v1/pressure", tag = "pressure",
    responses((status = 200, body = qm_proto::PressureDoc), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn pressure(State(engine): State<Engine>, caller: Caller) -> ApiResult {
    caller.allow(Operation::ReadNode)?;
    let m = monitor(&engine)?;
    let stats = m.responder();
    let report = m.latest().pressure.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no collection yet: pressure is known after the monitor's first cycle",
        )
    })?;
    let doc = qm_proto::PressureDoc {
        level: report.level.to_string(),
        since: format_rfc3339(report.since_ms),
        admission: report.admission().to_owned(),
        signals: report
            .signals
            .iter()
            .map(|s| {
                (
                    s.name.to_owned(),
                    qm_proto::SignalDoc {
                        level: s.level.to_string(),
                        utilization: s.utilization,
                        available: s.available,
                        psi_some_avg10: s.psi_some_avg10,
                        psi_full_avg10: s.psi_full_avg10,
                        trend_per_s: s.trend_per_s,
                        exhaustion_in_s: s.exhaustion_in_s,
                        confidence: s.confidence,
                        anomaly: s.anomaly,
                        anomaly_score: s.anomaly_score,
                    },
                )
            })
            .collect(),
        agents: report
            .agents
            .iter()
            .map(|a| qm_proto::AgentPressureDoc {
                agent: a.id.clone(),
                memory_bytes: a.memory_bytes,
                trend_per_s: a.trend_per_s,
                exhaustion_in_s: a.exhaustion_in_s,
                confidence: a.confidence,
                throttled: stats.throttled.contains(&a.id),
            })
            .collect(),
        responder: qm_proto::ResponderDoc {
            evictions_critical: stats.evictions_critical,
            evictions_forecast: stats.evictions_forecast,
            throttles: stats.throttles,
            last_eviction: stats.last_eviction.map(|e| qm_proto::EvictionDoc {
                agent: e.agent,
                at: format_rfc3339(e.at_ms),
                reason: e.reason,
                response_ms: e.response_ms,
            }),
            throttled: stats.throttled,
        },
    };
    Ok(json(StatusCode::OK, to_json(&doc)))
}
