//! Collection benchmarks (to be written).
fn main() {}
