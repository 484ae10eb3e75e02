//! Heaps inside a simulated address space: segments and the break become mappings of a
//! vmspace [`AddressSpace`], the bytes live in a host mirror of the simulated range.
//!
//! A [`SimSpace`] owns the model (anything implementing [`SpaceModel`]; an
//! [`AddressSpace`] of a 32-bit task out of the box) and a host reservation of the task's
//! whole user range (`PROT_NONE`, `MAP_NORESERVE`): simulated address `a` is host address
//! `mirror + a`, so the heap code reads and writes ordinary host memory and runs unchanged.
//! Every operation of the heap's sources is done on both sides:
//!
//! | heap                  | model                           | host mirror                 |
//! |-----------------------|---------------------------------|-----------------------------|
//! | segments in           | anonymous `mmap` (64 KiB-aligned) | `mprotect` read-write     |
//! | segments out          | `munmap`                        | `MADV_DONTNEED`, `PROT_NONE` |
//! | decommit              | `madvise(MADV_DONTNEED)`        | `MADV_DONTNEED`             |
//! | break grows / shrinks | `brk`                           | `mprotect` of whole pages   |
//!
//! so a heap's segments and break show in the model's `/proc/pid/maps` rendering, and
//! destroying the heap leaves none of its mappings. [`SpaceSource`] (a [`SegmentSource`])
//! and [`SpaceBrk`] (a [`BrkSource`]) borrow the `SimSpace`, so any number of heaps share
//! one space. The model side is only the [`SpaceModel`] trait: a simulated CPU that routes
//! page touches through its fault handler plugs in there.
//!
//! [`SimGlobal`] makes such a heap the `#[global_allocator]` of a real program: every `Vec`,
//! `String` and `Box` then lives in mappings of the simulated space. The model allocates
//! too (its VMA tree), from inside the heap's calls to its source; see [`SimGlobal`] for
//! how that reentrancy is resolved.

use crate::source::{align_up, BrkSource, SegmentSource, PAGE_SIZE, SEGMENT_SIZE};
use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use std::alloc::System;
use std::boxed::Box;
use vmspace::space::abi::{MADV_DONTNEED, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE};
use vmspace::space::{AddressSpace, Errno};

/// What a heap source needs from a simulated address space (addresses are simulated).
pub trait SpaceModel {
    /// End of the user range (TASK_SIZE): simulated addresses lie below it.
    fn task_size(&self) -> u64;
    /// Maps `len` bytes of private anonymous read-write memory aligned to `align` (a power of
    /// two, at least a page) where the space places it; its address.
    fn map_anon(&mut self, len: u64, align: u64) -> Result<u64, Errno>;
    /// Unmaps `[addr, addr + len)`.
    fn unmap(&mut self, addr: u64, len: u64) -> Result<(), Errno>;
    /// Drops the pages of `[addr, addr + len)` (`MADV_DONTNEED`): zero when touched again.
    fn discard(&mut self, addr: u64, len: u64) -> Result<(), Errno>;
    /// The current program break.
    fn brk_value(&self) -> u64;
    /// Moves the break (`brk(2)`): the new break, or the old one on failure.
    fn set_break(&mut self, target: u64) -> u64;
}

impl SpaceModel for AddressSpace {
    fn task_size(&self) -> u64 {
        self.layout().task_size
    }

    fn map_anon(&mut self, len: u64, align: u64) -> Result<u64, Errno> {
        let over = align.saturating_sub(PAGE_SIZE as u64);
        let total = len.checked_add(over).ok_or(Errno::ENOMEM)?;
        let a = self.mmap(
            0,
            total,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
            None,
            0,
        )?;
        // Trim to the aligned part, as the host source does with its own mmap.
        let start = (a + align - 1) & !(align - 1);
        if start > a {
            self.munmap(a, start - a)?;
        }
        if a + total > start + len {
            self.munmap(start + len, a + total - (start + len))?;
        }
        Ok(start)
    }

