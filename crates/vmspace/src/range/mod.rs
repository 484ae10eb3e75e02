//! Address ranges: the vmem arena that hands out ranges and the segment map of a space.
//!
//! - [`arena`]: a vmem arena (Bonwick & Adams 2001) — instant-fit, best-fit and next-fit,
//!   constrained allocation, spans imported from a parent, quantum caches; no heap needed.
//! - [`segment_map`]: 2 bits per 64 KiB segment (free, reserved, committed, mixed), O(1)
//!   lookup of an address.

pub mod arena;
pub mod qcache;
pub mod segment_map;
pub mod store;
pub mod tags;

#[cfg(feature = "alloc")]
pub use arena::HeapArena;
pub use arena::{Arena, ArenaError, Constraints, NoParent, Policy, Segment, Source};
pub use store::Store;
pub use tags::{Kind, Tag};
