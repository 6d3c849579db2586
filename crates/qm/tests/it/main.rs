//! End-to-end tests of `qm serve`: the real binary on an ephemeral port with a temporary data
//! dir, spoken to over HTTP. Lifecycle of allocations, each strategy, bad requests, restarts
//! (graceful and `kill -9`) and leases that lapse while the daemon is down.

mod agents;
mod agents_cli;
mod api;
mod browser;
mod cli;
mod cluster;
mod contract;
mod daemon;
mod dashboard;
mod durability;
mod events;
mod mcp;
mod metrics;
mod monitoring;
mod recommend;
mod security;
mod state;
mod storage;
#[cfg(feature = "tui")]
mod top;
mod transport;
