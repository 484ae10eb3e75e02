//! The buddy allocator as the [`x86_64`] crate's frame allocator (feature `x86_64-crate`), so
//! that a kernel built on that crate (its `OffsetPageTable`, `RecursivePageTable`, `Mapper`)
//! can take its frames from vmspace before adopting the rest.
//!
//! [`BuddyAllocator`] implements `FrameAllocator` and `FrameDeallocator` for 4 KiB frames
//! (order 0) and 2 MiB frames (order 9). 1 GiB frames are above `MAX_ORDER`: their allocator
//! returns none. A frame whose address does not fit the crate's 52-bit `PhysAddr` is put
//! back and reported as none.
//!
//! The crate's `deallocate_frame` cannot report an error: a frame the allocator did not hand
//! out (or not with that size) is left as it is, as [`FrameAllocator::deallocate`] would;
//! [`BuddyAllocator::deallocate_x86_64_frame`] returns the error.

use super::{BuddyAllocator, FrameAllocator, PhysError};
use crate::addr::Frame;
use core::ops::DerefMut;
use x86_64::structures::paging::{
    FrameAllocator as X86FrameAllocator, FrameDeallocator, PageSize, PhysFrame, Size1GiB, Size2MiB,
    Size4KiB,
};

/// The block order of a frame of size `S`: 0 for 4 KiB, 9 for 2 MiB, 18 for 1 GiB.
fn order_of<S: PageSize>() -> u8 {
    (S::SIZE / 4096).trailing_zeros() as u8
}

/// `frame` as the crate's frame of size `S`, if its address fits in 52 bits and is aligned
/// to `S`.
pub fn to_x86_64_frame<S: PageSize>(frame: Frame) -> Option<PhysFrame<S>> {
    let addr = x86_64::PhysAddr::try_new(frame.start_address().as_u64()).ok()?;
    PhysFrame::from_start_address(addr).ok()
}

/// The first 4 KiB frame of the crate's frame `frame` (of any size).
pub fn from_x86_64_frame<S: PageSize>(frame: PhysFrame<S>) -> Frame {
    // Its address is below 2^52, so its frame number is a valid one.
    Frame::containing(crate::addr::PhysAddr::new(frame.start_address().as_u64()))
}

impl<M: DerefMut<Target = [u64]>> BuddyAllocator<M> {
    /// Allocates a block for a frame of size `S` as the crate's frame.
    fn allocate_x86_64_frame<S: PageSize>(&mut self) -> Option<PhysFrame<S>> {
        let order = order_of::<S>();
        let frame = self.allocate(order).ok()?;
        match to_x86_64_frame(frame) {
            Some(f) => Some(f),
            None => {
                // Just handed out with this order, so taking it back cannot fail.
                let _ = self.deallocate(frame, order);
                None
            }
        }
    }

    /// Frees the crate's frame `frame` of size `S`, with the checks of
    /// [`deallocate`](FrameAllocator::deallocate).
    pub fn deallocate_x86_64_frame<S: PageSize>(
        &mut self,
        frame: PhysFrame<S>,
    ) -> Result<(), PhysError> {
        self.deallocate(from_x86_64_frame(frame), order_of::<S>())
    }
}

// SAFETY: every frame returned is a block the buddy allocator has just taken off its free
// bitmaps: aligned to its size, inside the managed memory, and not handed out again until
// it is freed.
unsafe impl<M: DerefMut<Target = [u64]>> X86FrameAllocator<Size4KiB> for BuddyAllocator<M> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        self.allocate_x86_64_frame()
    }
}

// SAFETY: as for 4 KiB frames; an order-9 block is a 2 MiB-aligned run of 512 frames.
unsafe impl<M: DerefMut<Target = [u64]>> X86FrameAllocator<Size2MiB> for BuddyAllocator<M> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size2MiB>> {
        self.allocate_x86_64_frame()
    }
}

// SAFETY: never returns a frame (1 GiB blocks are above `MAX_ORDER`).
unsafe impl<M: DerefMut<Target = [u64]>> X86FrameAllocator<Size1GiB> for BuddyAllocator<M> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size1GiB>> {
        None
    }
}

impl<M: DerefMut<Target = [u64]>> FrameDeallocator<Size4KiB> for BuddyAllocator<M> {
    /// Frees a frame allocated as a 4 KiB frame; any other frame is left as it is.
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        let _ = self.deallocate_x86_64_frame(frame);
    }
}

impl<M: DerefMut<Target = [u64]>> FrameDeallocator<Size2MiB> for BuddyAllocator<M> {
    /// Frees a frame allocated as a 2 MiB frame; any other frame is left as it is.
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size2MiB>) {
        let _ = self.deallocate_x86_64_frame(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::FrameRange;
    use crate::phys::metadata_len;
    use std::vec;
    use std::vec::Vec;

    fn buddy(start: u64, count: u64) -> BuddyAllocator<Vec<u64>> {
        let r = [FrameRange::new(Frame::from_number(start).unwrap(), count).unwrap()];
        BuddyAllocator::new(&r, &[], vec![0; metadata_len(&r).unwrap()]).unwrap()
    }

    #[test]
    fn hands_out_and_takes_back_4k_and_2m_frames() {
        let mut a = buddy(0, 2048);
        let f = X86FrameAllocator::<Size4KiB>::allocate_frame(&mut a).unwrap();
        assert_eq!(f.start_address().as_u64(), 0);
        let big = X86FrameAllocator::<Size2MiB>::allocate_frame(&mut a).unwrap();
        // Best fit: the upper half of the block frame 0 was split from.
        assert_eq!(big.start_address().as_u64(), 512 * 4096);
        let none = X86FrameAllocator::<Size1GiB>::allocate_frame(&mut a);
        assert!(none.is_none());
        assert_eq!(a.stats().allocated_frames, 513);
        // The wrong size is refused and changes nothing.
        assert_eq!(
            a.deallocate_x86_64_frame(PhysFrame::<Size4KiB>::containing_address(
                big.start_address()
            )),
            Err(PhysError::WrongOrder {
                addr: from_x86_64_frame(big).start_address(),
                allocated: 9,
                freed: 0
            })
        );
        // SAFETY (of the trait's contract): both frames are unused.
        unsafe {
            FrameDeallocator::<Size2MiB>::deallocate_frame(&mut a, big);
            FrameDeallocator::<Size4KiB>::deallocate_frame(&mut a, f);
        }
        assert_eq!(a.stats().allocated_frames, 0);
        a.check_invariants().unwrap();
    }

    #[test]
    fn frames_beyond_52_bits_are_not_handed_out() {
        // Frames at 2^52 and above exist for vmspace but not for the crate's PhysAddr.
        let mut a = buddy(1 << 40, 4);
        let f = X86FrameAllocator::<Size4KiB>::allocate_frame(&mut a);
        assert!(f.is_none());
        assert_eq!(a.stats().allocated_frames, 0);
        a.check_invariants().unwrap();
    }
}
