//! The buddy frame allocator: naturally aligned blocks of `2^order` frames, orders
//! `0..=MAX_ORDER`, over several physical ranges with holes.
//!
//! The state is a handful of bitmaps, small enough to stay in cache (the words allocation
//! and free touch are about 4 bits per frame: 0.5 MiB for 1,000,000 frames), so that no
//! allocation or free waits for main memory:
//! - per order, a FREE bitmap with a bit per naturally aligned block of that order, under a
//!   64-ary summary hierarchy ([`Bitmap`]): the lowest free block of an order is found with a
//!   trailing-zero count per level, and allocation hands out the lowest address first; a
//!   per-order hint word is looked at first, and an order's only free block is left out of
//!   the summaries (the hint finds it);
//! - per order, an ALLOCATED bitmap with a bit per allocated block head, which checks frees,
//!   its words interleaved with the FREE words of the same blocks;
//! - per frame, a SHARED bit (the count is not 1) and a RESERVED bit, kept apart;
//! - per frame, a reference count, read and written only when the SHARED bit is set (or by
//!   the reference-count operations), so that allocation and free never touch it.
//!
//! Finding a block's buddy is an index computation (`block ^ 1`), checking it is free is a
//! bit test, merging is clearing it and going one order up: no list is ever walked.
//!
//! No heap is needed: the caller provides the words (`&mut [u64]` of [`metadata_len`] words).
//! With the `alloc` feature, [`BuddyAllocator::new_owned`] allocates them.
//!
//! Frees are checked: a block freed twice, a frame never allocated (a tail of a block, a
//! reserved frame), the wrong order, a frame outside the managed ranges or not aligned to its
//! order each return a [`PhysError`] and change nothing.

use super::bitmap::{words_for, Bitmap, STRIDE};
use super::frame_info::{FrameInfo, FrameState, FrameStats};
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

/// Frames of a window: every section's bitmaps cover whole windows, so that bit indices are
/// aligned like frame numbers up to `MAX_ORDER`.
const WINDOW: u64 = 1 << MAX_ORDER;
/// Most window frames all sections together may cover (bit indices then fit in 32 bits).
const MAX_WINDOW_FRAMES: u64 = u32::MAX as u64;

/// Word offsets inside a leaf group (`STRIDE` words): the FREE and ALLOCATED words of 64 blocks
/// of an order sit side by side, so an order-0 free touches one cache line for both.
const FREE: usize = 0;
const ALLOC: usize = 1;
/// Word offsets inside a flag group: the SHARED and RESERVED words of 64 frames, kept apart
/// from the FREE and ALLOCATED words because allocation and free rarely need them.
const SHARED: usize = 0;
const RESERVED: usize = 1;

/// A memory map the buddy allocator cannot manage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryMapError {
    /// More than [`MAX_SECTIONS`] disjoint usable ranges.
    TooManyRanges,
    /// More frames than 32-bit bitmap indices can name (16 TiB).
    TooManyFrames,
    /// The metadata storage holds fewer words than the map needs.
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
                write!(f, "metadata holds {given} words, the map needs {needed}")
            }
        }
    }
}

/// A structural invariant of the allocator that does not hold (a bug, never caller input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InvariantError {
    /// Which invariant.
    pub what: &'static str,
    /// The frame number where it was found (or the order, for per-order invariants).
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

/// A maximal run of usable frames and where its bits and counts lie.
///
/// Its bits cover the whole windows `[wstart, wend)` around it (frames outside the section
/// have no bit set, ever); window frame `pfn` has bit index `cbase + (pfn - wstart)`, which is
/// aligned like `pfn` up to `MAX_ORDER` because `cbase` and `wstart` are window multiples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Section {
    /// First frame number.
    start: u64,
    /// Exclusive end frame number.
    end: u64,
    /// `start` rounded down to a window.
    wstart: u64,
    /// Bit index of `wstart`.
    cbase: usize,
    /// Bit index of `end` rounded up to a window (exclusive).
    cend: usize,
    /// Index of the reference count of `start` (counts are dense: one per usable frame).
    base: usize,
}

impl Section {
    /// Bit index of frame `pfn` of this section.
    #[inline(always)]
    fn bit(&self, pfn: u64) -> usize {
        self.cbase + (pfn - self.wstart) as usize
    }

    /// Frame number of bit index `c` of this section.
    #[inline(always)]
    fn pfn(&self, c: usize) -> u64 {
        self.wstart + (c - self.cbase) as u64
    }

    /// Index of the reference count of bit index `c`.
    #[inline]
    fn count_index(&self, c: usize) -> usize {
        self.base + (self.pfn(c) - self.start) as usize
    }
}

const EMPTY_SECTION: Section = Section {
    start: 0,
    end: 0,
    wstart: 0,
    cbase: 0,
    cend: 0,
    base: 0,
};

/// The usable ranges sorted, with overlapping and adjacent ones merged.
struct Sections {
    list: [Section; MAX_SECTIONS],
    len: usize,
    /// Window frames (bit indices) of all sections.
    bits: usize,
    /// Usable frames of all sections.
    frames: u64,
}

impl Sections {
    fn from_map(usable: &[FrameRange]) -> Result<Self, MemoryMapError> {
        let mut s = Sections {
            list: [EMPTY_SECTION; MAX_SECTIONS],
            len: 0,
            bits: 0,
            frames: 0,
        };
        for r in usable.iter().filter(|r| !r.is_empty()) {
            // Frame numbers are below 2^52, so `end` cannot overflow.
            s.insert(r.start().number(), r.start().number() + r.count())?;
        }
        let (mut bits, mut frames) = (0u64, 0u64);
        for sec in &mut s.list[..s.len] {
            sec.wstart = sec.start & !(WINDOW - 1);
            let wend = sec.end.next_multiple_of(WINDOW);
            if bits + (wend - sec.wstart) > MAX_WINDOW_FRAMES {
                return Err(MemoryMapError::TooManyFrames);
            }
            // Below 2^32 (checked above), so these fit in a usize.
            sec.cbase = bits as usize;
            bits += wend - sec.wstart;
            sec.cend = bits as usize;
            sec.base = frames as usize;
            frames += sec.end - sec.start;
        }
        s.bits = bits as usize;
        s.frames = frames;
        Ok(s)
    }

