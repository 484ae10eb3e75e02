//! vmspace: a virtual-memory manager of the kind an operating-system kernel has.
//!
//! Layers, each depending only on those above it in this list (see `docs/design.md`):
//!
//! - [`addr`]: typed virtual and physical addresses, pages, frames, ranges, checked arithmetic.
//! - [`phys`]: physical memory — the [`phys::PhysMem`] seam, emulated RAM, the buddy frame
//!   allocator with per-frame reference counts.
//! - [`arch`]: what differs per MMU — `I386` (2-level, recursive page directory) and
//!   `X86_64` (4-level): address width, user/kernel split, entry encodings bit-exact to the SDM.
//! - [`paging`]: one generic page-table walker over `arch` — map, unmap, protect, translate,
//!   by page or by range — with TLB-flush tokens.
//! - [`space`]: Linux-compatible address spaces (VMAs, mmap/munmap/mprotect/mremap/brk,
//!   touches, /proc/pid/maps) — feature `alloc`.
//! - [`fault`]: the page-fault handler (demand-zero, copy-on-write, stack growth, SIGSEGV /
//!   SIGBUS classification) and `Mm`, a space whose page table follows its VMAs, with fork.
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
pub mod arch;
#[cfg(feature = "alloc")]
pub mod fault;
pub mod paging;
pub mod phys;
#[cfg(feature = "alloc")]
pub mod space;
