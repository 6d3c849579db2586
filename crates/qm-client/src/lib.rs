//! A typed, blocking client for quartermaster's HTTP API v1, for the CLI and for programs that
//! drive the daemon. Errors tell "the daemon refused" (with its problem document) from "the
//! daemon cannot be reached", which the CLI maps to its exit codes. `https://` daemons are
//! spoken to with rustls (ring): trusting Mozilla's roots, or only the CA certificates given
//! to [`Client::with_ca_pem`].

mod lease;

use std::time::Duration;

use qm_proto::{
    AgentDoc, AgentList, AgentSpec, AlertDoc, AlertList, AllocationDoc, AllocationList, FleetDoc,
    FleetList, FleetSpec, LogsDoc, MetricPush, MetricsSnapshotDoc, NodeDoc, NodeList, PoolDoc,
    PoolList, PressureDoc, Problem, QueryDoc, SeriesListDoc,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached (connection refused, timeout, DNS).
    #[error("cannot reach the daemon at {base}: {reason}")]
    Unreachable { base: String, reason: String },
    /// The daemon answered with a problem.
    #[error("{}", .0.detail)]
    Refused(Box<Problem>),
    /// The daemon's TLS certificate does not verify against the trusted roots (unknown CA,
    /// wrong name, expired).
    #[error("the daemon at {base} has a certificate this client does not trust: {reason}")]
    Untrusted { base: String, reason: String },
    /// The daemon's answer is not what this client expects.
    #[error("unexpected answer from the daemon: {0}")]
    Unexpected(String),
}

/// Why a PEM file of CA certificates cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The PEM text does not parse.
    #[error("not PEM: {0}")]
    Pem(String),
    /// The PEM text holds no `CERTIFICATE` block.
    #[error("no certificate in it")]
    NoCertificate,
}

/// An answer to a request for an allocation.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// 201 (granted) or 202 (queued).
    pub status: u16,
    /// The allocation.
    pub allocation: AllocationDoc,
    /// Ids of the allocations it preempted.
    pub preempted: Vec<String>,
}