    /// Adds `[start, end)`, merging it with every section it overlaps or touches.
    fn insert(&mut self, mut start: u64, mut end: u64) -> Result<(), MemoryMapError> {
        let secs = &self.list[..self.len];
        // First section that ends at or after `start` and last that starts at or before `end`.
        let lo = secs.partition_point(|s| s.end < start);
        let hi = secs.partition_point(|s| s.start <= end);
        let merged = |start, end| Section {
            start,
            end,
            ..EMPTY_SECTION
        };
        if lo < hi {
            start = start.min(secs[lo].start);
            end = end.max(secs[hi - 1].end);
            self.list[lo] = merged(start, end);
            self.list.copy_within(hi..self.len, lo + 1);
            self.len -= hi - lo - 1;
        } else {
            if self.len == MAX_SECTIONS {
                return Err(MemoryMapError::TooManyRanges);
            }
            self.list.copy_within(lo..self.len, lo + 1);
            self.list[lo] = merged(start, end);
            self.len += 1;
        }
        Ok(())
    }
}

/// Words of metadata for `bits` window frames and `frames` usable frames, computed without
/// overflow; `None` if they do not fit in a `usize`. Must agree with [`layout`].
fn layout_words(bits: u64, frames: u64) -> Option<usize> {
    let mut w = 0u64;
    for o in 0..ORDERS {
        let leaves = words_for(bits >> o);
        w += leaves * STRIDE as u64 + Bitmap::summary_words(leaves);
    }
    w += words_for(bits) * 2;
    usize::try_from(w + frames.div_ceil(2)).ok()
}

/// Where everything lies in the metadata words for `bits` window frames: the leaf groups
/// (FREE and ALLOCATED words) of each order, the summaries of every FREE bitmap, the flag
/// groups (SHARED and RESERVED words), then the reference counts (two per word). Returns
/// the bitmaps and the word indices of the flags and of the counts.
fn layout(bits: usize) -> ([Bitmap; ORDERS], usize, usize) {
    let leaves = |o: usize| words_for((bits >> o) as u64) as usize;
    let mut bases = [0usize; ORDERS];
    let mut next = 0;
    for (o, b) in bases.iter_mut().enumerate() {
        *b = next;
        next += leaves(o) * STRIDE;
    }
    let free = core::array::from_fn(|o| Bitmap::new(bases[o], leaves(o), &mut next));
    let flags = next;
    (free, flags, flags + leaves(0) * 2)
}

/// How many `u64` words of metadata a memory map with these usable ranges needs: bitmaps
/// of about 6 bits per frame (a bit per frame for FREE, ALLOCATED, SHARED and RESERVED at
/// order 0, half as many per order above, over whole 4 MiB windows around each range) and a
/// 32-bit reference count per usable frame.
pub fn metadata_len(usable: &[FrameRange]) -> Result<usize, MemoryMapError> {
    let s = Sections::from_map(usable)?;
    layout_words(s.bits as u64, s.frames).ok_or(MemoryMapError::TooManyFrames)
}

/// Buddy allocator of 4 KiB frames over a memory map with holes: naturally aligned blocks of
/// `2^order` frames, orders `0..=MAX_ORDER`, fully coalesced, lowest address first.
///
/// Its state is a set of bitmaps: per order, free blocks (under a 64-ary summary) and
/// allocated block heads; per frame, reserved and shared flags and a reference count read only
/// for shared frames. An allocation is a few trailing-zero counts and a free a few bit tests,
/// O(`MAX_ORDER`) either way, on memory small enough to stay in cache. Frees are checked (see [`FrameAllocator::deallocate`]
/// below) and change nothing on error.
///
/// `M` is the metadata storage: `&mut [u64]` of [`metadata_len`] words without a heap,
/// `Box<[u64]>` or `Vec<u64>` with one ([`OwnedBuddyAllocator`] allocates it).
pub struct BuddyAllocator<M> {
    meta: M,
    sections: [Section; MAX_SECTIONS],
    nsections: usize,
    /// The FREE bitmap of each order; its ALLOCATED words sit right after its leaf words.
    free: [Bitmap; ORDERS],
    /// Word index of the flag groups (SHARED and RESERVED words).
    flags: usize,
    /// Word index of the reference counts.
    counts: usize,
    /// Number of SHARED bits set: while 0, freeing need not look at them.
    shared_heads: u64,
    /// Per order, a leaf word below which the FREE bitmap is all zero: allocation looks
    /// there first and reads the summaries only when that word is empty.
    hint: [usize; ORDERS],
    /// Section of the last allocation, looked at first to turn a bit index into a frame.
    last: usize,
    /// Bit `k` set when some block of order `k` is free.
    nonempty: u16,
    /// Bit `k` set when order `k` has a single free block, in the hint word, left out of the
    /// summaries: splitting for a run of small allocations then enters and removes a block
    /// without touching them.
    lone: u16,
    free_blocks: [u64; ORDERS],
    total_frames: u64,
    reserved_frames: u64,
    free_frames: u64,
}

/// A buddy allocator that owns its metadata.
#[cfg(feature = "alloc")]
pub type OwnedBuddyAllocator = BuddyAllocator<alloc::boxed::Box<[u64]>>;

#[cfg(feature = "alloc")]
impl BuddyAllocator<alloc::boxed::Box<[u64]>> {
    /// An allocator over `usable` minus `reserved` that allocates its own metadata.
    pub fn new_owned(
        usable: &[FrameRange],
        reserved: &[FrameRange],
    ) -> Result<Self, MemoryMapError> {
        let n = metadata_len(usable)?;
        let meta = alloc::vec![0u64; n].into_boxed_slice();
        BuddyAllocator::new(usable, reserved, meta)
    }
}

#[inline(always)]
fn bit_of(w: u64, i: usize) -> bool {
    (w >> (i % 64)) & 1 != 0
}

