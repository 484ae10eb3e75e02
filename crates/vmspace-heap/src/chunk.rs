//! The chunk heap: boundary tags, immediate coalescing, exact and sorted bins, a selectable fit
//! policy, and a top chunk grown and trimmed through a [`BrkSource`] (malloc's design, after
//! dlmalloc).
//!
//! A chunk at address `c` (16-aligned) has a header of two words: `prev_foot` (the size of the
//! chunk before, valid only while that one is free) and `head` (its own size with two flags:
//! [`PINUSE`] — the chunk before is in use, [`CINUSE`] — this one is). The payload starts at
//! `c + 16` and runs on into the next chunk's `prev_foot` (unused while `c` is in use), so a
//! chunk costs one word beyond its payload. A freed chunk merges at once with free
//! neighbours, so no two free chunks touch. Free chunks below 8 KiB sit in exact bins (one
//! size each, LIFO: O(1)); larger ones in logarithmic bins (four per doubling) kept sorted by
//! address (a bin head's back link is not kept: the bin says which chunk heads it). A
//! bitmap of non-empty bins, and a summary word of non-empty bitmap words, find the next
//! bin that can serve a request in two word scans. The top chunk — the free end of the
//! region — is not binned (nor is its header written: `top` and `top_size` describe it):
//! it serves what no bin can and grows the break when too small; when a free leaves it
//! larger than the trim threshold, the break shrinks.
//! If the heap has to grow again soon after a trim, the threshold doubles past what was
//! trimmed (hysteresis, like glibc's dynamic thresholds), so a burst-and-free pattern stops
//! paying for giving memory back and faulting it in again.
//!
//! Two things sit in front of that for [`LockedChunkHeap`]'s `GlobalAlloc` (the direct
//! [`ChunkHeap::free`]/[`ChunkHeap::try_free`] bypass both). Deallocations are deferred
//! ([`ChunkHeap::free_deferred`]): each starts loading its block's boundary tags and
//! applies the free queued [`DEFER`] deallocations before, so the cache misses of a run of
//! frees overlap instead of following one another. And an applied deferred free of a
//! chunk up to [`CACHE_LIMIT`] bytes parks the block in the block cache (up to
//! [`CACHE_CAP`] per size, still an in-use chunk, marked [`CACHED`]), from which the next
//! allocation of that size takes it without touching a neighbour (glibc's tcache).

use crate::error::{report, HeapError, HeapErrorKind};
use crate::source::{align_up, BrkSource, PAGE_SIZE};
use crate::stats::HeapStats;
use core::alloc::Layout;
use core::ptr::{self, null_mut};

/// Flag in `head`: the previous chunk is in use.
pub const PINUSE: usize = 1;
/// Flag in `head`: this chunk is in use.
pub const CINUSE: usize = 2;
/// Flag in `head` (with [`CINUSE`]): this in-use chunk is parked in the block cache.
pub const CACHED: usize = 4;
/// All flag bits of `head`; the rest is the chunk size.
const FLAGS: usize = PINUSE | CINUSE | CACHED;
/// Header bytes before each payload.
const HDR: usize = 16;
/// Bytes a chunk needs beyond its payload: the payload of an in-use chunk runs on into the
/// next chunk's `prev_foot`, which is only used while this chunk is free (dlmalloc's
/// overhead of one word).
const OVERHEAD: usize = 8;
/// Smallest chunk (header plus two free-list links).
const MIN_CHUNK: usize = 32;
/// Chunks below this size have exact bins.
const SMALL_LIMIT: usize = 8192;
/// log2 of [`SMALL_LIMIT`].
const SMALL_SHIFT: usize = 13;
const _: () = assert!(1 << SMALL_SHIFT == SMALL_LIMIT);
/// Exact bins (one per multiple of 16 below [`SMALL_LIMIT`]; bins 0 and 1 stay empty).
const NSMALL: usize = SMALL_LIMIT / 16;
/// All bins: the exact ones, then four per doubling from [`SMALL_LIMIT`] up.
const NBINS: usize = NSMALL + 4 * (usize::BITS as usize - SMALL_SHIFT);
/// Words of the bitmap of non-empty bins.
const BITMAP_WORDS: usize = NBINS.div_ceil(64);
const _: () = assert!(BITMAP_WORDS <= 64, "the summary word covers the bitmap");
/// Smallest growth of the break.
const GROW_MIN: usize = 64 * 1024;
/// Free bytes kept at the top when trimming.
const TOP_KEEP: usize = 64 * 1024;
/// Frees [`ChunkHeap::free_deferred`] holds back (a power of two): how many blocks' headers
/// are on their way from memory at once.
pub const DEFER: usize = 8;
/// Largest chunk size the block cache keeps.
pub const CACHE_LIMIT: usize = 256;
/// Block cache lists (indexed by chunk size / 16; those below [`MIN_CHUNK`] stay empty).
const NCACHE: usize = CACHE_LIMIT / 16 + 1;
/// Blocks the cache keeps per chunk size.
pub const CACHE_CAP: u8 = 16;

/// Which free chunk the chunk heap splits when no bin holds an exact fit.
///
/// Every policy takes an exact small bin's chunk first (and before that a block of exactly
/// the size from the block cache, which only [`ChunkHeap::free_deferred`] fills); they
/// differ in the larger chunk they carve from. They choose among the free chunks: a block
/// whose deferred free is not applied yet, or that sits in the cache, is not one. Bins
/// are visited upward from the request's bin, and within a (large, address-sorted) bin:
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitPolicy {
    /// the lowest-addressed chunk that fits, in the first bin that has one.
    First,
    /// the smallest chunk that fits (lowest address among equals).
    Best,
    /// a chunk of the largest size class that holds free chunks (the largest chunk up to
    /// bin granularity: the lowest-addressed fitting one of the highest bin), before the
    /// top chunk.
    Worst,
    /// the first chunk that fits at or after the end of the previous allocation, wrapping
    /// around within the bin.
    Next,
}

impl FitPolicy {
    /// All policies, in the order the benchmark names them.
    pub const ALL: [FitPolicy; 4] = [
        FitPolicy::First,
        FitPolicy::Best,
        FitPolicy::Worst,
        FitPolicy::Next,
    ];

    /// The lowercase name (`first`, `best`, `worst`, `next`).
    pub fn name(self) -> &'static str {
        match self {
            FitPolicy::First => "first",
            FitPolicy::Best => "best",
            FitPolicy::Worst => "worst",
            FitPolicy::Next => "next",
        }
    }
}

/// A coalescing chunk heap over a break-like region `B`. Single-owner (`&mut self`); wrap it
/// in [`LockedChunkHeap`] to share it or to use it as a global allocator.
pub struct ChunkHeap<B: BrkSource> {
    src: B,
    policy: FitPolicy,
    /// Start of the region (0 until the heap first grows).
    base: usize,
    /// The top chunk: `[top, top + top_size)`, ending at the break.
    top: usize,
    top_size: usize,
    /// Per bin, the first free chunk (0: empty).
    bins: [usize; NBINS],
    /// Bit `i`: bin `i` is not empty.
    bitmap: [u64; BITMAP_WORDS],
    /// Bit `w`: `bitmap[w]` is not zero.
    summary: u64,
    /// Target of link stores that have no chunk to go to.
    sink: usize,
    /// End of the last allocation: where [`FitPolicy::Next`] starts looking.
    rover: usize,
    /// Bytes of in-use chunks.
    live: usize,
    /// Free top bytes above which a free shrinks the break.
    trim_threshold: usize,
    /// Allocations that took the slow path (a split, a search, the top) so far — the
    /// clock of the trim hysteresis, kept off the fast paths; when the last trim happened
    /// and how much it gave back.
    ops: u64,
    trimmed_at: u64,
    trimmed: usize,
    /// Frees [`free_deferred`](Self::free_deferred) has not applied yet, (payload,
    /// predicted chunk size), a ring: entries `pend_out..pend_in` (wrapping counters),
    /// oldest first.
    pending: [(usize, usize); DEFER],
    pend_in: usize,
    pend_out: usize,
    /// The block cache: per chunk size up to [`CACHE_LIMIT`] (index `size / 16`), a LIFO
    /// list of in-use chunks marked [`CACHED`], linked through their first payload word,
    /// and how many more it takes.
    cache: [usize; NCACHE],
    cache_room: [u8; NCACHE],
}

/// Slow-path allocations after a trim within which growing again raises the trim threshold.
const TRIM_REGRET_OPS: u64 = 1 << 16;

// SAFETY: the raw addresses are only followed through `&mut self`; the source moves along.
unsafe impl<B: BrkSource + Send> Send for ChunkHeap<B> {}

/// Reads the word at `a`.
#[inline(always)]
unsafe fn rd(a: usize) -> usize {
    // SAFETY: callers pass addresses of headers or links inside the heap region.
    unsafe { *(a as *const usize) }
}

/// Writes `v` to the word at `a`.
#[inline(always)]
unsafe fn wr(a: usize, v: usize) {
    // SAFETY: as `rd`.
    unsafe { *(a as *mut usize) = v }
}

/// The `head` word (size and flags) of chunk `c`.
#[inline(always)]
unsafe fn head(c: usize) -> usize {
    // SAFETY: `c` is a chunk (caller).
    unsafe { rd(c + 8) }
}

