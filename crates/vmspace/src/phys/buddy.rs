//! The buddy frame allocator: naturally aligned blocks of `2^order` frames, orders
//! `0..=MAX_ORDER`, over several physical ranges with holes.
//!
//! Every managed frame has a [`FrameInfo`]; free blocks are kept on one intrusive doubly-linked
//! list per order, threaded through the entries by index. Hence every step is O(1): finding a
//! block's buddy is an index computation (`pfn ^ 2^order`), checking that it is free is one
//! look at its entry, and taking it off its list is an unlink — no list is ever walked.
//! Allocation picks the smallest non-empty order from a bitmask and splits; freeing merges
//! with the buddy as long as it is a free block of the same order (full coalescing).
//!
//! No heap is needed: the caller provides the metadata (`&mut [FrameInfo]` of
//! [`metadata_len`] entries). With the `alloc` feature, [`BuddyAllocator::new_owned`]
//! allocates it.
//!
//! Frees are checked: a block freed twice, a frame never allocated (a tail of a block, a
//! reserved frame), the wrong order, a frame outside the managed ranges or not aligned to its
//! order each return a [`PhysError`] and change nothing.

use super::frame_info::{FrameInfo, FrameState, FrameStats, NIL};
use super::{FrameAllocator, PhysError};
use crate::addr::{Frame, FrameRange, PhysAddr, PAGE_SHIFT};
use core::fmt;
use core::ops::DerefMut;

/// Largest order: blocks of `2^10` frames, 4 MiB (one i386 PSE page, two x86-64 2 MiB pages).
pub const MAX_ORDER: u8 = 10;
/// Number of orders, `MAX_ORDER + 1`.
pub const ORDERS: usize = MAX_ORDER as usize + 1;
/// Most disjoint ranges a memory map may have once adjacent and overlapping ones are merged.
pub const MAX_SECTIONS: usize = 64;

/// A memory map the buddy allocator cannot manage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryMapError {
    /// More than [`MAX_SECTIONS`] disjoint usable ranges.
    TooManyRanges,
    /// More frames than 32-bit metadata indices can name (16 TiB).
    TooManyFrames,
    /// The metadata storage holds fewer entries than the map needs.
    MetadataTooSmall { needed: usize, given: usize },
}

impl fmt::Display for MemoryMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemoryMapError::TooManyRanges => {
                write!(f, "memory map has more than {MAX_SECTIONS} disjoint ranges")
            }
            MemoryMapError::TooManyFrames => f.write_str("memory map has too many frames"),
            MemoryMapError::MetadataTooSmall { needed, given } => {
                write!(f, "metadata holds {given} entries, the map needs {needed}")
            }
        }
    }
}

/// A structural invariant of the allocator that does not hold (a bug, never caller input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InvariantError {
    /// Which invariant.
    pub what: &'static str,
    /// The frame number where it was found.
    pub pfn: u64,
}

impl fmt::Display for InvariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "buddy invariant broken at pfn {:#x}: {}",
            self.pfn, self.what
        )
    }
}

/// A maximal run of usable frames with its slice of the metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Section {
    /// First frame number.
    start: u64,
    /// Exclusive end frame number.
    end: u64,
    /// Metadata index of `start`.
    base: u32,
}

const EMPTY_SECTION: Section = Section {
    start: 0,
    end: 0,
    base: 0,
};

/// The usable ranges sorted, with overlapping and adjacent ones merged.
struct Sections {
    list: [Section; MAX_SECTIONS],
    len: usize,
}

impl Sections {
    fn from_map(usable: &[FrameRange]) -> Result<Self, MemoryMapError> {
        let mut s = Sections {
            list: [EMPTY_SECTION; MAX_SECTIONS],
            len: 0,
        };
        for r in usable.iter().filter(|r| !r.is_empty()) {
            // Frame numbers are below 2^52, so `end` cannot overflow.
            s.insert(r.start().number(), r.start().number() + r.count())?;
        }
        let mut base: u64 = 0;
        for sec in &mut s.list[..s.len] {
            if base + (sec.end - sec.start) >= NIL as u64 {
                return Err(MemoryMapError::TooManyFrames);
            }
            sec.base = base as u32;
            base += sec.end - sec.start;
        }
        Ok(s)
    }

    /// Adds `[start, end)`, merging it with every section it overlaps or touches.
    fn insert(&mut self, mut start: u64, mut end: u64) -> Result<(), MemoryMapError> {
        let secs = &self.list[..self.len];
        // First section that ends at or after `start` and last that starts at or before `end`.
        let lo = secs.partition_point(|s| s.end < start);
        let hi = secs.partition_point(|s| s.start <= end);
        if lo < hi {
            start = start.min(secs[lo].start);
            end = end.max(secs[hi - 1].end);
            self.list[lo] = Section {
                start,
                end,
                base: 0,
            };
            self.list.copy_within(hi..self.len, lo + 1);
            self.len -= hi - lo - 1;
        } else {
            if self.len == MAX_SECTIONS {
                return Err(MemoryMapError::TooManyRanges);
            }
            self.list.copy_within(lo..self.len, lo + 1);
            self.list[lo] = Section {
                start,
                end,
                base: 0,
            };
            self.len += 1;
        }
        Ok(())
    }

