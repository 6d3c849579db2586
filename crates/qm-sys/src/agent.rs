//! Per-agent collectors (to be written).
