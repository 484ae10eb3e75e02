//! [`KernelSpace`]: the kernel half shared by every process, its kernel stacks, kernel heap
//! and kernel range pool, and the processes built on it.
//!
//! At creation every page table of the kernel half is allocated (255 tables for the 3G/1G
//! default: directory entries 768..1022, entry 1023 being the recursive slot), and one per
//! directory entry of low memory (1 by default), and hung under the kernel's own page
//! directory with U/S clear. A new process's directory copies those
//! entries ([`PageTable::new_sharing`]), so all directories point at the same tables: a page
//! mapped in the kernel half through any of them — the kernel's, or any process's — is
//! visible in all at once, nothing is copied, and no directory ever needs syncing. Tearing a
//! process down frees its directory and user tables, never a shared table.

use super::brk::{map_zeroed, unmap_owned, Break};
use super::layout::{KernelLayout, Region, PDE_SPAN};
use super::pool::RangePool;
use super::process::{ProcessSpace, Teardown};
use super::stacks::{KernelStack, StackSlots};
use super::KernelError;
use crate::addr::{Frame, PhysAddr, VirtAddr, PAGE_SIZE};
use crate::arch::{Arch, PageFlags, I386};
use crate::paging::{Flush, PageTable, Translation};
use crate::phys::{FrameAllocator, PhysMem};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Rights of the pages the kernel half maps for itself: supervisor, writable, global.
pub const KERNEL_RW: PageFlags = PageFlags::PRESENT
    .union(PageFlags::WRITABLE)
    .union(PageFlags::GLOBAL);

/// The shared kernel half of a 32-bit space; see the module doc.
#[derive(Debug)]
pub struct KernelSpace {
    layout: KernelLayout,
    arch: I386,
    /// The kernel's own page directory (Linux's swapper_pg_dir): owner of the shared tables.
    master: PageTable<I386>,
    shared_tables: u64,
    pool: RangePool,
    /// Ranges of the pool mapped by [`KernelSpace::vmalloc`], base -> size: their frames
    /// are the kernel's.
    vmalloced: BTreeMap<u64, u64>,
    stacks: StackSlots,
    heap: Break,
    processes: u64,
}

impl KernelSpace {
    /// Builds the kernel half of `layout`: validates it, allocates the kernel's directory
    /// and every kernel page table. Out of frames: everything allocated is given back.
    pub fn new<M: PhysMem, F: FrameAllocator>(
        layout: KernelLayout,
        mem: &mut M,
        frames: &mut F,
    ) -> Result<Self, KernelError> {
        layout.validate()?;
        let arch = I386::with_recursive_slot(layout.recursive_slot()).ok_or(
            KernelError::Layout(super::LayoutError::RecursiveWindow {
                start: layout.span(Region::PageTables).start,
                end: layout.span(Region::PageTables).end,
            }),
        )?;
        let pool = RangePool::new(layout.span(Region::KernelPool), PAGE_SIZE)?;
        let stacks = StackSlots::new(layout.span(Region::KernelStacks))?;
        let mut master = PageTable::new(arch, mem, frames)?;
        let first = (layout.split / PDE_SPAN) as usize;
        let low = layout.span(Region::Low);
        let (low_first, low_end) = (
            (low.start / PDE_SPAN) as usize,
            (low.end / PDE_SPAN) as usize,
        );
        let shared_tables = match master
            .populate_shared(mem, frames, first, I386::ENTRIES, false)
            .and_then(|k| Ok(k + master.populate_shared(mem, frames, low_first, low_end, false)?))
        {
            Ok(n) => n,
            Err(e) => {
                // Everything allocated so far hangs under the kernel's directory.
                let _ = master.release_shared(mem, frames, |_, _, _| {});
                let _ = master.destroy(mem, frames, |_, _, _| {});
                return Err(e.into());
            }
        };
        Ok(KernelSpace {
            layout,
            arch,
            master,
            shared_tables,
            pool,
            vmalloced: BTreeMap::new(),
            stacks,
            heap: Break::new(layout.span(Region::KernelHeap), KERNEL_RW),
            processes: 0,
        })
    }

    /// The layout.
    pub fn layout(&self) -> &KernelLayout {
        &self.layout
    }

    /// The MMU format (i386 with the layout's recursive slot).
    pub fn arch(&self) -> I386 {
        self.arch
    }

    /// The kernel's own page directory.
    pub fn page_table(&self) -> &PageTable<I386> {
        &self.master
    }

    /// Page tables of the kernel half, allocated once and shared by every directory.
    pub fn shared_tables(&self) -> u64 {
        self.shared_tables
    }

    /// Live processes.
    pub fn processes(&self) -> u64 {
        self.processes
    }

