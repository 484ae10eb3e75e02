//! The header at the start of every 64 KiB segment of the size-class heap.
//!
//! A pointer's segment is the pointer rounded down to [`SEGMENT_SIZE`]: O(1), no search. The
//! header says which heap owns the segment (a cookie mixing the segment's address with the
//! heap's key), which class it serves, and keeps one allocated bit per block (set while the
//! block is out of the segment's free list: live, or on its owner's lookaside or remote
//! list). The hot paths do not touch it: a free block's first word is an encoded link,
//! which a live block's first word does not look like ([`looks_linked`]), and only a free
//! whose block looks linked takes the exact check on the bit and lists. A pointer into the
//! middle of a block is caught by the block-start test.
//! A small segment's blocks start right after the header, rounded up to the largest power of
//! two (at most a page) dividing the block size ([`data_offset`]), so block sizes that are
//! multiples of an alignment up to the page size give aligned blocks, and classes that need
//! no page alignment do not lose the rest of the header page.

use crate::source::{PAGE_SIZE, SEGMENT_SIZE};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::Relaxed};

/// Room reserved for the header: the largest offset of a small segment's first block, and
/// the start of a meta segment's payload.
pub(crate) const DATA_OFFSET: usize = PAGE_SIZE;

/// End of the segment header.
pub(crate) const HEADER_END: usize = core::mem::size_of::<Segment>();

/// Offset of the first block of a small segment with blocks of `block_size` bytes: the
/// header's end rounded up to the largest power of two dividing the block size (capped at
/// a page), so every block is aligned to that power.
pub(crate) const fn data_offset(block_size: usize) -> usize {
    let mut a = block_size & block_size.wrapping_neg();
    if a > PAGE_SIZE || a == 0 {
        a = PAGE_SIZE;
    }
    (HEADER_END + a - 1) & !(a - 1)
}
/// Number of 64-bit words of one block bitmap (enough for 8-byte blocks).
const BITMAP_WORDS: usize = SEGMENT_SIZE / 8 / 64;

/// A free block: the first word links to the next free block (encoded with `secure`).
#[repr(C)]
pub(crate) struct Block {
    pub next: usize,
}

/// What a segment holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Blocks of one size class.
    Small = 1,
    /// One large block spanning `count` segments.
    Large = 2,
    /// The heap's own bookkeeping (shared state, a thread's local heap).
    Meta = 3,
}

/// What the hot paths read and write of a small segment: one cache line.
///
/// Segments are 64 KiB-aligned, so fields at a fixed offset would all fall into the same
/// cache set and evict each other; the line is placed at one of 16 offsets chosen by the
/// segment's address ("colouring"), found by [`hot`] with a shift, a mask and an add.
#[repr(C, align(64))]
pub(crate) struct Hot {
    /// Local free list (encoded). Owner only.
    pub free: usize,
    /// Blocks allocated (including those freed remotely but not yet collected, and those on
    /// the owner's lookaside list). Owner only.
    pub used: usize,
    /// A free that leaves `used <= slow_at` takes the slow path: 0 normally (the segment
    /// became empty), a threshold while the segment is on the full list.
    pub slow_at: usize,
    pub block_size: usize,
    /// The local heap that owns the segment (type-erased), null for large segments.
    pub owner: *mut (),
    /// `address ^ heap key`: identifies the owning heap.
    pub cookie: usize,
    /// `ceil(2^64 / block_size)`: `off` is a multiple of the block size iff
    /// `off * div_c mod 2^64 < div_c` (Lemire, Kaser and Kurz 2019) — no division.
    pub div_c: u64,
    /// Bytes of blocks from the data start (`capacity * block_size`).
    pub limit: u32,
    pub kind: Kind,
    pub class: u8,
    /// Offset of the first block ([`data_offset`] of the block size).
    pub data: u16,
}

/// Offset of the first of the 16 possible hot lines.
const HOT_BASE: usize = core::mem::offset_of!(Segment, _hot_lines);

/// The hot line of segment `seg`.
#[inline(always)]
pub(crate) fn hot(seg: *mut Segment) -> *mut Hot {
    (seg as usize + HOT_BASE + ((seg as usize >> 10) & (15 << 6))) as *mut Hot
}

/// The segment header: cold fields at the base; the [`Hot`] line and the bitmaps follow.
#[repr(C)]
pub(crate) struct Segment {
    /// Per-segment key for encoding free-list links.
    pub key: usize,
    pub capacity: usize,
    /// In the owner's full list (no free block when last looked).
    pub full: bool,
    /// Links in the owner's per-class list, the empty cache, or the heap's large list.
    pub next: *mut Segment,
    pub prev: *mut Segment,
    /// Blocks freed by other threads, waiting for the owner to collect them.
    pub remote_free: AtomicPtr<Block>,
    /// The segment is (or is about to be) in the owner's remote queue.
    pub remote_queued: AtomicBool,
    /// Link in the owner's remote queue.
    pub next_remote: AtomicPtr<Segment>,
    /// Segments spanned (large) or 1.
    pub count: usize,
    /// Requested size of a large block; for a cached empty segment, when it became empty.
    pub large_size: usize,
    /// Room for the 16 possible hot lines.
    _hot_lines: [Hot; 16],
    /// One allocated bit per block: set while the block is out of the segment's free list
    /// (live, on the owner's lookaside list, or on the remote list until the owner collects
    /// it). Written by the owner only (relaxed loads and stores: plain moves).
    pub bits: Bits,
}