    fn frames(&self) -> u64 {
        self.list[..self.len].iter().map(|s| s.end - s.start).sum()
    }
}

/// How many [`FrameInfo`] entries a memory map with these usable ranges needs: one per
/// usable frame (reserved frames inside them included, holes between them excluded).
pub fn metadata_len(usable: &[FrameRange]) -> Result<usize, MemoryMapError> {
    let s = Sections::from_map(usable)?;
    usize::try_from(s.frames()).map_err(|_| MemoryMapError::TooManyFrames)
}

/// Buddy allocator of 4 KiB frames over a memory map with holes; see the [module](self) docs.
///
/// `M` is the metadata storage: `&mut [FrameInfo]` without a heap, `Box<[FrameInfo]>` or
/// `Vec<FrameInfo>` with one.
pub struct BuddyAllocator<M> {
    meta: M,
    sections: [Section; MAX_SECTIONS],
    nsections: usize,
    /// Head of the free list of each order (metadata index), or `NIL`.
    heads: [u32; ORDERS],
    /// Bit `k` set when the free list of order `k` is not empty.
    nonempty: u16,
    free_blocks: [u64; ORDERS],
    total_frames: u64,
    reserved_frames: u64,
    free_frames: u64,
}

/// A buddy allocator that owns its metadata.
#[cfg(feature = "alloc")]
pub type OwnedBuddyAllocator = BuddyAllocator<alloc::boxed::Box<[FrameInfo]>>;

#[cfg(feature = "alloc")]
impl BuddyAllocator<alloc::boxed::Box<[FrameInfo]>> {
    /// An allocator over `usable` minus `reserved` that allocates its own metadata.
    pub fn new_owned(
        usable: &[FrameRange],
        reserved: &[FrameRange],
    ) -> Result<Self, MemoryMapError> {
        let n = metadata_len(usable)?;
        let meta = alloc::vec![FrameInfo::EMPTY; n].into_boxed_slice();
        BuddyAllocator::new(usable, reserved, meta)
    }
}

impl<M: DerefMut<Target = [FrameInfo]>> BuddyAllocator<M> {
    /// An allocator over the frames of `usable` that are not in `reserved`, keeping its
    /// metadata in `meta` (at least [`metadata_len`]`(usable)` entries; extra ones are
    /// unused).
    ///
    /// Ranges may be given in any order and may overlap or touch; reserved ranges may reach
    /// outside the usable ones. Every free frame starts in the largest aligned block that
    /// fits, so the allocator starts fully coalesced. Takes time linear in the frame count.
    pub fn new(
        usable: &[FrameRange],
        reserved: &[FrameRange],
        mut meta: M,
    ) -> Result<Self, MemoryMapError> {
        let secs = Sections::from_map(usable)?;
        let total = secs.frames();
        let needed = usize::try_from(total).map_err(|_| MemoryMapError::TooManyFrames)?;
        if meta.len() < needed {
            return Err(MemoryMapError::MetadataTooSmall {
                needed,
                given: meta.len(),
            });
        }
        // Every frame starts as a tail of nothing; reserved ranges then mark theirs.
        for (si, sec) in secs.list[..secs.len].iter().enumerate() {
            let base = sec.base as usize;
            let n = (sec.end - sec.start) as usize;
            for e in &mut meta[base..base + n] {
                *e = FrameInfo {
                    state: FrameState::Tail,
                    section: si as u16,
                    ..FrameInfo::EMPTY
                };
            }
        }
        let mut reserved_frames = 0;
        for r in reserved.iter().filter(|r| !r.is_empty()) {
            let (rs, re) = (r.start().number(), r.start().number() + r.count());
            for sec in &secs.list[..secs.len] {
                let (s, e) = (rs.max(sec.start), re.min(sec.end));
                for pfn in s..e {
                    let e = &mut meta[(sec.base as u64 + pfn - sec.start) as usize];
                    if e.state != FrameState::Reserved {
                        e.state = FrameState::Reserved;
                        reserved_frames += 1;
                    }
                }
            }
        }
        let mut a = BuddyAllocator {
            meta,
            sections: secs.list,
            nsections: secs.len,
            heads: [NIL; ORDERS],
            nonempty: 0,
            free_blocks: [0; ORDERS],
            total_frames: total,
            reserved_frames,
            free_frames: 0,
        };
        // Carve each run of non-reserved frames into maximal aligned blocks. Pushing them from
        // the top down leaves the lowest addresses at the list heads.
        for si in (0..a.nsections).rev() {
            let sec = a.sections[si];
            let mut pfn = sec.end;
            while pfn > sec.start {
                // Find the run of non-reserved frames ending at `pfn`.
                let run_end = pfn;
                while pfn > sec.start && a.meta[a.index_in(&sec, pfn - 1)].state == FrameState::Tail
                {
                    pfn -= 1;
                }
                a.carve(&sec, pfn, run_end);
                while pfn > sec.start
                    && a.meta[a.index_in(&sec, pfn - 1)].state == FrameState::Reserved
                {
                    pfn -= 1;
                }
            }
        }
        Ok(a)
    }

