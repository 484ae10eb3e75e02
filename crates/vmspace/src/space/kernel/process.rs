//! [`ProcessSpace`]: one process of the 32-bit kernel — its own page directory (user
//! tables, its recursive entry, and copies of the kernel half's entries) and its own user
//! range pool.
//!
//! User pages map zeroed frames the process owns; [`KernelSpace::destroy_process`] gives
//! them back with the user tables and the directory. Kernel pages may be mapped through a
//! process's directory too ([`ProcessSpace::map_kernel`]): they land in the shared tables
//! and every process sees them.

use super::brk::{map_zeroed, unmap_owned, Break};
use super::half::KernelSpace;
use super::layout::{KernelLayout, Region, USER_GRANULE};
use super::pool::RangePool;
use super::KernelError;
use crate::addr::{Frame, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::arch::{PageFlags, I386};
use crate::paging::{Flush, PageTable, Translation};
use crate::phys::{FrameAllocator, PhysMem};
use alloc::vec::Vec;

/// Rights of user heap pages: user, writable.
const USER_RW: PageFlags = PageFlags::PRESENT
    .union(PageFlags::WRITABLE)
    .union(PageFlags::USER);

/// What tearing a process down gave back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Teardown {
    /// User frames freed.
    pub frames: u64,
    /// Page tables freed: the directory and the user page tables (never a shared one).
    pub tables: u64,
}

/// One process's view of the 32-bit space; see the module doc. Made by
/// [`KernelSpace::new_process`]; give it back with [`KernelSpace::destroy_process`]
/// (dropping it leaks its frames and keeps the kernel half counted as in use).
#[derive(Debug)]
pub struct ProcessSpace {
    layout: KernelLayout,
    pt: PageTable<I386>,
    pool: RangePool,
    heap: Break,
}

impl ProcessSpace {
    pub(crate) fn new<M: PhysMem, F: FrameAllocator>(
        kernel_pd: &PageTable<I386>,
        layout: KernelLayout,
        mem: &mut M,
        frames: &mut F,
    ) -> Result<Self, KernelError> {
        let pool = RangePool::new(layout.span(Region::UserPool), USER_GRANULE)?;
        let pt = PageTable::new_sharing(kernel_pd, mem, frames)?;
        Ok(ProcessSpace {
            layout,
            pt,
            pool,
            heap: Break::new(layout.span(Region::UserHeap), USER_RW),
        })
    }

    /// The process's page directory (what CR3 holds while it runs).
    pub fn page_table(&self) -> &PageTable<I386> {
        &self.pt
    }

    /// The directory for raw walker calls. Kernel-half pages changed through it change for
    /// every process; its shared tables are never freed through it.
    pub fn page_table_mut(&mut self) -> &mut PageTable<I386> {
        &mut self.pt
    }

    /// The mapping of `va` through this process's directory.
    pub fn translate<M: PhysMem>(&self, mem: &M, va: u64) -> Result<Translation, KernelError> {
        Ok(self.pt.translate(mem, VirtAddr::new(va))?)
    }

    /// The user range pool (one per process).
    pub fn pool(&self) -> &RangePool {
        &self.pool
    }

    /// A range of the user range pool (size rounded up to 64 KiB), not mapped.
    pub fn alloc_range(&mut self, size: u64) -> Result<u64, KernelError> {
        Ok(self.pool.alloc(size)?)
    }

    /// `[addr, addr + size)` of the user range pool if wholly free.
    pub fn alloc_range_at(&mut self, addr: u64, size: u64) -> Result<u64, KernelError> {
        Ok(self.pool.alloc_at(addr, size)?)
    }

    /// Gives back a range of the user range pool.
    pub fn free_range(&mut self, base: u64, size: u64) -> Result<(), KernelError> {
        Ok(self.pool.free(base, size)?)
    }

    /// Maps `[va, va + len)` (inside the user binary, heap or range pool) to fresh zeroed
    /// frames the process owns, with `flags` plus USER. All or nothing.
    pub fn map_user<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        va: u64,
        len: u64,
        flags: PageFlags,
    ) -> Result<(), KernelError> {
        self.check_user(va, len)?;
        map_zeroed(&mut self.pt, mem, frames, va, len, flags | PageFlags::USER)
    }

    /// Unmaps `[va, va + len)` of user memory and frees the frames.
    pub fn unmap_user<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        va: u64,
        len: u64,
    ) -> Result<Flush, KernelError> {
        self.check_user(va, len)?;
        unmap_owned(&mut self.pt, mem, frames, va, len)
    }

    fn check_user(&self, va: u64, len: u64) -> Result<(), KernelError> {
        match self.layout.region_holding(va, len) {
            Some(r) if r.is_user_mappable() => Ok(()),
            _ => Err(KernelError::NotMappable { va, len }),
        }
    }

    /// The user heap's break.
    pub fn heap_break(&self) -> u64 {
        self.heap.get()
    }

    /// Moves the user heap's break (rounded up to a page) inside the user-heap region.
    pub fn set_heap_break<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        brk: u64,
    ) -> Result<Flush, KernelError> {
        self.heap.set(&mut self.pt, mem, frames, brk)
    }

    /// Maps kernel pages through this process's directory (same rules as
    /// [`KernelSpace::map`]): they land in the shared tables, so every process sees them.
    #[allow(clippy::too_many_arguments)]
    pub fn map_kernel<M: PhysMem, F: FrameAllocator>(
        &mut self,
        kernel: &KernelSpace,
        mem: &mut M,
        frames: &mut F,
        va: u64,
        pa: u64,
        len: u64,
        flags: PageFlags,
    ) -> Result<(), KernelError> {
        kernel.check_mappable(va, len, flags)?;
        self.pt.map_range(
            mem,
            frames,
            VirtAddr::new(va),
            PhysAddr::new(pa),
            len,
            PAGE_SIZE,
            flags,
        )?;
        Ok(())
    }

    /// Unmaps kernel pages through this process's directory (for every process).
    pub fn unmap_kernel<M: PhysMem, F: FrameAllocator, C: FnMut(VirtAddr, PhysAddr, u64)>(
        &mut self,
        kernel: &KernelSpace,
        mem: &mut M,
        frames: &mut F,
        va: u64,
        len: u64,
        on_unmap: C,
    ) -> Result<Flush, KernelError> {
        kernel.check_mappable(va, len, PageFlags::empty())?;
        Ok(self
            .pt
            .unmap_range(mem, frames, VirtAddr::new(va), len, on_unmap)?)
    }

    /// Frees the user frames, user tables and the directory; leaves the shared tables.
    pub(crate) fn destroy<M: PhysMem, F: FrameAllocator>(
        self,
        mem: &mut M,
        frames: &mut F,
    ) -> Result<Teardown, KernelError> {
        let tables = self.pt.table_pages();
        let mut user: Vec<PhysAddr> = Vec::new();
        self.pt.destroy(mem, frames, |_, pa, _| user.push(pa))?;
        for pa in &user {
            frames.deallocate_frame(Frame::containing(*pa))?;
        }
        Ok(Teardown {
            frames: user.len() as u64,
            tables,
        })
    }
}