/// Sets the `head` word of chunk `c`.
#[inline(always)]
unsafe fn set_head(c: usize, v: usize) {
    // SAFETY: `c` is a chunk (caller).
    unsafe { wr(c + 8, v) }
}

/// The forward link (next chunk of the bin) of free chunk `c`.
#[inline(always)]
unsafe fn fd(c: usize) -> usize {
    // SAFETY: `c` is a free chunk (caller).
    unsafe { rd(c + 16) }
}

/// The back link (previous chunk of the bin; stale in a bin's head) of free chunk `c`.
#[inline(always)]
unsafe fn bk(c: usize) -> usize {
    // SAFETY: `c` is a free chunk (caller).
    unsafe { rd(c + 24) }
}

/// Starts loading the cache line at `a` (a hint: never faults, whatever the address).
#[inline(always)]
fn prefetch(a: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only reads into the cache and never faults; SSE is part of x86-64.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(a as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = a;
}

/// Bin index of a chunk size.
#[inline(always)]
fn bin_of(size: usize) -> usize {
    if size < SMALL_LIMIT {
        size >> 4
    } else {
        let lg = (usize::BITS - 1 - size.leading_zeros()) as usize;
        let sub = (size >> (lg - 2)) & 3;
        NSMALL + (lg - SMALL_SHIFT) * 4 + sub
    }
}

/// The chunk size a block requested with `size` bytes most likely has ([`chunk_size`]
/// without the overflow check: a huge, wrong size only gives a wrong guess).
#[inline(always)]
fn guess_size(size: usize) -> usize {
    (size.wrapping_add(OVERHEAD + 15) & !15).max(MIN_CHUNK)
}

/// Chunk size for a request of `n` payload bytes; `None` when it overflows.
#[inline(always)]
fn chunk_size(n: usize) -> Option<usize> {
    let s = align_up(n.checked_add(OVERHEAD)?, 16)?;
    if s > isize::MAX as usize {
        return None;
    }
    Some(s.max(MIN_CHUNK))
}

impl<B: BrkSource> ChunkHeap<B> {
    /// An empty heap that grows through `src` and picks chunks by `policy`.
    pub const fn new(src: B, policy: FitPolicy) -> Self {
        ChunkHeap {
            src,
            policy,
            base: 0,
            top: 0,
            top_size: 0,
            bins: [0; NBINS],
            bitmap: [0; BITMAP_WORDS],
            summary: 0,
            sink: 0,
            rover: 0,
            live: 0,
            trim_threshold: 256 * 1024,
            ops: 0,
            trimmed_at: 0,
            trimmed: 0,
            pending: [(0, 0); DEFER],
            pend_in: 0,
            pend_out: 0,
            cache: [0; NCACHE],
            cache_room: [CACHE_CAP; NCACHE],
        }
    }

    /// The fit policy.
    pub fn policy(&self) -> FitPolicy {
        self.policy
    }

    /// Sets the free top size above which a free shrinks the break (default 256 KiB).
    pub fn set_trim_threshold(&mut self, bytes: usize) {
        self.trim_threshold = bytes.max(TOP_KEEP);
    }

    /// The heap's region `[start, end)` (`end` is the break), once it has grown.
    pub fn region(&self) -> Option<(usize, usize)> {
        (self.base != 0).then(|| (self.base, self.top + self.top_size))
    }

    /// Counters: live bytes (in-use chunk sizes; a block whose
    /// [deferred free](Self::free_deferred) is not applied yet still counts), committed
    /// bytes (the region up to the break), no segments, fragmentation.
    pub fn stats(&self) -> HeapStats {
        let committed = if self.base == 0 {
            0
        } else {
            self.top + self.top_size - self.base
        };
        HeapStats::new(self.live, committed, 0)
    }

    /// Sets bin `i`'s bit (and its word's summary bit).
    #[inline(always)]
    fn mark(&mut self, i: usize) {
        // SAFETY: bin indices are below NBINS, so words below BITMAP_WORDS.
        unsafe { *self.bitmap.get_unchecked_mut(i / 64) |= 1 << (i % 64) };
        self.summary |= 1 << (i / 64);
    }

    /// Clears bin `i`'s bit when `empty` (without a branch: whether a list ran empty is
    /// hard to predict).
    #[inline(always)]
    fn unmark_if(&mut self, i: usize, empty: bool) {
        // SAFETY: as in `mark`.
        let w = unsafe { self.bitmap.get_unchecked_mut(i / 64) };
        *w &= !((empty as u64) << (i % 64));
        if *w == 0 {
            // rare (a whole word of bins empty): predictable
            self.summary &= !(1 << (i / 64));
        }
    }

    /// Where a link store goes when there is no chunk to store it in (instead of a branch).
    #[inline(always)]
    fn sink(&mut self) -> usize {
        core::ptr::addr_of_mut!(self.sink) as usize
    }

    /// The first non-empty bin at index `i` or above: its bitmap word, then the summary of
    /// non-empty words.
    #[inline]
    fn next_bin(&self, i: usize) -> Option<usize> {
        let w = i / 64;
        if w >= BITMAP_WORDS {
            return None;
        }
        let bits = self.bitmap[w] & (!0u64 << (i % 64));
        if bits != 0 {
            return Some(w * 64 + bits.trailing_zeros() as usize);
        }
        let above = self.summary & (!0u64 << w << 1);
        if above == 0 {
            return None;
        }
        let w = above.trailing_zeros() as usize;
        Some(w * 64 + self.bitmap[w].trailing_zeros() as usize)
    }

    /// The highest non-empty bin.
    fn last_bin(&self) -> Option<usize> {
        if self.summary == 0 {
            return None;
        }
        let w = 63 - self.summary.leading_zeros() as usize;
        Some(w * 64 + 63 - self.bitmap[w].leading_zeros() as usize)
    }

    /// Puts free chunk `c` of `size` bytes on its bin: at the head of an exact bin, in
    /// address order in a large one.
    #[inline(always)]
    unsafe fn insert(&mut self, c: usize, size: usize) {
        if size >= SMALL_LIMIT {
            // SAFETY: forwarded.
            return unsafe { self.insert_large(c, size) };
        }
        let i = size >> 4;
        // SAFETY: `i < NSMALL` as `size < SMALL_LIMIT`; `c` is a free chunk whose links we
        // own; bin lists hold free chunks only.
        unsafe {
            let h = *self.bins.get_unchecked(i);
            wr(c + 16, h); // (the head's back link is not kept)
            let back = if h != 0 { h + 24 } else { self.sink() };
            wr(back, c);
            *self.bins.get_unchecked_mut(i) = c;
        }
        self.mark(i);
    }

    /// [`insert`](Self::insert) for a chunk of [`SMALL_LIMIT`] bytes or more: in address
    /// order in its large bin.
    #[inline(never)]
    unsafe fn insert_large(&mut self, c: usize, size: usize) {
        let i = bin_of(size);
        // SAFETY: `c` is a free chunk whose links we own; bin lists hold free chunks only.
        unsafe {
            let h = self.bins[i];
            if h == 0 || h > c {
                wr(c + 16, h);
                wr(c + 24, 0);
                if h != 0 {
                    wr(h + 24, c);
                }
                self.bins[i] = c;
            } else {
                // address-sorted: after the last chunk below c
                let mut p = h;
                while fd(p) != 0 && fd(p) < c {
                    p = fd(p);
                }
                let n = fd(p);
                wr(c + 16, n);
                wr(c + 24, p);
                wr(p + 16, c);
                if n != 0 {
                    wr(n + 24, c);
                }
            }
        }
        self.mark(i);
    }

    /// Takes free chunk `c` of `size` bytes off its bin.
    #[inline(always)]
    unsafe fn unlink(&mut self, c: usize, size: usize) {
        let i = bin_of(size);
        // SAFETY: `c` is on bin `i`.
        unsafe {
            let (f, b) = (fd(c), bk(c));
            let bin = self.bins.as_mut_ptr().add(i) as usize;
            // the head's back link is stale (see `insert`, `alloc`): the bin says which chunk
            // heads it
            let is_head = rd(bin) == c;
            let to_c = if is_head { bin } else { b + 16 };
            if cfg!(feature = "secure") {
                self.check_links(c, f, to_c);
            }
            wr(to_c, f);
            // a new head's back link is not needed: its line is not written
            let back = if f != 0 && !is_head {
                f + 24
            } else {
                self.sink()
            };
            wr(back, b);
            self.unmark_if(i, rd(bin) == 0);
        }
    }

    /// `secure`: before free chunk `c` leaves its list, checks that the list agrees with it
    /// (the word at `to_c` — its predecessor's forward link, or the bin — points at `c`, its
    /// successor `f` points back at `c`, its head says free) and that its footer matches;
    /// reports [`HeapErrorKind::Corrupted`] otherwise, before anything is written through
    /// the links (glibc's safe unlinking).
    #[cold]
    #[inline(never)]
    unsafe fn check_links(&self, c: usize, f: usize, to_c: usize) {
        // SAFETY: `c` is claimed to be a free chunk in the region, `to_c` a link word of
        // ours; `f` is followed only when it lies in the region.
        unsafe {
            let size = head(c) & !FLAGS;
            let inside = |a: usize| a >= self.base && a < self.top && a % 16 == 0;
            let ok = rd(to_c) == c
                && head(c) & CINUSE == 0
                && size >= MIN_CHUNK
                && size <= self.top - c
                && rd(c + size) == size
                && (f == 0 || (inside(f) && bk(f) == c));
            if !ok {
                report(HeapError::new(HeapErrorKind::Corrupted, c));
            }
        }
    }

    /// Picks (and unlinks) a free chunk of at least `n` bytes by the policy.
    unsafe fn find(&mut self, n: usize) -> Option<usize> {
        let i = bin_of(n);
        // SAFETY: bins hold free chunks of the sizes their index says.
        unsafe {
            if i < NSMALL && self.bins[i] != 0 {
                let c = self.bins[i];
                self.unlink(c, n);
                return Some(c);
            }
            let pick = if self.policy == FitPolicy::Worst {
                let j = self.last_bin()?;
                let c = if j < NSMALL {
                    self.bins[j]
                } else {
                    self.pick_in_bin(j, n)
                };
                if c == 0 || head(c) & !FLAGS < n {
                    return None; // even the largest free chunk is too small: use the top
                }
                c
            } else {
                let mut j = self.next_bin(i)?;
                loop {
                    let c = if j < NSMALL {
                        self.bins[j]
                    } else {
                        self.pick_in_bin(j, n)
                    };
                    if c != 0 {
                        break c;
                    }
                    j = self.next_bin(j + 1)?;
                }
            };
            self.unlink(pick, head(pick) & !FLAGS);
            Some(pick)
        }
    }

    /// In the address-sorted large bin `j`, the chunk of at least `n` bytes the policy wants.
    unsafe fn pick_in_bin(&self, j: usize, n: usize) -> usize {
        // SAFETY: walking a bin list of free chunks.
        unsafe {
            let mut c = self.bins[j];
            match self.policy {
                FitPolicy::First | FitPolicy::Worst => {
                    while c != 0 && head(c) & !FLAGS < n {
                        c = fd(c);
                    }
                    c
                }
                FitPolicy::Best => {
                    let mut best = 0;
                    while c != 0 {
                        let s = head(c) & !FLAGS;
                        if s >= n && (best == 0 || s < head(best) & !FLAGS) {
                            best = c;
                        }
                        c = fd(c);
                    }
                    best
                }
                FitPolicy::Next => {
                    let mut first = 0;
                    while c != 0 {
                        if head(c) & !FLAGS >= n {
                            if c >= self.rover {
                                return c;
                            }
                            if first == 0 {
                                first = c;
                            }
                        }
                        c = fd(c);
                    }
                    first
                }
            }
        }
    }

    /// Marks chunk `c` (of `size` bytes, free and unlinked) in use for a request of `n`
    /// bytes, splitting off the remainder when it can stand as a chunk.
    unsafe fn use_chunk(&mut self, c: usize, size: usize, n: usize) {
        // SAFETY: `c` is an unlinked free chunk inside the region; its neighbour follows it.
        unsafe {
            let pin = head(c) & PINUSE;
            if size - n >= MIN_CHUNK {
                let r = c + n;
                let rs = size - n;
                set_head(c, n | CINUSE | pin);
                set_head(r, rs | PINUSE);
                wr(r + rs, rs); // footer in the next chunk's prev_foot
                self.insert(r, rs);
                self.live += n;
            } else {
                set_head(c, size | CINUSE | pin);
                let nx = c + size;
                set_head(nx, head(nx) | PINUSE);
                self.live += size;
            }
            self.rover = c + (head(c) & !FLAGS);
        }
    }

    /// Ensures the top chunk holds at least `n + MIN_CHUNK` bytes.
    fn grow_top(&mut self, n: usize) -> bool {
        let want = match n.checked_add(MIN_CHUNK) {
            Some(w) => w,
            None => return false,
        };
        if self.top_size >= want {
            return true;
        }
        let Some(bytes) = align_up((want - self.top_size).max(GROW_MIN), PAGE_SIZE) else {
            return false;
        };
        if self.trimmed != 0 && self.ops - self.trimmed_at < TRIM_REGRET_OPS {
            // grew again right after giving memory back: keep more next time
            self.trim_threshold = self.trim_threshold.max(self.trimmed.saturating_mul(2));
            self.trimmed = 0;
        }
        let Some(p) = self.src.grow(bytes) else {
            return false;
        };
        let p = p.as_ptr() as usize;
        if self.base == 0 {
            self.base = p;
            self.top = p;
            self.top_size = bytes;
        } else {
            debug_assert_eq!(
                p,
                self.top + self.top_size,
                "brk source grew non-contiguously"
            );
            self.top_size += bytes;
        }
        true
    }

    /// Allocates `layout.size()` bytes at `layout.align()`; null when out of memory or the
    /// size overflows.
    #[inline(always)]
    pub fn alloc(&mut self, layout: Layout) -> *mut u8 {
        // The common case first, small and call-free: a block of exactly the size from the
        // block cache, else the head of the exact bin; no split, no search. (A size up to
        // this bound cannot overflow the rounding.)
        let size = layout.size();
        if layout.align() <= 16 && size <= SMALL_LIMIT - 2 * HDR {
            let n = ((size + OVERHEAD + 15) & !15).max(MIN_CHUNK);
            let i = n >> 4;
            if i < NCACHE {
                // SAFETY: `i < NCACHE`; the cache holds in-use chunks of exactly `n` bytes.
                unsafe {
                    let c = *self.cache.get_unchecked(i);
                    if c != 0 {
                        let next = rd(c + 16);
                        if cfg!(feature = "secure") {
                            self.check_cached(c, next, n);
                        }
                        *self.cache.get_unchecked_mut(i) = next;
                        *self.cache_room.get_unchecked_mut(i) += 1;
                        // the next pop of this size reads `next`'s link (a hint; may be 0)
                        prefetch(next + 8);
                        set_head(c, head(c) & !CACHED);
                        self.rover = c + n;
                        return (c + HDR) as *mut u8;
                    }
                }
            }
            // SAFETY: `i < NSMALL`; a bin's chunks are free chunks of exactly `n` bytes.
            unsafe {
                let c = *self.bins.get_unchecked(i);
                if c != 0 {
                    let f = fd(c);
                    if cfg!(feature = "secure") {
                        self.check_links(c, f, self.bins.as_ptr().add(i) as usize);
                    }
                    // `f`'s back link still names `c`: a bin head's back link is never read,
                    // so `f`'s line is not written (it is likely not in cache)
                    *self.bins.get_unchecked_mut(i) = f;
                    self.unmark_if(i, f == 0);
                    // the next pop of this bin takes `f`: start loading its link and its
                    // successor's header (a hint; `f` may be 0)
                    prefetch(f + 16);
                    prefetch(f + n + 8);
                    // a free chunk's predecessor is always in use (coalescing)
                    set_head(c, n | CINUSE | PINUSE);
                    let nx = c + n;
                    set_head(nx, head(nx) | PINUSE);
                    self.live += n;
                    self.rover = nx;
                    return (c + HDR) as *mut u8;
                }
            }
        }
        self.alloc_slow(layout)
    }

    /// Everything [`alloc`](Self::alloc) does not do inline: aligned requests, a split of
    /// a larger free chunk chosen by the policy, the top chunk.
    #[inline(never)]
    fn alloc_slow(&mut self, layout: Layout) -> *mut u8 {
        self.ops += 1;
        if layout.align() > 16 {
            return self.alloc_aligned(layout);
        }
        let Some(n) = chunk_size(layout.size()) else {
            return null_mut();
        };
        // SAFETY: every chunk handled lies inside the region.
        unsafe {
            let mut found = self.find(n);
            if found.is_none() && self.has_pending() {
                // before the top is cut or grown, the deferred frees may serve the request
                self.apply_pending();
                found = self.find(n);
            }
            if let Some(c) = found {
                let size = head(c) & !FLAGS;
                self.use_chunk(c, size, n);
                return (c + HDR) as *mut u8;
            }
            if !self.grow_top(n) {
                return null_mut();
            }
            // the top's predecessor is always in use (it would have merged into the top)
            let c = self.top;
            set_head(c, n | CINUSE | PINUSE);
            self.top = c + n;
            self.top_size -= n;
            // The top's header is not written (`top` and `top_size` say it all): the next
            // carve is the first to touch that line, and here starts loading it, so a burst
            // of allocations does not wait for one cache miss after the other.
            prefetch(self.top + 8);
            prefetch(self.top + HDR);
            self.live += n;
            self.rover = self.top;
            (c + HDR) as *mut u8
        }
    }

    /// An allocation aligned beyond 16: a chunk large enough to hold an aligned block,
    /// with the lead before the aligned address and the tail after the block freed.
    fn alloc_aligned(&mut self, layout: Layout) -> *mut u8 {
        let align = layout.align();
        let Some(n) = chunk_size(layout.size()) else {
            return null_mut();
        };
        let Some(pad) = n.checked_add(align).and_then(|v| v.checked_add(MIN_CHUNK)) else {
            return null_mut();
        };
        let Ok(big) = Layout::from_size_align(pad, 16) else {
            return null_mut();
        };
        let p = self.alloc(big) as usize;
        if p == 0 {
            return null_mut();
        }
        // SAFETY: `p` is a fresh in-use chunk of at least n + align + 32 bytes; the lead
        // and tail pieces we cut off are inside it.
        unsafe {
            let mut c = p - HDR;
            let mut q = align_up(p, align).unwrap_or(p);
            if q != p && q - p < MIN_CHUNK {
                q += align;
            }
            if q != p {
                let lead = q - p;
                let size = head(c) & !FLAGS;
                let pin = head(c) & PINUSE;
                set_head(c, lead | CINUSE | pin);
                set_head(c + lead, (size - lead) | CINUSE | PINUSE);
                self.live -= lead;
                self.free_chunk(c);
                c += lead;
            }
            self.shrink_in_use(c, n);
            (c + HDR) as *mut u8
        }
    }

    /// Cuts an in-use chunk down to `n` bytes, freeing the tail when it can stand alone
    /// (live bytes follow).
    unsafe fn shrink_in_use(&mut self, c: usize, n: usize) {
        // SAFETY: `c` is an in-use chunk of ours of at least `n` bytes.
        unsafe {
            let size = head(c) & !FLAGS;
            if size - n >= MIN_CHUNK {
                let pin = head(c) & PINUSE;
                set_head(c, n | CINUSE | pin);
                let r = c + n;
                set_head(r, (size - n) | CINUSE | PINUSE);
                self.live -= size - n;
                self.free_chunk(r);
            }
        }
    }

    /// Checks that `p` is the payload of an in-use chunk of this heap; returns the chunk.
    fn check(&self, p: *mut u8) -> Result<usize, HeapError> {
        self.check_sized(p, 0).map(|(c, _, _)| c)
    }

    /// As [`check`](Self::check), with the size the block was requested with (0: unknown);
    /// returns the chunk, its head and the next chunk's head.
    ///
    /// The requested size predicts the chunk's size (a chunk is never smaller than
    /// [`chunk_size`] of its request, and usually exactly that), hence where the next
    /// chunk's header is: both headers are loaded at once instead of one after the other,
    /// which on a block not in cache halves the latency of a free. A wrong prediction (a
    /// chunk left whole when its remainder was too small to split, an aligned block, a
    /// wrong layout) only costs the second load.
    #[inline(always)]
    fn check_sized(&self, p: *mut u8, size: usize) -> Result<(usize, usize, usize), HeapError> {
        self.check_guess(p, guess_size(size))
    }

    /// [`check_sized`](Self::check_sized) with the predicted chunk size.
    #[inline(always)]
    fn check_guess(&self, p: *mut u8, guess: usize) -> Result<(usize, usize, usize), HeapError> {
        let p = p as usize;
        let err = |k| Err(HeapError::new(k, p));
        let c = p.wrapping_sub(HDR);
        // base + HDR <= p < top in one compare (an empty heap has base == top == 0)
        let limit = (self.top - self.base).saturating_sub(HDR);
        if c.wrapping_sub(self.base) >= limit || p % 16 != 0 {
            // A payload in the top chunk is free memory: a block freed next to the top
            // merged into it, so this is its second free (glibc: "double free or
            // corruption (top)").
            if p % 16 == 0 && p >= self.top + HDR && p < self.top + self.top_size {
                return err(HeapErrorKind::DoubleFree);
            }
            return err(HeapErrorKind::ForeignPointer);
        }
        let room = self.top - c;
        let guess = if guess <= room { guess } else { 0 };
        // SAFETY: `c` lies inside the region below the top chunk, so its header is readable;
        // `c + guess <= top` is a header or payload word inside the region.
        let (h, predicted) = unsafe { (head(c), head(c + guess)) };
        let size = h & !FLAGS;
        if size < MIN_CHUNK || size % 16 != 0 || size > room {
            return err(HeapErrorKind::NotABlock);
        }
        if h & (CINUSE | CACHED) != CINUSE {
            // free, or in use but parked in the block cache: freed already
            return err(HeapErrorKind::DoubleFree);
        }
        let nh = if size == guess {
            predicted
        } else {
            // SAFETY: `c + size <= top`, a chunk header inside the region.
            unsafe { head(c + size) }
        };
        // the top's header is not kept: the top is free and its predecessor (`c`) in use
        let nh = if size == room { PINUSE } else { nh };
        if nh & PINUSE == 0 {
            return err(HeapErrorKind::NotABlock);
        }
        Ok((c, h, nh))
    }

    /// Frees `p`, or says why it cannot be freed. Null is accepted and ignored.
    ///
    /// # Safety
    /// `p` must be null or a pointer obtained from this heap (a stale or interior pointer is
    /// detected only when its would-be header is inconsistent).
    pub unsafe fn try_free(&mut self, p: *mut u8) -> Result<(), HeapError> {
        // SAFETY: forwarded contract.
        unsafe { self.try_free_sized(p, 0) }
    }

    /// As [`try_free`](Self::try_free), told the size `p` was requested with (as
    /// `GlobalAlloc::dealloc` is): faster on blocks not in cache (the size predicts where
    /// the next chunk's header is, so both headers load at once); 0 when unknown. A wrong
    /// size is harmless. Applies the [deferred frees](Self::free_deferred) first.
    ///
    /// # Safety
    /// As [`try_free`](Self::try_free).
    #[inline]
    pub unsafe fn try_free_sized(&mut self, p: *mut u8, size: usize) -> Result<(), HeapError> {
        if self.has_pending() {
            // in order: a deferred free of the same block comes first
            self.apply_pending();
        }
        // SAFETY: forwarded contract.
        unsafe { self.try_free_now(p, size) }
    }

    /// Frees `p` (requested with `size` bytes, 0 when unknown) a few frees later, so that
    /// the cache misses of consecutive frees overlap (as glibc's fast bins defer
    /// coalescing): it starts loading `p`'s header and the predicted next chunk's header
    /// now, queues `p`, and applies the free queued [`DEFER`] frees before (whose headers
    /// have arrived meanwhile). Until its free is applied a block stays an in-use chunk:
    /// counted as live, not merged, not handed out, not seen by the fit policies. The
    /// queue is applied, oldest first, before an allocation takes the top chunk (no bin
    /// holds a fitting free chunk), and before [`realloc`](Self::realloc), an immediate
    /// free, [`flush`](Self::flush) and [`LockedChunkHeap::lock`]; the free of the block
    /// just below the top (the one that can shrink the heap) is not held back. A bad
    /// pointer is reported (see [`crate::report`]) when its free is applied. This is what
    /// [`LockedChunkHeap`]'s `GlobalAlloc::dealloc` calls.
    ///
    /// # Safety
    /// As [`try_free`](Self::try_free); nothing uses `p` after the call.
    #[inline]
    pub unsafe fn free_deferred(&mut self, p: *mut u8, size: usize) {
        if p.is_null() {
            return;
        }
        let c = (p as usize).wrapping_sub(HDR);
        let guess = guess_size(size);
        if c.wrapping_add(guess) == self.top {
            // the block below the top: its free can shrink the heap, so it is not held back
            // (nor are the ones before it, to keep the order)
            // SAFETY: forwarded contract.
            return unsafe { self.free_in_order(p, size) };
        }
        prefetch(c + 8);
        prefetch(c.wrapping_add(guess + 8));
        if guess > CACHE_LIMIT && guess < SMALL_LIMIT {
            // the free will likely push the block on this exact bin (it is too large for
            // the block cache), writing the back link of the chunk heading it now
            // SAFETY: `guess >> 4 < NSMALL`.
            prefetch(unsafe { *self.bins.get_unchecked(guess >> 4) } + 24);
        }
        let slot = self.pend_in % DEFER;
        self.pend_in = self.pend_in.wrapping_add(1);
        if self.pend_in.wrapping_sub(self.pend_out) <= DEFER {
            self.pending[slot] = (p as usize, guess);
            return;
        }
        // full: the oldest entry is in the slot the new one takes
        let (q, qguess) = self.pending[slot];
        self.pending[slot] = (p as usize, guess);
        self.pend_out = self.pend_out.wrapping_add(1);
        // SAFETY: queued by `free_deferred`, whose caller vouched for it.
        if let Err(e) = unsafe { self.apply_deferred(q as *mut u8, qguess) } {
            report(e)
        }
    }

    /// Applies the deferred frees, then frees `p` at once; a bad pointer is reported.
    #[cold]
    #[inline(never)]
    unsafe fn free_in_order(&mut self, p: *mut u8, size: usize) {
        if self.has_pending() {
            self.apply_pending();
        }
        // SAFETY: forwarded contract.
        if let Err(e) = unsafe { self.try_free_now(p, size) } {
            report(e)
        }
    }

    /// Whether deferred frees wait to be applied.
    #[inline(always)]
    fn has_pending(&self) -> bool {
        self.pend_in != self.pend_out
    }

    /// Applies the [deferred frees](Self::free_deferred) still queued, oldest first (a
    /// small block may go to the block cache); a bad pointer among them is reported.
    #[cold]
    #[inline(never)]
    fn apply_pending(&mut self) {
        while self.has_pending() {
            let (q, guess) = self.pending[self.pend_out % DEFER];
            self.pend_out = self.pend_out.wrapping_add(1);
            // SAFETY: queued by `free_deferred`, whose caller vouched for it.
            if let Err(e) = unsafe { self.apply_deferred(q as *mut u8, guess) } {
                report(e)
            }
        }
    }

    /// Applies every deferred free and empties the block cache: afterwards each block freed
    /// through [`free_deferred`](Self::free_deferred) is a free chunk, merged with its free
    /// neighbours, and the statistics count only blocks in use. A bad pointer among the
    /// queued frees is reported.
    pub fn flush(&mut self) {
        if self.has_pending() {
            self.apply_pending();
        }
        for i in 0..NCACHE {
            while self.cache[i] != 0 {
                let c = self.cache[i];
                // SAFETY: a cached chunk is an in-use chunk of ours marked CACHED; freed
                // through the checked path once unmarked (its request size `i * 16 - 8`
                // predicts its size).
                unsafe {
                    self.cache[i] = rd(c + 16);
                    self.cache_room[i] += 1;
                    set_head(c, head(c) & !CACHED);
                    if let Err(e) = self.try_free_now((c + HDR) as *mut u8, i * 16 - OVERHEAD) {
                        report(e)
                    }
                }
            }
        }
    }

    /// [`try_free_sized`](Self::try_free_sized) without looking at the deferred frees.
    #[inline(always)]
    unsafe fn try_free_now(&mut self, p: *mut u8, size: usize) -> Result<(), HeapError> {
        if p.is_null() {
            return Ok(());
        }
        let (c, h, nh) = self.check_sized(p, size)?;
        // SAFETY: checked just now.
        unsafe { self.free_checked(c, h, nh) };
        Ok(())
    }

    /// Applies a deferred free of `p` (predicted chunk size `guess`): parks the block in the
    /// block cache when it is small and its list has room, frees it otherwise (out of line:
    /// the inline path stays short).
    #[inline(always)]
    unsafe fn apply_deferred(&mut self, p: *mut u8, guess: usize) -> Result<(), HeapError> {
        let (c, h, nh) = self.check_guess(p, guess)?;
        let s = h & !FLAGS;
        if s <= CACHE_LIMIT {
            let i = s >> 4;
            // SAFETY: `i < NCACHE`; `c` is an in-use chunk of `s` bytes, its payload ours.
            unsafe {
                if *self.cache_room.get_unchecked(i) != 0 {
                    *self.cache_room.get_unchecked_mut(i) -= 1;
                    set_head(c, h | CACHED);
                    wr(c + 16, *self.cache.get_unchecked(i));
                    *self.cache.get_unchecked_mut(i) = c;
                    return Ok(());
                }
            }
        }
        // SAFETY: checked just now.
        unsafe { self.free_checked_slow(c, h, nh) };
        Ok(())
    }

    /// [`free_checked`](Self::free_checked) out of line.
    #[inline(never)]
    unsafe fn free_checked_slow(&mut self, c: usize, h: usize, nh: usize) {
        // SAFETY: forwarded.
        unsafe { self.free_checked(c, h, nh) }
    }

    /// `secure`: before cached chunk `c` leaves the cache for a request of `n` bytes,
    /// checks that it is still marked cached and that the link it holds leads to another
    /// cached chunk of `n` bytes (a use-after-free write into a cached block's first word
    /// would otherwise hand out an arbitrary address); reports
    /// [`HeapErrorKind::Corrupted`] otherwise.
    #[cold]
    #[inline(never)]
    unsafe fn check_cached(&self, c: usize, next: usize, n: usize) {
        let want = n | CINUSE | CACHED;
        // SAFETY: `c` is in the cache; `next` is read only once it lies in the region.
        let ok = unsafe {
            head(c) & !PINUSE == want
                && (next == 0
                    || (next >= self.base
                        && next < self.top
                        && next % 16 == 0
                        && head(next) & !PINUSE == want))
        };
        if !ok {
            report(HeapError::new(HeapErrorKind::Corrupted, c));
        }
    }

    /// Frees in-use chunk `c` with head `h`, followed by a chunk with head `nh` (checked by
    /// [`check_sized`](Self::check_sized)).
    #[inline(always)]
    unsafe fn free_checked(&mut self, c: usize, h: usize, nh: usize) {
        let size = h & !FLAGS;
        self.live -= size;
        // SAFETY: `c` is an in-use chunk with head `h`, followed by a chunk with head `nh`.
        unsafe {
            // The common case inline: both neighbours in use (the top's head never says
            // in use), an exact bin. The rest out of line, so this path keeps few registers.
            if h & PINUSE != 0 && nh & CINUSE != 0 && size < SMALL_LIMIT {
                set_head(c, size | PINUSE);
                let next = c + size;
                wr(next, size);
                set_head(next, nh & !PINUSE);
                self.insert(c, size);
            } else {
                self.release_slow(c, h, nh);
            }
        }
    }

    /// [`release`](Self::release) out of line, for frees that merge or go to a large bin.
    #[inline(never)]
    unsafe fn release_slow(&mut self, c: usize, h: usize, nh: usize) {
        // SAFETY: forwarded.
        unsafe { self.release(c, h, nh) }
    }

    /// Frees `p`; a bad pointer is reported (see [`crate::report`]).
    ///
    /// # Safety
    /// As [`try_free`](Self::try_free).
    pub unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: forwarded contract.
        if let Err(e) = unsafe { self.try_free(p) } {
            report(e)
        }
    }

    /// Frees `p`, requested with `size` bytes (0: unknown); a bad pointer is reported.
    ///
    /// # Safety
    /// As [`try_free`](Self::try_free).
    #[inline]
    pub unsafe fn free_sized(&mut self, p: *mut u8, size: usize) {
        // SAFETY: forwarded contract.
        if let Err(e) = unsafe { self.try_free_sized(p, size) } {
            report(e)
        }
    }

    /// Frees in-use chunk `c` (live bytes already accounted), coalescing with its free
    /// neighbours or the top chunk.
    unsafe fn free_chunk(&mut self, c: usize) {
        // SAFETY: `c` is an in-use chunk; its successor's header is inside the region.
        unsafe {
            let h = head(c);
            self.release(c, h, head(c + (h & !FLAGS)));
        }
    }

    /// [`free_chunk`](Self::free_chunk) with the chunk's head `h` and the next chunk's head
    /// `nh` already loaded.
    #[inline(always)]
    unsafe fn release(&mut self, c: usize, h: usize, nh: usize) {
        // SAFETY: boundary tags of neighbours inside the region.
        unsafe {
            let mut size = h & !FLAGS;
            let mut start = c;
            let next = c + size;
            if h & PINUSE == 0 {
                // `c`'s header is left inside the merged chunk: clear it, so a second free
                // of `c` reads as one (otherwise the new head written below clears it)
                set_head(c, h & !CINUSE);
                let ps = rd(c);
                let prev = c.wrapping_sub(ps);
                if cfg!(feature = "secure")
                    && (ps < MIN_CHUNK || prev < self.base || head(prev) & !FLAGS != ps)
                {
                    report(HeapError::new(HeapErrorKind::Corrupted, c));
                }
                self.unlink(prev, ps);
                start = prev;
                size += ps;
            }
            if next == self.top {
                self.top = start;
                self.top_size += size;
                if self.top_size > self.trim_threshold {
                    self.trim();
                }
                return;
            }
            if nh & CINUSE == 0 {
                let ns = nh & !FLAGS;
                self.unlink(next, ns);
                size += ns;
            }
            set_head(start, size | PINUSE);
            let after = start + size;
            wr(after, size);
            if after == next {
                set_head(after, nh & !PINUSE);
            } else {
                set_head(after, head(after) & !PINUSE);
            }
            self.insert(start, size);
        }
    }

    /// Gives back the free top beyond [`TOP_KEEP`] to the source.
    #[cold]
    #[inline(never)]
    fn trim(&mut self) {
        let end = self.top + self.top_size;
        let keep_end = align_up(self.top + TOP_KEEP, PAGE_SIZE).unwrap_or(end);
        if keep_end >= end {
            return;
        }
        let release = end - keep_end;
        // all given back since the last growth: a regrow may need it all again
        self.trimmed = self.trimmed.saturating_add(release);
        self.trimmed_at = self.ops;
        // SAFETY: the bytes past keep_end are the free top's tail; nothing uses them.
        unsafe {
            self.src.shrink(release);
            self.top_size -= release;
        }
    }

    /// Usable bytes of the live block at `p`.
    ///
    /// # Safety
    /// As [`try_free`](Self::try_free).
    pub unsafe fn usable_size(&self, p: *mut u8) -> Result<usize, HeapError> {
        let c = self.check(p)?;
        // SAFETY: `c` is an in-use chunk.
        Ok((unsafe { head(c) } & !FLAGS) - OVERHEAD)
    }

    /// Resizes the block at `p` to `new_size`: in place when it shrinks, or when the next
    /// chunk (free or the top) has room; otherwise allocates, copies, frees. Null (and `p`
    /// untouched) when out of memory.
    ///
    /// # Safety
    /// `p` must be a live block of this heap allocated with `layout`.
    pub unsafe fn realloc(&mut self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.has_pending() {
            self.apply_pending();
        }
        let c = match self.check(p) {
            Ok(c) => c,
            Err(e) => report(e),
        };
        let Some(n) = chunk_size(new_size) else {
            return null_mut();
        };
        // SAFETY: `c` is an in-use chunk; neighbours are read through boundary tags.
        unsafe {
            let size = head(c) & !FLAGS;
            if n <= size {
                self.shrink_in_use(c, n);
                return p;
            }
            let next = c + size;
            if next == self.top {
                if self.grow_top(n - size) {
                    let pin = head(c) & PINUSE;
                    set_head(c, n | CINUSE | pin);
                    let grow = n - size;
                    self.top += grow;
                    self.top_size -= grow;
                    self.live += grow;
                    return p;
                }
            } else {
                let nh = head(next);
                let ns = nh & !FLAGS;
                if nh & CINUSE == 0 && size + ns >= n {
                    self.unlink(next, ns);
                    let pin = head(c) & PINUSE;
                    set_head(c, (size + ns) | CINUSE | pin);
                    let after = c + size + ns;
                    set_head(after, head(after) | PINUSE);
                    self.live += ns;
                    self.shrink_in_use(c, n);
                    return p;
                }
            }
            let Ok(nl) = Layout::from_size_align(new_size, layout.align()) else {
                return null_mut();
            };
            let q = self.alloc(nl);
            if !q.is_null() {
                ptr::copy_nonoverlapping(p, q, (size - OVERHEAD).min(new_size));
                self.free(p);
            }
            q
        }
    }

    /// Walks every chunk from the base to the top and checks the boundary tags, the bins and
    /// the live count; returns the first inconsistency found.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        if self.base == 0 {
            return Ok(());
        }
        let mut c = self.base;
        let mut prev_free = false;
        let mut live = 0;
        let mut free_chunks = 0;
        let mut cached = 0;
        // SAFETY: walking chunk headers from base to top, each inside the region.
        unsafe {
            while c < self.top {
                let h = head(c);
                let s = h & !FLAGS;
                if s < MIN_CHUNK || s % 16 != 0 || c + s > self.top {
                    return Err("bad chunk size");
                }
                if (h & PINUSE == 0) != prev_free {
                    return Err("PINUSE disagrees with the previous chunk");
                }
                let free = h & CINUSE == 0;
                if h & CACHED != 0 {
                    if free {
                        return Err("a free chunk marked cached");
                    }
                    cached += 1;
                }
                if free {
                    if prev_free {
                        return Err("two adjacent free chunks");
                    }
                    if rd(c + s) != s {
                        return Err("free chunk footer wrong");
                    }
                    free_chunks += 1;
                } else {
                    live += s;
                }
                prev_free = free;
                c += s;
            }
            if c != self.top {
                return Err("chunks do not end at the top");
            }
            if prev_free {
                return Err("a free chunk before the top");
            }
            if self.top_size < MIN_CHUNK {
                return Err("top chunk too small");
            }
            let mut binned = 0;
            for (w, &bits) in self.bitmap.iter().enumerate() {
                if (bits != 0) != (self.summary & (1 << w) != 0) {
                    return Err("summary disagrees with the bitmap");
                }
            }
            for i in 0..NBINS {
                let mut x = self.bins[i];
                let mut last = 0;
                if (x != 0) != (self.bitmap[i / 64] & (1 << (i % 64)) != 0) {
                    return Err("bitmap disagrees with bins");
                }
                while x != 0 {
                    if bin_of(head(x) & !FLAGS) != i || head(x) & CINUSE != 0 {
                        return Err("chunk in the wrong bin or in use");
                    }
                    if last != 0 && bk(x) != last {
                        return Err("back link does not name the previous chunk of the bin");
                    }
                    if i >= NSMALL && x < last {
                        return Err("large bin not sorted by address");
                    }
                    last = x;
                    binned += 1;
                    x = fd(x);
                }
            }
            if binned != free_chunks {
                return Err("free chunk missing from the bins");
            }
            let mut listed = 0;
            for i in 0..NCACHE {
                let mut x = self.cache[i];
                let mut n = 0;
                while x != 0 {
                    if x < self.base
                        || x >= self.top
                        || head(x) & !PINUSE != (i * 16) | CINUSE | CACHED
                    {
                        return Err("cache list holds a chunk not cached or of another size");
                    }
                    n += 1;
                    x = rd(x + 16);
                }
                if n + self.cache_room[i] as usize != CACHE_CAP as usize {
                    return Err("cache count wrong");
                }
                listed += n;
            }
            if listed != cached {
                return Err("cached chunk missing from the cache lists");
            }
        }
        if live != self.live {
            return Err("live count wrong");
        }
        Ok(())
    }
}

