//! Test-only helpers: a bitmap frame allocator of single frames with an optional budget.

extern crate alloc;
use crate::addr::{Frame, PhysAddr, PAGE_SIZE};
use crate::phys::{FrameAllocator, PhysError};
use alloc::vec;
use alloc::vec::Vec;

/// Hands out single 4 KiB frames of `[base, base + count * 4 KiB)`, lowest first.
pub struct BitmapFrames {
    base: u64,
    used: Vec<bool>,
    free: usize,
    /// If set, allocations fail with `OutOfMemory` once this many more have succeeded.
    pub budget: Option<usize>,
}

impl BitmapFrames {
    pub fn new(base: PhysAddr, count: usize) -> Self {
        BitmapFrames {
            base: base.as_u64(),
            used: vec![false; count],
            free: count,
            budget: None,
        }
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> usize {
        self.free
    }

    /// Whether `frame` is currently handed out.
    #[allow(dead_code)]
    pub fn is_allocated(&self, frame: Frame) -> bool {
        let a = frame.start_address().as_u64();
        a >= self.base
            && ((a - self.base) / PAGE_SIZE) < self.used.len() as u64
            && self.used[((a - self.base) / PAGE_SIZE) as usize]
    }
}

impl FrameAllocator for BitmapFrames {
    fn allocate(&mut self, order: u8) -> Result<Frame, PhysError> {
        if order != 0 {
            return Err(PhysError::BadOrder(order));
        }
        if let Some(b) = self.budget.as_mut() {
            if *b == 0 {
                return Err(PhysError::OutOfMemory { order });
            }
            *b -= 1;
        }
        let i = self
            .used
            .iter()
            .position(|u| !*u)
            .ok_or(PhysError::OutOfMemory { order })?;
        self.used[i] = true;
        self.free -= 1;
        Ok(Frame::containing(PhysAddr::new(
            self.base + i as u64 * PAGE_SIZE,
        )))
    }

    fn deallocate(&mut self, frame: Frame, order: u8) -> Result<(), PhysError> {
        let a = frame.start_address();
        if order != 0 {
            return Err(PhysError::BadOrder(order));
        }
        let off = a.as_u64().wrapping_sub(self.base) / PAGE_SIZE;
        if a.as_u64() < self.base || off >= self.used.len() as u64 || !self.used[off as usize] {
            return Err(PhysError::NotAllocated(a));
        }
        self.used[off as usize] = false;
        self.free += 1;
        Ok(())
    }
}
