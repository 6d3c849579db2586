//! quartermaster's wire types: the JSON the HTTP API v1 speaks (see `shared/spec/api-v1.md`),
//! and the hand-written conversions between them and `qm-core`'s types. Decoding names the
//! field that is wrong; nothing here decides anything.

mod agents;
mod decode;
mod monitor;
mod problem;
mod resources;
mod security;
mod time;
mod types;

pub use agents::{
    AgentDoc, AgentList, AgentSpec, AgentState, AutoscaleWire, FleetDoc, FleetList, FleetSpec,
    HealthWire, LogsDoc, MetricPush, PredictiveWire, REDACTED, RecommendationDoc,
    RecommendationList, VerticalWire, valid_name,
};
pub use decode::{DecodeError, decode};
pub use monitor::{
    AgentPressureDoc, AlertDoc, AlertList, EvictionDoc, MetricsSnapshotDoc, PressureDoc, QueryDoc,
    ResponderDoc, SampleDoc, SeriesDoc, SeriesListDoc, SeriesNameDoc, SignalDoc,
};
pub use problem::{FieldProblem, Problem};
pub use resources::{WireResources, max_quantity, parse_resources, render_resources};
pub use security::{
    ActorDoc, AuditDoc, AuditEntryDoc, AuditList, ROLES, StoredToken, TokenCreated, TokenDoc,
    TokenList, TokenRequest, WhoAmI,
};
pub use time::{format_rfc3339, parse_rfc3339, unix_ms};
pub use types::{
    AllocationDoc, AllocationList, AllocationRequest, ClusterDoc, ClusterMemberDoc, EventDoc,
    ImportReport, LeftAgent, NodeDoc, NodeHeartbeat, NodeList, NodeRegistration, PoolDoc, PoolList,
    PoolWrite, RenewRequest, Replay, STATE_VERSION, SpreadWire, StateDoc, Stored, StoredNode,
    TermWire, allocation_reply, dry_run_reply, from_json, to_json, to_value, topology_of,
    topology_wire,
};