impl<B: BrkSource> Drop for ChunkHeap<B> {
    fn drop(&mut self) {
        if self.base != 0 {
            // SAFETY: the heap is going away; nothing uses its region any more.
            unsafe { self.src.shrink(self.top + self.top_size - self.base) };
        }
    }
}

/// A [`ChunkHeap`] behind a spin lock: shareable, and usable as `#[global_allocator]`.
pub struct LockedChunkHeap<B: BrkSource>(spin::Mutex<ChunkHeap<B>>);

impl<B: BrkSource> LockedChunkHeap<B> {
    /// A locked heap over `src` with `policy`.
    pub const fn new(src: B, policy: FitPolicy) -> Self {
        LockedChunkHeap(spin::Mutex::new(ChunkHeap::new(src, policy)))
    }

    /// Locks the heap for direct use, with every deferred free of `dealloc` applied and the
    /// block cache emptied ([`ChunkHeap::flush`]).
    pub fn lock(&self) -> spin::MutexGuard<'_, ChunkHeap<B>> {
        let mut g = self.0.lock();
        g.flush();
        g
    }
}

// SAFETY: forwards to ChunkHeap under the lock; blocks satisfy size and alignment.
unsafe impl<B: BrkSource + Send> core::alloc::GlobalAlloc for LockedChunkHeap<B> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().alloc(layout)
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: `p` came from this heap with `layout` (GlobalAlloc contract).
        unsafe { self.0.lock().free_deferred(p, layout.size()) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `p` came from this heap with `layout` (GlobalAlloc contract).
        unsafe { self.0.lock().realloc(p, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ArenaBrk;
    extern crate std;
    use std::vec::Vec;

    fn heap(policy: FitPolicy, bytes: usize) -> ChunkHeap<ArenaBrk> {
        ChunkHeap::new(ArenaBrk::from_static(std::vec![0u8; bytes].leak()), policy)
    }

    fn l(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn neighbours_coalesce_and_the_top_absorbs_the_end() {
        let mut h = heap(FitPolicy::First, 1 << 20);
        let a = h.alloc(l(100));
        let b = h.alloc(l(100));
        let c = h.alloc(l(100));
        let d = h.alloc(l(100));
        h.check_invariants().unwrap();
        unsafe {
            h.free(a);
            h.free(c);
            h.check_invariants().unwrap();
            h.free(b); // merges a, b, c
            h.check_invariants().unwrap();
            let e = h.alloc(l(3 * 112 - 16));
            assert_eq!(e, a, "the merged chunk is reused whole");
            h.free(d);
            h.free(e);
        }
        h.check_invariants().unwrap();
        assert_eq!(h.stats().live_bytes, 0);
    }

    #[test]
    fn policies_pick_different_chunks() {
        // free chunks of about 10000, 25000, 15000, 10500 bytes (large bins), with live guards
        let pick = |policy| {
            let mut h = heap(policy, 1 << 20);
            let sizes = [10_000usize, 25_000, 15_000, 10_500];
            let mut blocks = Vec::new();
            for s in sizes {
                blocks.push(h.alloc(l(s)));
                blocks.push(h.alloc(l(16)));
            }
            unsafe {
                for i in [0, 2, 4, 6] {
                    h.free(blocks[i]);
                }
            }
            h.check_invariants().unwrap();
            let p = h.alloc(l(9500));
            h.check_invariants().unwrap();
            (p, blocks)
        };
        let (first, b) = pick(FitPolicy::First);
        assert_eq!(first, b[0]);
        let (best, b) = pick(FitPolicy::Best);
        assert_eq!(best, b[0]);
        let (worst, b) = pick(FitPolicy::Worst);
        assert_eq!(worst, b[2]);
        let (next, b) = pick(FitPolicy::Next);
        // the rover is past the last allocation (the final guard), so next fit wraps to
        // the lowest fitting chunk of the bin
        assert_eq!(next, b[0]);
        // best differs from first when the lower chunk is the larger one
        for (policy, want_lower) in [(FitPolicy::Best, false), (FitPolicy::First, true)] {
            let mut h = heap(policy, 1 << 20);
            let x = h.alloc(l(11_000));
            let _g1 = h.alloc(l(16));
            let y = h.alloc(l(10_300));
            let _g2 = h.alloc(l(16));
            unsafe {
                h.free(x);
                h.free(y);
            }
            assert_eq!(
                h.alloc(l(10_000)),
                if want_lower { x } else { y },
                "{policy:?}"
            );
        }
    }

    #[test]
    fn worst_fit_falls_back_to_the_top_when_every_free_chunk_is_too_small() {
        let mut h = heap(FitPolicy::Worst, 1 << 20);
        let a = h.alloc(l(100));
        let _g = h.alloc(l(16));
        unsafe { h.free(a) };
        let big = h.alloc(l(5000));
        assert!(!big.is_null() && big != a);
        h.check_invariants().unwrap();
    }

    #[test]
    fn growing_right_after_a_trim_raises_the_threshold() {
        let buf = std::vec![0u8; 16 << 20].leak();
        let mut h = ChunkHeap::new(ArenaBrk::from_static(buf), FitPolicy::First);
        for _ in 0..3 {
            let ptrs: Vec<_> = (0..1000).map(|_| h.alloc(l(2000))).collect();
            for p in ptrs {
                unsafe { h.free(p) };
            }
        }
        // the first round trimmed, the second grew again and raised the threshold, so the
        // memory stays for the third
        assert!(h.stats().committed_bytes >= 1000 * 2000);
        h.check_invariants().unwrap();
    }

    #[test]
    fn the_top_grows_and_is_trimmed() {
        let buf = std::vec![0u8; 4 << 20].leak();
        let mut h = ChunkHeap::new(ArenaBrk::from_static(buf), FitPolicy::Best);
        let big = h.alloc(l(2 << 20));
        assert!(h.stats().committed_bytes >= 2 << 20);
        unsafe { h.free(big) };
        assert!(h.stats().committed_bytes <= TOP_KEEP + 2 * PAGE_SIZE);
        assert!(h.alloc(l(8 << 20)).is_null());
        h.check_invariants().unwrap();
    }

    #[test]
    fn bad_frees_are_reported_and_leave_the_heap_intact() {
        let mut h = heap(FitPolicy::First, 1 << 20);
        let a = h.alloc(l(64));
        let b = h.alloc(l(64));
        unsafe {
            assert_eq!(
                h.try_free(a.add(16)).unwrap_err().kind,
                HeapErrorKind::NotABlock
            );
            h.try_free(a).unwrap();
            assert_eq!(h.try_free(a).unwrap_err().kind, HeapErrorKind::DoubleFree);
            let mut x = 0u64;
            assert_eq!(
                h.try_free(&mut x as *mut u64 as *mut u8).unwrap_err().kind,
                HeapErrorKind::ForeignPointer
            );
            h.try_free(b).unwrap();
            // `b` was next to the top and merged into it: a second free is a double free
            // (not a foreign pointer), as is a free of `a`, merged into it too.
            assert_eq!(h.try_free(b).unwrap_err().kind, HeapErrorKind::DoubleFree);
            assert_eq!(h.try_free(a).unwrap_err().kind, HeapErrorKind::DoubleFree);
            let (_, end) = h.region().unwrap();
            assert_eq!(
                h.try_free((end + 16) as *mut u8).unwrap_err().kind,
                HeapErrorKind::ForeignPointer
            );
        }
        h.check_invariants().unwrap();
    }

    #[test]
    fn sized_frees_take_any_size_hint_and_still_catch_double_frees() {
        let mut h = heap(FitPolicy::Best, 1 << 20);
        // hints: exact, too small, too large, past the region, overflowing, unknown
        let hints = [100usize, 1, 5000, 1 << 40, usize::MAX, 0];
        let blocks: Vec<_> = (0..hints.len() * 2).map(|_| h.alloc(l(100))).collect();
        unsafe {
            for (i, &hint) in hints.iter().enumerate() {
                h.try_free_sized(blocks[2 * i], hint).unwrap();
                h.check_invariants().unwrap();
                assert_eq!(
                    h.try_free_sized(blocks[2 * i], hint).unwrap_err().kind,
                    HeapErrorKind::DoubleFree
                );
            }
            // freed next to a free neighbour (merged away), then freed again
            h.try_free_sized(blocks[1], 100).unwrap();
            assert!(h.try_free_sized(blocks[1], 100).is_err());
            for i in (3..blocks.len()).step_by(2) {
                h.try_free_sized(blocks[i], 100).unwrap();
            }
        }
        h.check_invariants().unwrap();
        assert_eq!(h.stats().live_bytes, 0);
    }

    #[test]
    fn deferred_frees_apply_in_order_once_the_queue_is_full() {
        let mut h = heap(FitPolicy::First, 1 << 20);
        // 300 bytes: a 320-byte chunk, too large for the block cache
        let blocks: Vec<_> = (0..3 * DEFER).map(|_| h.alloc(l(300))).collect();
        let guard = h.alloc(l(300));
        let live = h.stats().live_bytes;
        unsafe {
            for (i, &p) in blocks.iter().enumerate() {
                h.free_deferred(p, 300);
                h.check_invariants().unwrap();
                // the first DEFER frees wait; each later one applies the oldest
                let applied = (i + 1).saturating_sub(DEFER);
                assert_eq!(h.stats().live_bytes, live - applied * 320, "after {i}");
            }
            // the applied ones merged into one free chunk from the first block on
            let merged = (blocks.len() - DEFER) * 320;
            assert_eq!(head(blocks[0] as usize - HDR) & !FLAGS, merged);
            h.flush();
            assert_eq!(h.stats().live_bytes, 320);
            assert_eq!(
                head(blocks[0] as usize - HDR) & !FLAGS,
                blocks.len() * 320,
                "the flush merged the rest in"
            );
            h.free(guard);
        }
        h.check_invariants().unwrap();
        assert_eq!(h.stats().live_bytes, 0);
    }

    #[test]
    fn a_search_and_an_immediate_free_see_the_deferred_frees_first() {
        for policy in FitPolicy::ALL {
            let mut h = heap(policy, 1 << 20);
            let a = h.alloc(l(20_000));
            let _g = h.alloc(l(16));
            unsafe { h.free_deferred(a, 20_000) };
            // no free chunk serves this: before taking the top, the allocation applies the
            // queue and finds `a`
            assert_eq!(h.alloc(l(19_000)), a, "{policy:?}");
            h.check_invariants().unwrap();
            let b = h.alloc(l(100));
            unsafe {
                h.free_deferred(b, 100);
                assert_eq!(
                    h.try_free(b).unwrap_err().kind,
                    HeapErrorKind::DoubleFree,
                    "the deferred free of b came first"
                );
                // a realloc next to a block freed late still grows into it (300 bytes: too
                // large for the block cache, which would keep it in use)
                let c = h.alloc(l(300));
                let d = h.alloc(l(300));
                let _g2 = h.alloc(l(16));
                h.free_deferred(d, 300);
                assert_eq!(h.realloc(c, l(300), 500), c, "{policy:?}");
            }
            h.check_invariants().unwrap();
        }
    }

    #[test]
    fn small_deferred_frees_park_in_the_block_cache_and_serve_the_same_size() {
        let mut h = heap(FitPolicy::Best, 1 << 20);
        let n = CACHE_CAP as usize + 4;
        let blocks: Vec<_> = (0..n).map(|_| h.alloc(l(40))).collect(); // 48-byte chunks
        let _guard = h.alloc(l(40));
        let live = h.stats().live_bytes;
        unsafe {
            for &p in &blocks {
                h.free_deferred(p, 40);
            }
            h.check_invariants().unwrap();
            // the applied ones are parked (still in use, counted live); DEFER wait
            assert_eq!(h.stats().live_bytes, live);
            assert_eq!(h.cache_room[3] as usize, CACHE_CAP as usize - (n - DEFER));
            // an immediate free applies the queue first: the cache fills up, the rest is
            // freed (and merged)
            let parked = CACHE_CAP as usize;
            for &p in &blocks[..parked] {
                assert_eq!(h.try_free(p).unwrap_err().kind, HeapErrorKind::DoubleFree);
                assert_eq!(head(p as usize - HDR) & (CINUSE | CACHED), CINUSE | CACHED);
            }
            assert_eq!(h.stats().live_bytes, live - (n - parked) * 48);
            h.check_invariants().unwrap();
            // the same size comes back from the cache, most recently parked first
            let q = h.alloc(l(33));
            assert_eq!(q, blocks[parked - 1]);
            assert_eq!(head(q as usize - HDR) & CACHED, 0);
            h.check_invariants().unwrap();
            h.free(q);
            // flush empties the cache: everything merged, nothing but the guard live
            h.flush();
            h.check_invariants().unwrap();
            assert_eq!(h.stats().live_bytes, 48);
            assert_eq!(head(blocks[0] as usize - HDR) & !FLAGS, n * 48);
        }
    }

    #[test]
    fn the_locked_heap_defers_dealloc_and_lock_applies_it() {
        use core::alloc::GlobalAlloc;
        let h = LockedChunkHeap::new(
            ArenaBrk::from_static(std::vec![0u8; 1 << 20].leak()),
            FitPolicy::Best,
        );
        unsafe {
            let p = GlobalAlloc::alloc(&h, l(500));
            let q = GlobalAlloc::alloc(&h, l(500));
            GlobalAlloc::dealloc(&h, p, l(500));
            GlobalAlloc::dealloc(&h, q, l(500));
            // same size again: the exact bin is still empty, so the search applies the
            // queue and reuses the merged chunk
            assert_eq!(GlobalAlloc::alloc(&h, l(500)), p);
            GlobalAlloc::dealloc(&h, p, l(500));
        }
        let g = h.lock();
        assert_eq!(g.stats().live_bytes, 0);
        g.check_invariants().unwrap();
    }

    mod deferred_prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Alloc(usize, u32),
            Free(usize),
            FreeDeferred(usize),
            Realloc(usize, usize),
            Flush,
        }

        fn ops() -> impl Strategy<Value = Vec<Op>> {
            let size =
                prop_oneof![4 => 1usize..=200, 3 => 201usize..=9000, 1 => 9001usize..=70_000];
            let op = prop_oneof![
                5 => (size.clone(), 0u32..=9).prop_map(|(s, a)| Op::Alloc(s, a)),
                1 => any::<usize>().prop_map(Op::Free),
                4 => any::<usize>().prop_map(Op::FreeDeferred),
                1 => (any::<usize>(), size).prop_map(|(i, s)| Op::Realloc(i, s)),
                1 => Just(Op::Flush),
            ];
            proptest::collection::vec(op, 1..300)
        }

        fn check_block(p: *mut u8, n: usize, b: u8) {
            // SAFETY: a live block of `n` bytes, filled with `b`.
            let s = unsafe { core::slice::from_raw_parts(p, n) };
            assert!(s.iter().all(|&x| x == b), "block {p:?} overwritten");
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]

            /// Random allocations, immediate and deferred frees, reallocs and flushes under
            /// every policy: the boundary tags, bins and live count stay consistent after
            /// every step, and no block overlaps another (each holds its own byte).
            #[test]
            fn deferred_and_immediate_frees_keep_the_heap_consistent(ops in ops(), p in 0usize..4) {
                let mut h = heap(FitPolicy::ALL[p], 16 << 20);
                let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
                for (k, op) in ops.iter().enumerate() {
                    let byte = k as u8;
                    match *op {
                        Op::Alloc(size, a) => {
                            let layout = Layout::from_size_align(size, 1 << a).unwrap();
                            let q = h.alloc(layout);
                            prop_assert!(!q.is_null());
                            prop_assert_eq!(q as usize % layout.align(), 0);
                            unsafe { q.write_bytes(byte, size) };
                            live.push((q, layout, byte));
                        }
                        Op::Free(i) | Op::FreeDeferred(i) if !live.is_empty() => {
                            let (q, layout, b) = live.swap_remove(i % live.len());
                            check_block(q, layout.size(), b);
                            unsafe {
                                if matches!(op, Op::Free(_)) {
                                    h.try_free_sized(q, layout.size()).unwrap();
                                } else {
                                    h.free_deferred(q, layout.size());
                                }
                            }
                        }
                        Op::Realloc(i, new) if !live.is_empty() => {
                            let j = i % live.len();
                            let (q, layout, b) = live[j];
                            check_block(q, layout.size(), b);
                            let r = unsafe { h.realloc(q, layout, new) };
                            prop_assert!(!r.is_null());
                            check_block(r, layout.size().min(new), b);
                            unsafe { r.write_bytes(byte, new) };
                            live[j] = (r, Layout::from_size_align(new, layout.align()).unwrap(), byte);
                        }
                        Op::Flush => h.flush(),
                        _ => {}
                    }
                    if let Err(e) = h.check_invariants() {
                        prop_assert!(false, "after op {} ({:?}): {}", k, op, e);
                    }
                }
                for &(q, layout, b) in &live {
                    check_block(q, layout.size(), b);
                }
                for (q, layout, _) in live.drain(..) {
                    unsafe { h.free_deferred(q, layout.size()) };
                }
                h.flush();
                h.check_invariants().unwrap();
                prop_assert_eq!(h.stats().live_bytes, 0);
                // everything merged back into the top, and the top was trimmed
                prop_assert!(h.stats().committed_bytes <= h.trim_threshold.max(TOP_KEEP) + 2 * PAGE_SIZE);
            }
        }
    }

    #[test]
    fn aligned_requests_and_realloc_in_place() {
        let mut h = heap(FitPolicy::First, 1 << 20);
        for align in [32usize, 64, 256, 4096] {
            let p = h.alloc(Layout::from_size_align(100, align).unwrap());
            assert_eq!(p as usize % align, 0);
            h.check_invariants().unwrap();
        }
        let mut h = heap(FitPolicy::First, 1 << 20);
        unsafe {
            let p = h.alloc(l(100));
            p.write_bytes(7, 100);
            let q = h.realloc(p, l(100), 1000); // next is the top: grows in place
            assert_eq!(p, q);
            assert_eq!(*q.add(99), 7);
            let r = h.realloc(q, l(1000), 40);
            assert_eq!(r, q);
            h.check_invariants().unwrap();
        }
        assert!(h.alloc(l(isize::MAX as usize - 7)).is_null());
        assert!(h
            .alloc(Layout::from_size_align(isize::MAX as usize - 127, 64).unwrap())
            .is_null());
    }
}

