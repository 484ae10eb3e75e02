//! The record of a segment of the size-class heap: its metadata, kept apart from the
//! segment.
//!
//! A pointer's segment base is the pointer rounded down to [`SEGMENT_SIZE`]; the segment
//! registry (module `registry`) maps that base to the segment's record, one load of a dense
//! array: O(1), no search, and nothing at the segment itself is read. The record says which
//! heap owns the segment (a cookie mixing the segment's address with the heap's key), which
//! class it serves, and keeps two bits per block: *live* (handed out and not yet freed by its
//! owner; written by the owner only) and *remote* (freed by another thread, waiting for the
//! owner to collect it; set with one atomic `fetch_or` by the freeing thread). A free checks
//! them before anything else — live set, remote clear — so a double free is caught whatever
//! the program wrote into the freed block since; the block index comes from one
//! multiplication ([`Segment::block_index`], which also rejects interior pointers).
//!
//! Records live side by side in the heap's own meta segments ([`RECORD_SIZE`] bytes each),
//! as mimalloc's page descriptors live together in its segment header: segments are 64 KiB
//! aligned, so metadata at a fixed offset inside each would fall into a handful of cache
//! sets and evict itself; dense records do not. The segments hold only blocks, from offset
//! 0, so every block is aligned to the largest power of two dividing the block size.
//!
//! Blocks are carved lazily, a page at a time ([`Segment::activate`]): a segment's free list
//! holds only blocks whose pages are *active*, so a class with few blocks touches (commits)
//! only the pages it uses.

use crate::source::{PAGE_SIZE, SEGMENT_SIZE};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Pages of a segment.
const SEGMENT_PAGES: usize = SEGMENT_SIZE / PAGE_SIZE;
const _: () = assert!(SEGMENT_PAGES <= 16, "page masks are u16");

/// Number of 64-bit words of one block bitmap: at most 4096 blocks per segment (the
/// 8-byte class uses the first 32 KiB of its segments; pages past its last block are never
/// touched).
pub(crate) const BITMAP_WORDS: usize = 64;

/// Most blocks in a segment.
pub(crate) const MAX_BLOCKS: usize = BITMAP_WORDS * 64;

/// Bytes of one record.
pub(crate) const RECORD_SIZE: usize = core::mem::size_of::<Segment>();

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
    /// The heap's own bookkeeping (shared state and records, a thread's local heap).
    Meta = 3,
}

/// The record of one segment: the hot fields (what a free, an allocation and the search for
/// a segment with free blocks read) share the first cache line with the first 64 blocks'
/// bits, then come the rest of the bits, then the cold fields (back links, page masks, the
/// remote queue link).
///
/// A segment of a class of 1 KiB or more has at most 64 blocks: its frees and allocations
/// touch one line of its record.
#[repr(C, align(64))]
pub(crate) struct Segment {
    // --- hot: 48 bytes ---
    /// Free list of active blocks (links encoded with `secure`). Owner only.
    pub free: usize,
    /// The local heap that owns the segment (type-erased), null for large and meta segments.
    pub owner: *mut (),
    /// `ceil(2^64 / block_size)`: `off` is a multiple of the block size iff
    /// `off * div_c mod 2^64 < div_c`, and the block index is the high half of the product
    /// (Lemire, Kaser and Kurz 2019) — no division.
    pub div_c: u64,
    /// Link in the owner's per-class list (here so that looking for the fullest of the
    /// next segments reads one line of each), the empty cache, the heap's large list, the
    /// heap's list of record slabs or its free records.
    pub next: *mut Segment,
    /// Blocks live (including those freed remotely and not yet collected). Written by the
    /// owner only; atomic so that `stats` may read it (relaxed: plain moves).
    pub used: AtomicU32,
    /// A free that leaves `used <= slow_at` takes the slow path: 0 normally (the segment
    /// became empty), a threshold while the segment is on the full list.
    pub slow_at: u32,
    /// Bytes of blocks from the segment base (`capacity * block_size`).
    pub limit: u32,
    pub kind: Kind,
    pub class: u8,
    /// In the owner's full list (no free block when last looked).
    pub full: bool,
    /// The block bits, from byte 48: a *live* word per 64 blocks (set while the block is
    /// handed out and not freed by its owner; written by the owner only, relaxed loads and
    /// stores: plain moves) interleaved with a *remote* word (one bit per block freed by
    /// another thread and not yet collected; set with `fetch_or`, cleared by the owner's
    /// `swap`), so one cache line holds both words a free checks.
    bits: [AtomicU64; 2 * BITMAP_WORDS],
    _pad: [u8; 16],
    // --- cold ---
    /// `base ^ heap key`: identifies the owning heap (0 once the segment went back).
    pub cookie: usize,
    /// Key of the free-list links (`secure`: per segment; the heap key otherwise).
    pub key: usize,
    /// The segment's address.
    pub base: usize,
    /// The back link of `next`.
    pub prev: *mut Segment,
    /// Links in the owner's list of all its small segments (changed under the heap lock, so
    /// `stats` and `Drop` may walk it).
    pub all_next: *mut Segment,
    pub all_prev: *mut Segment,
    /// Segments spanned (large) or 1.
    pub count: usize,
    /// Requested size of a large block; for a cached empty segment, when it became empty.
    pub large_size: usize,
    /// Blocks of a small segment; bytes a large block counts as committed.
    pub capacity: usize,
    /// Block size (atomic for `stats`, like `used`); 0 for a large block (which starts at
    /// the segment base).
    pub block_size: AtomicU32,
    /// Pages whose blocks may be on the free list.
    pub active: u16,
    /// Pages written since the segment came from the source: what it counts as committed.
    pub touched: u16,
    /// The remote queue link and flag (written by other threads).
    pub remote: Remote,
}

