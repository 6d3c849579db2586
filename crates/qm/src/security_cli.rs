//! `qm tokens create|ls|revoke` (admins' API tokens; a new token's secret is printed once)
//! and `qm audit ls|verify` (the audit log through the API, or its hash chain checked
//! offline from a data dir).

use std::io::Write;
use std::path::PathBuf;

use qm_client::Client;
use qm_proto::{AuditList, TokenCreated, TokenDoc, TokenList};
use serde_json::json;

use crate::client::Failure;

/// `qm tokens`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokensCmd {
    /// Create a token; its secret is printed once
    Create {
        /// Who holds it (shown in lists and the audit log)
        name: String,
        /// admin, operator, agent or observer
        #[arg(long)]
        role: String,
        /// The agent an agent token is bound to
        #[arg(long)]
        agent: Option<String>,
        /// The pool an agent token is held to
        #[arg(long)]
        pool: Option<String>,
        /// An agent token may spawn sub-agents <agent>.<suffix>
        #[arg(long)]
        spawn: bool,
        /// Seconds until it expires
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<f64>,
    },
    /// List tokens (never their secrets)
    Ls,
    /// Revoke a token at once
    Revoke { id: String },
}

/// `qm audit`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCmd {
    /// List audit entries, oldest first
    Ls {
        /// Entries after this sequence number
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Check the audit log's hash chain offline; exits 1 naming the first bad entry
    Verify {
        /// The daemon's data dir
        #[arg(long, value_name = "DIR", default_value = "qm-data")]
        data_dir: PathBuf,
    },
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, Failure> {
    serde_json::from_value(v).map_err(|e| Failure {
        code: 1,
        message: format!("unexpected answer from the daemon: {e}"),
    })
}

fn token_row(out: &mut impl Write, t: &TokenDoc) -> std::io::Result<()> {
    let bound = match (&t.agent, &t.pool) {
        (Some(a), Some(p)) => format!("{a}@{p}"),
        (Some(a), None) => a.clone(),
        _ => "-".to_owned(),
    };
    writeln!(
        out,
        "{:<18} {:<24} {:<9} {:<20} {:<5} {:<7} {}",
        t.id,
        t.name,
        t.role,
        bound,
        if t.spawn { "yes" } else { "no" },
        if t.managed { "daemon" } else { "api" },
        t.expires_at.as_deref().unwrap_or("never")
    )
}

const TOKEN_HEADER: &str = "ID                 NAME                     ROLE      AGENT                SPAWN MADE    EXPIRES";

pub(crate) fn tokens(
    c: &Client,
    cmd: TokensCmd,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match cmd {
        TokensCmd::Create {
            name,
            role,
            agent,
            pool,
            spawn,
            ttl,
        } => {
            let mut body = json!({ "name": name, "role": role, "spawn": spawn });
            if let Some(a) = agent {
                body["agent"] = json!(a);
            }
            if let Some(p) = pool {
                body["pool"] = json!(p);
            }
            if let Some(t) = ttl {
                body["ttl_s"] = json!(t);
            }
            let (_, v) = c.request("POST", "/v1/tokens", Some(&body))?;
            let created: TokenCreated = decode(v)?;
            if json_out {
                writeln!(out, "{}", qm_proto::to_json(&created))?;
            } else {
                writeln!(out, "{}", created.token)?;
                eprintln!(
                    "token {} ({}, role {}): shown once; the daemon keeps only its hash",
                    created.doc.id, created.doc.name, created.doc.role
                );
            }
        }
        TokensCmd::Ls => {
            let (_, v) = c.request("GET", "/v1/tokens", None)?;
            let list: TokenList = decode(v)?;
            if json_out {
                writeln!(out, "{}", qm_proto::to_json(&list))?;
            } else {
                writeln!(out, "{TOKEN_HEADER}")?;
                for t in &list.items {
                    token_row(out, t)?;
                }
            }
        }
        TokensCmd::Revoke { id } => {
            let (_, v) = c.request("DELETE", &format!("/v1/tokens/{id}"), None)?;
            let doc: TokenDoc = decode(v)?;
            if json_out {
                writeln!(out, "{}", qm_proto::to_json(&doc))?;
            } else {
                writeln!(out, "revoked {} ({})", doc.id, doc.name)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn audit(
    connect: impl FnOnce() -> Result<Client, Failure>,
    cmd: AuditCmd,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match cmd {
        AuditCmd::Ls { since, limit } => {
            let c = connect()?;
            let (_, v) = c.request(
                "GET",
                &format!("/v1/audit?since={since}&limit={limit}"),
                None,
            )?;
            let list: AuditList = decode(v)?;
            if json_out {
                writeln!(out, "{}", qm_proto::to_json(&list))?;
                return Ok(());
            }
            writeln!(
                out,
                "{:>6} {:<24} {:<22} {:<6} {:<40} {:>6}",
                "SEQ", "AT", "WHO", "METHOD", "PATH", "STATUS"
            )?;
            for e in &list.items {
                let a = &e.entry.actor;
                let who = match (&a.name, &a.token_id, a.peer_uid) {
                    (Some(n), _, _) => n.clone(),
                    (None, Some(id), _) => id.clone(),
                    (None, None, Some(uid)) => format!("uid {uid} (no token)"),
                    (None, None, None) => "(no token)".to_owned(),
                };
                let mut path = e.entry.path.clone();
                if e.entry.suppressed > 0 {
                    path = format!("{path} (+{} refused, not recorded)", e.entry.suppressed);
                }
                writeln!(
                    out,
                    "{:>6} {:<24} {:<22} {:<6} {:<40} {:>6}",
                    e.seq, e.entry.at, who, e.entry.method, path, e.entry.status
                )?;
            }
        }
        AuditCmd::Verify { data_dir } => match qm_store::audit::verify(&data_dir) {
            Ok(v) => {
                if json_out {
                    writeln!(
                        out,
                        "{}",
                        json!({ "ok": true, "entries": v.entries, "head_seq": v.head_seq, "head_hash": v.head_hash })
                    )?;
                } else {
                    writeln!(
                        out,
                        "audit log verified: {} entries, head {} {}",
                        v.entries, v.head_seq, v.head_hash
                    )?;
                }
            }
            Err(e) => {
                return Err(Failure {
                    code: 1,
                    message: e.to_string(),
                });
            }
        },
    }
    Ok(())
}