impl<M: DerefMut<Target = [u64]>> BuddyAllocator<M> {
    /// An allocator over the frames of `usable` that are not in `reserved`, keeping its
    /// metadata in `meta` (at least [`metadata_len`]`(usable)` words; extra ones are unused,
    /// the initial contents do not matter).
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
        let needed =
            layout_words(secs.bits as u64, secs.frames).ok_or(MemoryMapError::TooManyFrames)?;
        if meta.len() < needed {
            return Err(MemoryMapError::MetadataTooSmall {
                needed,
                given: meta.len(),
            });
        }
        let (free, flags, counts) = layout(secs.bits);
        debug_assert_eq!(counts + secs.frames.div_ceil(2) as usize, needed);
        meta[..needed].fill(0);
        let mut a = BuddyAllocator {
            meta,
            sections: secs.list,
            nsections: secs.len,
            free,
            flags,
            counts,
            shared_heads: 0,
            hint: [0; ORDERS],
            last: 0,
            nonempty: 0,
            lone: 0,
            free_blocks: [0; ORDERS],
            total_frames: secs.frames,
            reserved_frames: 0,
            free_frames: 0,
        };
        let reserved_word = |a: &Self, c: usize| a.flag_word(c, RESERVED);
        for r in reserved.iter().filter(|r| !r.is_empty()) {
            let (rs, re) = (r.start().number(), r.start().number() + r.count());
            for si in 0..a.nsections {
                let sec = a.sections[si];
                for pfn in rs.max(sec.start)..re.min(sec.end) {
                    let c = sec.bit(pfn);
                    let i = reserved_word(&a, c);
                    if !bit_of(a.meta[i], c) {
                        a.meta[i] |= 1 << (c % 64);
                        a.reserved_frames += 1;
                    }
                }
            }
        }
        // Carve each run of non-reserved frames into maximal aligned blocks.
        for si in 0..a.nsections {
            let sec = a.sections[si];
            let mut pfn = sec.start;
            while pfn < sec.end {
                let run = pfn;
                while pfn < sec.end
                    && !bit_of(a.meta[reserved_word(&a, sec.bit(pfn))], sec.bit(pfn))
                {
                    pfn += 1;
                }
                a.carve(&sec, run, pfn);
                while pfn < sec.end && bit_of(a.meta[reserved_word(&a, sec.bit(pfn))], sec.bit(pfn))
                {
                    pfn += 1;
                }
            }
        }
        Ok(a)
    }

    /// Marks the free run `[start, end)` of `sec` as its maximal aligned blocks (unique, so
    /// found bottom-up: at each step the largest block aligned at `pfn` that fits).
    fn carve(&mut self, sec: &Section, start: u64, end: u64) {
        let mut pfn = start;
        while pfn < end {
            let align = pfn.trailing_zeros();
            let fit = 63 - (end - pfn).leading_zeros();
            let order = align.min(fit).min(MAX_ORDER as u32) as u8;
            self.insert_free(order, sec.bit(pfn) >> order);
            self.free_frames += 1 << order;
            pfn += 1 << order;
        }
    }

    /// The section holding frame `pfn`: the one of the last allocation (most frames freed
    /// come from it), else a binary search.
    #[inline]
    fn section_of(&self, pfn: u64) -> Option<usize> {
        let last = &self.sections[self.last];
        if last.start <= pfn && pfn < last.end {
            return Some(self.last);
        }
        let secs = &self.sections[..self.nsections];
        let i = secs.partition_point(|s| s.end <= pfn);
        secs.get(i).filter(|s| s.start <= pfn).map(|_| i)
    }

    /// The section whose windows hold bit index `c`, trying `hint` first.
    #[inline]
    fn section_of_bit(&self, c: usize, hint: usize) -> usize {
        let s = &self.sections[hint];
        if s.cbase <= c && c < s.cend {
            return hint;
        }
        self.sections[..self.nsections].partition_point(|s| s.cend <= c)
    }

    /// The section whose windows hold bit index `c`, if any.
    fn section_at_bit(&self, c: usize) -> Option<usize> {
        let i = self.section_of_bit(c, 0);
        (i < self.nsections && self.sections[i].cbase <= c).then_some(i)
    }

    /// Frame number of bit index `c` (which lies in some section's windows).
    #[inline]
    fn pfn_of_bit(&self, c: usize) -> u64 {
        self.sections[self.section_of_bit(c, 0)].pfn(c)
    }

    /// Marks block `b` of `order` free (its bit must be clear), keeping hint and counts.
    #[inline(always)]
    fn insert_free(&mut self, order: u8, b: usize) {
        let o = order as usize;
        let bm = &self.free[o];
        let m = &mut *self.meta;
        if self.free_blocks[o] == 0 {
            // The only free block of its order: the hint finds it, the summaries need not.
            m[bm.leaf(b / 64)] |= 1 << (b % 64);
            self.hint[o] = b / 64;
            self.lone |= 1 << o;
            self.nonempty |= 1 << o;
        } else {
            if self.lone & (1 << o) != 0 {
                // A second one: enter the first in the summaries.
                bm.mark(m, self.hint[o]);
                self.lone &= !(1 << o);
            }
            bm.set(m, b);
            if b / 64 < self.hint[o] {
                self.hint[o] = b / 64;
            }
        }
        self.free_blocks[o] += 1;
    }

    /// Counts one block of `order` fewer free (its bit was just cleared).
    #[inline(always)]
    fn count_taken(&mut self, order: usize) {
        self.free_blocks[order] -= 1;
        if self.free_blocks[order] == 0 {
            self.nonempty &= !(1 << order);
            self.lone &= !(1 << order);
        }
    }

    /// Takes the lowest free block of `order`, which must have one, and marks it allocated
    /// at `order - down` (the order it is split down to); returns its block index at `order`.
    #[inline(always)]
    fn take_lowest(&mut self, order: u8, down: u8) -> usize {
        let o = order as usize;
        let bm = &self.free[o];
        let m = &mut *self.meta;
        let mut g = self.hint[o];
        let mut i = bm.leaf(g);
        let mut w = m[i];
        if w == 0 {
            g = bm.first_leaf(m);
            self.hint[o] = g;
            i = bm.leaf(g);
            w = m[i];
        }
        let bit = w.trailing_zeros();
        m[i] = w & (w - 1);
        if down == 0 {
            // Not split: its ALLOCATED bit is in the same group.
            m[i + ALLOC] |= 1 << bit;
        }
        if w & (w - 1) == 0 && self.lone & (1 << o) == 0 {
            bm.unmark(m, g);
        }
        self.count_taken(o);
        g * 64 + bit as usize
    }

    /// Word index of the ALLOCATED word holding block `b` of `order`.
    #[inline(always)]
    fn alloc_word(&self, order: u8, b: usize) -> usize {
        self.free[order as usize].leaf(b / 64) + ALLOC
    }

    /// Word index of the flag word `which` (SHARED or RESERVED) holding bit index `c`.
    #[inline(always)]
    fn flag_word(&self, c: usize, which: usize) -> usize {
        self.flags + (c / 64) * 2 + which
    }

    /// Whether bit index `c` heads an allocated block of `order` (`c` aligned to it).
    #[inline]
    fn is_alloc_head(&self, order: u8, c: usize) -> bool {
        let b = c >> order;
        bit_of(self.meta[self.alloc_word(order, b)], b)
    }

    /// Orders at which bit index `c` may head a block: those it is aligned to.
    #[inline]
    fn head_orders(c: usize) -> core::ops::RangeInclusive<u8> {
        0..=(c.trailing_zeros().min(MAX_ORDER as u32) as u8)
    }

    /// The order of the allocated block headed by bit index `c`, if one is.
    fn alloc_order(&self, c: usize) -> Option<u8> {
        Self::head_orders(c).find(|&o| self.is_alloc_head(o, c))
    }

    /// The reference count of the allocated head at bit index `c` of section `si`.
    fn refs(&self, si: usize, c: usize) -> u32 {
        if !bit_of(self.meta[self.flag_word(c, SHARED)], c) {
            return 1;
        }
        let i = self.sections[si].count_index(c);
        (self.meta[self.counts + i / 2] >> (32 * (i % 2))) as u32
    }

    /// Sets the reference count of the allocated head at bit index `c` of section `si`:
    /// a count of 1 is the SHARED bit clear, any other the bit set and the count stored.
    fn set_refs(&mut self, si: usize, c: usize, refs: u32) {
        let sw = self.flag_word(c, SHARED);
        let was = bit_of(self.meta[sw], c);
        if refs == 1 {
            if was {
                self.meta[sw] &= !(1 << (c % 64));
                self.shared_heads -= 1;
            }
            return;
        }
        if !was {
            self.meta[sw] |= 1 << (c % 64);
            self.shared_heads += 1;
        }
        let i = self.sections[si].count_index(c);
        let w = &mut self.meta[self.counts + i / 2];
        let shift = 32 * (i % 2);
        *w = (*w & !(0xffff_ffff << shift)) | u64::from(refs) << shift;
    }

    /// Section and bit index of `frame`, after the checks every operation on a block makes:
    /// in range and aligned to `order` (`None`: any order, checked by the caller).
    #[inline]
    fn locate(&self, frame: Frame, order: Option<u8>) -> Result<(usize, usize), PhysError> {
        let pfn = frame.number();
        let len_order = order.unwrap_or(0);
        let si = self.section_of(pfn).ok_or(PhysError::OutOfRange {
            addr: frame.start_address(),
            len: 1 << (PAGE_SHIFT + len_order as u32),
        })?;
        if pfn & ((1u64 << len_order) - 1) != 0 {
            return Err(PhysError::Misaligned(frame.start_address()));
        }
        Ok((si, self.sections[si].bit(pfn)))
    }

    /// Section, bit index and order of the allocated block headed by `frame`.
    fn allocated_head(&self, frame: Frame) -> Result<(usize, usize, u8), PhysError> {
        let (si, c) = self.locate(frame, None)?;
        let order = self
            .alloc_order(c)
            .ok_or(PhysError::NotAllocated(frame.start_address()))?;
        Ok((si, c, order))
    }

    /// Why `frame` (bit index `c`) is not an allocated head of `order`: it heads one of
    /// another order, or none. The slow path of a rejected free.
    #[cold]
    fn not_allocated(&self, frame: Frame, c: usize, order: u8) -> PhysError {
        match self.alloc_order(c) {
            Some(allocated) => PhysError::WrongOrder {
                addr: frame.start_address(),
                allocated,
                freed: order,
            },
            None => PhysError::NotAllocated(frame.start_address()),
        }
    }

    /// Checks that `frame` heads an allocated block of `order`; returns its section and bit
    /// index.
    #[inline]
    fn allocated_head_of(&self, frame: Frame, order: u8) -> Result<(usize, usize), PhysError> {
        let (si, c) = self.locate(frame, Some(order))?;
        if !self.is_alloc_head(order, c) {
            return Err(self.not_allocated(frame, c, order));
        }
        Ok((si, c))
    }

    /// Frees the allocated head at bit index `c` of `order` (checked by the caller): clears
    /// its ALLOCATED and SHARED bits and merges it with its free buddies.
    #[inline(always)]
    fn release_allocated(&mut self, c: usize, order: u8) {
        let b = c >> order;
        let ai = self.alloc_word(order, b);
        self.meta[ai] &= !(1 << (b % 64));
        if self.shared_heads != 0 {
            let si = self.flag_word(c, SHARED);
            let s = self.meta[si];
            if bit_of(s, c) {
                self.meta[si] = s & !(1 << (c % 64));
                self.shared_heads -= 1;
            }
        }
        self.merge_free(c, order);
    }

    /// Puts the block at bit index `c` of `order` back as free, merging it with its buddies
    /// while they are free blocks of the same order. A buddy outside the section never has
    /// its bit set, so no bounds are checked.
    #[inline(always)]
    fn merge_free(&mut self, c: usize, order: u8) {
        let mut b = c >> order;
        let mut o = order;
        while o < MAX_ORDER {
            let bm = &self.free[o as usize];
            let m = &mut *self.meta;
            if !bm.test(m, b ^ 1) {
                break;
            }
            bm.clear(m, b ^ 1);
            self.count_taken(o as usize);
            b >>= 1;
            o += 1;
        }
        self.insert_free(o, b);
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

    /// What the allocator knows about `frame`, or `None` outside the managed ranges.
    /// O(`MAX_ORDER`): a bit test per order.
    pub fn frame_info(&self, frame: Frame) -> Option<FrameInfo> {
        let pfn = frame.number();
        let si = self.section_of(pfn)?;
        let c = self.sections[si].bit(pfn);
        let info = |state, order, refs| Some(FrameInfo { state, order, refs });
        if bit_of(self.meta[self.flag_word(c, RESERVED)], c) {
            return info(FrameState::Reserved, 0, 0);
        }
        for o in 0..=MAX_ORDER {
            let head = c & ((1 << o) - 1) == 0;
            let b = c >> o;
            if self.free[o as usize].test(&self.meta, b) {
                return if head {
                    info(FrameState::Free, o, 0)
                } else {
                    info(FrameState::Tail, 0, 0)
                };
            }
            if bit_of(self.meta[self.alloc_word(o, b)], b) {
                return if head {
                    info(FrameState::Allocated, o, self.refs(si, c))
                } else {
                    info(FrameState::Tail, 0, 0)
                };
            }
        }
        // Unreachable while the invariants hold: every managed frame that is not reserved
        // lies in exactly one block.
        info(FrameState::Tail, 0, 0)
    }

    /// The metadata words as they are (bitmaps and counts; their layout is private): for
    /// debugging, and to check that an operation changed nothing.
    pub fn metadata(&self) -> &[u64] {
        &self.meta
    }

    /// The managed ranges (usable ranges merged), in address order.
    pub fn ranges(&self) -> impl Iterator<Item = FrameRange> + '_ {
        self.sections[..self.nsections].iter().filter_map(|s| {
            let f = Frame::from_number(s.start).ok()?;
            FrameRange::new(f, s.end - s.start).ok()
        })
    }

    /// The free blocks of `order`, lowest address first (the order allocation takes them
    /// in). Empty for an order above `MAX_ORDER`.
    pub fn free_blocks(&self, order: u8) -> impl Iterator<Item = Frame> + '_ {
        let (bm, from) = if order <= MAX_ORDER {
            (self.free[order as usize], 0)
        } else {
            (self.free[0], usize::MAX)
        };
        bm.iter_from(&self.meta, from)
            .filter_map(move |b| Frame::from_number(self.pfn_of_bit(b << order)).ok())
    }

    /// The reference count of allocated block `frame`.
    pub fn ref_count(&self, frame: Frame) -> Result<u32, PhysError> {
        let (si, c, _) = self.allocated_head(frame)?;
        Ok(self.refs(si, c))
    }

    /// Adds an owner to allocated block `frame` (a new sharer); returns the new count.
    /// `BadRefCount` if the count is at `u32::MAX`.
    pub fn inc_ref(&mut self, frame: Frame) -> Result<u32, PhysError> {
        let (si, c, _) = self.allocated_head(frame)?;
        let refs = self
            .refs(si, c)
            .checked_add(1)
            .ok_or(PhysError::BadRefCount(frame.start_address()))?;
        self.set_refs(si, c, refs);
        Ok(refs)
    }

    /// Removes an owner from allocated block `frame`; returns the new count. Reaching 0 does
    /// **not** free the block: its last owner must still [`deallocate`](FrameAllocator::deallocate)
    /// it (or use [`put`](Self::put) instead). `BadRefCount` if the count is 0 already.
    pub fn dec_ref(&mut self, frame: Frame) -> Result<u32, PhysError> {
        let (si, c, _) = self.allocated_head(frame)?;
        let refs = self
            .refs(si, c)
            .checked_sub(1)
            .ok_or(PhysError::BadRefCount(frame.start_address()))?;
        self.set_refs(si, c, refs);
        Ok(refs)
    }

    /// Drops an owner of allocated block `frame` and frees the block when it was the last:
    /// returns `Some(order)` of the freed block, or `None` while owners remain.
    /// `BadRefCount` if the count is 0 already (nothing changes).
    pub fn put(&mut self, frame: Frame) -> Result<Option<u8>, PhysError> {
        let (si, c, order) = self.allocated_head(frame)?;
        match self.refs(si, c) {
            0 => Err(PhysError::BadRefCount(frame.start_address())),
            1 => {
                self.release_allocated(c, order);
                Ok(Some(order))
            }
            n => {
                self.set_refs(si, c, n - 1);
                Ok(None)
            }
        }
    }

    /// Splits allocated block `frame` of `order` into `2^order` allocated single frames, each
    /// with the block's reference count, so that they can be freed (or shared) one by one —
    /// for instance when part of a large-page mapping is unmapped. O(2^order); checks as
    /// [`deallocate`](FrameAllocator::deallocate) does and changes nothing on error.
    pub fn split_allocated(&mut self, frame: Frame, order: u8) -> Result<(), PhysError> {
        if order > MAX_ORDER {
            return Err(PhysError::BadOrder(order));
        }
        let (si, c) = self.allocated_head_of(frame, order)?;
        let refs = self.refs(si, c);
        let ai = self.alloc_word(order, c >> order);
        self.meta[ai] &= !(1 << ((c >> order) % 64));
        for k in c..c + (1usize << order) {
            let ai = self.alloc_word(0, k);
            self.meta[ai] |= 1 << (k % 64);
            self.set_refs(si, k, refs);
        }
        Ok(())
    }

    /// Gives the reserved frames of `range` to the allocator (boot-time memory no longer
    /// needed: the boot page tables, an initrd that has been unpacked…), merging them with
    /// their free buddies. Frames of `range` outside the managed ranges or not reserved are
    /// left alone. Returns how many frames were released. O(frames in range × MAX_ORDER).
    pub fn release_reserved(&mut self, range: FrameRange) -> u64 {
        let (rs, re) = (
            range.start().number(),
            range.start().number() + range.count(),
        );
        let mut released = 0;
        for si in 0..self.nsections {
            let sec = self.sections[si];
            for pfn in rs.max(sec.start)..re.min(sec.end) {
                let c = sec.bit(pfn);
                let ri = self.flag_word(c, RESERVED);
                if bit_of(self.meta[ri], c) {
                    self.meta[ri] &= !(1 << (c % 64));
                    self.reserved_frames -= 1;
                    self.merge_free(c, 0);
                    released += 1;
                }
            }
        }
        released
    }

    /// The frames of order-0 group `g` (bit indices `64 g ..= 64 g + 63`) covered by the
    /// blocks set in the `which` words (FREE or ALLOCATED) of `order`, and the heads of those
    /// blocks, as two masks over the group.
    fn group_cover(&self, order: usize, which: usize, g: usize) -> (u64, u64) {
        let bm = &self.free[order];
        if order <= 6 {
            let per = 64 >> order;
            let first = g * per;
            let w = self.meta[bm.leaf(first / 64) + which];
            let mut blocks = if per == 64 {
                w
            } else {
                (w >> (first % 64)) & ((1 << per) - 1)
            };
            let size = 1u32 << order;
            let fill = u64::MAX >> (64 - size);
            let (mut cover, mut heads) = (0, 0);
            while blocks != 0 {
                let i = blocks.trailing_zeros() * size;
                blocks &= blocks - 1;
                cover |= fill << i;
                heads |= 1 << i;
            }
            (cover, heads)
        } else {
            let b = g >> (order - 6);
            if bit_of(self.meta[bm.leaf(b / 64) + which], b) {
                (u64::MAX, u64::from(g % (1 << (order - 6)) == 0))
            } else {
                (0, 0)
            }
        }
    }

    /// The usable frames of order-0 group `g`, as a mask over the group.
    fn group_usable(&self, g: usize) -> u64 {
        let Some(si) = self.section_at_bit(g * 64) else {
            return 0;
        };
        let s = &self.sections[si];
        let lo = s.bit(s.start).saturating_sub(g * 64).min(64);
        let hi = (s.bit(s.start) + (s.end - s.start) as usize)
            .saturating_sub(g * 64)
            .min(64);
        let below = |n: usize| if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        below(hi) & !below(lo)
    }

    /// Frame number of bit index `c` for reports (`c` itself outside every section).
    fn report_pfn(&self, c: usize) -> u64 {
        self.section_at_bit(c)
            .map_or(c as u64, |si| self.sections[si].pfn(c))
    }

    /// Checks every structural invariant; O(frames / 64 × MAX_ORDER) word operations. For
    /// tests and debugging.
    ///
    /// Every usable frame is reserved or in exactly one block (free or allocated); no block,
    /// flag or bit lies outside the usable frames (so blocks are inside one range; they are
    /// aligned to their order by construction of the bitmaps); no two free buddies share an
    /// order (full coalescing); summaries and search hints agree with the FREE bitmaps;
    /// SHARED bits sit only on allocated heads whose count is not 1; the non-empty mask and
    /// every count agree.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        let fail = |what, c: usize| {
            Err(InvariantError {
                what,
                pfn: self.report_pfn(c),
            })
        };
        let raw = |what, pfn: u64| Err(InvariantError { what, pfn });
        let m = &*self.meta;
        // 1. Summaries, hints, coalescing, counts per order.
        let (mut free, mut allocated) = (0u64, 0u64);
        for o in 0..ORDERS {
            let bm = self.free[o];
            if self.lone & (1 << o) != 0 {
                if self.free_blocks[o] != 1 || m[bm.leaf(self.hint[o])] == 0 {
                    return raw("lone free block is not the one in the hint word", o as u64);
                }
                if !bm.summaries_zero(m) {
                    return raw("lone free block entered in the summaries", o as u64);
                }
            } else if let Err(what) = bm.check_summaries(m) {
                return raw(what, o as u64);
            }
            if self.hint[o] >= bm.leaves() || (0..self.hint[o]).any(|g| m[bm.leaf(g)] != 0) {
                return raw("a free block lies below the search hint", o as u64);
            }
            let mut blocks = 0u64;
            for g in 0..bm.leaves() {
                let w = m[bm.leaf(g)];
                blocks += u64::from(w.count_ones());
                allocated += u64::from(m[bm.leaf(g) + ALLOC].count_ones()) << o;
                let pairs = w & (w >> 1) & 0x5555_5555_5555_5555;
                if o < MAX_ORDER as usize && pairs != 0 {
                    let b = g * 64 + pairs.trailing_zeros() as usize;
                    return fail("free buddies of the same order not coalesced", b << o);
                }
            }
            if blocks != self.free_blocks[o] {
                return raw("free-block count disagrees with the bitmap", o as u64);
            }
            if (blocks != 0) != (self.nonempty & (1 << o) != 0) {
                return raw("non-empty mask disagrees with the bitmap", o as u64);
            }
            free += blocks << o;
        }
        // 2. Per group of 64 frames: every usable frame reserved or in exactly one block,
        // nothing outside the usable frames, SHARED only on allocated heads.
        let (mut reserved, mut shared_heads) = (0u64, 0u64);
        for g in 0..self.free[0].leaves() {
            let usable = self.group_usable(g);
            let rsv = m[self.flag_word(g * 64, RESERVED)];
            let shared = m[self.flag_word(g * 64, SHARED)];
            shared_heads += u64::from(shared.count_ones());
            reserved += u64::from(rsv.count_ones());
            let (mut seen, mut twice, mut alloc_heads) = (rsv, 0u64, 0u64);
            for o in 0..ORDERS {
                for which in [FREE, ALLOC] {
                    let (cover, heads) = self.group_cover(o, which, g);
                    twice |= seen & cover;
                    seen |= cover;
                    if which == ALLOC {
                        alloc_heads |= heads;
                    }
                }
            }
            let at = |mask: u64| g * 64 + mask.trailing_zeros() as usize;
            if twice != 0 {
                return fail("blocks overlap each other or a reserved frame", at(twice));
            }
            if seen & !usable != 0 {
                return fail(
                    "block or flag outside the usable frames",
                    at(seen & !usable),
                );
            }
            if usable & !seen != 0 {
                return fail(
                    "usable frame neither reserved nor in a block",
                    at(usable & !seen),
                );
            }
            if shared & !alloc_heads != 0 {
                return fail(
                    "shared flag on a frame that heads no allocated block",
                    at(shared & !alloc_heads),
                );
            }
            let mut s = shared;
            while s != 0 {
                let c = at(s);
                s &= s - 1;
                if let Some(si) = self.section_at_bit(c) {
                    if self.refs(si, c) == 1 {
                        return fail("shared flag on a count of 1", c);
                    }
                }
            }
        }
        // 3. Counts.
        if shared_heads != self.shared_heads {
            return raw("shared-flag count disagrees with the bitmap", shared_heads);
        }
        if free != self.free_frames {
            return raw("free-frame count disagrees with the blocks", free);
        }
        if reserved != self.reserved_frames {
            return raw("reserved-frame count disagrees with the bitmap", reserved);
        }
        if free + allocated + reserved != self.total_frames {
            return raw("frame counts do not add up to the total", allocated);
        }
        Ok(())
    }
}