/// The part of the record other threads write (besides the remote bits).
#[repr(C)]
pub(crate) struct Remote {
    /// The segment is (or is about to be) in the owner's remote queue.
    pub queued: AtomicBool,
    /// Link in the owner's remote queue.
    pub next: AtomicPtr<Segment>,
}

const _: () = assert!(core::mem::offset_of!(Segment, bits) == 48);
const _: () = assert!(core::mem::offset_of!(Segment, cookie) % 64 == 0);

impl Segment {
    /// The live-bits word `w` (blocks `64 * w` to `64 * w + 63`).
    ///
    /// # Safety
    /// `w` must be below [`BITMAP_WORDS`] (a block index shifted right by 6 is).
    #[inline(always)]
    pub unsafe fn live_word(&self, w: usize) -> &AtomicU64 {
        debug_assert!(w < BITMAP_WORDS);
        // SAFETY: `2 * w < 2 * BITMAP_WORDS`, the length of `bits` (caller).
        unsafe { self.bits.get_unchecked(2 * w) }
    }

    /// The remote-bits word `w`.
    ///
    /// # Safety
    /// As [`live_word`](Self::live_word).
    #[inline(always)]
    pub unsafe fn remote_word(&self, w: usize) -> &AtomicU64 {
        debug_assert!(w < BITMAP_WORDS);
        // SAFETY: `2 * w + 1 < 2 * BITMAP_WORDS`, the length of `bits` (caller).
        unsafe { self.bits.get_unchecked(2 * w + 1) }
    }
}