    fn unmap(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        self.munmap(addr, len)
    }

    fn discard(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        self.madvise(addr, len, MADV_DONTNEED)
    }

    fn brk_value(&self) -> u64 {
        AddressSpace::brk_value(self)
    }

    fn set_break(&mut self, target: u64) -> u64 {
        self.brk(target)
    }
}

std::thread_local! {
    /// Set while this thread is inside a call of a [`SimSpace`]'s model (or building one
    /// for a [`SimGlobal`]): allocations made there must not re-enter the heap.
    static IN_MODEL: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is inside a call of a [`SimSpace`]'s model: what the model
/// allocates now must come from elsewhere than a heap running in that space.
pub fn in_model() -> bool {
    IN_MODEL.with(Cell::get)
}

/// The model, locked, with [`in_model`] set for the current thread until dropped.
struct ModelGuard<'a, M> {
    guard: spin::MutexGuard<'a, M>,
    outer: bool,
}

impl<M> Deref for ModelGuard<'_, M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.guard
    }
}

impl<M> DerefMut for ModelGuard<'_, M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.guard
    }
}

impl<M> Drop for ModelGuard<'_, M> {
    fn drop(&mut self) {
        IN_MODEL.with(|f| f.set(self.outer));
    }
}

/// Largest simulated user range a [`SimSpace`] mirrors on the host: a 32-bit space.
pub const MAX_MIRROR: u64 = 1 << 32;

/// A simulated address space with a host mirror of its user range; heaps run inside it
/// through [`SimSpace::source`] and [`SimSpace::brk_source`].
pub struct SimSpace<M: SpaceModel> {
    model: spin::Mutex<M>,
    mirror: usize,
    size: usize,
}

impl<M: SpaceModel> SimSpace<M> {
    /// Mirrors `model`'s user range on the host; `None` when the range is larger than
    /// [`MAX_MIRROR`] (a 64-bit space) or the host refuses the reservation.
    pub fn new(model: M) -> Option<Self> {
        let size = model.task_size();
        if size == 0 || size > MAX_MIRROR {
            return None;
        }
        let size = align_up(size as usize, SEGMENT_SIZE)?;
        let total = size.checked_add(SEGMENT_SIZE)?;
        // SAFETY: a fresh inaccessible reservation at an address the host chooses.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let raw = raw as usize;
        // Segment-aligned, so simulated 64 KiB alignment is host 64 KiB alignment.
        let mirror = (raw + SEGMENT_SIZE - 1) & !(SEGMENT_SIZE - 1);
        // SAFETY: trimming our own reservation.
        unsafe {
            if mirror > raw {
                libc::munmap(raw as *mut libc::c_void, mirror - raw);
            }
            let end = mirror + size;
            if raw + total > end {
                libc::munmap(end as *mut libc::c_void, raw + total - end);
            }
        }
        Some(SimSpace {
            model: spin::Mutex::new(model),
            mirror,
            size,
        })
    }

    /// Runs `f` on the model (to read its maps, or to make calls of its own). Inside `f`
    /// the thread counts as [`in_model`].
    pub fn with<R>(&self, f: impl FnOnce(&mut M) -> R) -> R {
        f(&mut self.lock())
    }

