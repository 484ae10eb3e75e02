//! The header at the start of every 64 KiB segment of the size-class heap.
//!
//! A pointer's segment is the pointer rounded down to [`SEGMENT_SIZE`]: O(1), no search. The
//! header says which heap owns the segment (a cookie mixing the segment's address with the
//! heap's key), which class it serves, and keeps two bits per block: *live* (handed out and
//! not yet freed by its owner; written by the owner only) and *remote* (freed by another
//! thread, waiting for the owner to collect it; set with one atomic `fetch_or` by the freeing
//! thread). A free checks them before anything else — live set, remote clear — so a double
//! free is caught whatever the program wrote into the freed block since; the block index
//! comes from one multiplication ([`Segment::block_index`], which also rejects interior
//! pointers), and the bitmap word sits in the header, which the free reads anyway.
//!
//! Blocks are carved lazily, a page at a time ([`Segment::activate`]): a segment's free list
//! holds only blocks whose pages are *active*, so a class with few blocks touches (commits)
//! only the pages it uses.
//!
//! A small segment's blocks start right after the header, rounded up to the largest power
//! of two (at most a page) dividing the block size ([`data_offset`]), so block sizes that are
//! multiples of an alignment up to the page size give aligned blocks.

use crate::source::{PAGE_SIZE, SEGMENT_SIZE};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Pages of a segment.
pub(crate) const SEGMENT_PAGES: usize = SEGMENT_SIZE / PAGE_SIZE;
const _: () = assert!(SEGMENT_PAGES <= 16, "page masks are u16");

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
/// Number of 64-bit words of one block bitmap: at most 4096 blocks per segment (the
/// 8-byte class uses the first 32 KiB of its segments; pages past its last block are never
/// touched, so this costs address space, not memory).
pub(crate) const BITMAP_WORDS: usize = 64;

/// Most blocks in a segment.
pub(crate) const MAX_BLOCKS: usize = BITMAP_WORDS * 64;

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
    /// Free list of active blocks (links encoded with `secure`). Owner only.
    pub free: usize,
    /// The local heap that owns the segment (type-erased), null for large segments.
    pub owner: *mut (),
    /// `address ^ heap key`: identifies the owning heap.
    pub cookie: usize,
    /// `ceil(2^64 / block_size)`: `off` is a multiple of the block size iff
    /// `off * div_c mod 2^64 < div_c`, and the block index is the high half of the product
    /// (Lemire, Kaser and Kurz 2019) — no division.
    pub div_c: u64,
    /// Key of the free-list links (`secure`: per segment).
    pub key: usize,
    /// Blocks live (including those freed remotely and not yet collected). Written by the
    /// owner only; atomic so that `stats` may read it (relaxed: plain moves).
    pub used: AtomicU32,
    /// A free that leaves `used <= slow_at` takes the slow path: 0 normally (the segment
    /// became empty), a threshold while the segment is on the full list.
    pub slow_at: u32,
    /// Bytes of blocks from the data start (`capacity * block_size`).
    pub limit: u32,
    /// Block size (atomic for `stats`, like `used`).
    pub block_size: AtomicU32,
    /// Offset of the first block ([`data_offset`] of the block size).
    pub data: u16,
    pub kind: Kind,
    pub class: u8,
}

/// Offset of the first of the 16 possible hot lines.
const HOT_BASE: usize = core::mem::offset_of!(Segment, _meta);

/// The hot line of segment `seg`.
#[inline(always)]
pub(crate) fn hot(seg: *mut Segment) -> *mut Hot {
    (seg as usize + HOT_BASE + ((seg as usize >> 10) & (15 << 6))) as *mut Hot
}

/// The segment header: cold fields at the base; the [`Hot`] line and the bitmaps follow.
#[repr(C)]
pub(crate) struct Segment {
    /// Per-segment key for encoding free-list links (the heap key without `secure`).
    pub key: usize,
    pub capacity: usize,
    /// In the owner's full list (no free block when last looked).
    pub full: bool,
    /// Pages whose blocks may be on the free list (bit 0: the header page).
    pub active: u16,
    /// Pages written since the segment came from the source: what it counts as committed.
    pub touched: u16,
    /// Links in the owner's per-class list, the empty cache, or the heap's large list.
    pub next: *mut Segment,
    pub prev: *mut Segment,
    /// Links in the owner's list of all its small segments (changed under the heap lock, so
    /// `stats` and `Drop` may walk it).
    pub all_next: *mut Segment,
    pub all_prev: *mut Segment,
    /// Segments spanned (large) or 1.
    pub count: usize,
    /// Requested size of a large block; for a cached empty segment, when it became empty.
    pub large_size: usize,
    /// Room for the coloured metadata: the [`Hot`] line at one of 16 offsets, and right
    /// after it the block bits — a *live* word per 64 blocks (set while the block is handed
    /// out and not freed by its owner; written by the owner only, relaxed loads and stores:
    /// plain moves) interleaved with a *remote* word (one bit per block freed by another
    /// thread and not yet collected; set with `fetch_or`, cleared by the owner's `swap`), so
    /// one cache line holds both words a free checks. The bits move with the hot line, so
    /// they too fall into different cache sets in different segments.
    _meta: [Hot; 16 + 2 * BITMAP_WORDS * 8 / 64],
    /// The remote queue link and flag, on a line of their own.
    pub remote: Remote,
}

