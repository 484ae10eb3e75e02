//! vmspace-heap: heaps over a segment source, for a kernel or as a Rust global allocator.
//!
//! - [`SizeClassHeap`]: lookaside and per-segment free lists per size class over 64 KiB
//!   segments (a live and a remote bit per block in the segment's record), per-thread
//!   caches with cross-thread frees (`std`), large blocks straight from the source.
//! - [`ChunkHeap`]: boundary tags, immediate coalescing, exact and sorted bins, a selectable
//!   [`FitPolicy`], a top chunk grown and trimmed through a [`BrkSource`]; as
//!   [`LockedChunkHeap`]'s `GlobalAlloc`, deferred frees and a cache of small blocks in
//!   front.
//! - Sources ([`source`]): a fixed arena (a kernel's early heap) and, with `std`, the host's
//!   `mmap`; with `space`, a simulated `vmspace` address space ([`space`]): segments and
//!   the break become its mappings, the bytes live in a host mirror of its user range.
//! - Adapters: `GlobalAlloc` on both heaps, and `allocator_api2::alloc::Allocator` on
//!   references to them ([`adapter`]).
//!
//! Frees of pointers a heap never handed out, and double frees, are detected where the
//! structure makes it cheap and reported ([`HeapError`], [`report`]). Features: `std`
//! (per-thread caches, host sources), `secure` (encoded free-list links).
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "std")]
extern crate std;

pub mod adapter;
pub mod chunk;
pub mod class;
mod error;
mod registry;
mod segment;
pub mod size_class;
pub mod source;
#[cfg(feature = "space")]
pub mod space;
mod stats;
#[cfg(test)]
mod testing;
/// The unit tests share `tests/support/model.rs`, which names the crate by its name.
#[cfg(test)]
extern crate self as vmspace_heap;
#[cfg(feature = "std")]
mod thread_cache;

pub use chunk::{ChunkHeap, FitPolicy, LockedChunkHeap};
pub use error::{report, HeapError, HeapErrorKind};
pub use size_class::SizeClassHeap;
pub use source::{
    ArenaBrk, ArenaSource, BrkSource, SegmentBrk, SegmentSource, PAGE_SIZE, SEGMENT_SIZE,
};
#[cfg(feature = "std")]
pub use source::{HostBrk, HostSource};
pub use stats::HeapStats;

/// The unit-test binary itself runs on the size-class heap.
#[cfg(all(test, feature = "std"))]
#[global_allocator]
static TEST_GLOBAL: SizeClassHeap<HostSource> = SizeClassHeap::new(HostSource::new());