impl<M: DerefMut<Target = [u64]>> BuddyAllocator<M> {
    /// [`allocate`](FrameAllocator::allocate) in general: the smallest non-empty order at
    /// or above `order`, its lowest block, split down.
    #[inline(never)]
    fn allocate_any(&mut self, order: u8) -> Result<Frame, PhysError> {
        if order > MAX_ORDER {
            return Err(PhysError::BadOrder(order));
        }
        let avail = self.nonempty >> order;
        if avail == 0 {
            return Err(PhysError::OutOfMemory { order });
        }
        let top = order + avail.trailing_zeros() as u8;
        let mut b = self.take_lowest(top, top - order);
        if top != order {
            for o in (order..top).rev() {
                b <<= 1;
                self.insert_free(o, b | 1);
            }
            let ai = self.alloc_word(order, b);
            self.meta[ai] |= 1 << (b % 64);
        }
        self.free_frames -= 1 << order;
        let c = b << order;
        self.last = self.section_of_bit(c, self.last);
        self.frame_at(self.last, c, order)
    }

    /// The frame of bit index `c` of section `si`, as handed out for `order`.
    #[inline(always)]
    fn frame_at(&self, si: usize, c: usize, order: u8) -> Result<Frame, PhysError> {
        let pfn = self.sections[si].pfn(c);
        // Managed frame numbers come from `Frame`s, so this cannot fail.
        Frame::from_number(pfn).map_err(|_| PhysError::OutOfRange {
            addr: PhysAddr::new(pfn << PAGE_SHIFT),
            len: 1 << (PAGE_SHIFT + order as u32),
        })
    }
}