    /// Puts the free run `[start, end)` of `sec` on the free lists as maximal aligned blocks.
    ///
    /// The maximal aligned blocks inside a run are unique, so they can be found from the top
    /// down; pushing them in that order leaves the lowest block at each list head.
    fn carve(&mut self, sec: &Section, start: u64, end: u64) {
        let mut pfn = end;
        while pfn > start {
            let align = pfn.trailing_zeros();
            let fit = 63 - (pfn - start).leading_zeros();
            let order = align.min(fit).min(MAX_ORDER as u32) as u8;
            pfn -= 1 << order;
            let i = self.index_in(sec, pfn);
            self.push(i, order);
            self.free_blocks[order as usize] += 1;
            self.free_frames += 1 << order;
        }
    }

    #[inline]
    fn index_in(&self, sec: &Section, pfn: u64) -> usize {
        (sec.base as u64 + (pfn - sec.start)) as usize
    }

    /// The section holding frame `pfn`.
    #[inline]
    fn section_of(&self, pfn: u64) -> Option<&Section> {
        let secs = &self.sections[..self.nsections];
        let i = secs.partition_point(|s| s.end <= pfn);
        secs.get(i).filter(|s| s.start <= pfn)
    }

    /// Frame number of metadata index `i`.
    #[inline]
    fn pfn_of(&self, i: usize) -> u64 {
        let sec = &self.sections[self.meta[i].section as usize];
        sec.start + (i as u64 - sec.base as u64)
    }

    /// Pushes block `i` on the free list of `order`, marking it a free head.
    #[inline]
    fn push(&mut self, i: usize, order: u8) {
        let head = self.heads[order as usize];
        {
            let e = &mut self.meta[i];
            e.state = FrameState::Free;
            e.order = order;
            e.refs = 0;
            e.prev = NIL;
            e.next = head;
        }
        if head != NIL {
            self.meta[head as usize].prev = i as u32;
        }
        self.heads[order as usize] = i as u32;
        self.nonempty |= 1 << order;
    }

    /// Takes free block `i` off the free list of `order` (its state is left to the caller).
    ///
    /// The `prev` link of a list head is never read (the head is recognised through
    /// `heads`), so taking the head off does not touch the next block's entry: popping a
    /// recently freed block stays within one cache line.
    #[inline]
    fn unlink(&mut self, i: usize, order: u8) {
        let FrameInfo { next, prev, .. } = self.meta[i];
        if self.heads[order as usize] == i as u32 {
            self.heads[order as usize] = next;
            if next == NIL {
                self.nonempty &= !(1 << order);
            }
        } else {
            self.meta[prev as usize].next = next;
            if next != NIL {
                self.meta[next as usize].prev = prev;
            }
        }
    }

    /// The metadata index of an allocated head `frame`, after the checks every operation on
    /// a block makes: in range, aligned to `order`, allocated.
    fn allocated_head(&self, frame: Frame, order: Option<u8>) -> Result<usize, PhysError> {
        let pfn = frame.number();
        let addr = frame.start_address();
        let len_order = order.unwrap_or(0);
        let sec = self.section_of(pfn).ok_or(PhysError::OutOfRange {
            addr,
            len: 1 << (PAGE_SHIFT + len_order as u32),
        })?;
        if pfn & ((1u64 << len_order) - 1) != 0 {
            return Err(PhysError::Misaligned(addr));
        }
        let i = self.index_in(sec, pfn);
        let e = &self.meta[i];
        if e.state != FrameState::Allocated {
            return Err(PhysError::NotAllocated(addr));
        }
        if let Some(order) = order {
            if e.order != order {
                return Err(PhysError::WrongOrder {
                    addr,
                    allocated: e.order,
                    freed: order,
                });
            }
        }
        Ok(i)
    }

    /// Returns allocated block `i` of `order` (checked by the caller), merging with its buddies.
    fn release(&mut self, mut i: usize, order: u8) {
        let sec = self.sections[self.meta[i].section as usize];
        let mut pfn = sec.start + (i as u64 - sec.base as u64);
        let mut o = order;
        while o < MAX_ORDER {
            let size = 1u64 << o;
            let buddy = pfn ^ size;
            if buddy < sec.start || buddy >= sec.end {
                break;
            }
            let bi = if buddy > pfn {
                i + size as usize
            } else {
                i - size as usize
            };
            if !self.meta[bi].is_free_head_of(o) {
                break;
            }
            self.unlink(bi, o);
            self.free_blocks[o as usize] -= 1;
            let upper = i.max(bi);
            self.meta[upper].state = FrameState::Tail;
            self.meta[upper].order = 0;
            self.meta[upper].refs = 0;
            i = i.min(bi);
            pfn = pfn.min(buddy);
            o += 1;
        }
        self.push(i, o);
        self.free_blocks[o as usize] += 1;
        self.free_frames += 1 << order;
    }