/// A client for one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the daemon at `base` (`http://127.0.0.1:7070`); an `https://` daemon must
    /// have a certificate from one of Mozilla's root CAs.
    pub fn new(base: &str, token: Option<&str>) -> Self {
        Self::with_roots(base, token, ureq::tls::RootCerts::WebPki)
    }

    /// A client of the daemon at `base` that trusts only the CA certificates in `ca_pem` (PEM
    /// text, one or more `CERTIFICATE` blocks; other blocks are ignored) for `https://`.
    pub fn with_ca_pem(base: &str, token: Option<&str>, ca_pem: &[u8]) -> Result<Self, CaError> {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(ca_pem) {
            if let ureq::tls::PemItem::Certificate(c) =
                item.map_err(|e| CaError::Pem(e.to_string()))?
            {
                certs.push(c);
            }
        }
        if certs.is_empty() {
            return Err(CaError::NoCertificate);
        }
        Ok(Self::with_roots(
            base,
            token,
            ureq::tls::RootCerts::from(certs),
        ))
    }

    fn with_roots(base: &str, token: Option<&str>, roots: ureq::tls::RootCerts) -> Self {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(roots)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .tls_config(tls)
            .build()
            .new_agent();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: &ureq::Error) -> ClientError {
        if let Some(cert) = certificate_error(e) {
            return ClientError::Untrusted {
                base: self.base.clone(),
                reason: cert.to_string(),
            };
        }
        ClientError::Unreachable {
            base: self.base.clone(),
            reason: e.to_string(),
        }
    }

    fn finish(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Value), ClientError> {
        let mut resp = resp.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.unreachable(&e))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|e| ClientError::Unexpected(format!("{e}: {text}")))?
        };
        if status >= 400 {
            let problem = serde_json::from_value::<Problem>(value.clone())
                .unwrap_or_else(|_| Problem::new(status, "internal", text));
            return Err(ClientError::Refused(Box::new(problem)));
        }
        Ok((status, value))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.agent.get(&self.url(path));
        if let Some(t) = &self.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let (_, v) = self.finish(req.call())?;
        decode(v)
    }

    fn send(&self, method: &str, path: &str, body: &Value) -> Result<(u16, Value), ClientError> {
        let url = self.url(path);
        let mut req = match method {
            "POST" => self.agent.post(&url),
            _ => self.agent.put(&url),
        };
        req = req.header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        self.finish(req.send(body.to_string().as_bytes()))
    }

    fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.agent.delete(&self.url(path));
        if let Some(t) = &self.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let (_, v) = self.finish(req.call())?;
        decode(v)
    }

    /// Any request of API v1: `method` (`GET`, `POST`, `PUT`, `DELETE`) on `path` (with its
    /// query), with a JSON body for writes; the status and JSON body of a 2xx answer (`Null`
    /// when empty). For callers that speak the API's JSON themselves (the MCP bridge).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        match (method, body) {
            ("POST" | "PUT", Some(b)) => self.send(method, path, b),
            ("POST" | "PUT", None) => self.send(method, path, &Value::Object(Default::default())),
            ("GET" | "DELETE", _) => {
                let url = self.url(path);
                let mut req = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if let Some(t) = &self.token {
                    req = req.header("authorization", &format!("Bearer {t}"));
                }
                self.finish(req.call())
            }
            (other, _) => Err(ClientError::Unexpected(format!(
                "this client does not send {other} requests"
            ))),
        }
    }

    /// The daemon's own node.
    pub fn node(&self) -> Result<NodeDoc, ClientError> {
        self.get("/v1/node")
    }

    /// The cluster: its members and which one leads.
    pub fn cluster(&self) -> Result<qm_proto::ClusterDoc, ClientError> {
        self.get("/v1/cluster")
    }

    /// Every node.
    pub fn nodes(&self) -> Result<Vec<NodeDoc>, ClientError> {
        self.get::<NodeList>("/v1/nodes").map(|l| l.items)
    }

    /// The monitor's latest collection, only series whose name starts with `prefix`.
    pub fn metrics(&self, prefix: &str) -> Result<MetricsSnapshotDoc, ClientError> {
        self.get(&format!("/v1/metrics?name={}", encode(prefix)))
    }

    /// The series history holds.
    pub fn series(&self) -> Result<SeriesListDoc, ClientError> {
        self.get("/v1/metrics/series")
    }

    /// History: `params` are `(name, value)` query parameters of `GET /v1/metrics/query`.
    pub fn query(&self, params: &[(&str, &str)]) -> Result<QueryDoc, ClientError> {
        let q: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        self.get(&format!("/v1/metrics/query?{}", q.join("&")))
    }

    /// Alerts, optionally only those in `state`.
    pub fn alerts(&self, state: Option<&str>) -> Result<Vec<AlertDoc>, ClientError> {
        let path = match state {
            Some(s) => format!("/v1/alerts?state={}", encode(s)),
            None => "/v1/alerts".to_owned(),
        };
        self.get::<AlertList>(&path).map(|l| l.items)
    }

    /// The node's pressure: levels, forecasts and what the responder did.
    pub fn pressure(&self) -> Result<PressureDoc, ClientError> {
        self.get("/v1/pressure")
    }

    /// Every pool.
    pub fn pools(&self) -> Result<Vec<PoolDoc>, ClientError> {
        self.get::<PoolList>("/v1/pools").map(|l| l.items)
    }

    /// Creates a pool from its JSON description.
    pub fn create_pool(&self, body: &Value) -> Result<PoolDoc, ClientError> {
        let (_, v) = self.send("POST", "/v1/pools", body)?;
        decode(v)
    }

    /// Replaces a pool's settings from its JSON description (`PUT /v1/pools/{name}`).
    pub fn put_pool(&self, name: &str, body: &Value) -> Result<PoolDoc, ClientError> {
        let (_, v) = self.send("PUT", &format!("/v1/pools/{}", encode(name)), body)?;
        decode(v)
    }

    /// Deletes a pool.
    pub fn delete_pool(&self, name: &str) -> Result<PoolDoc, ClientError> {
        self.delete(&format!("/v1/pools/{}", encode(name)))
    }

    /// Every agent.
    pub fn agents(&self) -> Result<Vec<AgentDoc>, ClientError> {
        self.get::<AgentList>("/v1/agents").map(|l| l.items)
    }

    /// One agent.
    pub fn agent(&self, id: &str) -> Result<AgentDoc, ClientError> {
        self.get(&format!("/v1/agents/{}", encode(id)))
    }

    /// Spawns or adopts an agent: the status is 201 (started) or 202 (waiting for admission).
    pub fn create_agent(&self, spec: &AgentSpec) -> Result<(u16, AgentDoc), ClientError> {
        let (status, v) = self.send("POST", "/v1/agents", &to_value(spec)?)?;
        Ok((status, decode(v)?))
    }

    /// Stops an agent: SIGTERM, then SIGKILL after `grace_s` (default: the agent's own).
    pub fn stop_agent(&self, id: &str, grace_s: Option<f64>) -> Result<AgentDoc, ClientError> {
        match grace_s {
            Some(g) => self.delete(&format!("/v1/agents/{}?grace_s={g}", encode(id))),
            None => self.delete(&format!("/v1/agents/{}", encode(id))),
        }
    }

    /// The last `tail` lines of an agent's stdout and stderr.
    pub fn agent_logs(&self, id: &str, tail: usize) -> Result<LogsDoc, ClientError> {
        self.get(&format!("/v1/agents/{}/logs?tail={tail}", encode(id)))
    }

    /// Every fleet.
    pub fn fleets(&self) -> Result<Vec<FleetDoc>, ClientError> {
        self.get::<FleetList>("/v1/fleets").map(|l| l.items)
    }

    /// One fleet.
    pub fn fleet(&self, name: &str) -> Result<FleetDoc, ClientError> {
        self.get(&format!("/v1/fleets/{}", encode(name)))
    }

    /// Creates a fleet.
    pub fn create_fleet(&self, spec: &FleetSpec) -> Result<FleetDoc, ClientError> {
        let (_, v) = self.send("POST", "/v1/fleets", &to_value(spec)?)?;
        decode(v)
    }

    /// Replaces a fleet's spec (replicas, template, autoscaler).
    pub fn update_fleet(&self, spec: &FleetSpec) -> Result<FleetDoc, ClientError> {
        let path = format!("/v1/fleets/{}", encode(&spec.name));
        let (_, v) = self.send("PUT", &path, &to_value(spec)?)?;
        decode(v)
    }

    /// Deletes a fleet, stopping its members.
    pub fn delete_fleet(&self, name: &str) -> Result<FleetDoc, ClientError> {
        self.delete(&format!("/v1/fleets/{}", encode(name)))
    }

    /// Pushes the custom metric a fleet's autoscaler scales on.
    pub fn push_fleet_metric(&self, name: &str, value: f64) -> Result<FleetDoc, ClientError> {
        let path = format!("/v1/fleets/{}/metric", encode(name));
        let (_, v) = self.send("POST", &path, &to_value(&MetricPush { value })?)?;
        decode(v)
    }

    /// Asks for an allocation (the body as in API v1).
    pub fn allocate(&self, body: &Value) -> Result<Submitted, ClientError> {
        let (status, v) = self.send("POST", "/v1/allocations", body)?;
        let preempted = v["preempted"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Submitted {
            status,
            allocation: decode(v)?,
            preempted,
        })
    }

    /// One allocation, waiting up to `wait_s` seconds while it is queued.
    pub fn allocation(&self, id: &str, wait_s: Option<f64>) -> Result<AllocationDoc, ClientError> {
        match wait_s {
            Some(w) => self.get(&format!("/v1/allocations/{id}?wait={w}")),
            None => self.get(&format!("/v1/allocations/{id}")),
        }
    }

    /// Allocations matching `query` (`agent=…&state=…`), first page of up to `limit`.
    pub fn allocations(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<AllocationDoc>, ClientError> {
        let sep = if query.is_empty() { "" } else { "&" };
        self.get::<AllocationList>(&format!("/v1/allocations?limit={limit}{sep}{query}"))
            .map(|l| l.items)
    }

    /// The whole state document, as JSON text.
    pub fn export(&self) -> Result<String, ClientError> {
        let v: Value = self.get("/v1/state")?;
        Ok(v.to_string())
    }

    /// Replaces the whole state with a document (JSON text).
    pub fn import(&self, doc: &str) -> Result<(), ClientError> {
        let v: Value = serde_json::from_str(doc).map_err(|e| {
            ClientError::Refused(Box::new(Problem::new(
                400,
                "malformed_json",
                format!("the state file is not JSON: {e}"),
            )))
        })?;
        self.send("POST", "/v1/state", &v).map(|_| ())
    }

    /// Releases an allocation (cancels it if queued); harmless if already ended.
    pub fn release(&self, id: &str) -> Result<AllocationDoc, ClientError> {
        self.delete(&format!("/v1/allocations/{id}"))
    }
}

/// The TLS error behind a failed handshake, if `e` happened because the server's certificate
/// did not verify.
fn certificate_error(e: &ureq::Error) -> Option<&rustls::Error> {
    let tls = match e {
        ureq::Error::Rustls(r) => r,
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    matches!(tls, rustls::Error::InvalidCertificate(_)).then_some(tls)
}

fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v.clone()).map_err(|e| ClientError::Unexpected(format!("{e}: {v}")))
}

fn to_value<T: serde::Serialize>(body: &T) -> Result<Value, ClientError> {
    serde_json::to_value(body).map_err(|e| ClientError::Unexpected(format!("cannot encode: {e}")))
}

/// Percent-encodes a query parameter value or a path segment.
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