const _: () = assert!(core::mem::size_of::<Hot>() == 64);

/// The block bitmaps, cache-line aligned.
#[repr(C, align(64))]
pub(crate) struct Bits(pub [AtomicU64; BITMAP_WORDS]);

impl Segment {
    /// The allocated-bits word `w`.
    #[inline(always)]
    pub fn abits(&self, w: usize) -> &AtomicU64 {
        // SAFETY: callers pass w < BITMAP_WORDS (a block index of a pointer inside the
        // segment, shifted by 6).
        unsafe { self.bits.0.get_unchecked(w) }
    }
}

const _: () = assert!(core::mem::size_of::<Segment>() <= DATA_OFFSET);

/// The segment containing `p`.
#[inline(always)]
pub(crate) fn segment_of(p: *const u8) -> *mut Segment {
    (p as usize & !(SEGMENT_SIZE - 1)) as *mut Segment
}

/// Bitmap word index and bit of the block at `p`: its block index is the high half of
/// `offset * div_c` (exact for offsets below 2^32), so no division.
///
/// # Safety
/// `seg` must be a formatted small segment and `p` a block start inside it.
#[inline(always)]
pub(crate) unsafe fn granule(seg: *mut Segment, p: *const u8) -> (usize, u64) {
    // SAFETY: reading the hot line of a valid segment (caller).
    let (data, c) = unsafe { ((*hot(seg)).data as usize, (*hot(seg)).div_c) };
    let off = (p as usize).wrapping_sub(seg as usize + data) as u64;
    let idx = ((off as u128 * c as u128) >> 64) as usize;
    (idx >> 6, 1u64 << (idx & 63))
}

/// Encodes a free-list link: xor with the key (rotated too with the `secure` feature).
///
/// Keys are never canonical addresses ([`make_key`]), so an encoded link decodes to an
/// aligned canonical address (or 0) while what programs store in the first word of their
/// blocks — zero, small numbers, pointers, text — does not: [`looks_linked`] tells free
/// blocks from live ones without any per-block state.
#[inline(always)]
pub(crate) fn encode(p: usize, key: usize) -> usize {
    if cfg!(feature = "secure") {
        (p ^ key).rotate_left(17)
    } else {
        p ^ key
    }
}

/// Decodes a free-list link.
#[inline(always)]
pub(crate) fn decode(v: usize, key: usize) -> usize {
    if cfg!(feature = "secure") {
        v.rotate_right(17) ^ key
    } else {
        v ^ key
    }
}

/// Whether the word `w` at a block start decodes under `key` to something a free-list link
/// holds: 0 or an 8-byte aligned canonical address (bits 63..47 all equal). A live block's
/// first word passes only if it happens to hold such a value xor the (random) key.
#[inline(always)]
pub(crate) fn looks_linked(w: usize, key: usize) -> bool {
    let d = decode(w, key) as u64;
    d & 7 == 0 && (((d as i64) >> 47).wrapping_add(1) as u64) <= 1
}

/// A key from random bits: odd and never a canonical address (bit 63 set, bit 62 clear),
/// so a cleared first word (0) never [`looks_linked`].
pub(crate) fn make_key(bits: usize) -> usize {
    let k = (bits as u64 | 1 | 1 << 63) & !(1 << 62);
    k as usize
}

/// The key a segment's free and remote lists are encoded with: the heap key, mixed with the
/// segment address under the `secure` feature.
pub(crate) fn segment_key(heap_key: usize, seg: usize) -> usize {
    if cfg!(feature = "secure") {
        make_key(mix(heap_key ^ seg))
    } else {
        let _ = seg;
        heap_key
    }
}

