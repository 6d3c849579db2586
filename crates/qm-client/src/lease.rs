//! What `qm exec` needs beyond the CLI's calls: renewing an allocation's lease, and adopting
//! a process from a JSON body built on the spot.

use qm_proto::AgentDoc;
use serde_json::{Value, json};

use crate::{Client, ClientError, decode};

impl Client {
    /// Renews a granted (or queued) allocation's lease for `ttl_s` seconds.
    pub fn renew(&self, id: &str, ttl_s: f64) -> Result<(), ClientError> {
        self.send(
            "POST",
            &format!("/v1/allocations/{id}/renew"),
            &json!({ "ttl_s": ttl_s }),
        )
        .map(|_| ())
    }

    /// `POST /v1/agents` with `body` as given.
    pub fn create_agent_json(&self, body: &Value) -> Result<AgentDoc, ClientError> {
        let (_, v) = self.send("POST", "/v1/agents", body)?;
        decode(v)
    }
}
