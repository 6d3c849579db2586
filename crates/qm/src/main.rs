//! qm binary.
fn main() {}