const _: () = assert!(core::mem::size_of::<Hot>() == 64);

/// The part of the header other threads write.
#[repr(C, align(64))]
pub(crate) struct Remote {
    /// The segment is (or is about to be) in the owner's remote queue.
    pub queued: AtomicBool,
    /// Link in the owner's remote queue.
    pub next: AtomicPtr<Segment>,
}

impl Segment {
    /// The live-bits word `w`.
    #[inline(always)]
    pub fn live_word(&self, w: usize) -> &AtomicU64 {
        debug_assert!(w < BITMAP_WORDS);
        // SAFETY: callers pass w < BITMAP_WORDS (a block index shifted by 6); the words
        // follow the hot line inside `_meta`, which has room for them at every colour.
        unsafe { &*self.bits().add(2 * w) }
    }

    /// The first word of the interleaved bitmaps: right after the hot line.
    #[inline(always)]
    fn bits(&self) -> *const AtomicU64 {
        (hot(self as *const Segment as *mut Segment) as usize + 64) as *const AtomicU64
    }

    /// The remote-bits word `w`.
    #[inline(always)]
    pub fn remote_word(&self, w: usize) -> &AtomicU64 {
        debug_assert!(w < BITMAP_WORDS);
        // SAFETY: as live_word.
        unsafe { &*self.bits().add(2 * w + 1) }
    }
}

const _: () = assert!(core::mem::size_of::<Segment>() <= DATA_OFFSET);

/// The segment containing `p`.
#[inline(always)]
pub(crate) fn segment_of(p: *const u8) -> *mut Segment {
    (p as usize & !(SEGMENT_SIZE - 1)) as *mut Segment
}

/// Encodes a free-list link: with the `secure` feature xor with the key and rotate; plain
/// otherwise (double frees are caught by the live bits, not by the links).
#[inline(always)]
pub(crate) fn encode(p: usize, key: usize) -> usize {
    if cfg!(feature = "secure") {
        (p ^ key).rotate_left(17)
    } else {
        let _ = key;
        p
    }
}

/// Decodes a free-list link.
#[inline(always)]
pub(crate) fn decode(v: usize, key: usize) -> usize {
    if cfg!(feature = "secure") {
        v.rotate_right(17) ^ key
    } else {
        let _ = key;
        v
    }
}

/// A key from random bits: odd, with bit 63 set and 62 clear (never a canonical address).
pub(crate) fn make_key(bits: usize) -> usize {
    let k = (bits as u64 | 1 | 1 << 63) & !(1 << 62);
    k as usize
}

/// The key a segment's free list is encoded with: the heap key, mixed with the segment
/// address under the `secure` feature.
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

/// Mask of the pages `[first, last]`.
#[inline]
fn page_span(first: usize, last: usize) -> u16 {
    let n = last - first + 1;
    ((((1u32 << n) - 1) << first) & 0xffff) as u16
}

