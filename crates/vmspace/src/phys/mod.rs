//! Physical memory: the seams through which every layer above reads, writes and allocates
//! physical frames.
//!
//! - [`PhysMem`]: read, write, zero and copy physical memory. The simulator backs it with a
//!   byte vector; a kernel with its physical-memory window.
//! - [`FrameAllocator`]: allocate and free naturally aligned blocks of `2^order` 4 KiB frames.
//! - [`BuddyAllocator`]: the frame allocator, over a memory map with holes, kept in
//!   cache-sized bitmaps, with per-frame reference counts ([`FrameInfo`]: state, order,
//!   reference count) and [`FrameStats`].
//! - `x86_64_crate` (feature `x86_64-crate`): the buddy allocator as the `x86_64` crate's
//!   `FrameAllocator` and `FrameDeallocator`.

use crate::addr::{Frame, PhysAddr, PAGE_SIZE};
use core::fmt;

/// A physical access or allocation that cannot be done as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PhysError {
    /// The access or frame lies (partly) outside the physical memory this object manages.
    OutOfRange { addr: PhysAddr, len: u64 },
    /// The address is not aligned as the operation requires.
    Misaligned(PhysAddr),
    /// No free block of the requested order exists.
    OutOfMemory { order: u8 },
    /// The order is above the allocator's maximum.
    BadOrder(u8),
    /// The block being freed is not allocated (never was, or was freed already).
    NotAllocated(PhysAddr),
    /// The block being freed was allocated with another order.
    WrongOrder {
        addr: PhysAddr,
        allocated: u8,
        freed: u8,
    },
    /// A reference count would pass `u32::MAX` or drop below zero.
    BadRefCount(PhysAddr),
}

impl fmt::Display for PhysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PhysError::OutOfRange { addr, len } => {
                write!(
                    f,
                    "physical range {addr}+{len:#x} is outside managed memory"
                )
            }
            PhysError::Misaligned(a) => write!(f, "physical address {a} is misaligned"),
            PhysError::OutOfMemory { order } => write!(f, "no free block of order {order}"),
            PhysError::BadOrder(o) => write!(f, "order {o} is above the maximum"),
            PhysError::NotAllocated(a) => write!(f, "frame {a} is not allocated"),
            PhysError::WrongOrder {
                addr,
                allocated,
                freed,
            } => write!(
                f,
                "frame {addr} was allocated with order {allocated}, freed with order {freed}"
            ),
            PhysError::BadRefCount(a) => {
                write!(
                    f,
                    "reference count of frame {a} would overflow or underflow"
                )
            }
        }
    }
}

/// Byte access to physical memory.
///
/// Implementations must bounds-check every access and return `OutOfRange` instead of
/// panicking. The `u32`/`u64` accessors are little-endian (as x86 page-table entries are);
/// override them when the backend has a faster path.
pub trait PhysMem {
    /// Reads `buf.len()` bytes starting at `addr`.
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError>;

    /// Writes `data` starting at `addr`.
    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), PhysError>;

    /// Reads a little-endian `u32`.
    fn read_u32(&self, addr: PhysAddr) -> Result<u32, PhysError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian `u32`.
    fn write_u32(&mut self, addr: PhysAddr, v: u32) -> Result<(), PhysError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Reads a little-endian `u64`.
    fn read_u64(&self, addr: PhysAddr) -> Result<u64, PhysError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian `u64`.
    fn write_u64(&mut self, addr: PhysAddr, v: u64) -> Result<(), PhysError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Fills a 4 KiB frame with zeros.
    fn zero_frame(&mut self, frame: Frame) -> Result<(), PhysError> {
        const ZEROS: [u8; 512] = [0; 512];
        let base = frame.start_address();
        let mut off = 0;
        while off < PAGE_SIZE {
            self.write(PhysAddr::new(base.as_u64() + off), &ZEROS)?;
            off += ZEROS.len() as u64;
        }
        Ok(())
    }

    /// Copies the 4 KiB frame `from` into `to`.
    fn copy_frame(&mut self, from: Frame, to: Frame) -> Result<(), PhysError> {
        let mut buf = [0u8; 512];
        let mut off = 0;
        while off < PAGE_SIZE {
            self.read(PhysAddr::new(from.start_address().as_u64() + off), &mut buf)?;
            self.write(PhysAddr::new(to.start_address().as_u64() + off), &buf)?;
            off += buf.len() as u64;
        }
        Ok(())
    }
}

/// Allocation of naturally aligned blocks of `2^order` contiguous 4 KiB frames.
///
/// A block must be freed with the order it was allocated with. Implementations detect frees
/// of blocks they never handed out, or handed out and took back already, and return an
/// error without changing anything.
pub trait FrameAllocator {
    /// Allocates a block of `2^order` frames aligned to its size. The contents are undefined.
    fn allocate(&mut self, order: u8) -> Result<Frame, PhysError>;

    /// Returns a block allocated with `order`.
    fn deallocate(&mut self, frame: Frame, order: u8) -> Result<(), PhysError>;

    /// Allocates one 4 KiB frame.
    fn allocate_frame(&mut self) -> Result<Frame, PhysError> {
        self.allocate(0)
    }

    /// Frees one 4 KiB frame.
    fn deallocate_frame(&mut self, frame: Frame) -> Result<(), PhysError> {
        self.deallocate(frame, 0)
    }

    /// Allocates a block of `2^order` frames and zero-fills it through `mem` (a frame handed
    /// to a process must never carry another's data). If zeroing fails the block is freed
    /// again and the error returned.
    fn allocate_zeroed<P: PhysMem + ?Sized>(
        &mut self,
        mem: &mut P,
        order: u8,
    ) -> Result<Frame, PhysError>
    where
        Self: Sized,
    {
        let block = self.allocate(order)?;
        for k in 0..1u64 << order {
            let zeroed = block.checked_add(k).map_err(|_| PhysError::OutOfRange {
                addr: block.start_address(),
                len: PAGE_SIZE << order,
            });
            if let Err(e) = zeroed.and_then(|f| mem.zero_frame(f)) {
                // The block was just handed out with this order, so taking it back cannot fail.
                let _ = self.deallocate(block, order);
                return Err(e);
            }
        }
        Ok(block)
    }
}

mod bitmap;
mod buddy;
mod frame_info;
#[cfg(feature = "alloc")]
mod ram;
#[cfg(feature = "x86_64-crate")]
pub mod x86_64_crate;

#[cfg(feature = "alloc")]
pub use buddy::OwnedBuddyAllocator;
pub use buddy::{
    metadata_len, BuddyAllocator, InvariantError, MemoryMapError, MAX_ORDER, MAX_SECTIONS, ORDERS,
};
pub use frame_info::{FrameInfo, FrameState, FrameStats};
#[cfg(feature = "alloc")]
pub use ram::EmulatedRam;