/// The kernel configuration (without `std`): chunk heaps over fixed regions, as a kernel's
/// early heap over a static buffer, and errors reported by a panic.
#[cfg(all(test, not(feature = "std")))]
mod kernel_tests {
    use super::*;
    use crate::source::{ArenaBrk, ArenaSource, SegmentBrk, SEGMENT_SIZE};
    use crate::testing::panic_message;
    extern crate std;
    use core::alloc::GlobalAlloc;
    use proptest::prelude::*;

    fn l(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// One arena for every case of the property test: each case's break region must go
    /// back whole.
    fn model_arena() -> &'static spin::Mutex<ArenaSource> {
        static A: std::sync::OnceLock<&'static spin::Mutex<ArenaSource>> =
            std::sync::OnceLock::new();
        A.get_or_init(|| crate::testing::arena(512))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random allocations, frees and reallocations with every block's contents and the
        /// heap's invariants checked, under every fit policy, in a break region carved from
        /// an arena; dropping the heap gives the region back.
        #[test]
        fn the_heap_on_a_kernel_arena_matches_the_model(
            ops in crate::testing::ops(),
            p in 0usize..4,
        ) {
            let a = model_arena();
            {
                let brk = SegmentBrk::new(a, 16 << 20).expect("room for the break region");
                let mut h = ChunkHeap::new(brk, FitPolicy::ALL[p]);
                crate::testing::run(&mut h, &ops);
            }
            prop_assert_eq!(a.lock().in_use(), 0);
        }
    }