    /// Counts of total, reserved, free and allocated frames and free blocks per order.
    pub fn stats(&self) -> FrameStats {
        FrameStats {
            total_frames: self.total_frames,
            reserved_frames: self.reserved_frames,
            free_frames: self.free_frames,
            allocated_frames: self.total_frames - self.reserved_frames - self.free_frames,
            free_blocks: self.free_blocks,
        }
    }

    /// The metadata of `frame`, or `None` outside the managed ranges.
    pub fn frame_info(&self, frame: Frame) -> Option<&FrameInfo> {
        let pfn = frame.number();
        let sec = self.section_of(pfn)?;
        Some(&self.meta[self.index_in(sec, pfn)])
    }

    /// The managed ranges (usable ranges merged), in address order.
    pub fn ranges(&self) -> impl Iterator<Item = FrameRange> + '_ {
        self.sections[..self.nsections].iter().filter_map(|s| {
            let f = Frame::from_number(s.start).ok()?;
            FrameRange::new(f, s.end - s.start).ok()
        })
    }

    /// The free blocks of `order` in list order (most recently freed first). Empty for an
    /// order above `MAX_ORDER`.
    pub fn free_blocks(&self, order: u8) -> impl Iterator<Item = Frame> + '_ {
        let mut i = if order <= MAX_ORDER {
            self.heads[order as usize]
        } else {
            NIL
        };
        // Bounded by the frame count so that even a corrupted (cyclic) list ends.
        let mut budget = self.total_frames;
        core::iter::from_fn(move || {
            if i == NIL || budget == 0 {
                return None;
            }
            budget -= 1;
            let pfn = self.pfn_of(i as usize);
            i = self.meta[i as usize].next;
            Frame::from_number(pfn).ok()
        })
    }

    /// The reference count of allocated block `frame`.
    pub fn ref_count(&self, frame: Frame) -> Result<u32, PhysError> {
        let i = self.allocated_head(frame, None)?;
        Ok(self.meta[i].refs)
    }

    /// Adds an owner to allocated block `frame` (a new sharer); returns the new count.
    /// `BadRefCount` if the count is at `u32::MAX`.
    pub fn inc_ref(&mut self, frame: Frame) -> Result<u32, PhysError> {
        let i = self.allocated_head(frame, None)?;
        let e = &mut self.meta[i];
        e.refs = e
            .refs
            .checked_add(1)
            .ok_or(PhysError::BadRefCount(frame.start_address()))?;
        Ok(e.refs)
    }

    /// Removes an owner from allocated block `frame`; returns the new count. Reaching 0 does
    /// **not** free the block: its last owner must still [`deallocate`](FrameAllocator::deallocate)
    /// it (or use [`put`](Self::put) instead). `BadRefCount` if the count is 0 already.
    pub fn dec_ref(&mut self, frame: Frame) -> Result<u32, PhysError> {
        let i = self.allocated_head(frame, None)?;
        let e = &mut self.meta[i];
        e.refs = e
            .refs
            .checked_sub(1)
            .ok_or(PhysError::BadRefCount(frame.start_address()))?;
        Ok(e.refs)
    }

    /// Drops an owner of allocated block `frame` and frees the block when it was the last:
    /// returns `Some(order)` of the freed block, or `None` while owners remain.
    /// `BadRefCount` if the count is 0 already (nothing changes).
    pub fn put(&mut self, frame: Frame) -> Result<Option<u8>, PhysError> {
        let i = self.allocated_head(frame, None)?;
        match self.meta[i].refs {
            0 => Err(PhysError::BadRefCount(frame.start_address())),
            1 => {
                let order = self.meta[i].order;
                self.release(i, order);
                Ok(Some(order))
            }
            _ => {
                self.meta[i].refs -= 1;
                Ok(None)
            }
        }
    }

    /// Checks every structural invariant; O(frames). For tests and debugging.
    ///
    /// Free blocks are aligned to their order, lie inside one range, do not overlap any other
    /// block and are on the list of their order, exactly once; no two free buddies share an
    /// order (full coalescing); the list links, the non-empty mask and every count agree.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        let fail = |what, pfn| Err(InvariantError { what, pfn });
        let mut free_heads = [0u64; ORDERS];
        let (mut free, mut allocated, mut reserved) = (0u64, 0u64, 0u64);
        // 1. A linear scan: every frame is a head followed by exactly its tails, or reserved.
        for (si, sec) in self.sections[..self.nsections].iter().enumerate() {
            let mut pfn = sec.start;
            while pfn < sec.end {
                let e = &self.meta[self.index_in(sec, pfn)];
                if e.section as usize != si {
                    return fail("entry records the wrong section", pfn);
                }
                match e.state {
                    FrameState::Reserved => {
                        reserved += 1;
                        pfn += 1;
                        continue;
                    }
                    FrameState::Tail => return fail("tail frame without a head below it", pfn),
                    FrameState::Free | FrameState::Allocated => {}
                }
                if e.order > MAX_ORDER {
                    return fail("order above MAX_ORDER", pfn);
                }
                let size = 1u64 << e.order;
                if pfn & (size - 1) != 0 {
                    return fail("block not aligned to its order", pfn);
                }
                if sec.end - pfn < size {
                    return fail("block runs past the end of its range", pfn);
                }
                if e.state == FrameState::Free {
                    if e.refs != 0 {
                        return fail("free block with a reference count", pfn);
                    }
                    free += size;
                    free_heads[e.order as usize] += 1;
                    let buddy = pfn ^ size;
                    if e.order < MAX_ORDER && buddy >= sec.start && buddy < sec.end {
                        let b = &self.meta[self.index_in(sec, buddy)];
                        if b.is_free_head_of(e.order) {
                            return fail("free buddies of the same order not coalesced", pfn);
                        }
                    }
                } else {
                    allocated += size;
                }
                for t in pfn + 1..pfn + size {
                    if self.meta[self.index_in(sec, t)].state != FrameState::Tail {
                        return fail("block overlaps another block or a reserved frame", t);
                    }
                }
                pfn += size;
            }
        }
        // 2. The lists: consistent links, right order, one entry per free head.
        for order in 0..=MAX_ORDER {
            let mut n = 0u64;
            let mut prev = NIL;
            let mut i = self.heads[order as usize];
            while i != NIL {
                let idx = i as usize;
                let Some(e) = self.meta.get(idx) else {
                    return fail("free-list link outside the metadata", u64::from(i));
                };
                let pfn = self.pfn_of(idx);
                if !e.is_free_head_of(order) {
                    return fail("list entry is not a free block of the list's order", pfn);
                }
                if prev != NIL && e.prev != prev {
                    return fail("free-list back link is wrong", pfn);
                }
                n += 1;
                if n > free_heads[order as usize] {
                    return fail("free list longer than the free blocks of its order", pfn);
                }
                prev = i;
                i = e.next;
            }
            if n != free_heads[order as usize] {
                return fail("free block missing from its list", u64::from(order));
            }
            if n != self.free_blocks[order as usize] {
                return fail("free-block count disagrees with the list", u64::from(order));
            }
            if (n != 0) != (self.nonempty & (1 << order) != 0) {
                return fail("non-empty mask disagrees with the list", u64::from(order));
            }
        }
        if free != self.free_frames {
            return fail("free-frame count disagrees with the blocks", free);
        }
        if reserved != self.reserved_frames {
            return fail("reserved-frame count disagrees with the metadata", reserved);
        }
        if free + allocated + reserved != self.total_frames {
            return fail("frame counts do not add up to the total", allocated);
        }
        Ok(())
    }
}

