//! Authorization, decided in one place: [`decide`] maps a principal's role, the operation it
//! asks for and who owns the target to allow, deny (403) or not-found (404: a foreign
//! resource's existence is not revealed to an agent token). Handlers only say which
//! operation they perform; tests below check every role against every operation, own and
//! foreign.

use qm_engine::tokens::{Principal, Role};

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// The local node, the node list, pressure (what `can_fit` reads).
    ReadNode,
    /// Pools, fleets, alerts, metrics, events: the cluster as a whole.
    ReadCluster,
    /// Register, delete or heartbeat nodes; create, change or delete pools and fleets.
    WriteCluster,
    /// The MCP endpoint (each tool's calls are authorized on their own).
    UseMcp,
    /// `/openapi.json` and `/docs`.
    ReadDocs,
    /// List allocations or agents: every role, an agent's list scoped to what it owns.
    List,
    /// Request an allocation for the owner.
    CreateAllocation,
    ReadAllocation,
    ReleaseAllocation,
    RenewAllocation,
    /// Spawn an agent named and pooled as the owner says.
    SpawnAgent,
    /// Adopt a running process as an agent.
    AdoptProcess,
    /// Run an agent as uid 0.
    RunAsRoot,
    ReadAgent,
    StopAgent,
    AgentHeartbeat,
    /// One agent's series in history (`/v1/metrics/query?match=agent=NAME`).
    ReadAgentMetrics,
    /// `GET /v1/state` (agents' env values redacted but for admins).
    ExportState,
    /// `POST /v1/state`.
    ImportState,
    /// Create, list and revoke tokens.
    ManageTokens,
    /// Read the audit log.
    ReadAudit,
}

impl Operation {
    /// Every operation, for tests and tables.
    pub const ALL: [Self; 21] = [
        Self::ReadNode,
        Self::ReadCluster,
        Self::WriteCluster,
        Self::UseMcp,
        Self::ReadDocs,
        Self::List,
        Self::CreateAllocation,
        Self::ReadAllocation,
        Self::ReleaseAllocation,
        Self::RenewAllocation,
        Self::SpawnAgent,
        Self::AdoptProcess,
        Self::RunAsRoot,
        Self::ReadAgent,
        Self::StopAgent,
        Self::AgentHeartbeat,
        Self::ReadAgentMetrics,
        Self::ExportState,
        Self::ImportState,
        Self::ManageTokens,
        Self::ReadAudit,
    ];

    /// Whether the decision depends on whose resource it is (for an agent token).
    pub fn is_owned(self) -> bool {
        matches!(
            self,
            Self::CreateAllocation
                | Self::ReadAllocation
                | Self::ReleaseAllocation
                | Self::RenewAllocation
                | Self::SpawnAgent
                | Self::ReadAgent
                | Self::StopAgent
                | Self::AgentHeartbeat
                | Self::ReadAgentMetrics
        )
    }

    /// Words for a refusal: "may not <this>".
    pub fn describe(self) -> &'static str {
        match self {
            Self::ReadNode => "read the node",
            Self::ReadCluster => "read cluster-wide state",
            Self::WriteCluster => "change nodes, pools or fleets",
            Self::UseMcp => "use MCP",
            Self::ReadDocs => "read the API documents",
            Self::List => "list",
            Self::CreateAllocation => "request this allocation",
            Self::ReadAllocation => "read this allocation",
            Self::ReleaseAllocation => "release this allocation",
            Self::RenewAllocation => "renew this allocation",
            Self::SpawnAgent => "spawn this agent",
            Self::AdoptProcess => "adopt processes",
            Self::RunAsRoot => "run agents as uid 0",
            Self::ReadAgent => "read this agent",
            Self::StopAgent => "stop this agent",
            Self::AgentHeartbeat => "heartbeat for this agent",
            Self::ReadAgentMetrics => "read this agent's metrics",
            Self::ExportState => "export the state",
            Self::ImportState => "import state",
            Self::ManageTokens => "manage tokens",
            Self::ReadAudit => "read the audit log",
        }
    }
}

