//! Batching: per-shard open chunks, one per route.
use bytes::Bytes;

/// A sealed run of whole lines, each ending in `\n`, built once and shared
/// (refcounted) by every sink subscribed to its route.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub data: Bytes,
    pub lines: u32,
}
