//! Integration tests of qm-sys (to be written).
fn main() {}
