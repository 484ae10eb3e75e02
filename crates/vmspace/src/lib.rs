//! vmspace: a virtual-memory manager of the kind an operating-system kernel has.
//!
//! Layers, each depending only on those above it in this list (see `docs/design.md`):
//!
//! - [`addr`]: typed virtual and physical addresses, pages, frames, ranges, checked arithmetic.
//! - [`phys`]: physical memory — the [`phys::PhysMem`] seam, emulated RAM, the buddy frame
//!   allocator with per-frame reference counts.
//! - [`space`]: Linux-compatible address spaces (VMAs, mmap/munmap/mprotect/mremap/brk,
//!   touches, /proc/pid/maps) — feature `alloc`.
//!
//! The crate is `#![no_std]`; `addr`, `arch`, `phys` and `paging` need no heap at all. The
//! `alloc` feature enables the layers that keep growable sets (address spaces); `std` adds
//! host conveniences.
#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod addr;
pub mod phys;
#[cfg(feature = "alloc")]
pub mod space;
