//! Pure decision logic for supervised agents: restart backoff, health checks and fleet
//! autoscaling (reactive, and predictive on a forecast of the load). Nothing here does IO,
//! reads a clock, spawns a thread or draws a random number: time is a parameter (unix
//! milliseconds), so the supervisor drives it and tests use a fake clock.

pub mod autoscale;
pub mod backoff;
pub mod health;
pub mod predictive;
