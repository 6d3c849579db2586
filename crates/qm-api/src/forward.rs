//! A cluster member that does not lead passes the ledger's routes on to the leader: any member
//! answers every route. Allocations, nodes, pools, state and tokens live in the one ledger the
//! leader runs, so their requests (reads too: a follower's copy is as old as its last term)
//! go to the leader's address as they came, Authorization included, and its answer comes back
//! as it was. So do spawns (the leader places them) and the event stream (the ledger's events
//! happen there), which is passed on as it comes, chunk by chunk. The leader authenticates and
//! decides; this member only relays, before its own gate. Everything else (the local node,
//! agents' reads and stops, fleets, metrics, pressure, the cluster's view) is this member's own
//! and answered here; MCP tools call the routes through the same relay.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The leader's API address while requests must go there (this member is in a cluster and
/// does not lead); None to answer here.
pub type Forward = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// How a member reaches the leader: where it is, and the HTTP clients that trust the
/// members' certificates.
#[derive(Clone)]
pub struct Relay {
    pub leader: Forward,
    /// For answers that end (30 s at most).
    agent: ureq::Agent,
    /// For the event stream (no end).
    streaming: ureq::Agent,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay to `leader`, trusting the CA certificates in `ca_pem` (PEM) for `https://`
    /// members, or Mozilla's roots.
    pub fn new(leader: Forward, ca_pem: Option<&[u8]>) -> Result<Self, String> {
        Ok(Relay {
            leader,
            agent: relay_agent(ca_pem, Some(std::time::Duration::from_secs(30)))?,
            streaming: relay_agent(ca_pem, None)?,
        })
    }
}

/// An HTTP client for members: statuses as answers, a 5 s connect timeout, `timeout` in all,
/// trusting the CA certificates in `ca_pem` (PEM `CERTIFICATE` blocks) or Mozilla's roots.
pub fn relay_agent(
    ca_pem: Option<&[u8]>,
    timeout: Option<std::time::Duration>,
) -> Result<ureq::Agent, String> {
    let roots = match ca_pem {
        None => ureq::tls::RootCerts::WebPki,
        Some(pem) => {
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(pem) {
                if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| e.to_string())? {
                    certs.push(c);
                }
            }
            if certs.is_empty() {
                return Err("no CERTIFICATE block in it".to_owned());
            }
            ureq::tls::RootCerts::from(certs)
        }
    };
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(roots)
        .build();
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(std::time::Duration::from_secs(5)))
        .timeout_global(timeout)
        .tls_config(tls)
        .build()
        .new_agent())
}

/// The ledger's routes: what the leader answers.
fn forwarded(path: &str) -> bool {
    [
        "/v1/allocations",
        "/v1/nodes",
        "/v1/pools",
        "/v1/state",
        "/v1/tokens",
    ]
    .iter()
    .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// Request headers passed on (the rest are this hop's).
const PASSED: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("idempotency-key"),
];

/// Answer headers passed back.
const RETURNED: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::RETRY_AFTER,
    header::LOCATION,
    header::WWW_AUTHENTICATE,
];

/// Marks a relayed request: it is answered where it arrives, never relayed again (two members
/// that each believe the other leads, for a moment, must not pass a request back and forth).
const RELAYED: HeaderName = HeaderName::from_static("x-qm-relayed");

/// A spawn (`POST /v1/agents` without `pid` or `allocation`): the leader places it on a node.
/// Adopting a process (or running under an allocation `qm exec` holds) is this member's own.
fn placed_spawn(method: &axum::http::Method, path: &str, body: &[u8]) -> bool {
    if method != axum::http::Method::POST || path != "/v1/agents" {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v.as_object()
            .is_some_and(|o| !o.contains_key("pid") && !o.contains_key("allocation"))
    })
}

/// The middleware: relays the ledger's routes, and spawns, to the leader while `forward`
/// names one.
pub(crate) async fn relay(State(relay): State<Arc<Relay>>, req: Request, next: Next) -> Response {
    let spawn = req.method() == axum::http::Method::POST && req.uri().path() == "/v1/agents";
    let events = req.method() == axum::http::Method::GET && req.uri().path() == "/v1/events";
    if !(forwarded(req.uri().path()) || spawn || events) || req.headers().contains_key(&RELAYED) {
        return next.run(req).await;
    }
    let Some(leader) = (relay.leader)() else {
        return next.run(req).await;
    };
    if events {
        let (parts, _) = req.into_parts();
        return stream_from(&relay.streaming, &leader, &parts).await;
    }
    if spawn {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, crate::MAX_BODY).await else {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over {} bytes", crate::MAX_BODY),
            )
            .into_response();
        };
        if !placed_spawn(&parts.method, parts.uri.path(), &bytes) {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
        return pass_on(&relay.agent, &leader, &parts, &bytes).await;
    }
    let limit = if req.uri().path() == "/v1/state" {
        crate::MAX_STATE_BODY
    } else {
        crate::MAX_BODY
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over {limit} bytes"),
        )
        .into_response();
    };
    pass_on(&relay.agent, &leader, &parts, &bytes).await
}

/// The request to pass on to `leader`: as it came (method, path and query, the [`PASSED`]
/// headers and `extra` ones), marked [`RELAYED`].
fn outgoing(
    leader: &str,
    parts: &axum::http::request::Parts,
    extra: Option<&HeaderName>,
) -> axum::http::request::Builder {
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let mut out = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", leader.trim_end_matches('/')));
    for name in PASSED.iter().chain(extra) {
        if let Some(v) = parts.headers.get(name) {
            out = out.header(name, v);
        }
    }
    out.header(&RELAYED, "1")
}

