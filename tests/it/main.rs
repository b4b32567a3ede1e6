//! Integration tests: the real `sluice` binary on loopback, real UDP in,
//! real HTTP sinks out.
mod support;

mod lifecycle;
mod pipeline;
mod protect;