/// A 64-bit finalizer (splitmix64) used to derive keys.
pub(crate) fn mix(x: usize) -> usize {
    let mut z = (x as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as usize
}

impl Segment {
    /// Writes a fresh header at `base` (all bitmaps clear).
    ///
    /// # Safety
    /// `base` must be a writable, SEGMENT_SIZE-aligned segment nothing else uses.
    pub unsafe fn init(
        base: *mut u8,
        heap_key: usize,
        kind: Kind,
        owner: *mut (),
        count: usize,
    ) -> *mut Segment {
        let seg = base as *mut Segment;
        // SAFETY: the caller gives us the segment; zero is a valid bit pattern for every
        // field but `kind`, which is written right after.
        unsafe {
            core::ptr::write_bytes(base, 0, core::mem::size_of::<Segment>());
            (*hot(seg)).cookie = base as usize ^ heap_key;
            (*hot(seg)).kind = kind;
            (*seg).key = segment_key(heap_key, base as usize);
            (*hot(seg)).owner = owner;
            (*seg).count = count;
        }
        seg
    }

    /// Makes an (empty) small segment serve class `class` with blocks of `block_size`: builds
    /// its free list in address order.
    ///
    /// # Safety
    /// `seg` must be a small segment of the caller with no allocated block.
    pub unsafe fn format(seg: *mut Segment, class: usize, block_size: usize) {
        // SAFETY: the caller owns the segment; blocks lie inside it.
        unsafe {
            let data = data_offset(block_size);
            let cap = (SEGMENT_SIZE - data) / block_size;
            (*hot(seg)).data = data as u16;
            (*hot(seg)).class = class as u8;
            (*hot(seg)).block_size = block_size;
            (*seg).capacity = cap;
            (*hot(seg)).limit = (cap * block_size) as u32;
            (*hot(seg)).div_c = crate::class::DIV_C[class];
            (*hot(seg)).used = 0;
            (*seg).full = false;
            (*hot(seg)).slow_at = 0;
            let key = (*seg).key;
            let first = seg as usize + data;
            let mut next = 0usize;
            let mut i = cap;
            while i > 0 {
                i -= 1;
                let b = first + i * block_size;
                (*(b as *mut Block)).next = encode(next, key);
                next = b;
            }
            (*hot(seg)).free = next;
        }
    }

    /// Whether `p` is the start of a block of this (small) segment (live or free).
    ///
    /// # Safety
    /// `seg` must be a valid small segment header and `p` inside the segment.
    #[inline(always)]
    pub unsafe fn is_block(seg: *mut Segment, p: *const u8) -> bool {
        // SAFETY: reading the first header line.
        unsafe {
            let off = (p as usize).wrapping_sub(seg as usize + (*hot(seg)).data as usize);
            off < (*hot(seg)).limit as usize
                && (off as u64).wrapping_mul((*hot(seg)).div_c) < (*hot(seg)).div_c
        }
    }

    /// Whether the block at `p` is out of its segment's free list: allocated, on the owner's
    /// lookaside list or on the remote list (callers tell those apart by [`looks_linked`]).
    ///
    /// # Safety
    /// `p` must be a block start of the valid small segment `seg`.
    #[inline(always)]
    pub unsafe fn is_live(seg: *mut Segment, p: *const u8) -> bool {
        // SAFETY: p is a block of seg (caller).
        let (w, bit) = unsafe { granule(seg, p) };
        // SAFETY: p is a block of seg.
        unsafe { (*seg).abits(w).load(Relaxed) & bit != 0 }
    }

    /// Clears the allocated bit of the block at `p`, which goes back on its segment's free
    /// list (from the owner's lookaside list).
    ///
    /// # Safety
    /// `p` must be a block start of the valid small segment `seg`; only its owner may call it.
    #[inline(always)]
    pub unsafe fn mark_returned(seg: *mut Segment, p: *const u8) {
        // SAFETY: p is a block of seg (caller).
        let (w, bit) = unsafe { granule(seg, p) };
        // SAFETY: the allocated bits are written by the owner only.
        unsafe {
            let a = (*seg).abits(w);
            a.store(a.load(Relaxed) & !bit, Relaxed);
        }
    }

    /// Marks the free block at `p` allocated (by its owner).
    ///
    /// # Safety
    /// As [`mark_returned`](Self::mark_returned).
    #[inline(always)]
    pub unsafe fn mark_live(seg: *mut Segment, p: *const u8) {
        // SAFETY: p is a block of seg (caller).
        let (w, bit) = unsafe { granule(seg, p) };
        // SAFETY: as mark_returned.
        unsafe {
            let a = (*seg).abits(w);
            a.store(a.load(Relaxed) | bit, Relaxed);
        }
    }

    /// Clears the state of the remotely freed blocks `mask` of bitmap word `w`, which their
    /// owner collects.
    ///
    /// # Safety
    /// Only the segment's owner may call it, for blocks it took off the remote list.
    #[inline]
    pub unsafe fn collected_bits(seg: *mut Segment, w: usize, mask: u64) {
        // SAFETY: as mark_returned; w is a word of this segment's bitmap.
        unsafe {
            let a = (*seg).abits(w);
            a.store(a.load(Relaxed) & !mask, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_start_after_the_header_aligned_to_their_size() {
        for bs in [8usize, 16, 48, 80, 96, 640, 2048, 3584, 4096, 8192] {
            let d = data_offset(bs);
            assert!((HEADER_END..=DATA_OFFSET).contains(&d), "{bs}: {d}");
            let a = (bs & bs.wrapping_neg()).min(PAGE_SIZE);
            assert_eq!(d % a, 0, "{bs}: {d}");
        }
        assert_eq!(data_offset(4096), PAGE_SIZE);
        assert!(data_offset(48) < PAGE_SIZE);
    }
}