    /// Checks that a kernel mapping of `[va, va + len)` with `flags` is allowed: inside low
    /// memory, the kernel binary or the kernel range pool, without the user bit.
    pub(crate) fn check_mappable(
        &self,
        va: u64,
        len: u64,
        flags: PageFlags,
    ) -> Result<(), KernelError> {
        if flags.contains(PageFlags::USER) {
            return Err(KernelError::UserAccessible { va });
        }
        match self.layout.region_holding(va, len) {
            Some(Region::Low | Region::KernelBinary | Region::KernelPool) => Ok(()),
            _ => Err(KernelError::NotMappable { va, len }),
        }
    }

    /// Maps `[va, va + len)` onto the caller's frames `[pa, pa + len)` in 4 KiB pages
    /// (low memory, kernel binary or kernel range pool only; `flags` without USER). Visible in every
    /// process at once; no TLB flush needed. Rolled back whole on failure.
    pub fn map<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        va: u64,
        pa: u64,
        len: u64,
        flags: PageFlags,
    ) -> Result<(), KernelError> {
        self.check_mappable(va, len, flags)?;
        self.master.map_range(
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

    /// Unmaps `[va, va + len)` (low memory, kernel binary or range pool) in every process, calling
    /// `on_unmap(va, frame, size)` with each page's frame (the caller's). The token must
    /// be flushed on every CPU: kernel pages may be global.
    pub fn unmap<M: PhysMem, F: FrameAllocator, C: FnMut(VirtAddr, PhysAddr, u64)>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        va: u64,
        len: u64,
        on_unmap: C,
    ) -> Result<Flush, KernelError> {
        self.check_mappable(va, len, PageFlags::empty())?;
        Ok(self
            .master
            .unmap_range(mem, frames, VirtAddr::new(va), len, on_unmap)?)
    }

    /// The mapping of `va` as every process sees it.
    pub fn translate<M: PhysMem>(&self, mem: &M, va: u64) -> Result<Translation, KernelError> {
        Ok(self.master.translate(mem, VirtAddr::new(va))?)
    }

    /// A range of the kernel range pool (size rounded up to pages), not mapped. The pool is
    /// one arena for all processes: what one process's system call takes, no other gets.
    pub fn alloc_range(&mut self, size: u64) -> Result<u64, KernelError> {
        Ok(self.pool.alloc(size)?)
    }

    /// `[addr, addr + size)` of the kernel range pool if wholly free.
    pub fn alloc_range_at(&mut self, addr: u64, size: u64) -> Result<u64, KernelError> {
        Ok(self.pool.alloc_at(addr, size)?)
    }

    /// Gives back a range from [`KernelSpace::alloc_range`] (its pages must be unmapped by
    /// then; a range from [`KernelSpace::vmalloc`] goes back with [`KernelSpace::vfree`]).
    pub fn free_range(&mut self, base: u64, size: u64) -> Result<(), KernelError> {
        if self.vmalloced.contains_key(&base) {
            return Err(KernelError::NotMappable {
                va: base,
                len: size,
            });
        }
        Ok(self.pool.free(base, size)?)
    }

    /// The kernel range pool.
    pub fn pool(&self) -> &RangePool {
        &self.pool
    }

    /// A range of the kernel range pool backed by zeroed frames the kernel owns (Linux's
    /// vmalloc): visible in every process. All or nothing.
    pub fn vmalloc<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        size: u64,
    ) -> Result<u64, KernelError> {
        let size = self.pool.round(size)?;
        let base = self.pool.alloc(size)?;
        if let Err(e) = map_zeroed(&mut self.master, mem, frames, base, size, KERNEL_RW) {
            let _ = self.pool.free(base, size);
            return Err(e);
        }
        self.vmalloced.insert(base, size);
        Ok(base)
    }

    /// Unmaps and frees a [`KernelSpace::vmalloc`] range; anything else is `NotMappable`
    /// and changes nothing.
    pub fn vfree<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        base: u64,
    ) -> Result<Flush, KernelError> {
        let size = *self
            .vmalloced
            .get(&base)
            .ok_or(KernelError::NotMappable { va: base, len: 0 })?;
        let flush = unmap_owned(&mut self.master, mem, frames, base, size)?;
        self.vmalloced.remove(&base);
        self.pool.free(base, size)?;
        Ok(flush)
    }

    /// A kernel stack for a new thread: a free slot of the kernel-stack region, its upper
    /// page mapped to a zeroed frame (supervisor, writable), its lower page left unmapped
    /// as the guard. Visible in every process (a thread's kernel stack must be reachable
    /// whichever directory is loaded when it is switched to).
    pub fn alloc_stack<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
    ) -> Result<KernelStack, KernelError> {
        let guard = self.stacks.take()?;
        let page = guard + PAGE_SIZE;
        if let Err(e) = map_zeroed(&mut self.master, mem, frames, page, PAGE_SIZE, KERNEL_RW) {
            let _ = self.stacks.give_back(guard);
            return Err(e);
        }
        let frame = self
            .master
            .translate(mem, VirtAddr::new(page))?
            .frame
            .as_u64();
        Ok(KernelStack { guard, page, frame })
    }

    /// Frees a kernel stack from [`KernelSpace::alloc_stack`]: unmaps its page, frees its
    /// frame and slot. A stack not handed out (or already freed) is `NotAStack`, nothing
    /// changed.
    pub fn free_stack<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        stack: KernelStack,
    ) -> Result<Flush, KernelError> {
        let not = KernelError::NotAStack { guard: stack.guard };
        if stack.page != stack.guard.wrapping_add(PAGE_SIZE)
            || self.layout.region_holding(stack.guard, 2 * PAGE_SIZE) != Some(Region::KernelStacks)
        {
            return Err(not);
        }
        match self.master.translate(mem, VirtAddr::new(stack.page)) {
            Ok(t) if t.frame.as_u64() == stack.frame => {}
            _ => return Err(not),
        }
        self.stacks.give_back(stack.guard).map_err(|_| not)?;
        unmap_owned(&mut self.master, mem, frames, stack.page, PAGE_SIZE)
    }

    /// Kernel stacks in use.
    pub fn stacks_in_use(&self) -> usize {
        self.stacks.in_use()
    }

    /// Kernel stacks the region holds.
    pub fn stack_capacity(&self) -> u64 {
        self.stacks.capacity()
    }

    /// The kernel heap's break.
    pub fn heap_break(&self) -> u64 {
        self.heap.get()
    }

    /// Moves the kernel heap's break (rounded up to a page) inside the kernel-heap region,
    /// mapping zeroed frames or freeing them.
    pub fn set_heap_break<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
        brk: u64,
    ) -> Result<Flush, KernelError> {
        self.heap.set(&mut self.master, mem, frames, brk)
    }

    /// A new process: a page directory with its own recursive entry and copies of every
    /// kernel-half entry, and an empty user range pool.
    pub fn new_process<M: PhysMem, F: FrameAllocator>(
        &mut self,
        mem: &mut M,
        frames: &mut F,
    ) -> Result<ProcessSpace, KernelError> {
        let p = ProcessSpace::new(&self.master, self.layout, mem, frames)?;
        self.processes += 1;
        Ok(p)
    }

    /// Tears a process down: unmaps its user pages and frees their frames, its user page
    /// tables and its directory. The shared kernel tables, and everything mapped in them,
    /// stay.
    pub fn destroy_process<M: PhysMem, F: FrameAllocator>(
        &mut self,
        p: ProcessSpace,
        mem: &mut M,
        frames: &mut F,
    ) -> Result<Teardown, KernelError> {
        let t = p.destroy(mem, frames)?;
        self.processes = self.processes.saturating_sub(1);
        Ok(t)
    }

    /// Tears the kernel half down once no process is left: frees kernel stacks, heap and
    /// vmalloc frames, calls `on_unmap(va, frame, size)` for the pages mapped with
    /// [`KernelSpace::map`] (their frames are the caller's), frees every shared table and
    /// the kernel's directory. With processes alive it refuses with `ProcessesAlive` and
    /// frees nothing (their directories still point at the shared tables: a leak is
    /// better than a use after free); check [`KernelSpace::processes`] first.
    pub fn destroy<M: PhysMem, F: FrameAllocator, C: FnMut(VirtAddr, PhysAddr, u64)>(
        mut self,
        mem: &mut M,
        frames: &mut F,
        mut on_unmap: C,
    ) -> Result<(), KernelError> {
        if self.processes > 0 {
            return Err(KernelError::ProcessesAlive(self.processes));
        }
        let (vm, layout) = (&self.vmalloced, &self.layout);
        let own = |va: u64| {
            matches!(
                layout.region_of(va),
                Some(Region::KernelStacks | Region::KernelHeap)
            ) || vm
                .range(..=va)
                .next_back()
                .is_some_and(|(&b, &s)| va < b + s)
        };
        let mut owned: Vec<PhysAddr> = Vec::new();
        self.master.release_shared(mem, frames, |va, pa, size| {
            if own(va.as_u64()) {
                owned.push(pa);
            } else {
                on_unmap(va, pa, size);
            }
        })?;
        for pa in owned {
            frames.deallocate_frame(Frame::containing(pa))?;
        }
        self.master.destroy(mem, frames, |_, _, _| {})?;
        Ok(())
    }
}