fn cannot_relay() -> Response {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "cannot relay this request",
    )
    .into_response()
}

fn unreachable(detail: String) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "leader_unreachable",
        detail,
    )
    .into_response()
}

/// The leader's answer as this member gives it: its status, its [`RETURNED`] headers (and
/// `extra`), and which leader answered.
fn answered(
    leader: &str,
    status: axum::http::StatusCode,
    headers: &axum::http::HeaderMap,
    body: Body,
    extra: Option<&HeaderName>,
) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    for name in RETURNED.iter().chain(extra) {
        if let Some(v) = headers.get(name) {
            resp.headers_mut().insert(name.clone(), v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(leader) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-qm-leader"), v);
    }
    resp
}

/// Sends the request to `leader` as it came (with [`RELAYED`]) and answers what it answered.
async fn pass_on(
    agent: &ureq::Agent,
    leader: &str,
    parts: &axum::http::request::Parts,
    bytes: &[u8],
) -> Response {
    let Ok(out) = outgoing(leader, parts, None).body(bytes.to_vec()) else {
        return cannot_relay();
    };
    let agent = agent.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut resp = agent.run(out)?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(crate::MAX_STATE_BODY as u64)
            .read_to_vec()?;
        Ok::<_, ureq::Error>((resp.status(), resp.headers().clone(), body))
    })
    .await;
    match answer {
        Ok(Ok((status, headers, body))) => {
            answered(leader, status, &headers, Body::from(body), None)
        }
        Ok(Err(e)) => unreachable(format!(
            "this member does not lead and the leader at {leader} did not answer: {e}"
        )),
        Err(e) => unreachable(format!("relaying to the leader failed: {e}")),
    }
}

/// Relays an endless answer (the event stream): the leader's answer is passed on chunk by
/// chunk as it comes, by a thread of its own that ends when either side closes.
async fn stream_from(
    agent: &ureq::Agent,
    leader: &str,
    parts: &axum::http::request::Parts,
) -> Response {
    let resume = HeaderName::from_static("last-event-id");
    let Ok(out) = outgoing(leader, parts, Some(&resume)).body(()) else {
        return cannot_relay();
    };
    let agent = agent.clone();
    type Chunk = Result<axum::body::Bytes, std::io::Error>;
    let (chunks, mut rx) = tokio::sync::mpsc::channel::<Chunk>(16);
    let (head_tx, head) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("qm-relay-events".to_owned())
        .spawn(move || {
            use std::io::Read;
            let mut resp = match agent.run(out) {
                Ok(r) => r,
                Err(e) => {
                    let _ = head_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = head_tx.send(Ok((resp.status(), resp.headers().clone())));
            let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let chunk = match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => Ok(axum::body::Bytes::copy_from_slice(&buf[..n])),
                    Err(e) => Err(e),
                };
                let last = chunk.is_err();
                if chunks.blocking_send(chunk).is_err() || last {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        return unreachable(format!("cannot relay the event stream: {e}"));
    }
    match head.await {
        Ok(Ok((status, headers))) => {
            let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            answered(
                leader,
                status,
                &headers,
                Body::from_stream(body),
                Some(&header::CACHE_CONTROL),
            )
        }
        Ok(Err(e)) => unreachable(format!(
            "this member does not lead and the leader at {leader} did not answer: {e}"
        )),
        Err(_) => unreachable("relaying the event stream failed".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::{forwarded, placed_spawn};
    use axum::http::Method;

    #[test]
    fn a_spawn_goes_to_the_leader_and_an_adoption_stays() {
        let spawn = br#"{"name":"a","command":["sleep","1"]}"#;
        assert!(placed_spawn(&Method::POST, "/v1/agents", spawn));
        assert!(!placed_spawn(
            &Method::POST,
            "/v1/agents",
            br#"{"name":"a","pid":5}"#
        ));
        assert!(!placed_spawn(
            &Method::POST,
            "/v1/agents",
            br#"{"name":"a","command":["x"],"allocation":"a1"}"#
        ));
        // what is not a spec is this member's to refuse, naming the field
        assert!(!placed_spawn(&Method::POST, "/v1/agents", b"{not json"));
        assert!(!placed_spawn(&Method::GET, "/v1/agents", spawn));
        assert!(!placed_spawn(
            &Method::POST,
            "/v1/agents/a/heartbeat",
            spawn
        ));
    }

    #[test]
    fn the_ledgers_routes_are_forwarded_and_the_members_own_are_not() {
        for p in [
            "/v1/allocations",
            "/v1/allocations/a1/renew",
            "/v1/nodes",
            "/v1/nodes/n1/heartbeat",
            "/v1/pools/p",
            "/v1/state",
            "/v1/tokens/t1",
        ] {
            assert!(forwarded(p), "{p}");
        }
        for p in [
            "/v1/node",
            "/v1/agents",
            "/v1/fleets/f",
            "/v1/cluster",
            "/v1/metrics",
            "/v1/pressure",
            "/v1/allocationsx",
            "/mcp",
            "/healthz",
        ] {
            assert!(!forwarded(p), "{p}");
        }
    }
}