    /// Locks the model and marks the thread [`in_model`] while the guard lives.
    fn lock(&self) -> ModelGuard<'_, M> {
        let outer = IN_MODEL.with(|f| f.replace(true));
        ModelGuard {
            guard: self.model.lock(),
            outer,
        }
    }

    /// Whether `p` lies in the host mirror of this space.
    pub fn contains(&self, p: *const u8) -> bool {
        self.sim(p).is_some()
    }

    /// The host address of simulated address `sim` (inside the user range).
    pub fn host(&self, sim: u64) -> Option<*mut u8> {
        ((sim as usize) < self.size && sim < MAX_MIRROR)
            .then(|| (self.mirror + sim as usize) as *mut u8)
    }

    /// The simulated address of host address `p`, if `p` lies in the mirror.
    pub fn sim(&self, p: *const u8) -> Option<u64> {
        let a = (p as usize).wrapping_sub(self.mirror);
        (a < self.size).then_some(a as u64)
    }

    /// A segment source mapping segments in this space.
    pub fn source(&self) -> SpaceSource<'_, M> {
        SpaceSource { space: self }
    }

    /// A break source growing this space's program break; `None` when the break is not
    /// 16-byte aligned (set it with the model's own calls first).
    pub fn brk_source(&self) -> Option<SpaceBrk<'_, M>> {
        let start = self.lock().brk_value();
        (start % 16 == 0 && start != 0).then_some(SpaceBrk { space: self, start })
    }

    /// Host side of newly mapped simulated pages: make them accessible.
    fn host_commit(&self, sim: u64, len: u64) -> bool {
        // SAFETY: the range lies in our reservation (the model only hands out addresses
        // below the task size, which the mirror covers).
        unsafe {
            libc::mprotect(
                (self.mirror + sim as usize) as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
            ) == 0
        }
    }

    /// Host side of unmapped simulated pages: drop the contents and make them inaccessible.
    fn host_release(&self, sim: u64, len: u64) {
        // SAFETY: as host_commit; nothing uses the range any more (the callers' contracts).
        unsafe {
            let p = (self.mirror + sim as usize) as *mut libc::c_void;
            libc::madvise(p, len as usize, libc::MADV_DONTNEED);
            libc::mprotect(p, len as usize, libc::PROT_NONE);
        }
    }
}

impl<M: SpaceModel> Drop for SimSpace<M> {
    fn drop(&mut self) {
        // SAFETY: our reservation; every heap borrowing the space is gone.
        unsafe { libc::munmap(self.mirror as *mut libc::c_void, self.size) };
    }
}

/// Segments as anonymous mappings of a [`SimSpace`]'s model.
pub struct SpaceSource<'a, M: SpaceModel> {
    space: &'a SimSpace<M>,
}

// SAFETY: a segment is a fresh model mapping (so never handed out twice while mapped),
// 64 KiB-aligned in the model and hence in the segment-aligned mirror, made read-write on
// the host before it is returned, and valid until unmapped in `free_segments`.
unsafe impl<M: SpaceModel> SegmentSource for SpaceSource<'_, M> {
    fn alloc_segments(&mut self, count: usize) -> Option<NonNull<u8>> {
        let len = count.checked_mul(SEGMENT_SIZE)? as u64;
        let mut m = self.space.lock();
        let sim = m.map_anon(len, SEGMENT_SIZE as u64).ok()?;
        if sim.checked_add(len)? > self.space.size as u64 || !self.space.host_commit(sim, len) {
            let _ = m.unmap(sim, len);
            return None;
        }
        self.space.host(sim).and_then(NonNull::new)
    }

    unsafe fn free_segments(&mut self, base: NonNull<u8>, count: usize) {
        let Some(sim) = self.space.sim(base.as_ptr()) else {
            return;
        };
        let len = (count * SEGMENT_SIZE) as u64;
        let _ = self.space.lock().unmap(sim, len);
        self.space.host_release(sim, len);
    }

    unsafe fn decommit(&mut self, ptr: NonNull<u8>, len: usize) {
        if let Some(sim) = self.space.sim(ptr.as_ptr()) {
            let _ = self.space.lock().discard(sim, len as u64);
            // SAFETY: inside a live mapping of ours (caller contract).
            unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) };
        }
    }
}

/// The program break of a [`SimSpace`]'s model as a chunk heap's region.
pub struct SpaceBrk<'a, M: SpaceModel> {
    space: &'a SimSpace<M>,
    start: u64,
}

impl<M: SpaceModel> SpaceBrk<'_, M> {
    /// Bytes between the break this source started at and the current break.
    pub fn used(&self) -> u64 {
        self.space.lock().brk_value() - self.start
    }
}

