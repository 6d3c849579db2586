//! `qm mcp`: quartermaster's MCP server on stdio, for MCP clients that start their servers as
//! child processes (`claude mcp add qm -- qm mcp`). The tools and resources are qm-api's;
//! their API calls go over HTTP to the daemon at `--server`, through the blocking qm-client
//! on tokio's blocking pool. Stdout carries the protocol only; logs go to stderr.

use qm_api::mcp::{ApiCall, Backend, BackendError, CallFuture, QmMcp};
use qm_client::{Client, ClientError};
use rmcp::ServiceExt as _;

use crate::client::Failure;

/// The daemon over HTTP.
#[derive(Debug)]
struct Remote {
    client: Client,
}

impl Backend for Remote {
    fn call(&self, call: ApiCall) -> CallFuture<'_> {
        let client = self.client.clone();
        Box::pin(async move {
            let ApiCall {
                method, path, body, ..
            } = call;
            let answer = tokio::task::spawn_blocking(move || {
                client.request(method.as_str(), &path, body.as_ref())
            })
            .await
            .map_err(|e| BackendError::Unreachable(format!("the request did not finish: {e}")))?;
            answer.map_err(|e| match e {
                ClientError::Refused(p) => BackendError::Refused(p),
                ClientError::Unreachable { base, reason } => {
                    BackendError::Unreachable(format!("{base}: {reason}"))
                }
                other => BackendError::Unreachable(other.to_string()),
            })
        })
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 1,
        message: format!("{what}: {e}"),
    }
}

/// Serves MCP on stdin and stdout until the client closes them.
pub(crate) fn mcp(client: Client) -> Result<(), Failure> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed("cannot start the async runtime", e))?;
    runtime.block_on(async move {
        let server = QmMcp::new(Remote { client })
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| failed("the MCP client did not initialize", e))?;
        server
            .waiting()
            .await
            .map_err(|e| failed("the MCP server failed", e))?;
        Ok(())
    })
}
