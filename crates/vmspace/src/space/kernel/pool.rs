//! Range pools: the vmem arenas that hand out virtual ranges of one region — the kernel range
//! pool (one [`Arena`](crate::range::Arena) for all processes, because the kernel half is
//! shared) and each process's user range pool (one per process).
//!
//! A pool only hands out address ranges; mapping them is the caller's business. Sizes are
//! rounded up to the pool's quantum (4 KiB in the kernel, 64 KiB in user space, W1).

use super::layout::Span;
use crate::range::{ArenaError, Constraints, HeapArena, NoParent, Policy};

/// Virtual ranges of one region, allocated with instant fit.
pub struct RangePool {
    arena: HeapArena<NoParent>,
    span: Span,
}

impl core::fmt::Debug for RangePool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RangePool")
            .field("span", &self.span)
            .field("quantum", &self.arena.quantum())
            .field("allocated", &self.arena.allocated_bytes())
            .finish()
    }
}

impl RangePool {
    /// A pool over `span` (both ends multiples of `quantum`, a power of two).
    pub fn new(span: Span, quantum: u64) -> Result<Self, ArenaError> {
        let mut arena = HeapArena::on_heap(quantum, Policy::InstantFit, NoParent)?;
        arena.add_span(span.start, span.len())?;
        Ok(RangePool { arena, span })
    }

    /// The region the pool covers.
    pub fn span(&self) -> Span {
        self.span
    }

    /// The allocation unit.
    pub fn quantum(&self) -> u64 {
        self.arena.quantum()
    }

    /// `size` rounded up to the quantum (`Overflow` past 2^64, `ZeroSize` for 0).
    pub fn round(&self, size: u64) -> Result<u64, ArenaError> {
        if size == 0 {
            return Err(ArenaError::ZeroSize);
        }
        size.checked_next_multiple_of(self.quantum())
            .ok_or(ArenaError::Overflow)
    }

    /// A free range of at least `size` bytes (rounded up to the quantum).
    pub fn alloc(&mut self, size: u64) -> Result<u64, ArenaError> {
        let size = self.round(size)?;
        self.arena.alloc(size)
    }

    /// The range `[addr, addr + size)` (size rounded up) if it is wholly free; `NoSpace` if
    /// any of it is taken or it lies outside the pool, `Misaligned` if `addr` is not a
    /// multiple of the quantum.
    pub fn alloc_at(&mut self, addr: u64, size: u64) -> Result<u64, ArenaError> {
        let size = self.round(size)?;
        let last = addr.checked_add(size - 1).ok_or(ArenaError::Overflow)?;
        let c = Constraints {
            minaddr: addr,
            maxaddr: last,
            ..Constraints::default()
        };
        self.arena.xalloc(size, c, Policy::BestFit)
    }

    /// Gives back a range from [`RangePool::alloc`] / [`RangePool::alloc_at`] (same size as
    /// asked, rounded the same way). A range never handed out or freed twice is a typed
    /// error and changes nothing.
    pub fn free(&mut self, base: u64, size: u64) -> Result<(), ArenaError> {
        let size = self.round(size)?;
        self.arena.free(base, size)
    }

    /// Bytes handed out.
    pub fn allocated_bytes(&self) -> u64 {
        self.arena.allocated_bytes() as u64
    }

    /// Ranges handed out.
    pub fn allocated_ranges(&self) -> usize {
        self.arena.allocated_segments()
    }

    /// Whether `addr` lies in a range handed out.
    pub fn is_allocated(&self, addr: u64) -> bool {
        self.arena.segments().any(|s| {
            s.kind == crate::range::Kind::Alloc && addr >= s.start && addr - s.start < s.size
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_the_quantum_and_refuses_bad_frees() {
        let mut p = RangePool::new(
            Span {
                start: 0x4000_0000,
                end: 0x4010_0000,
            },
            64 << 10,
        )
        .unwrap();
        let a = p.alloc(1).unwrap();
        assert_eq!(a % (64 << 10), 0);
        assert_eq!(p.allocated_bytes(), 64 << 10);
        assert!(p.is_allocated(a + 100));
        assert_eq!(p.alloc_at(a, 4096), Err(ArenaError::NoSpace), "taken");
        assert_eq!(p.alloc(0), Err(ArenaError::ZeroSize));
        assert_eq!(p.alloc(u64::MAX), Err(ArenaError::Overflow));
        assert_eq!(p.free(a + (64 << 10), 1), Err(ArenaError::DoubleFree));
        p.free(a, 4096).unwrap();
        assert_eq!(p.free(a, 4096), Err(ArenaError::DoubleFree));
        assert_eq!(p.allocated_bytes(), 0);
        let b = p.alloc_at(0x400f_0000, 64 << 10).unwrap();
        assert_eq!(b, 0x400f_0000);
        assert_eq!(
            p.alloc_at(0x4010_0000, 64 << 10),
            Err(ArenaError::NoSpace),
            "outside"
        );
    }
}
