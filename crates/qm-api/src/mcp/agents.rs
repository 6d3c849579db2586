//! The agent and fleet tools: `spawn_agent`, `list_agents`, `stop_agent` (which waits for the
//! exit) and `scale_fleet` (read the fleet, write it back with the new replicas).

use std::fmt::Write as _;

use axum::http::Method;
use qm_proto::{AgentDoc, AgentState, FleetDoc};
use serde_json::{Value, json};

use super::args::{ListAgentsArgs, ScaleFleetArgs, SpawnAgentArgs, StopAgentArgs, Wanted};
use super::tools::{Api, Failure, Reply, encode, typed};

fn agent_line(a: &AgentDoc) -> String {
    let mut s = format!("{} {}", a.id, a.state);
    if let Some(pid) = a.pid {
        let _ = write!(s, " pid={pid}");
    }
    if let Some(al) = &a.allocation {
        let _ = write!(s, " allocation={al}");
    }
    if let Some(f) = &a.fleet {
        let _ = write!(s, " fleet={f}");
    }
    if a.restarts > 0 {
        let _ = write!(s, " restarts={}", a.restarts);
    }
    if let Some(c) = a.exit_code {
        let _ = write!(s, " exit_code={c}");
    }
    if let Some(r) = &a.reason {
        let _ = write!(s, " ({r})");
    }
    s
}

pub(crate) async fn spawn_agent(api: &Api<'_>, a: SpawnAgentArgs) -> Result<Reply, Failure> {
    if a.command.is_empty() {
        return Err(Failure::Invalid {
            argument: "command".to_owned(),
            message: "give the program and its arguments, e.g. [\"sleep\", \"60\"]".to_owned(),
        });
    }
    let wanted = Wanted::of(
        a.cpu.as_ref(),
        a.memory.as_ref(),
        a.gpu.as_ref(),
        a.extended.as_ref(),
    )?;
    let mut body = serde_json::Map::new();
    body.insert("name".into(), json!(a.name));
    body.insert("command".into(), json!(a.command));
    body.insert("resources".into(), Value::Object(wanted.wire));
    if let Some(l) = &a.limits {
        body.insert(
            "limits".into(),
            Value::Object(Wanted::map("limits", l)?.wire),
        );
    }
    for (k, v) in [
        ("pool", a.pool.map(Value::from)),
        ("priority", a.priority.map(Value::from)),
        ("priority_class", a.priority_class.map(Value::from)),
        ("restart", a.restart.map(Value::from)),
        ("cwd", a.cwd.map(Value::from)),
        ("env", a.env.map(|e| json!(e))),
        ("labels", a.labels.map(|l| json!(l))),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    }
    let (_, v) = api
        .send(Method::POST, "/v1/agents", Some(Value::Object(body)))
        .await?;
    let doc: AgentDoc = typed(v)?;
    let text = if doc.state == AgentState::Pending {
        format!(
            "agent {} is pending: it waits in the pool's queue for its allocation",
            doc.id
        )
    } else {
        format!("agent {}", agent_line(&doc))
    };
    Ok(Reply {
        text,
        structured: json!({ "agent": doc }),
    })
}

pub(crate) async fn list_agents(api: &Api<'_>, a: ListAgentsArgs) -> Result<Reply, Failure> {
    let items: Vec<AgentDoc> = api
        .get::<qm_proto::AgentList>("/v1/agents")
        .await?
        .items
        .into_iter()
        .filter(|d| a.state.as_ref().is_none_or(|s| d.state.as_str() == s))
        .filter(|d| a.fleet.is_none() || d.fleet == a.fleet)
        .collect();
    Ok(Reply::list("agents", &items, agent_line))
}

pub(crate) async fn stop_agent(api: &Api<'_>, a: StopAgentArgs) -> Result<Reply, Failure> {
    let mut path = format!("/v1/agents/{}", encode(&a.id));
    if let Some(g) = a.grace_s {
        let _ = write!(path, "?grace_s={g}");
    }
    let (_, v) = api.send(Method::DELETE, &path, None).await?;
    let mut doc: AgentDoc = typed(v)?;
    // The daemon answers once the signal is sent; wait for the exit, past the grace period
    // (when SIGKILL follows) by a little.
    let grace = a
        .grace_s
        .filter(|g| g.is_finite())
        .unwrap_or(10.0)
        .clamp(0.0, 60.0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs_f64(grace + 5.0);
    while doc.state == AgentState::Running && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        doc = api.get(&format!("/v1/agents/{}", encode(&a.id))).await?;
    }
    Ok(Reply {
        text: format!("agent {}", agent_line(&doc)),
        structured: json!({ "agent": doc }),
    })
}

pub(crate) async fn scale_fleet(api: &Api<'_>, a: ScaleFleetArgs) -> Result<Reply, Failure> {
    let path = format!("/v1/fleets/{}", encode(&a.name));
    let fleet: FleetDoc = api.get(&path).await?;
    let before = fleet.replicas;
    let spec = json!({
        "name": fleet.name,
        "template": fleet.template,
        "replicas": a.replicas,
        "autoscale": fleet.autoscale,
        "vertical": fleet.vertical,
    });
    let (_, v) = api.send(Method::PUT, &path, Some(spec)).await?;
    let doc: FleetDoc = typed(v)?;
    let mut text = format!(
        "fleet {}: replicas {} -> {} ({} members, {} ready)",
        doc.name,
        before,
        doc.replicas,
        doc.members.len(),
        doc.ready
    );
    if doc.autoscale.is_some() {
        text.push_str("\nit has an autoscaler, which may change the replicas again");
    }
    Ok(Reply {
        text,
        structured: json!({ "fleet": doc, "previous_replicas": before }),
    })
}

pub(crate) async fn recommend(
    api: &Api<'_>,
    a: super::args::RecommendArgs,
) -> Result<Reply, Failure> {
    let path = match &a.target {
        Some(t) => format!("/v1/recommendations?target={}", encode(t)),
        None => "/v1/recommendations".to_owned(),
    };
    let items = api.get::<qm_proto::RecommendationList>(&path).await?.items;
    Ok(Reply::list("recommendations", &items, |r| {
        format!(
            "{} {} (lower {}, upper {}) from {} samples, confidence {:.0}%",
            r.target,
            super::tools::show(&r.resources),
            super::tools::show(&r.lower),
            super::tools::show(&r.upper),
            r.samples,
            r.confidence * 100.0
        )
    }))
}