// SAFETY: the break grows contiguously (brk extends the heap VMA at the old break); the
// pages up to the new break are made read-write on the host before the old end is returned.
unsafe impl<M: SpaceModel> BrkSource for SpaceBrk<'_, M> {
    fn grow(&mut self, bytes: usize) -> Option<NonNull<u8>> {
        let mut m = self.space.lock();
        let old = m.brk_value();
        let new = old.checked_add(bytes as u64)?;
        if new > self.space.size as u64 || m.set_break(new) != new {
            return None;
        }
        let lo = old & !(PAGE_SIZE as u64 - 1);
        let hi = align_up(new as usize, PAGE_SIZE)? as u64;
        if !self.space.host_commit(lo, hi - lo) {
            m.set_break(old);
            return None;
        }
        self.space.host(old).and_then(NonNull::new)
    }

    unsafe fn shrink(&mut self, bytes: usize) {
        let mut m = self.space.lock();
        let old = m.brk_value();
        let new = old.saturating_sub(bytes as u64).max(self.start);
        if m.set_break(new) != new {
            return;
        }
        // Whole pages above the new break are gone in the model (brk unmaps them).
        let lo = align_up(new as usize, PAGE_SIZE).unwrap_or(usize::MAX) as u64;
        let hi = align_up(old as usize, PAGE_SIZE).unwrap_or(usize::MAX) as u64;
        if hi > lo {
            self.space.host_release(lo, hi - lo);
        }
    }
}

