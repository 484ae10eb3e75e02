//! The break of a heap region: pages `[start, brk)` are mapped to zeroed frames the heap
//! owns; moving the break maps or unmaps whole pages.

use super::layout::Span;
use super::KernelError;
use crate::addr::{Frame, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::arch::{PageFlags, I386};
use crate::paging::{Flush, PageTable};
use crate::phys::{FrameAllocator, PhysMem};
use alloc::vec::Vec;

/// A heap region and its current break (page-aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Break {
    span: Span,
    brk: u64,
    flags: PageFlags,
}

impl Break {
    /// An empty heap at the start of `span`, whose pages get `flags`.
    pub fn new(span: Span, flags: PageFlags) -> Self {
        Break {
            span,
            brk: span.start,
            flags,
        }
    }

    /// The current break.
    pub fn get(&self) -> u64 {
        self.brk
    }

    /// The region.
    pub fn span(&self) -> Span {
        self.span
    }

    /// Moves the break to `new` rounded up to a page, mapping zeroed frames when it grows
    /// and freeing them when it shrinks. Outside the region: `BreakOutOfRange`; no frame:
    /// `OutOfFrames` with the pages mapped by this call taken back.
    pub fn set<M: PhysMem, F: FrameAllocator>(
        &mut self,
        pt: &mut PageTable<I386>,
        mem: &mut M,
        frames: &mut F,
        new: u64,
    ) -> Result<Flush, KernelError> {
        let target = new
            .checked_next_multiple_of(PAGE_SIZE)
            .filter(|&t| t >= self.span.start && t <= self.span.end)
            .ok_or(KernelError::BreakOutOfRange { brk: new })?;
        if target >= self.brk {
            map_zeroed(pt, mem, frames, self.brk, target - self.brk, self.flags)?;
            self.brk = target;
            return Ok(Flush::Nothing);
        }
        let flush = unmap_owned(pt, mem, frames, target, self.brk - target)?;
        self.brk = target;
        Ok(flush)
    }
}

/// Maps `[va, va + len)` to freshly zeroed frames, page by page; all or nothing.
pub(crate) fn map_zeroed<M: PhysMem, F: FrameAllocator>(
    pt: &mut PageTable<I386>,
    mem: &mut M,
    frames: &mut F,
    va: u64,
    len: u64,
    flags: PageFlags,
) -> Result<(), KernelError> {
    let mut done = 0;
    while done < len {
        let r = frames
            .allocate_zeroed(mem, 0)
            .map_err(KernelError::from)
            .and_then(|f| {
                pt.map(
                    mem,
                    frames,
                    VirtAddr::new(va + done),
                    f.start_address(),
                    PAGE_SIZE,
                    flags,
                )
                .map_err(|e| {
                    let _ = frames.deallocate_frame(f);
                    KernelError::from(e)
                })
            });
        if let Err(e) = r {
            if done > 0 {
                unmap_owned(pt, mem, frames, va, done)?.ignore();
            }
            return Err(e);
        }
        done += PAGE_SIZE;
    }
    Ok(())
}

/// Unmaps `[va, va + len)` and frees the frames it mapped (owned by the caller's heap).
pub(crate) fn unmap_owned<M: PhysMem, F: FrameAllocator>(
    pt: &mut PageTable<I386>,
    mem: &mut M,
    frames: &mut F,
    va: u64,
    len: u64,
) -> Result<Flush, KernelError> {
    let mut gone: Vec<PhysAddr> = Vec::new();
    let flush = pt.unmap_range(mem, frames, VirtAddr::new(va), len, |_, pa, _| {
        gone.push(pa)
    })?;
    for pa in gone {
        frames.deallocate_frame(Frame::containing(pa))?;
    }
    Ok(flush)
}