impl<M: DerefMut<Target = [u64]>> FrameAllocator for BuddyAllocator<M> {
    /// Takes the lowest free block of the smallest non-empty order at or above `order`,
    /// splitting it; the block's reference count starts at 1. O(MAX_ORDER).
    #[inline(always)]
    fn allocate(&mut self, order: u8) -> Result<Frame, PhysError> {
        // Fast path: the word at the search hint holds a free block of `order` itself, in the
        // section of the last allocation.
        if order <= MAX_ORDER {
            let o = order as usize;
            let g = self.hint[o];
            let bm = &self.free[o];
            // One borrow of the words, so that their address stays in a register.
            let m = &mut *self.meta;
            let i = bm.leaf(g);
            let w = m[i];
            let bit = w.trailing_zeros();
            let c = (g * 64 + bit as usize) << order;
            let s = &self.sections[self.last];
            if w != 0 && s.cbase <= c && c < s.cend {
                let rest = w & (w - 1);
                m[i] = rest;
                m[i + ALLOC] |= 1 << bit;
                if rest == 0 && self.lone & (1 << o) == 0 {
                    bm.unmark(m, g);
                }
                self.count_taken(o);
                self.free_frames -= 1 << order;
                return self.frame_at(self.last, c, order);
            }
            // Second fast path: `order` has no free block and the hint word one order up
            // holds one: hand out its lower half, its upper half becomes the order's only
            // (lone) free block — what a run of small allocations does every other time once
            // the small blocks are used up.
            if self.free_blocks[o] == 0 && order < MAX_ORDER {
                let g1 = self.hint[o + 1];
                let i1 = self.free[o + 1].leaf(g1);
                let w1 = self.meta[i1];
                let b = (g1 * 64 + w1.trailing_zeros() as usize) << 1;
                let c = b << order;
                let s = &self.sections[self.last];
                if w1 != 0 && s.cbase <= c && c < s.cend {
                    let rest = w1 & (w1 - 1);
                    self.meta[i1] = rest;
                    if rest == 0 && self.lone & (2 << o) == 0 {
                        self.free[o + 1].unmark(&mut self.meta, g1);
                    }
                    self.count_taken(o + 1);
                    self.insert_free(order, b + 1);
                    let ai = self.alloc_word(order, b);
                    self.meta[ai] |= 1 << (b % 64);
                    self.free_frames -= 1 << order;
                    return self.frame_at(self.last, c, order);
                }
            }
        }
        self.allocate_any(order)
    }

