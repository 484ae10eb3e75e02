//! The size-class heap: lookaside lists and per-segment free lists per size class over
//! 64 KiB segments.
//!
//! Each local heap (one per thread with `std`, one behind a spin lock otherwise) has, per
//! class, a short lookaside list of the blocks it freed last (LIFO, about 16 KiB; an array
//! of slots in the local heap's own memory, so the blocks are not touched) in front of a
//! list of segments with free blocks, the first of which is current. Allocation pops the
//! lookaside list, else the current segment's free list, and sets the block's live bit in
//! the segment's record; a free of a block of a segment this local heap owns checks and
//! clears that bit and pushes the block on the lookaside list, whose older half goes back to
//! the blocks' segments when it grows too long — no atomics, no lock, no division, no call
//! on those paths. A freed block's segment is its address rounded down to 64 KiB; the
//! segment registry (module `registry`) maps it to the segment's record (or says no heap
//! has a segment there) without anything at that address being read, the record's cookie
//! says which heap owns it, and the block-start test rejects interior pointers. Records lie
//! side by side in the heap's meta segments (module `segment`), so the records of a few
//! hundred segments stay in cache where 64 KiB-aligned headers would evict each other.
//! Double frees are caught by the block's live bit (and remote bit), whatever the program
//! wrote into the freed block since.
//!
//! Blocks freed by a thread that does not own the segment set the block's bit in the
//! segment's remote bitmap (one atomic `fetch_or`, whose old value also catches a second
//! remote free) and the segment is queued to its owner, which collects the bits when its
//! lists run dry. A thread's local heap outlives the thread: it is abandoned to the heap on
//! exit and adopted, segments and all, by the next thread.
//!
//! A segment's blocks are carved a page at a time as the class needs them, and a segment
//! counts as committed only the pages it has touched: a class with few blocks costs a few
//! pages, not 64 KiB.
//!
//! A wholly free segment stays if it is its class's last one; otherwise it waits in a
//! per-local-heap cache and goes back to the source after 100 ms unused (with `std`; without it
//! the cache keeps four), so a hot class does not thrash and a burst of frees followed by a
//! burst of allocations reuses the same memory. Requests above [`SMALL_MAX`] or aligned
//! beyond a page are large blocks: whole segments straight from the source.

use crate::class::{class_of, class_of_aligned, CLASSES, CLASS_SIZE, SMALL_MAX};
use crate::error::{report, HeapError, HeapErrorKind};
use crate::registry;
use crate::segment::{base_of, decode, encode, make_key, mix, Block, Kind, Segment, RECORD_SIZE};
use crate::source::{SegmentSource, PAGE_SIZE, SEGMENT_SIZE};
use crate::stats::HeapStats;
use core::alloc::Layout;
use core::ptr::{self, null_mut, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

/// Empty segments a local heap keeps for reuse without `std` (no clock to age them by).
#[cfg(not(feature = "std"))]
const EMPTY_CACHE: usize = 4;
/// Most empty segments a local heap keeps with `std` (256 MiB).
#[cfg(feature = "std")]
const EMPTY_CACHE_MAX: usize = 4096;
/// With `std`, a cached empty segment idle this long (ms) goes back to the source at the
/// local heap's next slow path (mimalloc's arena purge delay: 10 ms times 10).
#[cfg(feature = "std")]
const PURGE_MS: usize = 100;

/// Bytes a lookaside list may hold before its older half goes back to the segments.
const LOOKASIDE_BYTES: usize = 16 * 1024;

/// Blocks a class's lookaside list may hold: about [`LOOKASIDE_BYTES`], 4 to 256.
const LOOKASIDE_MAX: [u32; CLASSES] = lookaside_max();

/// Computes [`LOOKASIDE_MAX`].
const fn lookaside_max() -> [u32; CLASSES] {
    let mut t = [0u32; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        let n = LOOKASIDE_BYTES / CLASS_SIZE[c] as usize;
        t[c] = if n < 4 {
            4
        } else if n > 256 {
            256
        } else {
            n as u32
        };
        c += 1;
    }
    t
}

/// Bytes of untouched pages a segment activates at a time when its free list runs dry.
const EXTEND_BYTES: usize = PAGE_SIZE;

/// A coarse monotonic clock in milliseconds (0 without `std`).
#[inline]
fn now_ms() -> usize {
    #[cfg(feature = "std")]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes the current time into `t`.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) };
        t.tv_sec as usize * 1000 + t.tv_nsec as usize / 1_000_000
    }
    #[cfg(not(feature = "std"))]
    0
}

/// The id the next heap to be set up gets (ids count up from 1).
static NEXT_HEAP_ID: AtomicU64 = AtomicU64::new(1);

/// Where each class's lookaside slots start in a local heap's slot array: one more than
/// the class's most, as a push fills the list before the flush that trims it (a tail call,
/// so the inlined free saves no registers).
const LOOKASIDE_AT: [usize; CLASSES] = lookaside_at();
/// Slots of all lookaside lists of a local heap.
const LOOKASIDE_SLOTS: usize = LOOKASIDE_AT[CLASSES - 1] + LOOKASIDE_MAX[CLASSES - 1] as usize + 1;

/// Computes [`LOOKASIDE_AT`].
const fn lookaside_at() -> [usize; CLASSES] {
    let mut t = [0usize; CLASSES];
    let mut c = 1;
    while c < CLASSES {
        t[c] = t[c - 1] + LOOKASIDE_MAX[c - 1] as usize + 1;
        c += 1;
    }
    t
}

const _: () = assert!(
    META_OFFSET + Local::<()>::BYTES <= SEGMENT_SIZE,
    "a local heap and its lookaside slots fit in its meta segment"
);

/// Where a meta segment keeps its shared state or local heap: off the page-aligned cache
/// set that every segment's first block maps to.
const META_OFFSET: usize = 5 * 64;