impl<M: DerefMut<Target = [FrameInfo]>> FrameAllocator for BuddyAllocator<M> {
    /// Takes a block from the smallest non-empty order at or above `order`, splitting it;
    /// the block's reference count starts at 1. O(MAX_ORDER).
    fn allocate(&mut self, order: u8) -> Result<Frame, PhysError> {
        if order > MAX_ORDER {
            return Err(PhysError::BadOrder(order));
        }
        let avail = self.nonempty >> order;
        if avail == 0 {
            return Err(PhysError::OutOfMemory { order });
        }
        let mut o = order + avail.trailing_zeros() as u8;
        let i = self.heads[o as usize] as usize;
        self.unlink(i, o);
        self.free_blocks[o as usize] -= 1;
        while o > order {
            o -= 1;
            self.push(i + (1usize << o), o);
            self.free_blocks[o as usize] += 1;
        }
        let e = &mut self.meta[i];
        e.state = FrameState::Allocated;
        e.order = order;
        e.refs = 1;
        self.free_frames -= 1 << order;
        let pfn = self.pfn_of(i);
        Frame::from_number(pfn).map_err(|_| PhysError::OutOfRange {
            addr: PhysAddr::new(pfn << PAGE_SHIFT),
            len: 1 << (PAGE_SHIFT + order as u32),
        })
    }