/// The base of the segment containing `p`.
#[inline(always)]
pub(crate) fn base_of(p: *const u8) -> usize {
    p as usize & !(SEGMENT_SIZE - 1)
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
    /// Writes a fresh record at `rec` for the segment(s) at `base` (nothing touched, no
    /// block); the bits are cleared by [`format`](Self::format).
    ///
    /// # Safety
    /// `rec` must be a writable record nothing else uses; `base` SEGMENT_SIZE-aligned.
    pub unsafe fn init(
        rec: *mut Segment,
        base: usize,
        heap_key: usize,
        kind: Kind,
        owner: *mut (),
        count: usize,
    ) -> *mut Segment {
        // SAFETY: the caller gives us the record; zero is a valid bit pattern for every
        // field but `kind`, which is written right after. The bits are left as they are.
        unsafe {
            core::ptr::write_bytes(rec as *mut u8, 0, core::mem::offset_of!(Segment, bits));
            let cold = core::mem::offset_of!(Segment, cookie);
            core::ptr::write_bytes((rec as *mut u8).add(cold), 0, RECORD_SIZE - cold);
            (*rec).cookie = base ^ heap_key;
            (*rec).kind = kind;
            (*rec).key = segment_key(heap_key, base);
            (*rec).owner = owner;
            (*rec).base = base;
            (*rec).count = count;
        }
        rec
    }

    /// Makes an (empty) small segment serve class `class` with blocks of `block_size`: no
    /// page is active, so the free list is empty until [`activate`](Self::activate).
    ///
    /// # Safety
    /// `seg` must be a small segment of the caller with no live block and no remote free
    /// pending.
    pub unsafe fn format(seg: *mut Segment, class: usize, block_size: usize) {
        // SAFETY: the caller owns the segment; the bitmap words cleared are below
        // `MAX_BLOCKS / 64 = BITMAP_WORDS`.
        unsafe {
            let cap = (SEGMENT_SIZE / block_size).min(MAX_BLOCKS);
            (*seg).class = class as u8;
            (*seg).block_size.store(block_size as u32, Relaxed);
            (*seg).capacity = cap;
            (*seg).limit = (cap * block_size) as u32;
            (*seg).div_c = crate::class::DIV_C[class];
            (*seg).used.store(0, Relaxed);
            (*seg).free = 0;
            (*seg).full = false;
            (*seg).slow_at = 0;
            for w in 0..cap.div_ceil(64) {
                (*seg).live_word(w).store(0, Relaxed);
                (*seg).remote_word(w).store(0, Relaxed);
            }
            (*seg).active = 0;
        }
    }

    /// Pages that hold blocks (the rest of the segment past the last block is never used).
    ///
    /// # Safety
    /// `seg` must be a formatted small segment.
    pub unsafe fn block_pages(seg: *mut Segment) -> u16 {
        // SAFETY: reading the record.
        let end = unsafe { (*seg).limit as usize };
        page_span(0, (end - 1) / PAGE_SIZE)
    }

    /// The pages block `i` spans.
    ///
    /// # Safety
    /// `seg` must be a formatted small segment and `i` below its capacity.
    #[inline]
    unsafe fn pages_of(seg: *mut Segment, i: usize) -> u16 {
        // SAFETY: reading the record.
        let bs = unsafe { (*seg).block_size.load(Relaxed) as usize };
        let start = i * bs;
        page_span(start / PAGE_SIZE, (start + bs - 1) / PAGE_SIZE)
    }

    /// Indices of the blocks overlapping page `page` (empty when none).
    ///
    /// # Safety
    /// `seg` must be a formatted small segment.
    unsafe fn blocks_on(seg: *mut Segment, page: usize) -> core::ops::Range<usize> {
        // SAFETY: reading the record.
        let (limit, bs) = unsafe {
            (
                (*seg).limit as usize,
                (*seg).block_size.load(Relaxed) as usize,
            )
        };
        let lo = page * PAGE_SIZE;
        let hi = ((page + 1) * PAGE_SIZE).min(limit);
        if lo >= hi {
            return 0..0;
        }
        lo / bs..(hi - 1) / bs + 1
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
            let (first, bs, key) = (
                (*seg).base,
                (*seg).block_size.load(Relaxed) as usize,
                (*seg).key,
            );
            let mut free = (*seg).free;
            for i in Segment::blocks_on(seg, page).rev() {
                if Segment::pages_of(seg, i) & !active == 0 && !Segment::live_at(seg, i) {
                    let b = first + i * bs;
                    (*(b as *mut Block)).next = encode(free, key);
                    free = b;
                }
            }
            (*seg).free = free;
        }
    }

    /// The index of the block starting at `p`, or `None` if `p` is not a block start of this
    /// (small) segment.
    ///
    /// # Safety
    /// `seg` must be the valid record of the small segment containing `p`.
    #[inline(always)]
    pub unsafe fn block_index(seg: *mut Segment, p: *const u8) -> Option<usize> {
        // SAFETY: reading the record's hot fields (caller).
        unsafe {
            let off = p as usize & (SEGMENT_SIZE - 1);
            if off >= (*seg).limit as usize {
                return None;
            }
            let m = off as u128 * (*seg).div_c as u128;
            if (m as u64) >= (*seg).div_c {
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
        // SAFETY: a block index of `seg` is below its capacity, so `w < BITMAP_WORDS`.
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
    fn records_are_whole_lines_and_blocks_fill_the_segment() {
        assert_eq!(RECORD_SIZE % 64, 0);
        assert_eq!(RECORD_SIZE, 1216);
        // Blocks start at offset 0 (no header in the segment): a page-sized class fills the
        // segment exactly, and the 8-byte class stops at MAX_BLOCKS.
        extern crate std;
        let mut rec = std::boxed::Box::<Segment>::new_uninit();
        let r = rec.as_mut_ptr();
        for (size, blocks, limit) in [(4096, 16, SEGMENT_SIZE), (8, MAX_BLOCKS, 32 * 1024)] {
            let c = crate::class::class_of(size).unwrap();
            // SAFETY: `r` is a record nothing else uses; the base is segment-aligned.
            unsafe {
                Segment::init(
                    r,
                    SEGMENT_SIZE,
                    make_key(1),
                    Kind::Small,
                    core::ptr::null_mut(),
                    1,
                );
                Segment::format(r, c, size);
                assert_eq!((*r).capacity, blocks);
                assert_eq!((*r).limit as usize, limit);
                assert_eq!(Segment::block_pages(r), page_span(0, limit / PAGE_SIZE - 1));
            }
        }
    }

    #[test]
    fn page_spans() {
        assert_eq!(page_span(0, 0), 1);
        assert_eq!(page_span(1, 2), 0b110);
        assert_eq!(page_span(0, 15), 0xffff);
        assert_eq!(page_span(15, 15), 0x8000);
    }
}