/// Bytes of a meta segment holding `bytes` at [`META_OFFSET`] that count as committed.
const fn meta_committed(bytes: usize) -> usize {
    (META_OFFSET + bytes).div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// A lookaside slot: block address `p` with its block index `i` (below
/// [`MAX_BLOCKS`](crate::segment::MAX_BLOCKS)) xored into bits 48..59, so a pop marks the
/// block live without reading its record's hot line or multiplying.
#[inline(always)]
fn pack(p: usize, i: usize) -> usize {
    p ^ (i << 48)
}

/// The block address (bits 63..48 restored from bit 47: canonical) and block index of a
/// [`pack`]ed link.
#[inline(always)]
fn unpack(v: usize) -> (usize, usize) {
    let p = (((v << 16) as isize) >> 16) as usize;
    (p, ((v ^ p) >> 48) & (crate::segment::MAX_BLOCKS - 1))
}

/// One owner's lists: a thread's cache, or the heap's locked local heap.
pub(crate) struct Local<S> {
    /// Per class, the length of the lookaside list: the blocks this thread freed last,
    /// reused first (LIFO) while their cache lines are still warm. The blocks are
    /// [`pack`]ed in the slot array that follows the local heap in its meta segment
    /// ([`Local::slots`]), class `c` at [`LOOKASIDE_AT`]`[c]`, oldest first: a freed block
    /// is not written to (nor read when reused) until it goes back to its segment. Atomic
    /// only so `stats` may read them (relaxed: plain moves).
    lookaside_len: [AtomicU32; CLASSES],
    /// Per class, the segments with free (or carvable) blocks; the first is current.
    avail: [*mut Segment; CLASSES],
    /// Per class, segments that had no free block when last looked at.
    full: [*mut Segment; CLASSES],
    /// The heap's shared state.
    shared: *const Shared<S>,
    /// The heap key (as the shared state's).
    key: usize,
    /// The heap's main 4 GiB window (address bits 63..32) and its registry entries (as the
    /// handle's), to find the record of a lookaside block with one load.
    window: usize,
    entries: registry::Entries,
    /// The cache of empty segments, newest first (linked by `next`/`prev`), its oldest
    /// and its length.
    empty: *mut Segment,
    empty_tail: *mut Segment,
    empty_count: usize,
    /// Segments with blocks other threads freed, waiting to be collected (a Treiber
    /// stack linked through their records' `remote.next`).
    remote_queue: AtomicPtr<Segment>,
    /// Bytes of touched pages in this local heap's segments (and its own meta segment).
    committed: AtomicUsize,
    /// Every small segment of this local heap (under the heap lock).
    all: *mut Segment,
    /// Small segments of this local heap (for `stats`).
    segments: AtomicUsize,
    /// Link in the heap's list of all local heaps.
    next_all: *mut Local<S>,
    /// Link in the heap's list of abandoned local heaps.
    next_abandoned: *mut Local<S>,
}

/// The heap's state behind its lock: the source, the lists of local heaps and large
/// blocks, and the record allocator.
struct Inner<S> {
    /// Where segments come from and go back to.
    source: S,
    /// Every local heap of this heap (linked by `next_all`).
    all_locals: *mut Local<S>,
    /// Local heaps of exited threads, waiting to be adopted (linked by `next_abandoned`).
    abandoned: *mut Local<S>,
    /// Records of the large blocks (linked by `next`/`prev`).
    large: *mut Segment,
    /// Records of segments that went back (linked by `next`), reused first.
    free_records: *mut Segment,
    /// Room for new records in the newest record area: `[rec_next, rec_end)`.
    rec_next: usize,
    rec_end: usize,
    /// Segments holding nothing but records, by their own (first) record, linked by `next`.
    slabs: *mut Segment,
    /// Bytes of pages records were written to (in the shared segment and the slabs).
    records_committed: usize,
}

impl<S: SegmentSource> Inner<S> {
    /// A record to describe a segment (contents undefined): a freed one, else the next in
    /// the record area, else the first of a new slab; `None` when the source is exhausted.
    fn new_record(&mut self, key: usize) -> Option<*mut Segment> {
        // SAFETY: free records and the record area are this heap's, and `&mut self` means
        // its lock is held; a new slab is a fresh segment of the source.
        unsafe {
            let r = self.free_records;
            if !r.is_null() {
                self.free_records = (*r).next;
                return Some(r);
            }
            if self.rec_end - self.rec_next < RECORD_SIZE {
                let base = self.source.alloc_segments(1)?;
                let b = base.as_ptr() as usize;
                let (next, end) = (self.rec_next, self.rec_end);
                self.rec_next = b;
                self.rec_end = b + SEGMENT_SIZE;
                let own = self.bump_record();
                Segment::init(own, b, key, Kind::Meta, null_mut(), 1);
                if !registry::register(base.as_ptr(), own) {
                    self.records_committed -= PAGE_SIZE;
                    (self.rec_next, self.rec_end) = (next, end);
                    self.source.free_segments(base, 1);
                    return None;
                }
                (*own).next = self.slabs;
                self.slabs = own;
            }
            Some(self.bump_record())
        }
    }

    /// The next record of the record area (which has room), counting the pages it reaches.
    fn bump_record(&mut self) -> *mut Segment {
        let r = self.rec_next;
        self.rec_next += RECORD_SIZE;
        self.records_committed +=
            (self.rec_next.div_ceil(PAGE_SIZE) - r.div_ceil(PAGE_SIZE)) * PAGE_SIZE;
        r as *mut Segment
    }

    /// Takes `count` segments from the source with a record of kind `kind` for them, and
    /// registers them; `None` when the source has none or the registry has no room for
    /// their window.
    fn take_segments(
        &mut self,
        count: usize,
        key: usize,
        kind: Kind,
        owner: *mut (),
    ) -> Option<*mut Segment> {
        // SAFETY: the record is a fresh one of ours; the segments are fresh from the source.
        unsafe {
            let rec = self.new_record(key)?;
            let Some(base) = self.source.alloc_segments(count) else {
                self.free_record(rec);
                return None;
            };
            Segment::init(rec, base.as_ptr() as usize, key, kind, owner, count);
            if !registry::register(base.as_ptr(), rec) {
                self.source.free_segments(base, count);
                self.free_record(rec);
                return None;
            }
            Some(rec)
        }
    }

    /// Forgets the segments of `rec` and gives them and the record back.
    ///
    /// # Safety
    /// `rec` must come from [`take_segments`](Self::take_segments) and be unused from now.
    unsafe fn give_segments(&mut self, rec: *mut Segment) {
        // SAFETY: the record and its segments are ours (caller).
        unsafe {
            give_back(&mut self.source, (*rec).base, (*rec).count);
            // A stale pointer into the segments, should the source keep them mapped, finds
            // no record; a stale record pointer no longer matches a heap.
            (*rec).cookie = 0;
            self.free_record(rec);
        }
    }

    /// Puts the unused record `rec` on the free-record list, to be reused first.
    ///
    /// # Safety
    /// `rec` must be a record of this heap that nothing uses from now.
    unsafe fn free_record(&mut self, rec: *mut Segment) {
        // SAFETY: an unused record of this heap.
        unsafe {
            (*rec).next = self.free_records;
            self.free_records = rec;
        }
    }
}

/// Unregisters the `count` segments at `base` and gives them back to `src`.
///
/// # Safety
/// They must be one allocation from `src`, unused from now.
unsafe fn give_back<S: SegmentSource>(src: &mut S, base: usize, count: usize) {
    registry::unregister(base as *const u8);
    // SAFETY: the caller's allocation from `src`.
    unsafe { src.free_segments(NonNull::new_unchecked(base as *mut u8), count) };
}

/// A heap's shared state, kept in a segment of its own so the heap handle can move.
pub(crate) struct Shared<S> {
    /// Unique for the life of the process (keys the per-thread caches).
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    id: u64,
    /// The heap key: in every record's cookie, and the free-list key without `secure`.
    key: usize,
    /// The state changed under the heap lock.
    inner: spin::Mutex<Inner<S>>,
    /// The local heap of threads without one of their own (and of every thread without
    /// `std`).
    locked_local: spin::Mutex<LocalPtr<S>>,
    /// Bytes committed for the shared state and large blocks.
    committed: AtomicUsize,
    /// Large blocks live, and their requested bytes.
    large_blocks: AtomicUsize,
    large_live: AtomicUsize,
    /// The window of the heap's first segment and its registry entries (for local heaps).
    window: usize,
    entries: registry::Entries,
}

/// The local heap shared behind [`Shared::locked_local`] (null until first used).
struct LocalPtr<S>(*mut Local<S>);

// SAFETY: the raw pointers in Inner/LocalPtr are only followed under their lock or by the
// owner of a local heap; the source moves with them (S: Send).
unsafe impl<S: Send> Send for Inner<S> {}
// SAFETY: see above.
unsafe impl<S: Send> Send for LocalPtr<S> {}

/// Sets the live bit of the free block `b` of `seg`.
///
/// # Safety
/// The caller must own `seg`, a small segment, and `b` must have been on one of its lists.
#[inline(always)]
unsafe fn mark_live(seg: *mut Segment, b: usize) {
    // SAFETY: the bitmap word index is checked against the block area before use.
    unsafe {
        let off = b.wrapping_sub((*seg).base);
        if off >= (*seg).limit as usize {
            report(HeapError::new(HeapErrorKind::Corrupted, b));
        }
        let i = ((off as u128 * (*seg).div_c as u128) >> 64) as usize;
        let (w, bit) = (i >> 6, 1u64 << (i & 63));
        let lw = (*seg).live_word(w);
        let v = lw.load(Relaxed);
        // A free-list link overwritten after the free (a use-after-free write) can lead to a
        // live block: caught here instead of handing the block out twice.
        if v & bit != 0
            || (cfg!(feature = "secure") && (off as u64).wrapping_mul((*seg).div_c) >= (*seg).div_c)
        {
            report(HeapError::new(HeapErrorKind::Corrupted, b));
        }
        lw.store(v | bit, Relaxed);
    }
}

/// Pops the first free block of `seg` (whose free list is not empty) and marks it live.
///
/// # Safety
/// The caller must own `seg`, a small segment, and `b` must be its free list's head.
#[inline(always)]
unsafe fn pop(seg: *mut Segment, b: usize) -> *mut u8 {
    // SAFETY: `b` is a free block of `seg`.
    unsafe {
        let next = decode((*(b as *const Block)).next, (*seg).key);
        if cfg!(feature = "secure") && next != 0 && base_of(next as *const u8) != (*seg).base {
            report(HeapError::new(HeapErrorKind::Corrupted, b));
        }
        mark_live(seg, b);
        (*seg).free = next;
        (*seg).used.store((*seg).used.load(Relaxed) + 1, Relaxed);
        b as *mut u8
    }
}

/// Pops the newest block of lookaside list `c` of `l` (which holds `n > 0`) and marks it
/// live.
///
/// # Safety
/// The caller must be the owner of `l`, and `n` the length of its lookaside list `c`.
#[inline(always)]
unsafe fn pop_lookaside<S>(l: &mut Local<S>, c: usize, n: u32) -> *mut u8 {
    // SAFETY: lookaside slots hold free blocks of the owner's segments, whose records the
    // registry has; the bitmap word index is below BITMAP_WORDS by the mask in `unpack`.
    unsafe {
        let v = *l
            .slots()
            .add(*LOOKASIDE_AT.get_unchecked(c) + n as usize - 1);
        let (b, i) = unpack(v);
        let seg = l.record_of(b);
        let (w, bit) = (i >> 6, 1u64 << (i & 63));
        let lw = (*seg).live_word(w);
        let x = lw.load(Relaxed);
        // The slot array is the heap's, not the program's: a live block here means the
        // heap's own state was overwritten.
        if x & bit != 0 {
            report(HeapError::new(HeapErrorKind::Corrupted, b));
        }
        lw.store(x | bit, Relaxed);
        l.lookaside_len.get_unchecked(c).store(n - 1, Relaxed);
        b as *mut u8
    }
}

/// Clears the live bit of block `i` of `seg` (checked: live and not freed remotely) and
/// pushes `p` on the lookaside list of its class in `l`, flushing its older half when full.
///
/// # Safety
/// The caller must own `seg` through `l`, and `p` must be block `i` of the small segment.
#[inline(always)]
unsafe fn push_lookaside<S: SegmentSource>(
    l: &mut Local<S>,
    seg: *mut Segment,
    p: *mut u8,
    i: usize,
) -> Result<(), HeapError> {
    // SAFETY: owner-only access to the record, the lists and the block; `i` is a block
    // index, below the capacity, so `w < BITMAP_WORDS`.
    unsafe {
        let (w, bit) = (i >> 6, 1u64 << (i & 63));
        let lw = (*seg).live_word(w);
        let v = lw.load(Relaxed);
        if v & bit == 0 || (*seg).remote_word(w).load(Relaxed) & bit != 0 {
            return Err(HeapError::new(HeapErrorKind::DoubleFree, p as usize));
        }
        lw.store(v & !bit, Relaxed);
        let c = (*seg).class as usize;
        let n = l.lookaside_len.get_unchecked(c).load(Relaxed);
        *l.slots().add(*LOOKASIDE_AT.get_unchecked(c) + n as usize) = pack(p as usize, i);
        l.lookaside_len.get_unchecked(c).store(n + 1, Relaxed);
        if n + 1 > *LOOKASIDE_MAX.get_unchecked(c) {
            // Keep the newer half of the n + 1 blocks.
            l.flush_lookaside(c, n.div_ceil(2));
        }
        Ok(())
    }
}

impl<S> Local<S> {
    /// Offset of the lookaside slot array from the local heap.
    const SLOTS_AT: usize = core::mem::size_of::<Self>().next_multiple_of(64);

    /// Bytes of the local heap and its slot array.
    const BYTES: usize = Self::SLOTS_AT + LOOKASIDE_SLOTS * core::mem::size_of::<usize>();

    /// The lookaside slot array (uninitialised beyond each list's length).
    #[inline(always)]
    fn slots(&mut self) -> *mut usize {
        (self as *mut Self as usize + Self::SLOTS_AT) as *mut usize
    }

    /// The record of the segment of block `b` (null when none is registered).
    #[inline(always)]
    fn record_of(&self, b: usize) -> *mut Segment {
        if b >> 32 == self.window {
            // SAFETY: `entries` are the registry entries of `window`.
            unsafe { registry::lookup_in(self.entries, b as *const u8) }
        } else {
            registry::lookup(b as *const u8)
        }
    }
}

impl<S: SegmentSource> Local<S> {
    /// Allocates a block of class `c`; null when the source is exhausted.
    ///
    /// # Safety
    /// The caller must be this local heap's owner.
    #[inline(always)]
    unsafe fn alloc(&mut self, c: usize) -> *mut u8 {
        // SAFETY: lookaside and avail lists hold this owner's blocks and segments.
        unsafe {
            let n = self.lookaside_len.get_unchecked(c).load(Relaxed);
            if n != 0 {
                return pop_lookaside(self, c, n);
            }
            let seg = *self.avail.get_unchecked(c);
            if !seg.is_null() {
                let b = (*seg).free;
                if b != 0 {
                    return pop(seg, b);
                }
            }
            self.alloc_slow(c)
        }
    }

    /// [`alloc`](Self::alloc) when the lookaside list and the current segment are empty:
    /// collects remote frees, then takes another segment's free blocks, new pages, or a
    /// new segment.
    #[inline(never)]
    unsafe fn alloc_slow(&mut self, c: usize) -> *mut u8 {
        // SAFETY: owner-only list manipulation on valid segments.
        unsafe {
            self.drain_remote();
            if self.empty_count != 0 {
                self.purge(now_ms());
            }
            // Free blocks of the class's segments first (the fullest segment's), then new
            // pages of a segment, then a new segment: memory already committed is reused
            // before more is touched.
            loop {
                let seg = self.avail[c];
                if seg.is_null() {
                    break;
                }
                if (*seg).free != 0 {
                    return pop(seg, (*seg).free);
                }
                let other = self.fullest_with_free(seg);
                if !other.is_null() {
                    self.unlink_avail(other);
                    self.push_avail_front(other);
                    return pop(other, (*other).free);
                }
                if self.extend(seg) {
                    return pop(seg, (*seg).free);
                }
                self.unlink_avail(seg);
                self.push_full(seg);
            }
            let seg = match self.take_segment(c) {
                Some(s) => s,
                None => return null_mut(),
            };
            self.push_avail_front(seg);
            if (*seg).free == 0 && !self.extend(seg) {
                return null_mut();
            }
            pop(seg, (*seg).free)
        }
    }

    /// Activates inactive pages of `seg` so its free list gets blocks; `false` when every
    /// page is active. Pages already touched (a reused segment's) are activated all at once,
    /// as they cost nothing more; untouched ones in steps of [`EXTEND_BYTES`], so a class
    /// with few blocks commits few pages and one with large blocks does not take the slow
    /// path for every page.
    unsafe fn extend(&mut self, seg: *mut Segment) -> bool {
        // SAFETY: owner-only; pages are inside the segment.
        unsafe {
            let mut inactive = Segment::block_pages(seg) & !(*seg).active;
            let mut touched = inactive & (*seg).touched;
            while touched != 0 {
                let page = touched.trailing_zeros() as usize;
                Segment::activate(seg, page);
                touched &= touched - 1;
                inactive &= !(1 << page);
            }
            let mut added = 0;
            while (added < EXTEND_BYTES || (*seg).free == 0) && inactive != 0 {
                let page = inactive.trailing_zeros() as usize;
                (*seg).touched |= 1 << page;
                self.add_committed(PAGE_SIZE as isize);
                Segment::activate(seg, page);
                inactive &= inactive - 1;
                added += PAGE_SIZE;
            }
            (*seg).free != 0
        }
    }

    /// Adds `d` (signed) to the bytes this local heap counts as committed.
    fn add_committed(&self, d: isize) {
        let v = self.committed.load(Relaxed) as isize + d;
        self.committed.store(v as usize, Relaxed);
    }

    /// The fullest of the few available segments after `head` that have free blocks (null
    /// if none): filling nearly full segments first lets the emptier ones drain and go back
    /// to the source, where any class can reuse them (instead of every class keeping its
    /// peak).
    unsafe fn fullest_with_free(&self, head: *mut Segment) -> *mut Segment {
        // SAFETY: owner-only reads of the class's avail list.
        unsafe {
            let used = |s: *mut Segment| (*s).used.load(Relaxed);
            let (mut best, mut s) = (null_mut::<Segment>(), (*head).next);
            for _ in 0..8 {
                if s.is_null() {
                    break;
                }
                if (*s).free != 0 && (best.is_null() || used(s) > used(best)) {
                    best = s;
                }
                s = (*s).next;
            }
            best
        }
    }

    /// Frees a block of a segment this local heap owns.
    ///
    /// # Safety
    /// The caller must be the owner and `seg` the (valid, small) segment of `p`.
    #[inline(always)]
    unsafe fn free_local(&mut self, seg: *mut Segment, p: *mut u8) -> Result<(), HeapError> {
        // SAFETY: owner-only access to a valid segment; p is checked to be a block of it.
        unsafe {
            let Some(i) = Segment::block_index(seg, p) else {
                return Err(HeapError::new(HeapErrorKind::NotABlock, p as usize));
            };
            push_lookaside(self, seg, p, i)
        }
    }

    /// Gives all but the newest `keep` blocks of class `c`'s lookaside list back to the
    /// blocks' segments.
    #[inline(never)]
    unsafe fn flush_lookaside(&mut self, c: usize, keep: u32) {
        // SAFETY: owner-only; the slots below the length hold free blocks of this owner's
        // segments.
        unsafe {
            let n = self.lookaside_len[c].load(Relaxed) as usize;
            let keep = (keep as usize).min(n);
            let slots = self.slots().add(LOOKASIDE_AT[c]);
            for j in 0..n - keep {
                let b = unpack(*slots.add(j)).0;
                let seg = self.record_of(b);
                (*(b as *mut Block)).next = encode((*seg).free, (*seg).key);
                (*seg).free = b;
                let u = (*seg).used.load(Relaxed) - 1;
                (*seg).used.store(u, Relaxed);
                if u <= (*seg).slow_at {
                    self.free_slow(seg);
                }
            }
            ptr::copy(slots.add(n - keep), slots, keep);
            self.lookaside_len[c].store(keep as u32, Relaxed);
        }
    }

    /// A free left `seg` at its `slow_at` threshold: moves it from the full list back to
    /// the available ones, and caches it when it became empty.
    #[inline(never)]
    unsafe fn free_slow(&mut self, seg: *mut Segment) {
        // SAFETY: owner-only list manipulation.
        unsafe {
            let used = (*seg).used.load(Relaxed);
            if (*seg).full && used <= (*seg).slow_at {
                self.unlink_full(seg);
                self.push_avail_second(seg);
            }
            if used == 0 {
                self.segment_emptied(seg);
            }
        }
    }

    /// Collects blocks other threads freed into segments of this local heap.
    unsafe fn drain_remote(&mut self) {
        // SAFETY: queued segments are this owner's; `next` is read before the flag is
        // cleared, so a concurrent re-queue cannot overwrite it under us.
        unsafe {
            // A plain load first: a locked swap would wait for every pending store (the
            // block links just written) on every slow path, most of which find no queue.
            if self.remote_queue.load(Relaxed).is_null() {
                return;
            }
            let mut s = self.remote_queue.swap(null_mut(), Acquire);
            while !s.is_null() {
                let next = (*s).remote.next.load(Relaxed);
                (*s).remote.queued.store(false, SeqCst);
                self.collect(s);
                s = next;
            }
        }
    }

    /// Moves the blocks of `seg` freed by other threads (their remote bits) to its free list.
    unsafe fn collect(&mut self, seg: *mut Segment) {
        // SAFETY: owner-only; a remote bit is set only on a live block of `seg`, whose pages
        // are active; the words visited are below `capacity / 64 <= BITMAP_WORDS`.
        unsafe {
            let key = (*seg).key;
            let first = (*seg).base;
            let bs = (*seg).block_size.load(Relaxed) as usize;
            let mut free = (*seg).free;
            let mut n = 0u32;
            for w in 0..(*seg).capacity.div_ceil(64) {
                let rw = (*seg).remote_word(w);
                if rw.load(Relaxed) == 0 {
                    continue;
                }
                let bits = rw.swap(0, Acquire);
                let lw = (*seg).live_word(w);
                let live = lw.load(Relaxed);
                if bits & !live != 0 {
                    // Freed remotely after the owner freed it (a race the remote check
                    // cannot see): never put a block on the list twice.
                    let i = w * 64 + (bits & !live).trailing_zeros() as usize;
                    report(HeapError::new(HeapErrorKind::DoubleFree, first + i * bs));
                }
                lw.store(live & !bits, Relaxed);
                n += bits.count_ones();
                let mut m = bits;
                while m != 0 {
                    let b = first + (w * 64 + m.trailing_zeros() as usize) * bs;
                    (*(b as *mut Block)).next = encode(free, key);
                    free = b;
                    m &= m - 1;
                }
            }
            (*seg).free = free;
            let u = (*seg).used.load(Relaxed) - n;
            (*seg).used.store(u, Relaxed);
            if n != 0 && u <= (*seg).slow_at {
                self.free_slow(seg);
            }
        }
    }

    /// Moves the segment `seg`, which has no live block left, to the empty cache (unless
    /// it is its class's last segment or a remote free of it is still queued).
    unsafe fn segment_emptied(&mut self, seg: *mut Segment) {
        // SAFETY: owner-only; a queued segment is left in place until the drain sees it.
        unsafe {
            if (*seg).remote.queued.load(SeqCst) {
                return;
            }
            let c = (*seg).class as usize;
            if self.avail[c] == seg && (*seg).next.is_null() {
                return; // the class's last segment stays: a hot class does not thrash
            }
            self.unlink_avail(seg);
            let now = now_ms();
            (*seg).large_size = now;
            (*seg).prev = null_mut();
            (*seg).next = self.empty;
            if self.empty.is_null() {
                self.empty_tail = seg;
            } else {
                (*self.empty).prev = seg;
            }
            self.empty = seg;
            self.empty_count += 1;
            self.purge(now);
        }
    }

    /// Releases the oldest cached empty segments beyond the cache bound or (with `std`) idle
    /// for [`PURGE_MS`].
    unsafe fn purge(&mut self, now: usize) {
        // SAFETY: owner-only; cached segments are empty and on no other list.
        unsafe {
            while !self.empty_tail.is_null() {
                let t = self.empty_tail;
                #[cfg(feature = "std")]
                let go = self.empty_count > EMPTY_CACHE_MAX
                    || now.wrapping_sub((*t).large_size) >= PURGE_MS;
                #[cfg(not(feature = "std"))]
                let go = {
                    let _ = now;
                    self.empty_count > EMPTY_CACHE
                };
                if !go {
                    break;
                }
                self.take_empty_tail();
                self.release(t);
            }
        }
    }

    /// Takes the oldest segment off the empty cache (which is not empty).
    unsafe fn take_empty_tail(&mut self) {
        // SAFETY: the tail is a cached segment.
        unsafe {
            let t = self.empty_tail;
            self.empty_tail = (*t).prev;
            if self.empty_tail.is_null() {
                self.empty = null_mut();
            } else {
                (*self.empty_tail).next = null_mut();
            }
            self.empty_count -= 1;
        }
    }

    /// Gives the empty segment `seg` back to the source, with its record.
    unsafe fn release(&mut self, seg: *mut Segment) {
        // SAFETY: the segment has no live block and is on no list but `all`.
        unsafe {
            let sh = &*self.shared;
            let mut inner = sh.inner.lock();
            let (p, n) = ((*seg).all_prev, (*seg).all_next);
            if p.is_null() {
                self.all = n;
            } else {
                (*p).all_next = n;
            }
            if !n.is_null() {
                (*n).all_prev = p;
            }
            self.add_committed(-(((*seg).touched.count_ones() as usize * PAGE_SIZE) as isize));
            self.segments
                .store(self.segments.load(Relaxed) - 1, Relaxed);
            inner.give_segments(seg);
        }
    }

    /// A segment formatted for class `c`: from the empty cache or the source.
    unsafe fn take_segment(&mut self, c: usize) -> Option<*mut Segment> {
        // SAFETY: cached segments are empty and ours; fresh ones come from the source.
        unsafe {
            let seg = if !self.empty.is_null() {
                let s = self.empty;
                self.empty = (*s).next;
                if self.empty.is_null() {
                    self.empty_tail = null_mut();
                } else {
                    (*self.empty).prev = null_mut();
                }
                self.empty_count -= 1;
                s
            } else {
                let sh = &*self.shared;
                let mut inner = sh.inner.lock();
                let s =
                    inner.take_segments(1, self.key, Kind::Small, self as *mut Self as *mut ())?;
                (*s).all_next = self.all;
                if !self.all.is_null() {
                    (*self.all).all_prev = s;
                }
                self.all = s;
                self.segments
                    .store(self.segments.load(Relaxed) + 1, Relaxed);
                s
            };
            (*seg).next = null_mut();
            (*seg).prev = null_mut();
            Segment::format(seg, c, CLASS_SIZE[c] as usize);
            Some(seg)
        }
    }

    /// Makes `seg` the current segment of its class.
    unsafe fn push_avail_front(&mut self, seg: *mut Segment) {
        // SAFETY: owner-only list manipulation.
        unsafe {
            let c = (*seg).class as usize;
            let head = self.avail[c];
            (*seg).prev = null_mut();
            (*seg).next = head;
            if !head.is_null() {
                (*head).prev = seg;
            }
            self.avail[c] = seg;
        }
    }

    /// Inserts after the head, so the current segment keeps serving and this one is next.
    unsafe fn push_avail_second(&mut self, seg: *mut Segment) {
        // SAFETY: owner-only list manipulation.
        unsafe {
            let c = (*seg).class as usize;
            let head = self.avail[c];
            if head.is_null() {
                return self.push_avail_front(seg);
            }
            let after = (*head).next;
            (*seg).prev = head;
            (*seg).next = after;
            if !after.is_null() {
                (*after).prev = seg;
            }
            (*head).next = seg;
        }
    }

    /// Takes `seg` off its class's list of available segments.
    unsafe fn unlink_avail(&mut self, seg: *mut Segment) {
        // SAFETY: `seg` is on its class's avail list.
        unsafe {
            let c = (*seg).class as usize;
            unlink(&mut self.avail[c], seg);
        }
    }

    /// Puts `seg`, which has no free block, on its class's full list.
    unsafe fn push_full(&mut self, seg: *mut Segment) {
        // SAFETY: owner-only list manipulation.
        unsafe {
            let c = (*seg).class as usize;
            let head = self.full[c];
            (*seg).prev = null_mut();
            (*seg).next = head;
            if !head.is_null() {
                (*head).prev = seg;
            }
            self.full[c] = seg;
            (*seg).full = true;
            // Back to the avail list only once a 32nd is free again: little ping-pong, little
            // memory stranded.
            let cap = (*seg).capacity;
            (*seg).slow_at = (cap - (cap / 32).max(1)) as u32;
        }
    }

    /// Takes `seg` off its class's full list.
    unsafe fn unlink_full(&mut self, seg: *mut Segment) {
        // SAFETY: `seg` is on its class's full list.
        unsafe {
            let c = (*seg).class as usize;
            unlink(&mut self.full[c], seg);
            (*seg).full = false;
            (*seg).slow_at = 0;
        }
    }

    /// Bytes in live blocks (approximate while the owner runs). Caller holds the heap lock.
    unsafe fn live(&self) -> usize {
        let mut live = 0;
        let mut s = self.all;
        // SAFETY: `all` changes only under the heap lock, which the caller holds; `used` and
        // `block_size` are atomics.
        unsafe {
            while !s.is_null() {
                live += (*s).used.load(Relaxed) as usize * (*s).block_size.load(Relaxed) as usize;
                s = (*s).all_next;
            }
        }
        let on_lists: usize = (0..CLASSES)
            .map(|c| self.lookaside_len[c].load(Relaxed) as usize * CLASS_SIZE[c] as usize)
            .sum();
        live.saturating_sub(on_lists)
    }

    /// Sets `p`'s remote bit and queues its segment to the owner.
    ///
    /// # Safety
    /// `seg` must be a valid small segment of this heap, owned by a live local heap.
    unsafe fn remote_free(seg: *mut Segment, p: *mut u8) -> Result<(), HeapError> {
        // SAFETY: remote threads only read the owner's bits and touch atomics of the record.
        unsafe {
            let Some(i) = Segment::block_index(seg, p) else {
                return Err(HeapError::new(HeapErrorKind::NotABlock, p as usize));
            };
            let (w, bit) = (i >> 6, 1u64 << (i & 63));
            // Freed by the owner (live bit clear), or by another thread (remote bit set, the
            // `fetch_or` says atomically): a double free. One atomic operation per remote
            // free (the `fetch_or`), as mimalloc's push.
            if (*seg).live_word(w).load(Relaxed) & bit == 0
                || (*seg).remote_word(w).fetch_or(bit, SeqCst) & bit != 0
            {
                return Err(HeapError::new(HeapErrorKind::DoubleFree, p as usize));
            }
            // Already queued (the common case under load): the owner's drain will see this
            // bit, as it clears the flag before collecting.
            let r = &(*seg).remote;
            if !r.queued.load(SeqCst) && !r.queued.swap(true, SeqCst) {
                let owner = (*seg).owner as *mut Local<S>;
                let q = &(*owner).remote_queue;
                let mut h = q.load(Relaxed);
                loop {
                    r.next.store(h, Relaxed);
                    match q.compare_exchange_weak(h, seg, Release, Relaxed) {
                        Ok(_) => break,
                        Err(x) => h = x,
                    }
                }
            }
            Ok(())
        }
    }

    /// Gives the lookaside blocks back to their segments, collects remote frees and returns
    /// cached empty segments (before the local heap is abandoned by an exiting thread).
    unsafe fn trim(&mut self) {
        // SAFETY: owner-only.
        unsafe {
            for c in 0..CLASSES {
                if self.lookaside_len[c].load(Relaxed) != 0 {
                    self.flush_lookaside(c, 0);
                }
            }
            self.drain_remote();
            while !self.empty_tail.is_null() {
                let t = self.empty_tail;
                self.take_empty_tail();
                self.release(t);
            }
        }
    }
}

/// Takes `seg` off the doubly linked (`next`/`prev`) list starting at `head`.
unsafe fn unlink(head: &mut *mut Segment, seg: *mut Segment) {
    // SAFETY: `seg` is on the list starting at `head`.
    unsafe {
        let (p, n) = ((*seg).prev, (*seg).next);
        if p.is_null() {
            *head = n;
        } else {
            (*p).next = n;
        }
        if !n.is_null() {
            (*n).prev = p;
        }
        (*seg).prev = null_mut();
        (*seg).next = null_mut();
    }
}

/// Called (through a type-erased pointer) when a thread holding `local` exits.
#[cfg(feature = "std")]
unsafe fn abandon<S: SegmentSource>(local: *mut ()) {
    let local = local as *mut Local<S>;
    // SAFETY: the exiting thread owns `local` until it is put on the abandoned list, under
    // the heap's lock, from which the next owner takes it.
    unsafe {
        (*local).trim();
        let sh = &*(*local).shared;
        let mut inner = sh.inner.lock();
        (*local).next_abandoned = inner.abandoned;
        inner.abandoned = local;
    }
}

/// Bytes a large block counts as committed: its pages up to the end of the block as first
/// allocated (kept in the record's `capacity`).
///
/// # Safety
/// `seg` must be a large segment's record.
unsafe fn large_committed(seg: *mut Segment) -> usize {
    // SAFETY: reading the record (caller).
    unsafe { (*seg).capacity }
}

/// A size-class heap over a segment source `S`.
///
/// `new` is `const`, so a heap can be a `static` `#[global_allocator]`; the heap sets itself
/// up (in a segment of its own) on first use and can be moved freely. Dropping it returns
/// every segment to the source, including those of threads that still cache it. With `std`
/// each thread allocates from its own local heap; without it all go through one spin lock.
#[repr(C)]
pub struct SizeClassHeap<S: SegmentSource> {
    /// The shared state, null until the heap is set up.
    shared: AtomicPtr<Shared<S>>,
    /// Copies of the shared state's id and key, on the handle's cache line for the hot paths.
    id: AtomicU64,
    key: AtomicUsize,
    /// The 4 GiB window (address bits 63..32) of the heap's first segment and its registry
    /// entries: frees of pointers there find their segment's record with one load.
    window: AtomicUsize,
    window_entries: AtomicPtr<AtomicPtr<Segment>>,
    /// The source until set-up moves it into the shared state.
    pending: spin::Mutex<Option<S>>,
}

// SAFETY: all shared state is behind locks or atomics; the source moves between threads.
unsafe impl<S: SegmentSource + Send> Sync for SizeClassHeap<S> {}
// SAFETY: as above.
unsafe impl<S: SegmentSource + Send> Send for SizeClassHeap<S> {}

impl<S: SegmentSource> SizeClassHeap<S> {
    /// A heap that takes its segments from `source`.
    pub const fn new(source: S) -> Self {
        SizeClassHeap {
            shared: AtomicPtr::new(null_mut()),
            id: AtomicU64::new(0),
            key: AtomicUsize::new(0),
            window: AtomicUsize::new(usize::MAX),
            window_entries: AtomicPtr::new(null_mut()),
            pending: spin::Mutex::new(Some(source)),
        }
    }

    /// The shared state, set up on first use; null when the source has no segment for it.
    #[inline(always)]
    fn shared(&self) -> *const Shared<S> {
        let s = self.shared.load(Acquire);
        if !s.is_null() {
            return s;
        }
        self.init()
    }

    /// Sets the heap up: its shared state and first records in a segment of its own,
    /// registered; null (and the source kept for a later try) when that fails.
    #[cold]
    fn init(&self) -> *const Shared<S> {
        let mut pending = self.pending.lock();
        let s = self.shared.load(Acquire);
        if !s.is_null() {
            return s;
        }
        let Some(mut source) = pending.take() else {
            return ptr::null();
        };
        let Some(base) = source.alloc_segments(1) else {
            *pending = Some(source);
            return ptr::null();
        };
        let b = base.as_ptr() as usize;
        let id = NEXT_HEAP_ID.fetch_add(1, Relaxed);
        let key = make_key(mix(b ^ (id as usize).rotate_left(32)));
        // SAFETY: a fresh segment of our own: the shared state at META_OFFSET, then records
        // (the first of them this segment's own).
        unsafe {
            let sh = (b + META_OFFSET) as *mut Shared<S>;
            let records = (META_OFFSET + core::mem::size_of::<Shared<S>>()).next_multiple_of(64);
            sh.write(Shared {
                id,
                key,
                inner: spin::Mutex::new(Inner {
                    source,
                    all_locals: null_mut(),
                    abandoned: null_mut(),
                    large: null_mut(),
                    free_records: null_mut(),
                    rec_next: b + records.min(SEGMENT_SIZE),
                    rec_end: b + SEGMENT_SIZE,
                    slabs: null_mut(),
                    records_committed: 0,
                }),
                locked_local: spin::Mutex::new(LocalPtr(null_mut())),
                committed: AtomicUsize::new(meta_committed(core::mem::size_of::<Shared<S>>())),
                large_blocks: AtomicUsize::new(0),
                large_live: AtomicUsize::new(0),
                window: usize::MAX,
                entries: ptr::null(),
            });
            let registered = {
                let mut inner = (*sh).inner.lock();
                match inner.new_record(key) {
                    Some(own) => {
                        Segment::init(own, b, key, Kind::Meta, null_mut(), 1);
                        registry::register(base.as_ptr(), own)
                    }
                    None => false,
                }
            };
            if !registered {
                // Nothing was handed out: take the source back (a record slab it may have
                // given goes with it, as Drop would).
                let inner = ptr::read(&(*sh).inner).into_inner();
                let mut source = inner.source;
                if !inner.slabs.is_null() {
                    give_back(&mut source, (*inner.slabs).base, 1);
                }
                source.free_segments(base, 1);
                *pending = Some(source);
                return ptr::null();
            }
            let entries = registry::window_entries(base.as_ptr());
            if !entries.is_null() {
                (*sh).window = b >> 32;
                (*sh).entries = entries;
                // The entries before the window (release): a free that sees the window sees
                // them.
                self.window_entries
                    .store(entries as *mut AtomicPtr<Segment>, Relaxed);
                self.window.store(b >> 32, Release);
            }
            self.id.store(id, Relaxed);
            self.key.store(key, Relaxed);
            self.shared.store(sh, Release);
            sh
        }
    }

    /// A local heap: an abandoned one, or a fresh one in a segment of its own.
    unsafe fn new_local(sh: *const Shared<S>) -> Option<*mut Local<S>> {
        // SAFETY: `sh` is live; the new local heap is written before anyone sees it.
        unsafe {
            let sh_ref = &*sh;
            let mut inner = sh_ref.inner.lock();
            if !inner.abandoned.is_null() {
                let l = inner.abandoned;
                inner.abandoned = (*l).next_abandoned;
                return Some(l);
            }
            let seg = inner.take_segments(1, sh_ref.key, Kind::Meta, null_mut())?;
            let l = ((*seg).base + META_OFFSET) as *mut Local<S>;
            l.write(Local {
                lookaside_len: [const { AtomicU32::new(0) }; CLASSES],
                avail: [null_mut(); CLASSES],
                full: [null_mut(); CLASSES],
                shared: sh,
                key: sh_ref.key,
                window: sh_ref.window,
                entries: sh_ref.entries,
                empty: null_mut(),
                empty_tail: null_mut(),
                empty_count: 0,
                remote_queue: AtomicPtr::new(null_mut()),
                committed: AtomicUsize::new(meta_committed(Local::<S>::BYTES)),
                all: null_mut(),
                segments: AtomicUsize::new(0),
                next_all: inner.all_locals,
                next_abandoned: null_mut(),
            });
            inner.all_locals = l;
            Some(l)
        }
    }

    /// Allocates a block for `layout`; null when out of memory or the size overflows.
    #[inline]
    pub fn alloc(&self, layout: Layout) -> *mut u8 {
        // The hot path: the current segment of the class in this thread's local heap. Kept
        // free of calls so the compiler needs no saved registers; everything else is
        // `alloc_cold`.
        #[cfg(feature = "std")]
        {
            let size = layout.size();
            if layout.align() <= 8 && size <= SMALL_MAX {
                // SAFETY: a cache entry exists only for a set-up heap (id 0 matches none);
                // the first entry for its id is this thread's own local heap; its lookaside
                // and avail lists hold its blocks and segments.
                unsafe {
                    if let Some(l) = crate::thread_cache::lookup_first(self.id.load(Relaxed)) {
                        let l = &mut *(l as *mut Local<S>);
                        let c = crate::class::class_of_small(size);
                        let n = l.lookaside_len.get_unchecked(c).load(Relaxed);
                        if n != 0 {
                            return pop_lookaside(l, c, n);
                        }
                        let seg = *l.avail.get_unchecked(c);
                        if !seg.is_null() {
                            let b = (*seg).free;
                            if b != 0 {
                                return pop(seg, b);
                            }
                        }
                    }
                }
            }
        }
        self.alloc_cold(layout)
    }

    /// [`alloc`](Self::alloc) beyond its inline path: set-up, the class of any layout,
    /// large blocks.
    #[inline(never)]
    fn alloc_cold(&self, layout: Layout) -> *mut u8 {
        let sh = self.shared();
        if sh.is_null() {
            return null_mut();
        }
        let c = if layout.align() <= 8 {
            class_of(layout.size())
        } else {
            class_of_aligned(layout.size(), layout.align())
        };
        match c {
            // SAFETY: `sh` is live.
            Some(c) => unsafe { self.alloc_small(sh, c) },
            None => self.alloc_large(sh, layout.size(), layout.align()),
        }
    }

    /// A block of class `c` from this thread's local heap.
    #[inline(always)]
    unsafe fn alloc_small(&self, sh: *const Shared<S>, c: usize) -> *mut u8 {
        #[cfg(feature = "std")]
        // SAFETY: `sh` is live; the thread's entry for this heap id is its own local heap.
        unsafe {
            if let Some(l) = crate::thread_cache::lookup((*sh).id) {
                return (*(l as *mut Local<S>)).alloc(c);
            }
        }
        // SAFETY: `sh` is live.
        unsafe { self.alloc_small_slow(sh, c) }
    }

    /// A block of class `c` when this thread has no local heap for this heap yet: one is
    /// registered for it, else the locked local heap serves.
    #[inline(never)]
    unsafe fn alloc_small_slow(&self, sh: *const Shared<S>, c: usize) -> *mut u8 {
        // SAFETY: `sh` is live; a registered local heap belongs to this thread alone.
        unsafe {
            #[cfg(feature = "std")]
            if let Some(l) = crate::thread_cache::register(
                (*sh).id,
                || Self::new_local(sh).map(|l| l as *mut ()),
                abandon::<S>,
            ) {
                return (*(l as *mut Local<S>)).alloc(c);
            }
            let mut g = (*sh).locked_local.lock();
            if g.0.is_null() {
                match Self::new_local(sh) {
                    Some(l) => g.0 = l,
                    None => return null_mut(),
                }
            }
            (*g.0).alloc(c)
        }
    }

    /// A large block: whole segments, the block at their base (so aligned to any `align`
    /// up to a segment).
    #[cold]
    fn alloc_large(&self, sh: *const Shared<S>, size: usize, align: usize) -> *mut u8 {
        if align > SEGMENT_SIZE || size > isize::MAX as usize {
            return null_mut();
        }
        let Some(count) = size
            .max(1)
            .checked_add(SEGMENT_SIZE - 1)
            .map(|t| t / SEGMENT_SIZE)
        else {
            return null_mut();
        };
        // SAFETY: `sh` is live; the new segments are ours.
        unsafe {
            let sh = &*sh;
            let mut inner = sh.inner.lock();
            let Some(seg) = inner.take_segments(count, sh.key, Kind::Large, null_mut()) else {
                return null_mut();
            };
            (*seg).large_size = size;
            (*seg).capacity = size.max(1).div_ceil(PAGE_SIZE) * PAGE_SIZE;
            (*seg).next = inner.large;
            if !inner.large.is_null() {
                (*inner.large).prev = seg;
            }
            inner.large = seg;
            sh.committed.fetch_add(large_committed(seg), Relaxed);
            sh.large_blocks.fetch_add(1, Relaxed);
            sh.large_live.fetch_add(size, Relaxed);
            (*seg).base as *mut u8
        }
    }

    /// The record of `p`'s segment if it belongs to this heap.
    #[inline(always)]
    fn own_segment(&self, sh: *const Shared<S>, p: *mut u8) -> Result<*mut Segment, HeapError> {
        // The registry, not the segment: a segment base no heap registered may be unmapped.
        let seg = registry::lookup(p);
        // SAFETY: a registered segment's record stays a record while the heap lives.
        if sh.is_null()
            || seg.is_null()
            || unsafe { (*seg).cookie } != base_of(p) ^ unsafe { (*sh).key }
        {
            return Err(HeapError::new(HeapErrorKind::ForeignPointer, p as usize));
        }
        Ok(seg)
    }

    /// Frees `p`, returning what is wrong with it instead of freeing when it is not a live
    /// block of this heap. Null is accepted and ignored.
    ///
    /// # Safety
    /// No other thread may free `p` concurrently, and a live block of this heap must not be
    /// freed while another thread uses it. Any other pointer — null, a stack or static
    /// address, a block of another allocator, an address in unmapped memory — is looked up in
    /// the segment registry before anything at its segment base is read, and reported.
    #[inline]
    pub unsafe fn try_free(&self, p: *mut u8) -> Result<(), HeapError> {
        if p.is_null() {
            return Ok(());
        }
        let sh = self.shared.load(Acquire) as *const Shared<S>;
        let seg = self.own_segment(sh, p)?;
        // SAFETY: `seg` is a segment of this live heap.
        unsafe {
            match (*seg).kind {
                Kind::Small => {}
                Kind::Large => return self.free_large(sh, seg, p),
                Kind::Meta => return Err(HeapError::new(HeapErrorKind::NotABlock, p as usize)),
            }
            #[cfg(feature = "std")]
            if let Some(l) = crate::thread_cache::lookup((*sh).id) {
                if (*seg).owner == l {
                    return (*(l as *mut Local<S>)).free_local(seg, p);
                }
                return Local::<S>::remote_free(seg, p);
            }
            let g = (*sh).locked_local.lock();
            let l = g.0;
            if (*seg).owner == l as *mut () {
                (*l).free_local(seg, p)
            } else {
                drop(g);
                Local::<S>::remote_free(seg, p)
            }
        }
    }

    /// Frees `p`; a double free or a foreign pointer is reported (see [`crate::report`]).
    ///
    /// # Safety
    /// As [`try_free`](Self::try_free).
    #[inline]
    pub unsafe fn free(&self, p: *mut u8) {
        // The hot path: a block of a segment this thread owns goes on its lookaside list.
        #[cfg(feature = "std")]
        // SAFETY: the record comes from the registry, nothing at `p`'s segment base is read;
        // it is ours if the cookie matches; the local heap is this thread's own.
        unsafe {
            // Same bits 63..32 as the (canonical) window: canonical, and in that window.
            let seg = if p as usize >> 32 == self.window.load(Acquire) {
                registry::lookup_in(self.window_entries.load(Relaxed), p)
            } else {
                registry::lookup(p)
            };
            if !seg.is_null() {
                if let Some(l) = crate::thread_cache::lookup_first(self.id.load(Relaxed)) {
                    // Only small segments have an owner, and a local heap's segments are its
                    // heap's: one compare says "ours, small, this thread's".
                    if (*seg).owner == l {
                        // The block's live bit (set, and no remote bit) says it may be freed;
                        // anything else is the exact path's to report.
                        if let Some(i) = Segment::block_index(seg, p) {
                            if let Err(e) = push_lookaside(&mut *(l as *mut Local<S>), seg, p, i) {
                                report(e)
                            }
                            return;
                        }
                    } else if (*seg).cookie == base_of(p) ^ self.key.load(Relaxed)
                        && (*seg).kind == Kind::Small
                    {
                        if let Err(e) = Local::<S>::remote_free(seg, p) {
                            report(e)
                        }
                        return;
                    }
                }
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_cold(p) }
    }

    /// [`free`](Self::free) beyond its inline path: the exact checks of
    /// [`try_free`](Self::try_free), reporting what is wrong.
    #[inline(never)]
    unsafe fn free_cold(&self, p: *mut u8) {
        // SAFETY: forwarded contract.
        if let Err(e) = unsafe { self.try_free(p) } {
            report(e)
        }
    }

    /// Frees the large block `p` of record `seg` (a live large segment of this heap).
    #[cold]
    unsafe fn free_large(
        &self,
        sh: *const Shared<S>,
        seg: *mut Segment,
        p: *mut u8,
    ) -> Result<(), HeapError> {
        // SAFETY: `seg` is a live large segment of this heap.
        unsafe {
            if p as usize != (*seg).base {
                return Err(HeapError::new(HeapErrorKind::NotABlock, p as usize));
            }
            let sh = &*sh;
            let mut inner = sh.inner.lock();
            sh.large_live.fetch_sub((*seg).large_size, Relaxed);
            unlink(&mut inner.large, seg);
            sh.committed.fetch_sub(large_committed(seg), Relaxed);
            inner.give_segments(seg);
            sh.large_blocks.fetch_sub(1, Relaxed);
            Ok(())
        }
    }

    /// Bytes usable at `p` (its block size), or an error if `p` is not a live block here.
    ///
    /// # Safety
    /// As [`try_free`](Self::try_free).
    pub unsafe fn usable_size(&self, p: *mut u8) -> Result<usize, HeapError> {
        let sh = self.shared.load(Acquire) as *const Shared<S>;
        let seg = self.own_segment(sh, p)?;
        // SAFETY: `seg` is a segment of this live heap.
        unsafe {
            match (*seg).kind {
                Kind::Small => match Segment::block_index(seg, p) {
                    Some(i) if Segment::is_allocated(seg, i) => {
                        Ok((*seg).block_size.load(Relaxed) as usize)
                    }
                    Some(_) => Err(HeapError::new(HeapErrorKind::DoubleFree, p as usize)),
                    None => Err(HeapError::new(HeapErrorKind::NotABlock, p as usize)),
                },
                Kind::Large if p as usize == (*seg).base => Ok((*seg).count * SEGMENT_SIZE),
                _ => Err(HeapError::new(HeapErrorKind::NotABlock, p as usize)),
            }
        }
    }

    /// Resizes the block at `p` (allocated with `layout`) to `new_size`: in place when the
    /// block's class (or large block) still fits and is not more than twice too big, else by
    /// allocating, copying and freeing. Null (and `p` untouched) when out of memory.
    ///
    /// # Safety
    /// `p` must be a live block of this heap allocated with `layout`.
    pub unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `p` is a live block (caller contract).
        let usable = match unsafe { self.usable_size(p) } {
            Ok(u) => u,
            Err(e) => report(e),
        };
        if new_size <= usable && (new_size >= usable / 2 || usable <= 64) {
            // Aligned blocks stay aligned in place.
            // `p` is a live block here (usable_size), so its segment has a record.
            let seg = registry::lookup(p);
            // SAFETY: a large segment's record is ours to update.
            unsafe {
                if (*seg).kind == Kind::Large {
                    let sh = &*self.shared.load(Acquire);
                    sh.large_live.fetch_add(new_size, Relaxed);
                    sh.large_live.fetch_sub((*seg).large_size, Relaxed);
                    (*seg).large_size = new_size;
                }
            }
            return p;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        let n = self.alloc(new_layout);
        if !n.is_null() {
            // SAFETY: both blocks are live and distinct; we copy what fits in both.
            unsafe {
                ptr::copy_nonoverlapping(p, n, usable.min(new_size));
                self.free(p);
            }
        }
        n
    }

    /// Tidies the calling thread's part of the heap now instead of at its next slow path:
    /// collects blocks other threads freed into its segments, gives its lookaside blocks back
    /// to their segments, and returns its cached empty segments to the source.
    pub fn collect(&self) {
        let sh = self.shared.load(Acquire) as *const Shared<S>;
        if sh.is_null() {
            return;
        }
        // SAFETY: `sh` is live; a thread's registered local heap is its own; the locked one
        // is used under its lock.
        unsafe {
            #[cfg(feature = "std")]
            if let Some(l) = crate::thread_cache::lookup((*sh).id) {
                (*(l as *mut Local<S>)).trim();
                return;
            }
            let g = (*sh).locked_local.lock();
            let l = g.0;
            if !l.is_null() {
                (*l).trim();
            }
        }
    }

    /// Counters of this heap: live and committed bytes, segments, fragmentation.
    pub fn stats(&self) -> HeapStats {
        let sh = self.shared.load(Acquire);
        if sh.is_null() {
            return HeapStats::default();
        }
        // SAFETY: `sh` is live; local heaps are only linked, never freed, while it lives.
        unsafe {
            let sh = &*sh;
            let mut live = sh.large_live.load(Relaxed);
            let mut committed = sh.committed.load(Relaxed);
            let mut segments = sh.large_blocks.load(Relaxed);
            let inner = sh.inner.lock();
            committed += inner.records_committed;
            let mut l = inner.all_locals;
            while !l.is_null() {
                live += (*l).live();
                committed += (*l).committed.load(Relaxed);
                segments += (*l).segments.load(Relaxed);
                l = (*l).next_all;
            }
            HeapStats::new(live, committed, segments)
        }
    }

    /// Largest request served from size classes; larger ones are large blocks.
    pub const SMALL_MAX: usize = SMALL_MAX;
}

impl<S: SegmentSource> Drop for SizeClassHeap<S> {
    fn drop(&mut self) {
        let sh = *self.shared.get_mut();
        if sh.is_null() {
            return;
        }
        // SAFETY: we own the heap: no thread is inside it, and after forgetting its slots no
        // thread will reach its local heaps again. Every segment is freed exactly once.
        unsafe {
            #[cfg(feature = "std")]
            crate::thread_cache::forget_heap((*sh).id);
            // Records live in the shared segment and the slabs, which go last.
            let inner = (*sh).inner.get_mut();
            let src = &mut inner.source;
            let mut l = inner.all_locals;
            while !l.is_null() {
                let next = (*l).next_all;
                let mut s = (*l).all;
                while !s.is_null() {
                    let n = (*s).all_next;
                    give_back(src, (*s).base, 1);
                    s = n;
                }
                give_back(src, base_of(l as *const u8), 1);
                l = next;
            }
            let mut s = inner.large;
            while !s.is_null() {
                let n = (*s).next;
                give_back(src, (*s).base, (*s).count);
                s = n;
            }
            let mut s = inner.slabs;
            while !s.is_null() {
                // The slab's own record is inside it: read the link first.
                let n = (*s).next;
                give_back(src, (*s).base, 1);
                s = n;
            }
            let mut source = ptr::read(src);
            give_back(&mut source, base_of(sh as *const u8), 1);
            drop(source);
        }
    }
}

// SAFETY: `alloc` returns blocks of at least `layout.size()` bytes aligned to
// `layout.align()` (classes are multiples of the alignment; large blocks are placed at it),
// or null; freed blocks are only reused after `dealloc`.
unsafe impl<S: SegmentSource + Send> core::alloc::GlobalAlloc for SizeClassHeap<S> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        SizeClassHeap::alloc(self, layout)
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        // SAFETY: `p` was allocated here (GlobalAlloc contract).
        unsafe { self.free(p) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `p` was allocated here with `layout` (GlobalAlloc contract).
        unsafe { SizeClassHeap::realloc(self, p, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ArenaSource;
    extern crate std;
    use std::vec::Vec;

    fn arena(segments: usize) -> &'static spin::Mutex<ArenaSource> {
        crate::testing::arena(segments)
    }

    fn l(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_distinct_aligned_and_reused() {
        let a = arena(64);
        let h = SizeClassHeap::new(a);
        let mut ptrs = Vec::new();
        for size in [1usize, 8, 9, 64, 65, 100, 1000, 4096, 8192] {
            for align in [1usize, 8, 16, 64, 4096] {
                let p = h.alloc(l(size, align));
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "{size} {align}");
                assert!(unsafe { h.usable_size(p) }.unwrap() >= size);
                unsafe { p.write_bytes(0x5a, size) };
                ptrs.push(p);
            }
        }
        let mut sorted = ptrs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ptrs.len());
        for p in ptrs {
            unsafe { h.try_free(p) }.unwrap();
        }
        assert_eq!(h.stats().live_bytes, 0);
    }

    #[test]
    fn double_free_foreign_and_interior_pointers_are_reported() {
        let h = SizeClassHeap::new(arena(16));
        let p = h.alloc(l(48, 8));
        let q = h.alloc(l(48, 8));
        unsafe {
            assert_eq!(
                h.try_free(p.add(8)).unwrap_err().kind,
                HeapErrorKind::NotABlock
            );
            h.try_free(p).unwrap();
            assert_eq!(h.try_free(p).unwrap_err().kind, HeapErrorKind::DoubleFree);
            let other = SizeClassHeap::new(arena(16));
            let r = other.alloc(l(48, 8));
            assert_eq!(
                h.try_free(r).unwrap_err().kind,
                HeapErrorKind::ForeignPointer
            );
            // the heap is intact after the refused frees
            h.try_free(q).unwrap();
            let big = h.alloc(l(100_000, 8));
            assert_eq!(
                h.try_free(big.add(16)).unwrap_err().kind,
                HeapErrorKind::NotABlock
            );
            h.try_free(big).unwrap();
        }
    }

    /// Pointers into memory no heap owns are looked up in the segment registry, never
    /// dereferenced at their segment base: a stack address, an address in an unmapped
    /// region (reading its segment base would fault), a block of the C allocator, and a
    /// pointer into the second segment of a large block (its base holds user data).
    #[cfg(feature = "std")]
    #[test]
    fn pointers_into_memory_no_heap_owns_are_reported_not_followed() {
        let h = SizeClassHeap::new(crate::source::HostSource::new());
        let keep = h.alloc(l(64, 8));
        let foreign = |p: *mut u8| unsafe { h.try_free(p).unwrap_err() };
        let mut on_stack = [0u8; 64];
        let e = foreign(on_stack.as_mut_ptr());
        assert_eq!(e.kind, HeapErrorKind::ForeignPointer);
        assert_eq!(e.addr, on_stack.as_ptr() as usize);
        unsafe {
            let len = 4 * SEGMENT_SIZE;
            let m = libc::mmap(
                null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(m, libc::MAP_FAILED);
            libc::munmap(m, len);
            // The segment base of this address lies in the unmapped range (or below it).
            let p = (m as *mut u8).add(2 * SEGMENT_SIZE + 48);
            assert_eq!(foreign(p).kind, HeapErrorKind::ForeignPointer);
            let c = libc::malloc(40) as *mut u8;
            assert_eq!(foreign(c).kind, HeapErrorKind::ForeignPointer);
            libc::free(c.cast());
            let big = h.alloc(l(3 * SEGMENT_SIZE, 8));
            big.write_bytes(0xff, 3 * SEGMENT_SIZE);
            let inner = crate::segment::base_of(big.add(SEGMENT_SIZE + 100)) as *mut u8;
            assert_eq!(foreign(inner.add(64)).kind, HeapErrorKind::ForeignPointer);
            h.try_free(big).unwrap();
            // Once given back, a large block's pointer is no longer any heap's.
            assert_eq!(foreign(big).kind, HeapErrorKind::ForeignPointer);
            h.try_free(keep).unwrap();
            // The fast path (`free`) takes the same look-up: freeing a foreign pointer there
            // ends in `report` (checked in tests/threads.rs); here the heap still works.
            let again = h.alloc(l(64, 8));
            assert!(!again.is_null());
            h.try_free(again).unwrap();
        }
    }

    /// What `committed_bytes` counts is what the kernel has resident for the heap (a host
    /// source with 4 KiB pages, measured with `mincore`): the pages a class has touched, not
    /// whole segments — a class with a few blocks costs a page or two.
    #[cfg(feature = "std")]
    #[test]
    fn committed_bytes_are_the_pages_the_kernel_has_resident() {
        let src: &'static spin::Mutex<crate::HostSource> = std::boxed::Box::leak(
            std::boxed::Box::new(spin::Mutex::new(crate::HostSource::small_pages())),
        );
        let h = SizeClassHeap::new(src);
        let mut ptrs = Vec::new();
        let mut seed = 7u64;
        for i in 0..6000usize {
            seed = mix(seed as usize) as u64;
            // most classes get a few blocks, a few get many
            let size = if i % 8 == 0 {
                8 + (seed % 4000) as usize
            } else {
                8 + (seed % 64) as usize
            };
            let p = h.alloc(l(size, 8));
            unsafe { p.write_bytes(0xa5, size) };
            ptrs.push(p);
            if seed % 3 == 0 {
                let j = (seed >> 8) as usize % ptrs.len();
                unsafe { h.free(ptrs.swap_remove(j)) };
            }
        }
        let committed = h.stats().committed_bytes;
        let resident = src.lock().resident();
        assert!(resident <= committed, "{resident} > {committed}");
        assert!(
            committed <= resident + resident / 8,
            "{committed} vs {resident}"
        );
        assert!(
            committed < h.stats().segments * SEGMENT_SIZE / 2,
            "{committed} bytes in {} segments",
            h.stats().segments
        );
        for p in ptrs {
            unsafe { h.free(p) };
        }
    }

    #[test]
    fn overflowing_sizes_return_null() {
        let h = SizeClassHeap::new(arena(8));
        assert!(h.alloc(l(isize::MAX as usize - 7, 8)).is_null());
        assert!(h.alloc(l(isize::MAX as usize - 8192, 4096)).is_null());
        assert!(h
            .alloc(l(isize::MAX as usize - (1 << 17), 1 << 16))
            .is_null());
        assert!(h.alloc(l(64, 1 << 17)).is_null());
    }

    #[test]
    fn the_arena_running_out_gives_null_not_a_crash() {
        let h = SizeClassHeap::new(arena(4));
        let mut n = 0;
        loop {
            let p = h.alloc(l(4000, 8));
            if p.is_null() {
                break;
            }
            n += 1;
            assert!(n < 100);
        }
        assert!(n >= 14, "{n}");
    }

    #[test]
    fn empty_segments_go_back_with_hysteresis_and_drop_returns_everything() {
        let a = arena(200);
        {
            let h = SizeClassHeap::new(a);
            let ptrs: Vec<_> = (0..4000).map(|_| h.alloc(l(256, 8))).collect();
            let held = a.lock().in_use();
            assert!(held >= 16, "{held}");
            for p in &ptrs {
                unsafe { h.free(*p) };
            }
            // with std, empty segments wait PURGE_MS before they go back
            #[cfg(feature = "std")]
            {
                std::thread::sleep(std::time::Duration::from_millis(2 * PURGE_MS as u64 + 10));
                unsafe { h.free(h.alloc(l(100, 8))) };
            }
            let after = a.lock().in_use();
            // one segment kept for each class used, a few cached, the heap's own metadata
            assert!(after <= 2 + 2 + 4, "{after}");
            let big = h.alloc(l(300_000, 64));
            assert!(!big.is_null());
            let st = h.stats();
            assert!(st.committed_bytes >= 300_000 && st.live_bytes == 300_000);
        }
        assert_eq!(a.lock().in_use(), 0);
    }

    /// Segments hold only blocks (16 page-sized blocks fill one), their records live in
    /// the heap's meta segments; past the first segment's room, record slabs are taken,
    /// records of released segments are reused, and dropping the heap returns the slabs too.
    #[test]
    fn records_live_apart_and_their_slabs_go_back_with_the_heap() {
        let a = arena(400);
        {
            let h = SizeClassHeap::new(a);
            let page: Vec<_> = (0..16).map(|_| h.alloc(l(4096, 4096))).collect();
            let base = page[0] as usize & !(SEGMENT_SIZE - 1);
            for p in &page {
                assert_eq!(*p as usize & !(SEGMENT_SIZE - 1), base);
            }
            assert_eq!(page.iter().filter(|p| **p as usize == base).count(), 1);
            assert_eq!(h.stats().segments, 1);
            // 3000 blocks of 8 KiB: 375 segments, more records than the first segment holds.
            let big: Vec<_> = (0..3000).map(|_| h.alloc(l(8192, 8))).collect();
            assert!(big.iter().all(|p| !p.is_null()));
            let used = a.lock().in_use();
            // 376 small segments, two meta segments and at least one record slab
            assert!(used >= 379, "{used}");
            for p in big.iter().chain(&page) {
                unsafe { h.try_free(*p) }.unwrap();
            }
            h.collect();
            let after = a.lock().in_use();
            // Released segments' records are reused: the same blocks again need no new slab.
            let again: Vec<_> = (0..3000).map(|_| h.alloc(l(8192, 8))).collect();
            assert!(again.iter().all(|p| !p.is_null()));
            assert_eq!(a.lock().in_use(), after + 375 - 1, "one segment was kept");
            for p in again {
                unsafe { h.try_free(p) }.unwrap();
            }
            assert_eq!(h.stats().live_bytes, 0);
        }
        assert_eq!(a.lock().in_use(), 0);
    }

    #[test]
    fn realloc_stays_in_place_within_the_class_and_moves_contents_otherwise() {
        let h = SizeClassHeap::new(arena(32));
        unsafe {
            let p = h.alloc(l(100, 8));
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            assert_eq!(h.realloc(p, l(100, 8), 104), p);
            let q = h.realloc(p, l(104, 8), 5000);
            assert_ne!(q, p);
            for i in 0..100 {
                assert_eq!(*q.add(i), i as u8);
            }
            let r = h.realloc(q, l(5000, 8), 50_000);
            assert_eq!(*r.add(99), 99);
            assert_eq!(h.realloc(r, l(50_000, 8), 40_000), r);
            h.free(r);
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn frees_from_another_thread_are_collected_by_the_owner() {
        let h = std::sync::Arc::new(SizeClassHeap::new(crate::HostSource::new()));
        let ptrs: Vec<usize> = (0..20_000)
            .map(|i| h.alloc(l(8 + i % 200, 8)) as usize)
            .collect();
        let h2 = h.clone();
        std::thread::spawn(move || {
            for p in ptrs {
                unsafe { h2.try_free(p as *mut u8) }.unwrap();
            }
        })
        .join()
        .unwrap();
        // The owner collects on its next slow path: allocating as much again runs its
        // segments dry (their blocks wait as remote bits until collected).
        let again: Vec<usize> = (0..20_000)
            .map(|i| h.alloc(l(8 + i % 200, 8)) as usize)
            .collect();
        for p in again {
            unsafe { h.free(p as *mut u8) };
        }
        let live = h.stats().live_bytes;
        assert_eq!(live, 0);
    }

    /// Double frees are caught wherever the block is: on its segment's free list, after the
    /// segment was looked at again, or never handed out; whatever a live block holds, its
    /// free is a free.
    #[test]
    fn double_frees_are_caught_on_every_list_and_any_data_is_freed_normally() {
        let h = SizeClassHeap::new(arena(32));
        unsafe {
            let p = h.alloc(l(40, 8));
            h.try_free(p).unwrap();
            assert_eq!(h.try_free(p).unwrap_err().kind, HeapErrorKind::DoubleFree);
            h.collect();
            assert_eq!(h.try_free(p).unwrap_err().kind, HeapErrorKind::DoubleFree);
            // a block never handed out, on a fresh segment's free list
            let q = h.alloc(l(40, 8));
            let never = q.add(CLASS_SIZE[class_of(40).unwrap()] as usize * 3);
            assert_eq!(
                h.try_free(never).unwrap_err().kind,
                HeapErrorKind::DoubleFree
            );
            // live blocks holding what a free-list link looks like are freed normally
            let free_one = h.alloc(l(40, 8));
            h.try_free(free_one).unwrap();
            for v in [free_one as usize, 0, q as usize, usize::MAX] {
                let r = h.alloc(l(40, 8));
                *(r as *mut usize) = v;
                h.try_free(r).unwrap();
                let again = h.alloc(l(40, 8));
                assert_eq!(again, r, "the freed block is reused first");
            }
            h.try_free(q).unwrap();
        }
    }

    /// A use-after-free write clobbers a freed block's free-list link (here with the address
    /// of a live block, the classic way to make an allocator hand a block out twice): the
    /// later double free of that block is still reported, through `try_free` and through
    /// the fast path, because the state lives in the segment's bitmap, not in the block.
    #[test]
    fn a_double_free_after_a_use_after_free_write_is_still_reported() {
        let h = SizeClassHeap::new(arena(32));
        unsafe {
            let live = h.alloc(l(24, 8));
            let p = h.alloc(l(24, 8));
            h.try_free(p).unwrap();
            for v in [live as usize, 0, p as usize, 0x4141_4141_4141_4141] {
                *(p as *mut usize) = v; // the use-after-free write
                assert_eq!(h.try_free(p).unwrap_err().kind, HeapErrorKind::DoubleFree);
                assert_eq!(
                    h.usable_size(p).unwrap_err().kind,
                    HeapErrorKind::DoubleFree
                );
            }
            // Repair the link (as a test may) so the heap can go on; the live block is intact.
            *(p as *mut usize) = 0;
            h.try_free(live).unwrap();
        }
    }

    /// Lookaside lists are slots in the heap's own memory: a use-after-free write over
    /// blocks waiting there changes nothing — the same blocks come back, each once.
    #[test]
    fn use_after_free_writes_do_not_reach_the_lookaside_lists() {
        let h = SizeClassHeap::new(arena(16));
        unsafe {
            let mut ptrs: Vec<_> = (0..100).map(|_| h.alloc(l(48, 8))).collect();
            let keep = h.alloc(l(48, 8));
            for &p in &ptrs {
                h.try_free(p).unwrap();
                // the use-after-free write: a live block's address, then garbage
                *(p as *mut usize) = keep as usize;
                *(p as *mut usize).add(1) = 0x4141_4141_4141_4141;
            }
            let mut again: Vec<_> = (0..100).map(|_| h.alloc(l(48, 8))).collect();
            ptrs.sort();
            again.sort();
            assert_eq!(again, ptrs);
            for p in again {
                h.try_free(p).unwrap();
            }
            h.try_free(keep).unwrap();
            assert_eq!(h.stats().live_bytes, 0);
        }
    }

    /// A block freed by its owner and then by another thread, or freed twice by another
    /// thread (the second `fetch_or` of its remote bit finds it set), is reported there.
    #[cfg(feature = "std")]
    #[test]
    fn remote_double_frees_are_reported() {
        let h = std::sync::Arc::new(SizeClassHeap::new(crate::HostSource::new()));
        let a = h.alloc(l(72, 8)) as usize;
        let b = h.alloc(l(72, 8)) as usize;
        unsafe { h.try_free(a as *mut u8) }.unwrap();
        let h2 = h.clone();
        std::thread::spawn(move || unsafe {
            assert_eq!(
                h2.try_free(a as *mut u8).unwrap_err().kind,
                HeapErrorKind::DoubleFree
            );
            h2.try_free(b as *mut u8).unwrap();
            assert_eq!(
                h2.try_free(b as *mut u8).unwrap_err().kind,
                HeapErrorKind::DoubleFree
            );
        })
        .join()
        .unwrap();
        // The owner, too, sees `b` as freed (its remote bit is set).
        assert_eq!(
            unsafe { h.try_free(b as *mut u8) }.unwrap_err().kind,
            HeapErrorKind::DoubleFree
        );
    }
}

/// The kernel configuration (without `std`): one spin-locked local heap, empty segments
/// cached by count, the registry's one window; over arenas in the test pool
/// ([`crate::testing`]), as a kernel's early heap over its static region.
#[cfg(all(test, not(feature = "std")))]
mod kernel_tests {
    use super::*;
    use crate::source::ArenaSource;
    use crate::testing::{arena, panic_message};
    extern crate std;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn l(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// One arena for every case of the property test: each case's heap must give all back.
    fn model_arena() -> &'static spin::Mutex<ArenaSource> {
        static A: std::sync::OnceLock<&'static spin::Mutex<ArenaSource>> =
            std::sync::OnceLock::new();
        A.get_or_init(|| arena(512))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random allocations, frees and reallocations (sizes up to large blocks,
        /// alignments up to 4 KiB) with every block's contents checked; destroying the heap
        /// gives every segment back to the arena.
        #[test]
        fn the_heap_on_a_kernel_arena_matches_the_model(ops in crate::testing::ops()) {
            let a = model_arena();
            prop_assert_eq!(a.lock().in_use(), 0);
            {
                let mut h = SizeClassHeap::new(a);
                crate::testing::run(&mut h, &ops);
            }
            prop_assert_eq!(a.lock().in_use(), 0);
        }
    }

    /// Two threads share the one spin-locked local heap: each allocates, fills, checks and
    /// frees its own blocks, and frees blocks the other allocated (handed over through a
    /// channel); no block is handed out twice, nothing is lost, and the heap gives every
    /// segment back when dropped.
    #[test]
    fn two_threads_share_the_locked_local_heap() {
        let a = arena(256);
        {
            let h = SizeClassHeap::new(a);
            crate::testing::two_threads(&crate::testing::Traffic {
                alloc: &|l| h.alloc(l),
                // SAFETY: the driver frees only live blocks of this heap.
                free: &|p, _| unsafe { h.try_free(p) }.unwrap(),
                realloc: None,
                small: 600,
                large: 100_000,
                max_align_log2: 6,
            });
            assert_eq!(h.stats().live_bytes, 0);
        }
        assert_eq!(a.lock().in_use(), 0);
    }

    /// Without `std`, `report` panics (a kernel's panic) with the error's message: a double
    /// free, a foreign pointer (the stack, a block of another heap, memory in a window the
    /// registry does not serve) and an interior pointer through `free` and `realloc`; the
    /// heap, whose lock is not held at the report, goes on working.
    #[test]
    fn bad_frees_are_reported_by_a_panic_and_the_heap_goes_on() {
        let a = arena(16);
        let h = SizeClassHeap::new(a);
        let p = h.alloc(l(48, 8));
        let keep = h.alloc(l(200, 8));
        unsafe { keep.write_bytes(0x3c, 200) };
        unsafe { h.free(p) };
        let m = panic_message(|| unsafe { h.free(p) });
        assert_eq!(
            m,
            std::format!("vmspace-heap: double free of {:#x}", p as usize)
        );
        let mut on_stack = [0u8; 32];
        let s = on_stack.as_mut_ptr();
        let m = panic_message(|| unsafe { h.free(s) });
        assert!(
            m.contains("never handed out") && m.ends_with(&std::format!("{:#x}", s as usize)),
            "{m}"
        );
        let other = SizeClassHeap::new(arena(8));
        let r = other.alloc(l(48, 8));
        assert!(panic_message(|| unsafe { h.free(r) }).contains("never handed out"));
        let far = (keep as usize).wrapping_add(1 << 32) as *mut u8;
        assert!(panic_message(|| unsafe { h.free(far) }).contains("never handed out"));
        let m = panic_message(|| unsafe { h.free(keep.add(8)) });
        assert!(m.contains("not the start of a live block"), "{m}");
        let m = panic_message(|| unsafe {
            h.realloc(p, l(48, 8), 4000);
        });
        assert!(m.contains("double free"), "{m}");
        // Nothing was changed by the refused frees.
        unsafe {
            assert!(core::slice::from_raw_parts(keep, 200)
                .iter()
                .all(|&b| b == 0x3c));
            let q = h.alloc(l(48, 8));
            assert!(!q.is_null());
            h.free(q);
            h.free(keep);
            other.free(r);
        }
        assert_eq!(h.stats().live_bytes, 0);
        drop(h);
        drop(other);
    }

    /// Without a clock, a local heap keeps [`EMPTY_CACHE`] empty segments besides its
    /// class's last one; the others go back to the arena at once. The cached ones serve the
    /// next burst without the arena; `collect` and dropping the heap give them back.
    #[test]
    fn empty_segments_beyond_the_cache_bound_go_back_at_once() {
        let a = arena(64);
        {
            let h = SizeClassHeap::new(a);
            let keep = h.alloc(l(1024, 8));
            let base = a.lock().in_use();
            let per = SEGMENT_SIZE / 1024;
            let burst: Vec<_> = (0..20 * per).map(|_| h.alloc(l(1024, 8))).collect();
            assert!(burst.iter().all(|p| !p.is_null()));
            let held = a.lock().in_use();
            assert!(held >= base + 19, "{held} vs {base}");
            for &p in &burst {
                unsafe { h.free(p) };
            }
            // Lookaside blocks go back to their segments: every burst segment is empty.
            h.collect();
            // `collect` returns the cached segments too: only the segment of `keep` is left.
            assert_eq!(a.lock().in_use(), base);
            let burst: Vec<_> = (0..20 * per).map(|_| h.alloc(l(1024, 8))).collect();
            // Newest first: the last blocks freed, which stay on the lookaside list, are the
            // burst's first, in the segment of `keep`; the 20 others all go empty.
            for &p in burst.iter().rev() {
                unsafe { h.try_free(p) }.unwrap();
            }
            // Of the 20 emptied segments the first (the burst's last, then the class's only
            // available one) stays as its class's last, the cache keeps four, the other 15
            // went back at once.
            let after = a.lock().in_use();
            assert_eq!(after, base + 1 + EMPTY_CACHE, "{base} before the burst");
            // The cached segments serve a burst of that size without the arena.
            let again: Vec<_> = (0..(after - base) * per)
                .map(|_| h.alloc(l(1024, 8)))
                .collect();
            assert_eq!(a.lock().in_use(), after);
            for p in again {
                unsafe { h.free(p) };
            }
            h.collect();
            assert_eq!(a.lock().in_use(), base);
            unsafe { h.free(keep) };
        }
        assert_eq!(a.lock().in_use(), 0);
    }

    /// Dropping a heap gives every segment back: its shared segment, the local heap's,
    /// small segments of many classes (live blocks or not), large blocks, record slabs.
    #[test]
    fn dropping_the_heap_returns_every_segment_to_the_arena() {
        let a = arena(600);
        {
            let h = SizeClassHeap::new(a);
            for (i, size) in [8usize, 24, 100, 1000, 4096, 9000, 30_000, 200_000]
                .iter()
                .enumerate()
            {
                for _ in 0..(i + 1) * 3 {
                    assert!(!h.alloc(l(*size, 16)).is_null());
                }
            }
            // More segments than the first meta segment has records for: a record slab.
            let many: Vec<_> = (0..500).map(|_| h.alloc(l(8192, 8))).collect();
            assert!(many.iter().all(|p| !p.is_null()));
            for p in &many[..250] {
                unsafe { h.free(*p) };
            }
            assert!(a.lock().in_use() > 500 / 8);
        }
        assert_eq!(a.lock().in_use(), 0);
    }

    /// Real memory in another 4 GiB window than the test pool: a static (the binary's
    /// image, where the pool is heap memory from `mmap`).
    fn far_segments() -> (usize, usize) {
        #[repr(C, align(65536))]
        struct Far(core::cell::UnsafeCell<[u8; 4 * SEGMENT_SIZE]>);
        // SAFETY: the memory is only handed to heaps through `TwoWindows`, one at a time.
        unsafe impl Sync for Far {}
        static FAR: Far = Far(core::cell::UnsafeCell::new([0; 4 * SEGMENT_SIZE]));
        let far = FAR.0.get() as usize;
        assert_ne!(
            far >> 32,
            crate::testing::pool_window(),
            "the binary's image and the heap memory lie in one 4 GiB window"
        );
        (far, 4)
    }

    /// A source over the test pool that, while `far` is on, hands out segments of another
    /// window instead; counts what it handed out and got back there.
    struct TwoWindows {
        arena: &'static spin::Mutex<ArenaSource>,
        far: bool,
        given: usize,
        back: usize,
    }

    // SAFETY: pool segments come from the arena; the far run is real, aligned memory
    // handed out whole and only while not out already (given == back).
    unsafe impl SegmentSource for &spin::Mutex<TwoWindows> {
        fn alloc_segments(&mut self, count: usize) -> Option<NonNull<u8>> {
            let mut t = self.lock();
            let (far, n) = far_segments();
            if t.far && count <= n && t.given == t.back {
                t.given += 1;
                return NonNull::new(far as *mut u8);
            }
            t.arena.lock().alloc_segments(count)
        }
        unsafe fn free_segments(&mut self, base: NonNull<u8>, count: usize) {
            let mut t = self.lock();
            if base.as_ptr() as usize == far_segments().0 {
                t.back += 1;
            } else {
                // SAFETY: forwarded contract.
                unsafe { t.arena.lock().free_segments(base, count) }
            }
        }
    }

    /// A record slab (taken when the records of the heap's first segment run out) in a
    /// second window cannot be registered either: the allocation that needed it gives null,
    /// the slab goes back and the record area is as before (the counters unchanged); the
    /// next try takes a slab in the window.
    #[test]
    fn a_record_slab_in_a_second_window_is_out_of_memory() {
        let arena = arena(400);
        let src: &'static spin::Mutex<TwoWindows> =
            std::boxed::Box::leak(std::boxed::Box::new(spin::Mutex::new(TwoWindows {
                arena,
                far: false,
                given: 0,
                back: 0,
            })));
        let blk = l(8192, 8);
        // Which 8 KiB block first needs a slab: the one whose allocation takes two segments.
        let k = {
            let h = SizeClassHeap::new(src);
            // the first takes the shared segment, the local heap's and its own
            assert!(!h.alloc(blk).is_null());
            let mut k = 1;
            loop {
                let before = arena.lock().in_use();
                assert!(!h.alloc(blk).is_null());
                k += 1;
                let took = arena.lock().in_use() - before;
                if took == 2 {
                    break k;
                }
                assert!(took <= 1 && k < 8 * 380, "{took} segments for one block");
            }
        };
        assert_eq!(arena.lock().in_use(), 0);
        {
            let h = SizeClassHeap::new(src);
            let ptrs: Vec<_> = (1..k).map(|_| h.alloc(blk)).collect();
            assert!(ptrs.iter().all(|p| !p.is_null()));
            let before = (h.stats(), arena.lock().in_use());
            src.lock().far = true;
            assert!(h.alloc(blk).is_null());
            {
                let t = src.lock();
                assert_eq!((t.given, t.back), (1, 1));
            }
            assert_eq!((h.stats(), arena.lock().in_use()), before);
            src.lock().far = false;
            let p = h.alloc(blk);
            assert!(!p.is_null());
            assert_eq!(arena.lock().in_use(), before.1 + 2, "a slab and a segment");
            unsafe { h.free(p) };
            for p in ptrs {
                unsafe { h.free(p) };
            }
            assert_eq!(h.stats().live_bytes, 0);
        }
        assert_eq!(arena.lock().in_use(), 0);
    }

    /// Segments in a second 4 GiB window cannot be registered without `std`: the heap
    /// treats them as out of memory — a small class, a large block, and a heap's set-up
    /// give null, the source gets each such segment back, and nothing is corrupted: the
    /// heap goes on from its window, and dropping it returns everything.
    #[test]
    fn a_segment_in_a_second_window_is_out_of_memory() {
        let arena = arena(32);
        let src: &'static spin::Mutex<TwoWindows> =
            std::boxed::Box::leak(std::boxed::Box::new(spin::Mutex::new(TwoWindows {
                arena,
                far: false,
                given: 0,
                back: 0,
            })));
        {
            // Set up in the pool's window (claiming it for the registry if no test has yet).
            let h = SizeClassHeap::new(src);
            let keep = h.alloc(l(64, 8));
            assert!(!keep.is_null());
            unsafe { keep.write_bytes(0x77, 64) };
            let before = (h.stats(), arena.lock().in_use());
            src.lock().far = true;
            assert!(h.alloc(l(3000, 8)).is_null(), "a new class's segment");
            assert!(h.alloc(l(100_000, 8)).is_null(), "a large block");
            assert!(h.alloc(l(4096, 4096)).is_null(), "an aligned class");
            {
                let t = src.lock();
                assert_eq!((t.given, t.back), (3, 3));
            }
            // A second heap whose first segment is far cannot set up; later it can.
            let h2 = SizeClassHeap::new(src);
            assert!(h2.alloc(l(64, 8)).is_null());
            assert_eq!(src.lock().back, 4);
            // Classes that have a segment in the window still serve.
            let q = h.alloc(l(64, 8));
            assert!(!q.is_null());
            unsafe { h.free(q) };
            assert_eq!((h.stats(), arena.lock().in_use()), before);
            src.lock().far = false;
            let r = h.alloc(l(3000, 8));
            let big = h.alloc(l(100_000, 8));
            let r2 = h2.alloc(l(64, 8));
            assert!(!r.is_null() && !big.is_null() && !r2.is_null());
            unsafe {
                assert!(core::slice::from_raw_parts(keep, 64)
                    .iter()
                    .all(|&b| b == 0x77));
                h.free(r);
                h.free(big);
                h.free(keep);
                h2.free(r2);
            }
            assert_eq!(h.stats().live_bytes, 0);
        }
        let t = src.lock();
        assert_eq!((t.given, t.back), (4, 4));
        assert_eq!(arena.lock().in_use(), 0);
    }
}
