//! The tools' catalog: each tool's name, its description (written for a model to read: what
//! it does, what it returns, when to use it), its input schema (from the argument structs in
//! `args.rs`) and its hints (read-only, destructive, idempotent).

use rmcp::model::{Tool, ToolAnnotations};

use super::args::{
    ActiveAlertsArgs, AllocateArgs, CanFitArgs, ListAgentsArgs, ListAllocationsArgs, NoArgs,
    NodeStatusArgs, RecommendArgs, ReleaseArgs, ScaleFleetArgs, SpawnAgentArgs, StopAgentArgs,
};
use super::input_schema;

/// The name of every tool, in the catalog's order.
pub const TOOL_NAMES: &[&str] = &[
    "node_status",
    "cluster_status",
    "can_fit",
    "allocate",
    "release",
    "list_allocations",
    "pressure",
    "spawn_agent",
    "list_agents",
    "stop_agent",
    "scale_fleet",
    "active_alerts",
    "recommend",
];

fn tool<T: rmcp::schemars::JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    hints: ToolAnnotations,
) -> Tool {
    Tool::new(name, description, input_schema::<T>()).with_annotations(hints)
}

fn reads() -> ToolAnnotations {
    ToolAnnotations::new().read_only(true).open_world(false)
}

fn writes(destructive: bool, idempotent: bool) -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(false)
        .destructive(destructive)
        .idempotent(idempotent)
        .open_world(false)
}

/// Every tool, in [`TOOL_NAMES`] order.
pub(crate) fn catalog() -> Vec<Tool> {
    vec![
        tool::<NodeStatusArgs>(
            "node_status",
            "Show one node of the quartermaster resource manager (default: the machine the daemon \
             runs on): per resource (cpu in cores, memory in bytes, gpu) its capacity, \
             allocatable (capacity less reserves), allocated (held by granted allocations), \
             available (allocatable less allocated) and measured usage; whether it is ready; \
             its pressure level; and a summary of every pool (allocated, limit, queued). Use it \
             before starting work to see what is free.",
            reads(),
        ),
        tool::<NoArgs>(
            "cluster_status",
            "List every node known to quartermaster with capacity, allocatable, allocated, \
             available and usage, readiness and pressure, plus cluster totals and the pools; and \
             the cluster's members (the daemons on etcd), which one leads, and where state lives \
             (etcd, or sqlite for a daemon on its own). Use it to see where capacity is free \
             across machines.",
            reads(),
        ),
        tool::<CanFitArgs>(
            "can_fit",
            "Answer how many copies of a resource request (cpu, memory, gpu, ...) would fit right \
             now, without allocating anything: `count` is how many fit into free capacity on \
             ready nodes within the pool's limit, without preempting anyone; `fits_now` is the \
             scheduler's own dry-run verdict for one request (which may preempt lower-priority \
             work, listed in `would_preempt`). When nothing fits, `shortfall` says what is \
             missing on the closest node. Use it before allocate or spawn_agent to plan.",
            reads(),
        ),
        tool::<AllocateArgs>(
            "allocate",
            "Reserve resources for an agent from quartermaster. Granted at once when it fits \
             (possibly preempting preemptible lower-priority allocations, listed in \
             `preempted`); when it does not fit, fails with the shortfall, or waits in the \
             pool's queue if queue=true. Returns the allocation (its `id` is what release \
             takes). Release it when the work is done; with ttl_s it expires unless renewed.",
            writes(false, false),
        ),
        tool::<ReleaseArgs>(
            "release",
            "Release an allocation by id, returning its resources to the pool (a queued one is \
             cancelled). Releasing one that already ended changes nothing and returns it as it \
             is.",
            writes(true, true),
        ),
        tool::<ListAllocationsArgs>(
            "list_allocations",
            "List allocations, oldest first, optionally only one agent's, pool's, node's or \
             state's (state=granted: those holding resources now; queued: those waiting). Each \
             has its id, agent, pool, node, resources, priority, QoS class and state.",
            reads(),
        ),
        tool::<NoArgs>(
            "pressure",
            "Report resource pressure on the daemon's node: the overall level (ok, warning, \
             critical) and since when; the admission gate (open; best-effort-paused: requests \
             without resources are refused; paused: every request is refused); and per signal \
             (memory, cpu, disk, pids) its level, utilization 0..1, trend per second, forecast \
             seconds to exhaustion and anomaly flag. Check it before starting heavy work.",
            reads(),
        ),
        tool::<SpawnAgentArgs>(
            "spawn_agent",
            "Start a process as a quartermaster agent: the daemon requests an allocation for \
             it (the agent waits in the pool's queue if it does not fit now), starts the \
             command inside its cgroup with the resources as limits, logs its output to files \
             and restarts it per the restart policy. Returns the agent (its id is its name; \
             state starting, running or pending).",
            writes(false, false),
        ),
        tool::<ListAgentsArgs>(
            "list_agents",
            "List the agents quartermaster runs or adopted, optionally only those in one state \
             or fleet: each with its id, pid, state, allocation, restarts, exit code, fleet and \
             measured usage.",
            reads(),
        ),
        tool::<StopAgentArgs>(
            "stop_agent",
            "Stop an agent by id: SIGTERM, then SIGKILL after the grace period; its allocation \
             is released. Waits for the process to exit (at most the grace period and a few \
             seconds) and returns the agent, normally in state stopped.",
            writes(true, true),
        ),
        tool::<ScaleFleetArgs>(
            "scale_fleet",
            "Set how many members a fleet (agents started from one template) keeps running; \
             the daemon starts or stops members to match. A fleet with an autoscaler may \
             change the number again.",
            writes(true, true),
        ),
        tool::<ActiveAlertsArgs>(
            "active_alerts",
            "List alerts that are firing now (and, unless include_pending=false, pending ones \
             whose condition holds but not yet for long enough): rule, severity, summary, the \
             value that tripped it, and since when. An empty list means all is well.",
            reads(),
        ),
        tool::<RecommendArgs>(
            "recommend",
            "What an agent, a fleet's template, or a template (agents labelled \
             qm.dev/template: NAME) should request, learned from its observed \
             usage: cpu and memory (memory is also the limit), a lower and an upper bound, \
             how many samples stand behind it and a confidence 0..1. Ask it before spawning \
             more of a kind (\"what should a coder get?\": target fleet/coders) or to size a \
             request instead of guessing. Empty until a target has enough history.",
            reads(),
        ),
    ]
}
