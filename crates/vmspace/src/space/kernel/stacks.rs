//! Kernel stacks: one 4 KiB page per thread in the shared kernel half, each with an unmapped
//! guard page directly below it, so an overflow faults instead of running into the next stack.

use super::layout::{Span, KSTACK_SLOT};
use super::pool::RangePool;
use crate::range::ArenaError;

/// One thread's kernel stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelStack {
    /// The guard page (never mapped).
    pub guard: u64,
    /// The stack page (mapped supervisor-only, writable).
    pub page: u64,
    /// The frame behind the stack page.
    pub frame: u64,
}

impl KernelStack {
    /// The initial stack pointer: the end of the stack page.
    pub fn top(&self) -> u64 {
        self.page + 4096
    }
}

/// The slots of the kernel-stack region: `[guard page, stack page]` pairs.
#[derive(Debug)]
pub struct StackSlots {
    pool: RangePool,
}

impl StackSlots {
    /// Slots over `span` (a multiple of [`KSTACK_SLOT`]).
    pub fn new(span: Span) -> Result<Self, ArenaError> {
        Ok(StackSlots {
            pool: RangePool::new(span, KSTACK_SLOT)?,
        })
    }

    /// A free slot's base (its guard page); `NoSpace` when every slot is in use.
    pub fn take(&mut self) -> Result<u64, ArenaError> {
        self.pool.alloc(KSTACK_SLOT)
    }

    /// Gives back the slot whose guard page is `guard`.
    pub fn give_back(&mut self, guard: u64) -> Result<(), ArenaError> {
        self.pool.free(guard, KSTACK_SLOT)
    }

    /// Slots in use.
    pub fn in_use(&self) -> usize {
        self.pool.allocated_ranges()
    }

    /// Slots in the region.
    pub fn capacity(&self) -> u64 {
        self.pool.span().len() / KSTACK_SLOT
    }
}