impl Segment {
    /// Writes a fresh header at `base` (all bitmaps clear, only the header page touched).
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
            (*hot(seg)).key = (*seg).key;
            (*hot(seg)).owner = owner;
            (*seg).count = count;
            (*seg).touched = 1;
        }
        seg
    }

    /// Makes an (empty) small segment serve class `class` with blocks of `block_size`: no
    /// page but the header's is active; the blocks that fit beside the header are free.
    ///
    /// # Safety
    /// `seg` must be a small segment of the caller with no live block and no remote free
    /// pending.
    pub unsafe fn format(seg: *mut Segment, class: usize, block_size: usize) {
        // SAFETY: the caller owns the segment; blocks lie inside it.
        unsafe {
            let data = data_offset(block_size);
            let cap = ((SEGMENT_SIZE - data) / block_size).min(MAX_BLOCKS);
            let h = hot(seg);
            (*h).data = data as u16;
            (*h).class = class as u8;
            (*h).block_size.store(block_size as u32, Relaxed);
            (*seg).capacity = cap;
            (*h).limit = (cap * block_size) as u32;
            (*h).div_c = crate::class::DIV_C[class];
            (*h).used.store(0, Relaxed);
            (*h).free = 0;
            (*seg).full = false;
            (*h).slow_at = 0;
            for w in 0..cap.div_ceil(64) {
                (*seg).live_word(w).store(0, Relaxed);
                (*seg).remote_word(w).store(0, Relaxed);
            }
            (*seg).active = 0;
            Segment::activate(seg, 0);
        }
    }

    /// Pages that hold blocks (the rest of the segment past the last block is never used).
    ///
    /// # Safety
    /// `seg` must be a formatted small segment.
    pub unsafe fn block_pages(seg: *mut Segment) -> u16 {
        // SAFETY: reading the hot line.
        let end = unsafe { (*hot(seg)).data as usize + (*hot(seg)).limit as usize };
        page_span(0, (end - 1) / PAGE_SIZE)
    }

    /// The pages block `i` spans.
    ///
    /// # Safety
    /// `seg` must be a formatted small segment and `i` below its capacity.
    #[inline]
    unsafe fn pages_of(seg: *mut Segment, i: usize) -> u16 {
        // SAFETY: reading the hot line.
        let (data, bs) = unsafe {
            (
                (*hot(seg)).data as usize,
                (*hot(seg)).block_size.load(Relaxed) as usize,
            )
        };
        let start = data + i * bs;
        page_span(start / PAGE_SIZE, (start + bs - 1) / PAGE_SIZE)
    }

    /// Indices of the blocks overlapping page `page` (empty when none).
    ///
    /// # Safety
    /// `seg` must be a formatted small segment.
    unsafe fn blocks_on(seg: *mut Segment, page: usize) -> core::ops::Range<usize> {
        // SAFETY: reading the hot line.
        let (data, limit, bs) = unsafe {
            let h = hot(seg);
            (
                (*h).data as usize,
                (*h).limit as usize,
                (*h).block_size.load(Relaxed) as usize,
            )
        };
        let lo = (page * PAGE_SIZE).max(data);
        let hi = ((page + 1) * PAGE_SIZE).min(data + limit);
        if lo >= hi {
            return 0..0;
        }
        (lo - data) / bs..(hi - 1 - data) / bs + 1
    }

    /// Whether block `i` is live (or freed remotely and not collected).
    ///
    /// # Safety
    /// `i` must be below the capacity of the formatted small segment `seg`.
    #[inline]
    pub unsafe fn live_at(seg: *mut Segment, i: usize) -> bool {
        // SAFETY: i < capacity <= BITMAP_WORDS * 64.
        unsafe { (*seg).live_word(i >> 6).load(Relaxed) & 1 << (i & 63) != 0 }
    }

    /// Activates page `page`: the free blocks whose pages are now all active go on the free
    /// list (in address order, before the blocks already there).
    ///
    /// # Safety
    /// Owner only; the page must be committed (touched or committed again).
    pub unsafe fn activate(seg: *mut Segment, page: usize) {
        // SAFETY: owner-only; the blocks lie in the segment.
        unsafe {
            (*seg).active |= 1 << page;
            let active = (*seg).active;
            let h = hot(seg);
            let (first, bs, key) = (
                seg as usize + (*h).data as usize,
                (*h).block_size.load(Relaxed) as usize,
                (*h).key,
            );
            let mut free = (*h).free;
            for i in Segment::blocks_on(seg, page).rev() {
                if Segment::pages_of(seg, i) & !active == 0 && !Segment::live_at(seg, i) {
                    let b = first + i * bs;
                    (*(b as *mut Block)).next = encode(free, key);
                    free = b;
                }
            }
            (*h).free = free;
        }
    }

    /// The index of the block starting at `p`, or `None` if `p` is not a block start of this
    /// (small) segment.
    ///
    /// # Safety
    /// `seg` must be a valid small segment header (`p` may be anywhere).
    #[inline(always)]
    pub unsafe fn block_index(seg: *mut Segment, p: *const u8) -> Option<usize> {
        // SAFETY: reading the hot line.
        unsafe {
            let h = hot(seg);
            let off = (p as usize).wrapping_sub(seg as usize + (*h).data as usize);
            if off >= (*h).limit as usize {
                return None;
            }
            let m = off as u128 * (*h).div_c as u128;
            if (m as u64) >= (*h).div_c {
                return None;
            }
            Some((m >> 64) as usize)
        }
    }

    /// Whether block `i` is live and not freed remotely: what a free must find.
    ///
    /// # Safety
    /// `i` must be a block index of the valid small segment `seg`.
    #[inline(always)]
    pub unsafe fn is_allocated(seg: *mut Segment, i: usize) -> bool {
        let (w, bit) = (i >> 6, 1u64 << (i & 63));
        // SAFETY: i is a block index of seg.
        unsafe {
            (*seg).live_word(w).load(Relaxed) & bit != 0
                && (*seg).remote_word(w).load(Relaxed) & bit == 0
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

    #[test]
    fn page_spans() {
        assert_eq!(page_span(0, 0), 1);
        assert_eq!(page_span(1, 2), 0b110);
        assert_eq!(page_span(0, 15), 0xffff);
        assert_eq!(page_span(15, 15), 0x8000);
    }
}
