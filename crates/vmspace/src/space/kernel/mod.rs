//! The 32-bit kernel's address space of the seed: per process a user half (low memory kept
//! for the kernel, user binary, user heap, user range pool), and one kernel half (kernel
//! binary, kernel stacks, kernel heap, kernel range pool) that is the same in every process,
//! with the page directory mapped recursively at the top.
//!
//! - [`layout`]: where the regions lie ([`KernelLayout`]), validated, printable.
//! - [`half`]: [`KernelSpace`], the shared kernel half: every kernel page table is allocated
//!   once, at boot, and every process's page directory copies those entries, so a kernel
//!   mapping made through any directory is seen through all of them, without copying.
//! - [`process`]: [`ProcessSpace`], one process: its own page directory and user range pool.
//! - [`pool`]: range pools (vmem arenas) for kernel and user virtual ranges.
//! - [`stacks`]: one-page kernel stacks with an unmapped guard page below each.
//! - [`brk`]: the break of a heap region (user heap, kernel heap).
//!
//! Paging is i386 (2 levels, 4 KiB pages, recursive slot from the layout). The kernel half
//! is never user-accessible: its directory entries and every page mapped in it have U/S
//! clear, and asking for a user-accessible kernel page is an error.

pub mod brk;
pub mod half;
pub mod layout;
pub mod pool;
pub mod process;
pub mod stacks;

pub use half::KernelSpace;
pub use layout::{KernelLayout, LayoutError, Region, Span};
pub use pool::RangePool;
pub use process::{ProcessSpace, Teardown};
pub use stacks::KernelStack;

use crate::paging::{MapError, TranslateError, UnmapError};
use crate::phys::PhysError;
use crate::range::ArenaError;
use core::fmt;

/// Why an operation on the kernel's or a process's space failed; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelError {
    /// The layout is not valid.
    Layout(LayoutError),
    /// `[va, va + len)` is empty or not inside one region where this operation may map
    /// (low memory, kernel binary or kernel range pool for kernel mappings; user binary,
    /// heap or range pool for user mappings).
    NotMappable { va: u64, len: u64 },
    /// A kernel mapping was asked with the U/S (user) bit: the kernel half is never
    /// user-accessible.
    UserAccessible { va: u64 },
    /// The page tables refused the mapping.
    Map(MapError),
    /// The page tables refused the unmapping.
    Unmap(UnmapError),
    /// The page tables could not translate.
    Translate(TranslateError),
    /// A range pool refused (no space, never allocated, freed twice…).
    Range(ArenaError),
    /// No frame left for a page.
    OutOfFrames,
    /// `guard` is not the guard page of a kernel stack handed out with this frame.
    NotAStack { guard: u64 },
    /// A break outside its heap region.
    BreakOutOfRange { brk: u64 },
    /// The kernel half cannot be torn down while processes still share it.
    ProcessesAlive(u64),
    /// Physical memory could not be accessed.
    Phys(PhysError),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KernelError::Layout(e) => write!(f, "layout: {e}"),
            KernelError::NotMappable { va, len } => {
                write!(f, "[{va:#x}, +{len:#x}) is not in a region this may map")
            }
            KernelError::UserAccessible { va } => {
                write!(f, "kernel page {va:#x} asked with the user bit")
            }
            KernelError::Map(e) => write!(f, "map: {e:?}"),
            KernelError::Unmap(e) => write!(f, "unmap: {e:?}"),
            KernelError::Translate(e) => write!(f, "translate: {e:?}"),
            KernelError::Range(e) => write!(f, "range pool: {e:?}"),
            KernelError::OutOfFrames => write!(f, "out of frames"),
            KernelError::NotAStack { guard } => write!(f, "{guard:#x} is not a kernel stack"),
            KernelError::BreakOutOfRange { brk } => write!(f, "break {brk:#x} outside its heap"),
            KernelError::ProcessesAlive(n) => {
                write!(f, "{n} processes still share the kernel half")
            }
            KernelError::Phys(e) => write!(f, "{e}"),
        }
    }
}

impl From<LayoutError> for KernelError {
    fn from(e: LayoutError) -> Self {
        KernelError::Layout(e)
    }
}

impl From<MapError> for KernelError {
    fn from(e: MapError) -> Self {
        match e {
            MapError::OutOfFrames => KernelError::OutOfFrames,
            e => KernelError::Map(e),
        }
    }
}

impl From<UnmapError> for KernelError {
    fn from(e: UnmapError) -> Self {
        KernelError::Unmap(e)
    }
}

impl From<TranslateError> for KernelError {
    fn from(e: TranslateError) -> Self {
        KernelError::Translate(e)
    }
}

impl From<ArenaError> for KernelError {
    fn from(e: ArenaError) -> Self {
        KernelError::Range(e)
    }
}

impl From<PhysError> for KernelError {
    fn from(e: PhysError) -> Self {
        match e {
            PhysError::OutOfMemory { .. } => KernelError::OutOfFrames,
            e => KernelError::Phys(e),
        }
    }
}
