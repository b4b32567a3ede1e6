//! sluice-loadgen: load generator, test sinks, baseline relay and end-to-end verifier.

pub mod baseline;
pub mod blast;
pub mod cpus;
pub mod gen;
pub mod http;
pub mod sink;
pub mod util;
pub mod verify;
