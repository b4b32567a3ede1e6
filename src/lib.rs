//! sluice: a UDP metrics ingestion appliance.
//!
//! Modules are listed in the order a datagram meets them; ARCHITECTURE.md at the
//! top of the repository is the map.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod admin;
pub mod app;
pub mod batch;
pub mod budget;
pub mod check;
pub mod config;
pub mod explain;
pub mod parse;
pub mod route;
pub mod rx;
pub mod sanity;
pub mod sched;
pub mod shard;
pub mod sink;
pub mod telemetry;
