//! Configuration (stub being written).
mod types;
pub use types::*;