/// A global allocator running heap `H` inside a simulated address space, both built on
/// first use: `#[global_allocator] static A: SimGlobal<AddressSpace, LockedChunkHeap<..>>`
/// puts every allocation of the program into mappings of the simulated space.
///
/// Reentrancy: the model allocates (its VMA tree) while the heap calls its source, with the
/// heap's lock held, and building the space allocates too. Every model call runs with the
/// thread marked [`in_model`] (set by the space's lock, and around the construction);
/// an allocation on a marked thread goes to the system allocator instead of the heap. A
/// free is routed by address, not by the mark: a pointer in the space's host mirror
/// belongs to the heap (the only thing that maps there), anything else to the system
/// allocator, so a block the model allocated inside a source call may be freed anywhere
/// (and a block of the heap freed from inside the model goes back to the heap). `realloc`
/// moves a block between the two when the thread's mark says the other one should hold it.
/// Other threads are not affected by a mark: they wait on the heap's or the model's lock.
/// One rule follows for a caller of [`SimSpace::with`]: inside it, do not free or shrink a
/// block of the heap (the heap may give memory back to the model, whose lock the thread
/// already holds); what the model itself allocates and frees is never the heap's.
/// If the space cannot be built (no 4 GiB of host address space), everything goes to the
/// system allocator.
pub struct SimGlobal<M: SpaceModel + 'static, H: 'static> {
    model: fn() -> M,
    heap: fn(&'static SimSpace<M>) -> H,
    state: spin::Once<Option<(&'static SimSpace<M>, H)>>,
}

impl<M: SpaceModel + 'static, H: 'static> SimGlobal<M, H> {
    /// A global allocator that, on first use, builds the model with `model`, mirrors it in a
    /// [`SimSpace`] (leaked: it lives as long as the program) and the heap in it with `heap`.
    pub const fn new(model: fn() -> M, heap: fn(&'static SimSpace<M>) -> H) -> Self {
        SimGlobal {
            model,
            heap,
            state: spin::Once::new(),
        }
    }

    /// The space and the heap; builds them on first use; `None` when the space could not be
    /// built.
    pub fn get(&self) -> Option<(&'static SimSpace<M>, &H)> {
        let state = self.state.call_once(|| {
            let outer = IN_MODEL.with(|f| f.replace(true));
            let space = SimSpace::new((self.model)()).map(|s| &*Box::leak(Box::new(s)));
            let built = space.map(|s| (s, (self.heap)(s)));
            IN_MODEL.with(|f| f.set(outer));
            built
        });
        state.as_ref().map(|(s, h)| (*s, h))
    }

    /// The heap, if it owns `p` (`p` lies in the space's mirror).
    fn owner(&self, p: *mut u8) -> Option<&H> {
        match self.state.get() {
            Some(Some((s, h))) if s.contains(p) => Some(h),
            _ => None,
        }
    }
}

// SAFETY: every block comes from `H` or from the system allocator with the requested
// layout; frees and reallocs go to the one whose block it is (by address, see above).
unsafe impl<M, H> GlobalAlloc for SimGlobal<M, H>
where
    M: SpaceModel + Send + 'static,
    H: GlobalAlloc + Sync + 'static,
{
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !in_model() {
            if let Some((_, h)) = self.get() {
                // SAFETY: forwarded contract.
                return unsafe { h.alloc(layout) };
            }
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: `p` is the owner's block with `layout` (GlobalAlloc contract, routing).
        unsafe {
            match self.owner(p) {
                Some(h) => h.dealloc(p, layout),
                None => System.dealloc(p, layout),
            }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let owner = self.owner(p);
        let to_heap = !in_model() && self.get().is_some();
        // SAFETY: `p` is the owner's block with `layout` (GlobalAlloc contract, routing); a
        // move copies the smaller size into a fresh block and frees the old one.
        unsafe {
            match (owner, to_heap) {
                (Some(h), true) => h.realloc(p, layout, new_size),
                (None, false) => System.realloc(p, layout, new_size),
                _ => {
                    let Ok(nl) = Layout::from_size_align(new_size, layout.align()) else {
                        return core::ptr::null_mut();
                    };
                    let q = self.alloc(nl);
                    if !q.is_null() {
                        core::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                        self.dealloc(p, layout);
                    }
                    q
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FitPolicy, LockedChunkHeap};
    use vmspace::space::{SpaceConfig, TaskKind};

    type Heap = LockedChunkHeap<SpaceBrk<'static, AddressSpace>>;

    fn model() -> AddressSpace {
        let mut m = AddressSpace::new(SpaceConfig::linux_default(TaskKind::Compat32));
        m.set_brk(0x0806_0000, 0x0806_0000);
        m
    }

    fn heap(s: &'static SimSpace<AddressSpace>) -> Heap {
        LockedChunkHeap::new(s.brk_source().unwrap(), FitPolicy::First)
    }

    #[test]
    fn sim_global_routes_by_the_model_mark_and_frees_by_address() {
        static G: SimGlobal<AddressSpace, Heap> = SimGlobal::new(model, heap);
        let l = Layout::from_size_align(100, 8).unwrap();
        assert!(!in_model());
        let (space, h) = G.get().unwrap();
        unsafe {
            let a = G.alloc(l);
            assert!(space.contains(a), "outside the model: the heap");
            // inside the model (the mark is restored after): the system allocator
            let b = space.with(|_| {
                assert!(in_model());
                G.alloc(l)
            });
            assert!(!in_model());
            assert!(!b.is_null() && !space.contains(b));
            b.write_bytes(5, 100);
            // realloc outside the model moves the system block into the heap
            let c = G.realloc(b, l, 200);
            assert!(space.contains(c));
            assert!(std::slice::from_raw_parts(c, 100).iter().all(|&x| x == 5));
            // a system block grown inside the model stays a system block
            let d = space.with(|_| G.realloc(G.alloc(l), l, 5000));
            assert!(!space.contains(d));
            // frees go by address: the system block from outside the model too
            G.dealloc(d, Layout::from_size_align(5000, 8).unwrap());
            G.dealloc(a, l);
            G.dealloc(c, Layout::from_size_align(200, 8).unwrap());
        }
        assert_eq!(h.lock().stats().live_bytes, 0);
        h.lock().check_invariants().unwrap();
    }
}