    /// A kernel's heap: a locked chunk heap over a static buffer, shared by two threads
    /// through `GlobalAlloc` (deferred frees, the block cache, realloc), contents checked;
    /// blocks allocated by one thread are freed by the other.
    #[test]
    fn a_locked_heap_over_a_static_buffer_serves_two_threads() {
        const BYTES: usize = 8 << 20;
        #[repr(C, align(4096))]
        struct Region(core::cell::UnsafeCell<[u8; BYTES]>);
        // SAFETY: the region is handed once, below, to the heap, which owns it from then.
        unsafe impl Sync for Region {}
        static REGION: Region = Region(core::cell::UnsafeCell::new([0; BYTES]));
        // SAFETY: this test is the only user of REGION, and it gives it to the heap whole.
        let region: &'static mut [u8] = unsafe { &mut *REGION.0.get() };
        let start = region.as_ptr() as usize;
        let h = LockedChunkHeap::new(ArenaBrk::from_static(region), FitPolicy::Best);
        let in_region = |p: *mut u8, size: usize| {
            assert!(p as usize >= start && p as usize + size <= start + BYTES);
            p
        };
        crate::testing::two_threads(&crate::testing::Traffic {
            // SAFETY (all three): the driver passes live blocks with their layouts.
            alloc: &|l| in_region(unsafe { h.alloc(l) }, l.size()),
            free: &|p, l| unsafe { h.dealloc(p, l) },
            realloc: Some(&|p, l, new| in_region(unsafe { h.realloc(p, l, new) }, new)),
            small: 300,
            large: 40_000,
            max_align_log2: 3,
        });
        let g = h.lock();
        g.check_invariants().unwrap();
        assert_eq!(g.stats().live_bytes, 0);
    }