    /// Frees a block allocated with `order`, whatever its reference count (sharers use
    /// [`put`](BuddyAllocator::put)), and merges it with its free buddies. O(MAX_ORDER).
    ///
    /// Errors, checked in this order: `BadOrder` above `MAX_ORDER`; `OutOfRange` outside the
    /// managed ranges; `Misaligned` if the frame is not aligned to the order; `NotAllocated`
    /// for a frame that does not head an allocated block (double free, a frame inside a
    /// block, a reserved or never-allocated frame); `WrongOrder` for another order.
    #[inline]
    fn deallocate(&mut self, frame: Frame, order: u8) -> Result<(), PhysError> {
        if order > MAX_ORDER {
            return Err(PhysError::BadOrder(order));
        }
        let (_, c) = self.allocated_head_of(frame, order)?;
        self.release_allocated(c, order);
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

    fn free_list(a: &BuddyAllocator<Vec<u64>>, order: u8) -> Vec<u64> {
        let mut v: Vec<u64> = a.free_blocks(order).map(|f| f.number()).collect();
        v.sort_unstable();
        v
    }

    fn new(usable: &[FrameRange], reserved: &[FrameRange]) -> BuddyAllocator<Vec<u64>> {
        let n = metadata_len(usable).unwrap();
        BuddyAllocator::new(usable, reserved, vec![0; n]).unwrap()
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
        let frames = |u: &[FrameRange]| new(u, &[]).stats().total_frames;
        assert_eq!(frames(&[fr(100, 10), fr(0, 10), fr(10, 5)]), 25);
        // Bridging two sections merges all three.
        assert_eq!(frames(&[fr(0, 10), fr(20, 10), fr(5, 20)]), 30);
        assert_eq!(
            new(&[fr(0, 10), fr(20, 10), fr(5, 20)], &[])
                .ranges()
                .count(),
            1
        );
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
        let before = (a.stats(), a.meta.clone(), a.hint);
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
        assert_eq!((a.stats(), a.meta.clone(), a.hint), before);
        // Double free.
        a.deallocate(x, 2).unwrap();
        let before = (a.stats(), a.meta.clone(), a.hint);
        assert_eq!(a.deallocate(x, 2), Err(PhysError::NotAllocated(addr(x))));
        assert_eq!((a.stats(), a.meta.clone(), a.hint), before);
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
        // Section 0 starts at frame 0, so bit indices are frame numbers.
        a.set_refs(0, z.number() as usize, u32::MAX);
        assert_eq!(a.inc_ref(z), Err(PhysError::BadRefCount(z.start_address())));
        a.check_invariants().unwrap();
    }

    #[test]
    fn split_blocks_free_frame_by_frame_and_coalesce_back() {
        let mut a = new(&[fr(0, 64)], &[]);
        let x = a.allocate(3).unwrap();
        a.inc_ref(x).unwrap();
        assert_eq!(
            a.split_allocated(x, 2),
            Err(PhysError::WrongOrder {
                addr: x.start_address(),
                allocated: 3,
                freed: 2
            })
        );
        assert_eq!(
            a.split_allocated(f(x.number() + 1), 0),
            Err(PhysError::NotAllocated(f(x.number() + 1).start_address()))
        );
        a.split_allocated(x, 3).unwrap();
        a.check_invariants().unwrap();
        assert_eq!(a.stats().allocated_frames, 8);
        for k in 0..8 {
            assert_eq!(a.ref_count(f(x.number() + k)), Ok(2));
        }
        assert_eq!(
            a.deallocate(x, 3),
            Err(PhysError::WrongOrder {
                addr: x.start_address(),
                allocated: 0,
                freed: 3
            })
        );
        for k in (0..8).rev() {
            assert_eq!(a.put(f(x.number() + k)), Ok(None));
            assert_eq!(a.put(f(x.number() + k)), Ok(Some(0)));
            a.check_invariants().unwrap();
        }
        assert_eq!(free_list(&a, 6), vec![0]);
    }

    #[test]
    fn released_reserved_frames_coalesce_with_free_ones() {
        let (u, r) = pc_map();
        let mut a = new(&u, &r);
        let before = a.stats();
        // Only the reserved frames inside managed memory count.
        assert_eq!(a.release_reserved(fr(250, 100)), 16);
        assert_eq!(a.release_reserved(fr(250, 100)), 0);
        a.check_invariants().unwrap();
        let s = a.stats();
        assert_eq!(s.reserved_frames, before.reserved_frames - 16);
        assert_eq!(s.free_frames, before.free_frames + 16);
        // 256..512 is whole again: one order-8 block.
        assert_eq!(free_list(&a, 8), vec![256]);
        assert_eq!(
            a.frame_info(f(256)).map(|i| i.state()),
            Some(FrameState::Free)
        );
        assert_eq!(a.release_reserved(fr(0, 1)), 1);
        a.check_invariants().unwrap();
        assert_eq!(free_list(&a, 7), vec![0]);
        assert_eq!(a.stats().reserved_frames, 0);
    }

    #[test]
    fn works_on_borrowed_storage_without_heap() {
        let mut storage = [u64::MAX; 300];
        let usable = [fr(0x100, 40), fr(0x200, 60)];
        // Two 1024-frame windows of bitmaps (order 0: 32 groups of 4 words and a summary
        // word; order 1: 16 groups of 2 and a summary word; … 205 words) and 100 counts.
        assert_eq!(metadata_len(&usable), Ok(255));
        let mut a = BuddyAllocator::new(&usable, &[], &mut storage[..]).unwrap();
        assert_eq!(a.stats().total_frames, 100);
        let x = a.allocate(4).unwrap();
        assert_eq!(x.number() % 16, 0);
        a.deallocate(x, 4).unwrap();
        a.check_invariants().unwrap();
        let mut small = [0u64; 254];
        assert_eq!(
            BuddyAllocator::new(&usable, &[], &mut small[..]).err(),
            Some(MemoryMapError::MetadataTooSmall {
                needed: 255,
                given: 254
            })
        );
    }

    #[test]
    fn memory_map_limits() {
        let many: Vec<FrameRange> = (0..MAX_SECTIONS as u64 + 1).map(|i| fr(i * 2, 1)).collect();
        assert_eq!(metadata_len(&many), Err(MemoryMapError::TooManyRanges));
        assert!(metadata_len(&many[..MAX_SECTIONS]).is_ok());
        let a = new(&many[..MAX_SECTIONS], &[]);
        assert_eq!(a.stats().total_frames, MAX_SECTIONS as u64);
        assert_eq!(a.ranges().count(), MAX_SECTIONS);
        a.check_invariants().unwrap();
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
    fn a_lone_free_block_stays_out_of_the_summaries_until_a_second_comes() {
        let mut a = new(&[fr(0, 1 << 16)], &[]);
        let x = a.allocate(0).unwrap();
        // Splitting left one free block at each order 0..=9, each alone.
        assert_eq!(a.lone, 0x3ff);
        assert!((0..10).all(|o| a.free[o].summaries_zero(&a.meta)));
        a.check_invariants().unwrap();
        // Frame 1 is taken (and order 0 emptied) without touching the summaries; frame 2
        // comes from splitting order 1, frame 3 is left alone.
        assert_eq!(a.allocate(0).map(|f| f.number()), Ok(1));
        assert_eq!(a.allocate(0).map(|f| f.number()), Ok(2));
        assert_eq!(a.lone & 1, 1);
        // Freeing frame 0 makes two order-0 blocks: both enter the summaries.
        a.deallocate(x, 0).unwrap();
        assert_eq!(a.lone & 1, 0);
        a.check_invariants().unwrap();
        assert_eq!(a.allocate(0).map(|f| f.number()), Ok(0));
        assert_eq!(a.allocate(0).map(|f| f.number()), Ok(3));
        a.check_invariants().unwrap();
    }

    #[test]
    fn invariant_check_catches_corruption() {
        let mut a = new(&[fr(0, 16)], &[]);
        let x = a.allocate(0).unwrap();
        a.check_invariants().unwrap();
        // Forge an uncoalesced pair: mark frame 0 free without merging it with its buddy.
        let mut b = new(&[fr(0, 16)], &[]);
        b.allocate(0).unwrap();
        let ai = b.alloc_word(0, 0);
        b.meta[ai] &= !1;
        b.free[0].set(&mut b.meta, x.number() as usize);
        assert_eq!(
            b.check_invariants().map_err(|e| e.what),
            Err("free buddies of the same order not coalesced")
        );
        // A block both free and allocated.
        let mut b = new(&[fr(0, 16)], &[]);
        b.allocate(0).unwrap();
        b.free[0].set(&mut b.meta, 0);
        assert!(b.check_invariants().is_err());
        // A summary bit left set over an empty word, and a hint past a free block.
        let mut b = new(&[fr(0, 4096)], &[]);
        let y = b.allocate(0).unwrap();
        let sw = b.free[0].summary_base(0);
        b.meta[sw] |= 1 << 1;
        assert!(b.check_invariants().is_err());
        b.meta[sw] &= !(1 << 1);
        b.check_invariants().unwrap();
        b.hint[1] = 1;
        assert!(b.check_invariants().is_err());
        b.hint[1] = 0;
        // A reference count on a free block; a SHARED flag with a count of 1.
        let gw = b.flag_word(2, SHARED);
        b.meta[gw] |= 1 << 2;
        assert!(b.check_invariants().is_err());
        b.meta[gw] &= !(1 << 2);
        b.set_refs(0, y.number() as usize, 2);
        assert_eq!(b.ref_count(y), Ok(2));
        b.check_invariants().unwrap();
        let ci = b.counts;
        b.meta[ci] = (b.meta[ci] & !0xffff_ffff) | 1;
        assert_eq!(
            b.check_invariants().map_err(|e| e.what),
            Err("shared flag on a count of 1")
        );
        b.set_refs(0, y.number() as usize, 1);
        // A bit outside the managed frames.
        let mut c = new(&[fr(8, 8)], &[]);
        c.check_invariants().unwrap();
        c.free[0].set(&mut c.meta, 2);
        assert!(c.check_invariants().is_err());
        b.check_invariants().unwrap();
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