    /// Frees a block allocated with `order`, whatever its reference count (sharers use
    /// [`put`](BuddyAllocator::put)), and merges it with its free buddies. O(MAX_ORDER).
    fn deallocate(&mut self, frame: Frame, order: u8) -> Result<(), PhysError> {
        if order > MAX_ORDER {
            return Err(PhysError::BadOrder(order));
        }
        let i = self.allocated_head(frame, Some(order))?;
        self.release(i, order);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn fr(start_pfn: u64, count: u64) -> FrameRange {
        FrameRange::new(Frame::from_number(start_pfn).unwrap(), count).unwrap()
    }

    fn f(pfn: u64) -> Frame {
        Frame::from_number(pfn).unwrap()
    }

    /// RAM at 0..640 KiB and 1 MiB..16 MiB, the first page and 1 MiB..1 MiB+64 KiB reserved.
    fn pc_map() -> (Vec<FrameRange>, Vec<FrameRange>) {
        (
            vec![fr(0, 160), fr(256, 4096 - 256)],
            vec![fr(0, 1), fr(256, 16)],
        )
    }

    fn free_list(a: &BuddyAllocator<Vec<FrameInfo>>, order: u8) -> Vec<u64> {
        let mut v: Vec<u64> = a.free_blocks(order).map(|f| f.number()).collect();
        v.sort_unstable();
        v
    }

    fn new(usable: &[FrameRange], reserved: &[FrameRange]) -> BuddyAllocator<Vec<FrameInfo>> {
        let n = metadata_len(usable).unwrap();
        BuddyAllocator::new(usable, reserved, vec![FrameInfo::EMPTY; n]).unwrap()
    }

    #[test]
    fn sections_merge_overlapping_and_adjacent_ranges() {
        let a = new(
            &[fr(100, 10), fr(0, 10), fr(10, 5), fr(105, 20), fr(50, 0)],
            &[],
        );
        let r: Vec<(u64, u64)> = a
            .ranges()
            .map(|r| (r.start().number(), r.count()))
            .collect();
        assert_eq!(r, vec![(0, 15), (100, 25)]);
        assert_eq!(metadata_len(&[fr(100, 10), fr(0, 10), fr(10, 5)]), Ok(25));
        // Bridging two sections merges all three.
        assert_eq!(metadata_len(&[fr(0, 10), fr(20, 10), fr(5, 20)]), Ok(30));
        a.check_invariants().unwrap();
    }

    #[test]
    fn starts_fully_coalesced_around_holes_and_reserved_frames() {
        let (u, r) = pc_map();
        let a = new(&u, &r);
        a.check_invariants().unwrap();
        let s = a.stats();
        assert_eq!(s.total_frames, 160 + 3840);
        assert_eq!(s.reserved_frames, 17);
        assert_eq!(s.free_frames, 160 + 3840 - 17);
        assert_eq!(s.allocated_frames, 0);
        // 1..160: 1, 2, 4, 8, 16, 32, 64 (at 64..128), then 128..160 = 32.
        assert_eq!(free_list(&a, 0), vec![1]);
        assert_eq!(free_list(&a, 1), vec![2]);
        assert_eq!(free_list(&a, 2), vec![4]);
        assert_eq!(free_list(&a, 3), vec![8]);
        assert_eq!(free_list(&a, 4), vec![16, 272]);
        assert_eq!(free_list(&a, 5), vec![32, 128, 288]);
        assert_eq!(free_list(&a, 6), vec![64, 320]);
        assert_eq!(free_list(&a, 7), vec![384]);
        assert_eq!(free_list(&a, 8), vec![]);
        assert_eq!(free_list(&a, 9), vec![512]);
        assert_eq!(free_list(&a, 10), vec![1024, 2048, 3072]);
        // The lowest block of each order is handed out first.
        assert_eq!(a.free_blocks(4).next(), Some(f(16)));
    }

    #[test]
    fn allocation_splits_and_freeing_merges_back() {
        let mut a = new(&[fr(0, 1024)], &[]);
        assert_eq!(free_list(&a, 10), vec![0]);
        let x = a.allocate(0).unwrap();
        assert_eq!(x.number(), 0);
        a.check_invariants().unwrap();
        for o in 0..10 {
            assert_eq!(free_list(&a, o), vec![1 << o]);
        }
        let y = a.allocate(3).unwrap();
        assert_eq!(y.number(), 8);
        a.check_invariants().unwrap();
        a.deallocate(x, 0).unwrap();
        a.check_invariants().unwrap();
        a.deallocate(y, 3).unwrap();
        a.check_invariants().unwrap();
        assert_eq!(free_list(&a, 10), vec![0]);
        assert_eq!(a.stats().free_blocks, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn exhausts_then_reports_out_of_memory() {
        let mut a = new(&[fr(3, 5)], &[fr(5, 1)]);
        let mut got = Vec::new();
        while let Ok(x) = a.allocate(0) {
            got.push(x.number());
        }
        got.sort_unstable();
        assert_eq!(got, vec![3, 4, 6, 7]);
        assert_eq!(a.allocate(0), Err(PhysError::OutOfMemory { order: 0 }));
        assert_eq!(a.allocate(MAX_ORDER + 1), Err(PhysError::BadOrder(11)));
        a.check_invariants().unwrap();
        for p in got {
            a.deallocate(f(p), 0).unwrap();
        }
        a.check_invariants().unwrap();
        assert_eq!(a.stats().free_frames, 4);
    }

    #[test]
    fn bad_frees_are_rejected_without_change() {
        let (u, r) = pc_map();
        let mut a = new(&u, &r);
        let x = a.allocate(2).unwrap();
        let before = (a.stats(), a.meta.clone(), a.heads);
        let addr = |fr: Frame| fr.start_address();
        // Tail of an allocated block.
        assert_eq!(
            a.deallocate(f(x.number() + 1), 0),
            Err(PhysError::NotAllocated(addr(f(x.number() + 1))))
        );
        // Wrong order.
        assert_eq!(
            a.deallocate(x, 1),
            Err(PhysError::WrongOrder {
                addr: addr(x),
                allocated: 2,
                freed: 1
            })
        );
        // Misaligned for its order.
        assert_eq!(
            a.deallocate(f(x.number() + 1), 1),
            Err(PhysError::Misaligned(addr(f(x.number() + 1))))
        );
        // Reserved frame, hole, beyond RAM, above MAX_ORDER.
        assert_eq!(
            a.deallocate(f(0), 0),
            Err(PhysError::NotAllocated(PhysAddr::new(0)))
        );
        assert!(matches!(
            a.deallocate(f(200), 0),
            Err(PhysError::OutOfRange { .. })
        ));
        assert!(matches!(
            a.deallocate(f(1 << 40), 0),
            Err(PhysError::OutOfRange { .. })
        ));
        assert_eq!(a.deallocate(x, 11), Err(PhysError::BadOrder(11)));
        // A free block and a tail of a free block.
        let free_head = a.free_blocks(3).next().unwrap();
        assert_eq!(
            a.deallocate(free_head, 3),
            Err(PhysError::NotAllocated(addr(free_head)))
        );
        assert!(a.deallocate(f(free_head.number() + 1), 0).is_err());
        assert_eq!((a.stats(), a.meta.clone(), a.heads), before);
        // Double free.
        a.deallocate(x, 2).unwrap();
        let before = (a.stats(), a.meta.clone(), a.heads);
        assert_eq!(a.deallocate(x, 2), Err(PhysError::NotAllocated(addr(x))));
        assert_eq!((a.stats(), a.meta.clone(), a.heads), before);
        a.check_invariants().unwrap();
    }

    #[test]
    fn reference_counts_share_and_put_frees_on_last() {
        let mut a = new(&[fr(0, 64)], &[]);
        let x = a.allocate(1).unwrap();
        assert_eq!(a.ref_count(x), Ok(1));
        assert_eq!(a.inc_ref(x), Ok(2));
        assert_eq!(a.inc_ref(x), Ok(3));
        assert_eq!(a.put(x), Ok(None));
        assert_eq!(a.dec_ref(x), Ok(1));
        assert_eq!(a.frame_info(x).unwrap().state(), FrameState::Allocated);
        assert_eq!(a.put(x), Ok(Some(1)));
        assert_eq!(
            a.ref_count(x),
            Err(PhysError::NotAllocated(x.start_address()))
        );
        assert_eq!(a.put(x), Err(PhysError::NotAllocated(x.start_address())));
        assert_eq!(a.stats().free_frames, 64);
        // dec_ref to zero keeps the block; deallocate still frees it.
        let y = a.allocate(0).unwrap();
        assert_eq!(a.dec_ref(y), Ok(0));
        assert_eq!(a.dec_ref(y), Err(PhysError::BadRefCount(y.start_address())));
        assert_eq!(a.put(y), Err(PhysError::BadRefCount(y.start_address())));
        assert_eq!(a.stats().allocated_frames, 1);
        a.deallocate(y, 0).unwrap();
        // Tails carry no count.
        let z = a.allocate(2).unwrap();
        assert!(a.inc_ref(f(z.number() + 1)).is_err());
        a.meta[z.number() as usize].refs = u32::MAX;
        assert_eq!(a.inc_ref(z), Err(PhysError::BadRefCount(z.start_address())));
        a.check_invariants().unwrap();
    }

    #[test]
    fn works_on_borrowed_storage_without_heap() {
        let mut storage = [FrameInfo::EMPTY; 100];
        let usable = [fr(0x100, 40), fr(0x200, 60)];
        assert_eq!(metadata_len(&usable), Ok(100));
        let mut a = BuddyAllocator::new(&usable, &[], &mut storage[..]).unwrap();
        let x = a.allocate(4).unwrap();
        assert_eq!(x.number() % 16, 0);
        a.deallocate(x, 4).unwrap();
        a.check_invariants().unwrap();
        let mut small = [FrameInfo::EMPTY; 99];
        assert_eq!(
            BuddyAllocator::new(&usable, &[], &mut small[..]).err(),
            Some(MemoryMapError::MetadataTooSmall {
                needed: 100,
                given: 99
            })
        );
    }

    #[test]
    fn memory_map_limits() {
        let many: Vec<FrameRange> = (0..MAX_SECTIONS as u64 + 1).map(|i| fr(i * 2, 1)).collect();
        assert_eq!(metadata_len(&many), Err(MemoryMapError::TooManyRanges));
        assert_eq!(metadata_len(&many[..MAX_SECTIONS]), Ok(MAX_SECTIONS));
        assert_eq!(
            metadata_len(&[fr(0, 1 << 32)]),
            Err(MemoryMapError::TooManyFrames)
        );
        // The last frame below 2^64 is manageable.
        let top = (u64::MAX >> PAGE_SHIFT) - 3;
        let mut a = new(&[fr(top, 4)], &[]);
        let x = a.allocate(2).unwrap();
        assert_eq!(x.number(), top);
        a.deallocate(x, 2).unwrap();
        a.check_invariants().unwrap();
    }

    #[test]
    fn empty_and_fully_reserved_maps_hand_out_nothing() {
        let mut a = new(&[], &[]);
        assert_eq!(a.allocate(0), Err(PhysError::OutOfMemory { order: 0 }));
        assert!(matches!(
            a.deallocate(f(0), 0),
            Err(PhysError::OutOfRange { .. })
        ));
        assert_eq!(a.frame_info(f(0)), None);
        a.check_invariants().unwrap();
        let mut b = new(&[fr(16, 16)], &[fr(0, 64)]);
        assert_eq!(b.stats().reserved_frames, 16);
        assert_eq!(b.stats().free_frames, 0);
        assert_eq!(b.allocate(0), Err(PhysError::OutOfMemory { order: 0 }));
        assert_eq!(
            b.deallocate(f(16), 0),
            Err(PhysError::NotAllocated(PhysAddr::new(16 << 12)))
        );
        assert_eq!(
            b.frame_info(f(20)).map(|i| i.state()),
            Some(FrameState::Reserved)
        );
        b.check_invariants().unwrap();
    }

    #[test]
    fn blocks_never_span_a_hole_or_a_reserved_frame() {
        // 0..1024 would be one order-10 block, but frame 512 is reserved and 768..800 is a
        // hole: no free block may cover either.
        let mut a = new(&[fr(0, 768), fr(800, 224)], &[fr(512, 1)]);
        a.check_invariants().unwrap();
        assert_eq!(a.stats().free_blocks[10], 0);
        assert_eq!(free_list(&a, 9), vec![0]);
        assert_eq!(a.allocate(9), Ok(f(0)));
        assert_eq!(a.allocate(9), Err(PhysError::OutOfMemory { order: 9 }));
        a.deallocate(f(0), 9).unwrap();
        a.check_invariants().unwrap();
        assert_eq!(free_list(&a, 9), vec![0]);
        assert_eq!(a.stats().free_blocks[10], 0);
    }

    #[test]
    fn largest_blocks_are_max_order() {
        let mut a = new(&[fr(0, 4096)], &[]);
        assert_eq!(free_list(&a, MAX_ORDER), vec![0, 1024, 2048, 3072]);
        let blocks: Vec<Frame> = (0..4).map(|_| a.allocate(MAX_ORDER).unwrap()).collect();
        assert_eq!(a.allocate(0), Err(PhysError::OutOfMemory { order: 0 }));
        for b in blocks.into_iter().rev() {
            a.deallocate(b, MAX_ORDER).unwrap();
        }
        // Order-10 buddies never merge further.
        assert_eq!(free_list(&a, MAX_ORDER), vec![0, 1024, 2048, 3072]);
        a.check_invariants().unwrap();
    }

    #[test]
    fn invariant_check_catches_corruption() {
        let mut a = new(&[fr(0, 16)], &[]);
        let x = a.allocate(0).unwrap();
        a.check_invariants().unwrap();
        // Forge an uncoalesced pair: mark frame 0 free without merging it with its buddy.
        a.meta[x.number() as usize].state = FrameState::Free;
        assert!(a.check_invariants().is_err());
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn allocate_zeroed_clears_every_frame_and_undoes_on_failure() {
        use crate::phys::{EmulatedRam, PhysMem};
        // RAM emulated for 0..8 frames only; the allocator manages 0..16.
        let mut ram = EmulatedRam::new(PhysAddr::new(0), 8 * 4096).unwrap();
        for p in 0..8u64 {
            ram.write_u64(PhysAddr::new(p * 4096 + 8), 0xdead).unwrap();
        }
        let mut a = new(&[fr(0, 16)], &[]);
        let x = a.allocate_zeroed(&mut ram, 3).unwrap();
        assert_eq!(x.number(), 0);
        for p in 0..8u64 {
            assert_eq!(ram.read_u64(PhysAddr::new(p * 4096 + 8)), Ok(0));
        }
        let before = a.stats();
        assert!(matches!(
            a.allocate_zeroed(&mut ram, 3),
            Err(PhysError::OutOfRange { .. })
        ));
        assert_eq!(a.stats(), before);
        a.check_invariants().unwrap();
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn owned_constructor() {
        let (u, r) = pc_map();
        let mut a = OwnedBuddyAllocator::new_owned(&u, &r).unwrap();
        let x = a.allocate_frame().unwrap();
        a.deallocate_frame(x).unwrap();
        a.check_invariants().unwrap();
    }
}