    /// Without `std`, `report` panics with the error's message: a double free and a foreign
    /// pointer through `free`, a double free through `GlobalAlloc::dealloc` when its
    /// deferred free is applied; after the direct frees the heap is intact.
    #[test]
    fn bad_frees_are_reported_by_a_panic() {
        let mut h = ChunkHeap::new(
            ArenaBrk::from_static(crate::testing::buffer(SEGMENT_SIZE * 16)),
            FitPolicy::First,
        );
        let p = h.alloc(l(100, 8));
        let keep = h.alloc(l(100, 8));
        unsafe { keep.write_bytes(0x5e, 100) };
        unsafe { h.free(p) };
        let m = panic_message(|| unsafe { h.free(p) });
        assert_eq!(
            m,
            std::format!("vmspace-heap: double free of {:#x}", p as usize)
        );
        let mut on_stack = [0u8; 64];
        let s = on_stack.as_mut_ptr().wrapping_add(32);
        let m = panic_message(|| unsafe { h.free(s) });
        assert!(m.contains("never handed out"), "{m}");
        h.check_invariants().unwrap();
        unsafe {
            assert!(core::slice::from_raw_parts(keep, 100)
                .iter()
                .all(|&b| b == 0x5e));
            h.free(keep);
        }
        assert_eq!(h.stats().live_bytes, 0);

        let lh = LockedChunkHeap::new(
            ArenaBrk::from_static(crate::testing::buffer(SEGMENT_SIZE * 4)),
            FitPolicy::Best,
        );
        let q = unsafe { lh.alloc(l(40, 8)) };
        let m = panic_message(|| unsafe {
            lh.dealloc(q, l(40, 8));
            lh.dealloc(q, l(40, 8));
            drop(lh.lock());
        });
        // `q` was next to the top: its first free merged it into the top chunk.
        assert_eq!(
            m,
            std::format!("vmspace-heap: double free of {:#x}", q as usize)
        );
    }
}
