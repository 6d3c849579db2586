//! Host collectors (to be written).
