//! Integration tests of qm-sys (to be written).

mod agent;
mod host;
