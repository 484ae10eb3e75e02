//! `allocator-api2` adapters: `&SizeClassHeap` and `&LockedChunkHeap` as `Allocator`s, so
//! collections can live in a chosen heap (`allocator_api2::vec::Vec::new_in(&heap)`).

use crate::chunk::LockedChunkHeap;
use crate::size_class::SizeClassHeap;
use crate::source::{BrkSource, SegmentSource};
use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;

fn slice(p: *mut u8, len: usize) -> Result<NonNull<[u8]>, AllocError> {
    NonNull::new(p)
        .map(|p| NonNull::slice_from_raw_parts(p, len))
        .ok_or(AllocError)
}

/// A zero-sized allocation: a dangling, aligned pointer (never passed to the heap).
fn dangling(layout: Layout) -> NonNull<[u8]> {
    // An alignment is never zero, so this address is non-null and aligned.
    let p = core::ptr::without_provenance_mut::<u8>(layout.align());
    NonNull::slice_from_raw_parts(NonNull::new(p).unwrap_or(NonNull::dangling()), 0)
}

// SAFETY: blocks come from the heap with the layout's size and alignment and stay valid until
// deallocated; zero-sized requests get a dangling pointer that is never freed to the heap.
unsafe impl<S: SegmentSource + Send> Allocator for &SizeClassHeap<S> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        slice(SizeClassHeap::alloc(self, layout), layout.size())
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: `ptr` was allocated by this heap (Allocator contract).
            unsafe { self.free(ptr.as_ptr()) }
        }
    }
}

// SAFETY: as above, through the chunk heap's lock.
unsafe impl<B: BrkSource + Send> Allocator for &LockedChunkHeap<B> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        slice(self.lock().alloc(layout), layout.size())
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: `ptr` was allocated by this heap (Allocator contract).
            unsafe { self.lock().free_sized(ptr.as_ptr(), layout.size()) }
        }
    }

    /// In place when the next chunk (free, or the top) has room; else a move.
    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded contract (`new.size() >= old.size()`).
        unsafe { self.resize(ptr, old, new) }
    }

    /// In place: the tail goes back to the heap when it can stand as a chunk.
    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded contract (`new.size() <= old.size()`).
        unsafe { self.resize(ptr, old, new) }
    }
}

trait Resize {
    /// Moves or resizes block `ptr` of layout `old` to layout `new`.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError>;
}

impl<B: BrkSource + Send> Resize for &LockedChunkHeap<B> {
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // The heap's realloc keeps the block's alignment: usable when the new layout asks
        // for no more, and neither side is a zero-sized (dangling) block.
        if old.size() == 0 || new.size() == 0 || new.align() > old.align() {
            let q = self.allocate(new)?;
            // SAFETY: both blocks are live and distinct; the smaller size is copied.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    ptr.as_ptr(),
                    q.as_ptr() as *mut u8,
                    old.size().min(new.size()),
                );
                self.deallocate(ptr, old);
            }
            return Ok(q);
        }
        // SAFETY: `ptr` is a live block of this heap with layout `old` (Allocator contract).
        let p = unsafe { self.lock().realloc(ptr.as_ptr(), old, new.size()) };
        slice(p, new.size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArenaBrk, FitPolicy};
    extern crate std;

    fn exercise<A: Allocator>(a: A) {
        let l = Layout::from_size_align(100, 16).unwrap();
        let p = a.allocate(l).unwrap();
        assert!(p.len() >= 100);
        let base = p.as_ptr() as *mut u8;
        assert_eq!(base as usize % 16, 0);
        unsafe {
            base.write_bytes(9, 100);
            // `grow` is the trait's default: allocate, copy, deallocate
            let l2 = Layout::from_size_align(20_000, 16).unwrap();
            let q = a.grow(NonNull::new_unchecked(base), l, l2).unwrap();
            let q = q.as_ptr() as *mut u8;
            assert_eq!(*q.add(99), 9);
            a.deallocate(NonNull::new_unchecked(q), l2);
        }
        let z = a.allocate(Layout::from_size_align(0, 64).unwrap()).unwrap();
        assert_eq!(z.len(), 0);
        unsafe { a.deallocate(z.cast(), Layout::from_size_align(0, 64).unwrap()) };
        assert!(a
            .allocate(Layout::from_size_align(isize::MAX as usize - 63, 64).unwrap())
            .is_err());
    }

    #[test]
    fn both_heaps_are_allocator_api2_allocators() {
        let arena = crate::testing::arena(16);
        let sc = SizeClassHeap::new(arena);
        exercise(&sc);
        assert_eq!(sc.stats().live_bytes, 0);
        let ch = LockedChunkHeap::new(
            ArenaBrk::from_static(std::vec![0u8; 1 << 20].leak()),
            FitPolicy::Best,
        );
        exercise(&ch);
        assert_eq!(ch.lock().stats().live_bytes, 0);
        // the chunk heap grows and shrinks in place where it can
        let l = Layout::from_size_align(64, 8).unwrap();
        let big = Layout::from_size_align(50_000, 8).unwrap();
        let a = (&ch).allocate(l).unwrap().cast::<u8>();
        unsafe {
            a.as_ptr().write_bytes(3, 64);
            let g = (&ch).grow(a, l, big).unwrap();
            assert_eq!(
                g.cast::<u8>(),
                a,
                "the next chunk is the top: grown in place"
            );
            assert_eq!(*a.as_ptr().add(63), 3);
            let s = (&ch).shrink(a, big, l).unwrap();
            assert_eq!(s.cast::<u8>(), a);
            // a stricter alignment moves the block
            let al = Layout::from_size_align(64, 4096).unwrap();
            let m = (&ch).grow(a, l, al).unwrap().cast::<u8>();
            assert_eq!(m.as_ptr() as usize % 4096, 0);
            assert_eq!(*m.as_ptr().add(63), 3);
            (&ch).deallocate(m, al);
        }
        assert_eq!(ch.lock().stats().live_bytes, 0);
        ch.lock().check_invariants().unwrap();
    }
}