/// Whose resource an operation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// Not known yet: the caller looks it up if the decision asks for it.
    Unknown,
    /// An agent's (by agent name), in a pool when that matters (creating, spawning).
    Agent {
        agent: &'a str,
        pool: Option<&'a str>,
    },
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 403 `forbidden`.
    Deny,
    /// 404, as if it did not exist.
    NotFound,
    /// Ownership decides: look the owner up and ask again.
    NeedOwner,
}

/// Whether an agent token bound to `me` owns agent `name`'s resources: its own, and with
/// `spawn` its sub-agents `me.<suffix>`.
pub fn owns(p: &Principal, name: &str) -> bool {
    let Some(me) = p.agent.as_deref() else {
        return false;
    };
    name == me
        || (p.spawn
            && name.len() > me.len() + 1
            && name.starts_with(me)
            && name.as_bytes()[me.len()] == b'.')
}

fn pool_ok(p: &Principal, pool: Option<&str>) -> bool {
    match p.pool.as_deref() {
        None => true,
        Some(mine) => pool.unwrap_or("default") == mine,
    }
}

/// The one authorization decision.
pub fn decide(p: &Principal, op: Operation, owner: Owner<'_>) -> Decision {
    use Decision::{Allow, Deny, NeedOwner, NotFound};
    use Operation as O;
    match p.role {
        Role::Admin => Allow,
        Role::Operator => match op {
            O::ManageTokens | O::ReadAudit | O::ImportState | O::RunAsRoot => Deny,
            _ => Allow,
        },
        Role::Observer => match op {
            O::ReadNode
            | O::ReadCluster
            | O::UseMcp
            | O::ReadDocs
            | O::List
            | O::ReadAllocation
            | O::ReadAgent
            | O::ReadAgentMetrics
            | O::ExportState => Allow,
            _ => Deny,
        },
        Role::Agent => match op {
            O::ReadNode | O::UseMcp | O::ReadDocs | O::List => Allow,
            O::ReadCluster
            | O::WriteCluster
            | O::AdoptProcess
            | O::RunAsRoot
            | O::ExportState
            | O::ImportState
            | O::ManageTokens
            | O::ReadAudit => Deny,
            O::CreateAllocation => match owner {
                Owner::Unknown => NeedOwner,
                Owner::Agent { agent, pool } => {
                    if p.agent.as_deref() == Some(agent) && pool_ok(p, pool) {
                        Allow
                    } else {
                        Deny
                    }
                }
            },
            O::SpawnAgent => match owner {
                Owner::Unknown => NeedOwner,
                Owner::Agent { agent, pool } => {
                    let me = p.agent.as_deref().unwrap_or("");
                    if p.spawn && agent != me && owns(p, agent) && pool_ok(p, pool) {
                        Allow
                    } else {
                        Deny
                    }
                }
            },
            O::ReadAllocation
            | O::ReleaseAllocation
            | O::RenewAllocation
            | O::ReadAgent
            | O::StopAgent
            | O::AgentHeartbeat
            | O::ReadAgentMetrics => match owner {
                Owner::Unknown => NeedOwner,
                Owner::Agent { agent, .. } if owns(p, agent) => Allow,
                Owner::Agent { .. } => NotFound,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use expect_test::expect;

    use super::*;

    fn token(role: Role, spawn: bool) -> Principal {
        Principal {
            token_id: "t".to_owned(),
            name: "t".to_owned(),
            role,
            agent: (role == Role::Agent).then(|| "orch".to_owned()),
            pool: (role == Role::Agent).then(|| "swarm".to_owned()),
            spawn,
        }
    }

    fn letter(d: Decision) -> char {
        match d {
            Decision::Allow => 'A',
            Decision::Deny => 'D',
            Decision::NotFound => 'N',
            Decision::NeedOwner => '?',
        }
    }

    /// Every role against every operation: unknown owner, own (`orch` in `swarm`), own
    /// sub-agent (`orch.w1`), own name in another pool, and a foreign agent (`other`).
    #[test]
    fn every_role_against_every_operation() {
        let roles = [
            ("admin", token(Role::Admin, false)),
            ("operator", token(Role::Operator, false)),
            ("observer", token(Role::Observer, false)),
            ("agent", token(Role::Agent, false)),
            ("agent+spawn", token(Role::Agent, true)),
        ];
        let owners = [
            Owner::Unknown,
            Owner::Agent {
                agent: "orch",
                pool: Some("swarm"),
            },
            Owner::Agent {
                agent: "orch.w1",
                pool: Some("swarm"),
            },
            Owner::Agent {
                agent: "orch",
                pool: Some("default"),
            },
            Owner::Agent {
                agent: "other",
                pool: Some("swarm"),
            },
        ];
        let mut table = String::new();
        let _ = writeln!(
            table,
            "{:<18} {}",
            "operation",
            roles
                .iter()
                .map(|(n, _)| format!("{n:<12}"))
                .collect::<String>()
                .trim_end()
        );
        for op in Operation::ALL {
            let _ = write!(table, "{:<18}", format!("{op:?}"));
            for (_, p) in &roles {
                let cell: String = owners.iter().map(|o| letter(decide(p, op, *o))).collect();
                let _ = write!(table, " {cell:<11}");
            }
            table = table.trim_end().to_owned();
            table.push('\n');
        }
        // Cells: unknown owner, own, own sub-agent, own name in another pool, foreign.
        // A allow, D deny (403), N not found (404), ? look the owner up.
        expect![[r#"
            operation          admin       operator    observer    agent       agent+spawn
            ReadNode           AAAAA       AAAAA       AAAAA       AAAAA       AAAAA
            ReadCluster        AAAAA       AAAAA       AAAAA       DDDDD       DDDDD
            WriteCluster       AAAAA       AAAAA       DDDDD       DDDDD       DDDDD
            UseMcp             AAAAA       AAAAA       AAAAA       AAAAA       AAAAA
            ReadDocs           AAAAA       AAAAA       AAAAA       AAAAA       AAAAA
            List               AAAAA       AAAAA       AAAAA       AAAAA       AAAAA
            CreateAllocation   AAAAA       AAAAA       DDDDD       ?ADDD       ?ADDD
            ReadAllocation     AAAAA       AAAAA       AAAAA       ?ANAN       ?AAAN
            ReleaseAllocation  AAAAA       AAAAA       DDDDD       ?ANAN       ?AAAN
            RenewAllocation    AAAAA       AAAAA       DDDDD       ?ANAN       ?AAAN
            SpawnAgent         AAAAA       AAAAA       DDDDD       ?DDDD       ?DADD
            AdoptProcess       AAAAA       AAAAA       DDDDD       DDDDD       DDDDD
            RunAsRoot          AAAAA       DDDDD       DDDDD       DDDDD       DDDDD
            ReadAgent          AAAAA       AAAAA       AAAAA       ?ANAN       ?AAAN
            StopAgent          AAAAA       AAAAA       DDDDD       ?ANAN       ?AAAN
            AgentHeartbeat     AAAAA       AAAAA       DDDDD       ?ANAN       ?AAAN
            ReadAgentMetrics   AAAAA       AAAAA       AAAAA       ?ANAN       ?AAAN
            ExportState        AAAAA       AAAAA       AAAAA       DDDDD       DDDDD
            ImportState        AAAAA       DDDDD       DDDDD       DDDDD       DDDDD
            ManageTokens       AAAAA       DDDDD       DDDDD       DDDDD       DDDDD
            ReadAudit          AAAAA       DDDDD       DDDDD       DDDDD       DDDDD
        "#]]
        .assert_eq(&table);
    }

    #[test]
    fn only_owned_operations_ask_for_the_owner() {
        let agent = token(Role::Agent, true);
        for op in Operation::ALL {
            let asks = decide(&agent, op, Owner::Unknown) == Decision::NeedOwner;
            assert_eq!(asks, op.is_owned(), "{op:?}");
        }
    }

    #[test]
    fn a_prefix_is_not_a_sub_agent() {
        let agent = token(Role::Agent, true);
        assert!(owns(&agent, "orch.a"));
        assert!(!owns(&agent, "orchestra"));
        assert!(!owns(&agent, "orch."));
        assert!(!owns(&token(Role::Agent, false), "orch.a"));
    }
}
