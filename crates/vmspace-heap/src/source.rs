//! The segment seam: where heaps get 64 KiB-aligned segments and where the chunk heap grows.
//!
//! A [`SegmentSource`] hands out runs of [`SEGMENT_SIZE`]-aligned segments (a single segment
//! for a size class, several for a large block) and takes them back. A [`BrkSource`] is a
//! contiguous region that grows and shrinks at its end, as `brk` does. Implementations here:
//! [`ArenaSource`] / [`ArenaBrk`] over a fixed byte region (a kernel's early heap) and, with
//! the `std` feature, [`HostSource`] / [`HostBrk`] over `mmap`.
//!
//! A vmspace address space implements the same traits ([`crate::space`], feature `space`):
//! `alloc_segments(n)` is an anonymous mapping of `n` segments placed at a 64 KiB-aligned
//! gap, `free_segments` unmaps it, `decommit` is `madvise(MADV_DONTNEED)`, and a
//! `BrkSource` is the space's `brk`; the heap's segments then show up in the space's maps.
//! The traits take `&mut self`; a source shared by several heaps is `&spin::Mutex<S>`.

use core::ptr::NonNull;

/// Size and alignment of a segment: 64 KiB.
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
/// log2 of [`SEGMENT_SIZE`].
pub const SEGMENT_SHIFT: u32 = 16;
/// The page size heaps assume for commit granularity and the largest small alignment.
pub const PAGE_SIZE: usize = 4096;

/// Supplier of 64 KiB-aligned segments for the size-class heap.
///
/// # Safety
/// An implementation must return, from [`alloc_segments`](Self::alloc_segments), memory that
/// is aligned to [`SEGMENT_SIZE`], readable and writable for `count * SEGMENT_SIZE` bytes,
/// not handed out again until freed, and stays valid until it is freed or the source is
/// dropped.
pub unsafe trait SegmentSource {
    /// Allocates `count` contiguous committed segments; `None` when out of memory.
    fn alloc_segments(&mut self, count: usize) -> Option<NonNull<u8>>;

    /// Takes back segments from [`alloc_segments`](Self::alloc_segments).
    ///
    /// # Safety
    /// `base` and `count` must be exactly those of one earlier allocation from this source,
    /// not freed since, and nothing may use the memory afterwards.
    unsafe fn free_segments(&mut self, base: NonNull<u8>, count: usize);

    /// Tells the source that the pages in `[ptr, ptr + len)` (page-aligned, inside an
    /// allocation) are not needed; their contents become undefined until written again.
    ///
    /// # Safety
    /// The range must lie inside a live allocation of this source.
    unsafe fn decommit(&mut self, _ptr: NonNull<u8>, _len: usize) {}

    /// Makes pages decommitted by [`decommit`](Self::decommit) usable again; `false` when
    /// memory cannot be committed.
    ///
    /// # Safety
    /// The range must lie inside a live allocation of this source.
    unsafe fn commit(&mut self, _ptr: NonNull<u8>, _len: usize) -> bool {
        true
    }
}

/// A contiguous region that grows and shrinks at its end, as the program break does.
///
/// # Safety
/// [`grow`](Self::grow) must return memory contiguous with the previous end of the region,
/// readable and writable, 16-byte aligned, valid until shrunk away or the source is dropped.
pub unsafe trait BrkSource {
    /// Extends the region by `bytes` (a multiple of [`PAGE_SIZE`]) and returns the old end;
    /// `None` when the region cannot grow.
    fn grow(&mut self, bytes: usize) -> Option<NonNull<u8>>;

    /// Gives back the last `bytes` (a multiple of [`PAGE_SIZE`]) of the region.
    ///
    /// # Safety
    /// Nothing may use the released bytes afterwards; `bytes` must not exceed the size grown.
    unsafe fn shrink(&mut self, bytes: usize);
}

/// Rounds `n` up to a multiple of the power of two `align`; `None` on overflow.
#[inline]
pub(crate) const fn align_up(n: usize, align: usize) -> Option<usize> {
    match n.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Largest number of segments an [`ArenaSource`] manages (256 MiB of arena).
pub const ARENA_MAX_SEGMENTS: usize = 4096;

/// A fixed region carved into segments: the early heap of a kernel, before it has an address
/// space to map into.
///
/// The region is trimmed to [`SEGMENT_SIZE`] alignment; a bitmap records which segments are
/// in use, and a run of `count` segments is found first-fit. Memory is never decommitted (the
/// region is assumed to be backed), so `decommit` is a no-op.
pub struct ArenaSource {
    base: usize,
    segments: usize,
    used: [u64; ARENA_MAX_SEGMENTS / 64],
    in_use: usize,
}

// SAFETY: the arena only holds an address range; exclusive access is through `&mut self`.
unsafe impl Send for ArenaSource {}

impl ArenaSource {
    /// An arena over `[start, start + len)`.
    ///
    /// # Safety
    /// The range must be readable and writable memory used by nothing else for as long as the
    /// arena or any block from it lives.
    pub const unsafe fn new(start: usize, len: usize) -> Self {
        let base = match align_up(start, SEGMENT_SIZE) {
            Some(b) => b,
            None => 0,
        };
        let end = start.saturating_add(len) & !(SEGMENT_SIZE - 1);
        let mut segments = if base == 0 || end <= base {
            0
        } else {
            (end - base) / SEGMENT_SIZE
        };
        if segments > ARENA_MAX_SEGMENTS {
            segments = ARENA_MAX_SEGMENTS;
        }
        ArenaSource {
            base,
            segments,
            used: [0; ARENA_MAX_SEGMENTS / 64],
            in_use: 0,
        }
    }

    /// An arena over a static buffer (a kernel's `static mut HEAP: [u8; N]`).
    pub fn from_static(region: &'static mut [u8]) -> Self {
        // SAFETY: the exclusive 'static borrow gives the arena the region for ever.
        unsafe { Self::new(region.as_mut_ptr() as usize, region.len()) }
    }

    /// Number of segments the arena holds in all.
    pub fn capacity(&self) -> usize {
        self.segments
    }

    /// Number of segments handed out now.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    fn bit(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, v: bool) {
        if v {
            self.used[i / 64] |= 1 << (i % 64);
        } else {
            self.used[i / 64] &= !(1 << (i % 64));
        }
    }
}

// SAFETY: segments are disjoint SEGMENT_SIZE-aligned pieces of the caller-provided region,
// tracked in the bitmap so none is handed out twice.
unsafe impl SegmentSource for ArenaSource {
    fn alloc_segments(&mut self, count: usize) -> Option<NonNull<u8>> {
        if count == 0 || count > self.segments {
            return None;
        }
        let mut run = 0;
        for i in 0..self.segments {
            if self.bit(i) {
                run = 0;
                continue;
            }
            run += 1;
            if run == count {
                let first = i + 1 - count;
                for j in first..=i {
                    self.set(j, true);
                }
                self.in_use += count;
                return NonNull::new((self.base + first * SEGMENT_SIZE) as *mut u8);
            }
        }
        None
    }

    unsafe fn free_segments(&mut self, base: NonNull<u8>, count: usize) {
        let first = (base.as_ptr() as usize - self.base) / SEGMENT_SIZE;
        for j in first..first + count {
            debug_assert!(self.bit(j), "arena segment freed twice");
            self.set(j, false);
        }
        self.in_use -= count;
    }
}

/// A `brk`-like region over a fixed buffer: grows upward from its start until the end.
pub struct ArenaBrk {
    start: usize,
    end: usize,
    brk: usize,
}

// SAFETY: only an address range; exclusive access is through `&mut self`.
unsafe impl Send for ArenaBrk {}

impl ArenaBrk {
    /// A break region over `[start, start + len)` (the start is rounded up to 16 bytes).
    ///
    /// # Safety
    /// The range must be readable and writable memory used by nothing else for as long as the
    /// region or any block from it lives.
    pub const unsafe fn new(start: usize, len: usize) -> Self {
        let s = match align_up(start, 16) {
            Some(s) => s,
            None => usize::MAX,
        };
        let e = start.saturating_add(len);
        let e = if e < s { s } else { e };
        ArenaBrk {
            start: s,
            end: e,
            brk: s,
        }
    }

    /// A break region over a static buffer.
    pub fn from_static(region: &'static mut [u8]) -> Self {
        // SAFETY: the exclusive 'static borrow gives the region to the break for ever.
        unsafe { Self::new(region.as_mut_ptr() as usize, region.len()) }
    }

    /// Bytes between the start and the current break.
    pub fn used(&self) -> usize {
        self.brk - self.start
    }
}

// SAFETY: grows contiguously inside the caller-provided region, never past its end.
unsafe impl BrkSource for ArenaBrk {
    fn grow(&mut self, bytes: usize) -> Option<NonNull<u8>> {
        if bytes > self.end - self.brk {
            return None;
        }
        let old = self.brk;
        self.brk += bytes;
        NonNull::new(old as *mut u8)
    }

    unsafe fn shrink(&mut self, bytes: usize) {
        self.brk -= bytes.min(self.brk - self.start);
    }
}

/// A break region carved from a segment source: a fixed run of segments taken at creation
/// (the most the region can grow to), grown and shrunk inside it, and given back when
/// dropped. This is how many chunk heaps share one arena or one address space.
pub struct SegmentBrk<S: SegmentSource> {
    source: S,
    base: usize,
    segments: usize,
    brk: usize,
}

// SAFETY: owns its run of segments; exclusive access is through `&mut self`.
unsafe impl<S: SegmentSource + Send> Send for SegmentBrk<S> {}

impl<S: SegmentSource> SegmentBrk<S> {
    /// Takes room for `max_bytes` (rounded up to segments) from `source`; `None` when the
    /// source has no such run.
    pub fn new(mut source: S, max_bytes: usize) -> Option<Self> {
        let segments = align_up(max_bytes.max(1), SEGMENT_SIZE)? / SEGMENT_SIZE;
        let base = source.alloc_segments(segments)?.as_ptr() as usize;
        Some(SegmentBrk {
            source,
            base,
            segments,
            brk: base,
        })
    }

    /// Bytes between the start and the current break.
    pub fn used(&self) -> usize {
        self.brk - self.base
    }
}

impl<S: SegmentSource> Drop for SegmentBrk<S> {
    fn drop(&mut self) {
        // SAFETY: the run came from this source and nothing uses it once the region goes.
        unsafe {
            self.source
                .free_segments(NonNull::new_unchecked(self.base as *mut u8), self.segments)
        };
    }
}

// SAFETY: grows contiguously inside its own run of segments.
unsafe impl<S: SegmentSource> BrkSource for SegmentBrk<S> {
    fn grow(&mut self, bytes: usize) -> Option<NonNull<u8>> {
        if bytes > self.base + self.segments * SEGMENT_SIZE - self.brk {
            return None;
        }
        let old = self.brk;
        self.brk += bytes;
        NonNull::new(old as *mut u8)
    }

    unsafe fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.brk - self.base);
        self.brk -= bytes;
        if bytes != 0 {
            // SAFETY: the released tail lies in our run and is unused (caller contract).
            unsafe {
                self.source
                    .decommit(NonNull::new_unchecked(self.brk as *mut u8), bytes)
            };
        }
    }
}

/// A source shared by several heaps: any source behind a spin lock.
// SAFETY: forwards to the locked source, whose contract carries over.
unsafe impl<S: SegmentSource> SegmentSource for &spin::Mutex<S> {
    fn alloc_segments(&mut self, count: usize) -> Option<NonNull<u8>> {
        self.lock().alloc_segments(count)
    }
    unsafe fn free_segments(&mut self, base: NonNull<u8>, count: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.lock().free_segments(base, count) }
    }
    unsafe fn decommit(&mut self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.lock().decommit(ptr, len) }
    }
    unsafe fn commit(&mut self, ptr: NonNull<u8>, len: usize) -> bool {
        // SAFETY: forwarded contract.
        unsafe { self.lock().commit(ptr, len) }
    }
}

#[cfg(feature = "std")]
pub use host::{HostBrk, HostSource};

#[cfg(feature = "std")]
mod host {
    use super::*;

    /// Bytes of address space a [`HostSource`] reserves at a time for single segments.
    const REGION: usize = 64 << 20;
    /// Alignment of a [`HostSource`] region: a transparent huge page.
    const HUGE_PAGE: usize = 2 << 20;
    /// Regions a [`HostSource`] keeps track of (4 GiB of single segments); beyond them each
    /// segment is its own mapping.
    const MAX_REGIONS: usize = 64;
    /// Freed segments that wait, reusable at once, before their pages are given back in one
    /// batch.
    const PURGE_BATCH: usize = 256;

    /// Segments from the host kernel.
    ///
    /// Single segments are carved from 64 MiB read-write reservations (`MAP_NORESERVE`:
    /// pages are committed by the kernel on first touch; 2 MiB-aligned with
    /// `MADV_HUGEPAGE` unless made with [`small_pages`](Self::small_pages), so touching them
    /// costs one fault per huge page); a freed one waits among up to 256 recently freed
    /// segments (handed out again first, untouched); when they are 256, all are given back
    /// lazily with `madvise(MADV_FREE)`, one call per run of adjacent segments, and go to a
    /// pool for reuse. A heap that frees and reallocates thus pays for no `mmap`, `munmap`
    /// or page fault, and a burst that frees thousands of segments for a few `madvise`
    /// calls, not one per segment (each splitting a huge page). Runs of
    /// several segments (large blocks) are mappings of their own, unmapped on free.
    /// Dropping the source unmaps everything.
    #[derive(Debug)]
    pub struct HostSource {
        /// Regions ask for transparent huge pages.
        huge: bool,
        pool: usize,
        pooled: usize,
        /// Freed segments not given back yet, in the order freed.
        recent: [usize; PURGE_BATCH],
        nrecent: usize,
        next: usize,
        end: usize,
        regions: [usize; MAX_REGIONS],
        nregions: usize,
    }

    // SAFETY: only addresses of mappings it owns; exclusive access is through `&mut self`.
    unsafe impl Send for HostSource {}

    impl Default for HostSource {
        fn default() -> Self {
            Self::new()
        }
    }

    impl HostSource {
        /// A host source with nothing reserved yet; its regions ask for transparent huge
        /// pages (fewer faults and TLB misses; the kernel then commits 2 MiB at a time).
        pub const fn new() -> Self {
            Self::with_huge_pages(true)
        }

        /// A host source whose regions use 4 KiB pages: exactly the pages a heap touches are
        /// committed (what its `committed_bytes` counts).
        pub const fn small_pages() -> Self {
            Self::with_huge_pages(false)
        }

        const fn with_huge_pages(huge: bool) -> Self {
            HostSource {
                huge,
                pool: 0,
                pooled: 0,
                recent: [0; PURGE_BATCH],
                nrecent: 0,
                next: 0,
                end: 0,
                regions: [0; MAX_REGIONS],
                nregions: 0,
            }
        }

        /// Freed segments kept for reuse (given back or not).
        pub fn pooled(&self) -> usize {
            self.pooled + self.nrecent
        }

        /// Freed segments whose pages are not given back yet.
        pub fn unpurged(&self) -> usize {
            self.nrecent
        }

        /// Gives back the pages of the freed segments not given back yet, one
        /// `madvise(MADV_FREE)` per run of adjacent segments, and moves them to the pool.
        pub fn purge(&mut self) {
            let n = self.nrecent;
            self.recent[..n].sort_unstable();
            let mut i = 0;
            while i < n {
                let first = self.recent[i];
                let mut j = i + 1;
                while j < n && self.recent[j] == self.recent[j - 1] + SEGMENT_SIZE {
                    j += 1;
                }
                // SAFETY: freed segments of our regions (regions are separate mappings, so a
                // run crossing from one into an adjacent one is still all ours); nothing
                // uses them.
                unsafe {
                    libc::madvise(
                        first as *mut libc::c_void,
                        (j - i) * SEGMENT_SIZE,
                        libc::MADV_FREE,
                    )
                };
                i = j;
            }
            for k in 0..n {
                let a = self.recent[k];
                // SAFETY: the segment is pooled and ours; writing the link after MADV_FREE
                // keeps its first page (and the link) from being taken.
                unsafe { *(a as *mut usize) = self.pool };
                self.pool = a;
            }
            self.pooled += n;
            self.nrecent = 0;
        }

        /// Bytes of the single-segment regions resident in memory (`mincore`), pooled
        /// segments included: what the kernel has really committed for them.
        pub fn resident(&self) -> usize {
            let mut total = 0;
            let mut v = [0u8; REGION / PAGE_SIZE];
            for &r in &self.regions[..self.nregions] {
                // SAFETY: `r` is a region of ours, `v` has one byte per page of it.
                if unsafe { libc::mincore(r as *mut libc::c_void, REGION, v.as_mut_ptr()) } == 0 {
                    total += v.iter().filter(|b| **b & 1 != 0).count() * PAGE_SIZE;
                }
            }
            total
        }

        fn in_region(&self, a: usize) -> bool {
            self.regions[..self.nregions]
                .iter()
                .any(|&r| a >= r && a < r + REGION)
        }

        fn aligned_map(len: usize) -> Option<usize> {
            Self::map_aligned_to(len, SEGMENT_SIZE)
        }

        /// A read-write mapping of `len` bytes aligned to `align` (a power of two).
        fn map_aligned_to(len: usize, align: usize) -> Option<usize> {
            let total = len.checked_add(align)?;
            let raw = map(
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_NORESERVE,
            )?;
            let base = (raw + align - 1) & !(align - 1);
            unmap(raw, base - raw);
            unmap(base + len, raw + total - (base + len));
            Some(base)
        }
    }

    impl Drop for HostSource {
        fn drop(&mut self) {
            for &r in &self.regions[..self.nregions] {
                unmap(r, REGION);
            }
        }
    }

    fn map(len: usize, prot: libc::c_int, extra: libc::c_int) -> Option<usize> {
        // SAFETY: an anonymous private mapping at an address the kernel chooses touches no
        // existing memory.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            None
        } else {
            Some(p as usize)
        }
    }

    fn unmap(addr: usize, len: usize) {
        if len != 0 {
            // SAFETY: callers pass ranges they mapped and no longer use.
            unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        }
    }

    // SAFETY: segments are disjoint SEGMENT_SIZE-aligned pieces of our own mappings; a pooled
    // segment is handed out again only after it was freed.
    unsafe impl SegmentSource for HostSource {
        fn alloc_segments(&mut self, count: usize) -> Option<NonNull<u8>> {
            if count == 1 {
                if self.nrecent != 0 {
                    self.nrecent -= 1;
                    return NonNull::new(self.recent[self.nrecent] as *mut u8);
                }
                if self.pool != 0 {
                    let s = self.pool;
                    // SAFETY: a pooled segment holds the link to the next in its first word.
                    self.pool = unsafe { *(s as *const usize) };
                    self.pooled -= 1;
                    return NonNull::new(s as *mut u8);
                }
                if self.next == self.end && self.nregions < MAX_REGIONS {
                    // 2 MiB-aligned and marked for transparent huge pages: a heap touching
                    // its segments takes one fault per 2 MiB instead of one per page.
                    let r = Self::map_aligned_to(REGION, HUGE_PAGE)?;
                    if self.huge {
                        // SAFETY: advice on our own fresh mapping.
                        unsafe {
                            libc::madvise(r as *mut libc::c_void, REGION, libc::MADV_HUGEPAGE)
                        };
                    }
                    self.regions[self.nregions] = r;
                    self.nregions += 1;
                    self.next = r;
                    self.end = r + REGION;
                }
                if self.next != self.end {
                    let s = self.next;
                    self.next += SEGMENT_SIZE;
                    return NonNull::new(s as *mut u8);
                }
            }
            let len = count.checked_mul(SEGMENT_SIZE)?;
            NonNull::new(Self::aligned_map(len)? as *mut u8)
        }

        unsafe fn free_segments(&mut self, base: NonNull<u8>, count: usize) {
            let a = base.as_ptr() as usize;
            if count == 1 && self.in_region(a) {
                if self.nrecent == PURGE_BATCH {
                    self.purge();
                }
                self.recent[self.nrecent] = a;
                self.nrecent += 1;
            } else {
                unmap(a, count * SEGMENT_SIZE);
            }
        }

        unsafe fn decommit(&mut self, ptr: NonNull<u8>, len: usize) {
            // SAFETY: the range lies inside a mapping of ours (caller contract).
            unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) };
        }
    }

    /// A `PROT_NONE` reservation of `len` bytes, 2 MiB-aligned and marked for transparent
    /// huge pages (the parts later made read-write get them).
    fn reserve_huge(len: usize) -> Option<usize> {
        let total = len.checked_add(HUGE_PAGE)?;
        let raw = map(total, libc::PROT_NONE, libc::MAP_NORESERVE)?;
        let base = (raw + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        unmap(raw, base - raw);
        unmap(base + len, raw + total - (base + len));
        // SAFETY: advice on our own fresh reservation.
        unsafe { libc::madvise(base as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        Some(base)
    }

    /// A `brk`-like region on the host: a `PROT_NONE` reservation whose pages are committed
    /// (made read-write) as the break grows and decommitted when it shrinks.
    pub struct HostBrk {
        base: usize,
        reserved: usize,
        brk: usize,
        /// End of the read-write part: the break rounded up to 2 MiB (huge pages need
        /// whole 2 MiB ranges inside the mapping).
        rw_end: usize,
    }

    // SAFETY: owns its reservation; exclusive access is through `&mut self`.
    unsafe impl Send for HostBrk {}

    impl HostBrk {
        /// Reserves `reserve` bytes of address space (rounded up to pages); `None` when the
        /// host refuses.
        pub fn new(reserve: usize) -> Option<Self> {
            let reserved = align_up(reserve.max(PAGE_SIZE), PAGE_SIZE)?;
            let base = reserve_huge(reserved)?;
            Some(HostBrk {
                base,
                reserved,
                brk: base,
                rw_end: base,
            })
        }

        /// A region that reserves `reserve` bytes (rounded up to pages) on its first growth:
        /// `const`, for a `static` global allocator.
        pub const fn lazy(reserve: usize) -> Self {
            HostBrk {
                base: 0,
                reserved: reserve,
                brk: 0,
                rw_end: 0,
            }
        }

        /// Bytes between the start and the current break.
        pub fn used(&self) -> usize {
            self.brk - self.base
        }
    }

    impl Drop for HostBrk {
        fn drop(&mut self) {
            if self.base != 0 {
                unmap(self.base, self.reserved);
            }
        }
    }

    // SAFETY: grows contiguously inside its own reservation, committing with mprotect.
    unsafe impl BrkSource for HostBrk {
        fn grow(&mut self, bytes: usize) -> Option<NonNull<u8>> {
            if self.base == 0 {
                self.reserved = align_up(self.reserved.max(PAGE_SIZE), PAGE_SIZE)?;
                self.base = reserve_huge(self.reserved)?;
                self.brk = self.base;
                self.rw_end = self.base;
            }
            let end = self.base + self.reserved;
            if bytes > end - self.brk {
                return None;
            }
            let new = self.brk + bytes;
            if new > self.rw_end {
                let rw = align_up(new, HUGE_PAGE).unwrap_or(end).min(end);
                // SAFETY: the range is inside our reservation.
                let r = unsafe {
                    libc::mprotect(
                        self.rw_end as *mut libc::c_void,
                        rw - self.rw_end,
                        libc::PROT_READ | libc::PROT_WRITE,
                    )
                };
                if r != 0 {
                    return None;
                }
                self.rw_end = rw;
            }
            let old = self.brk;
            self.brk = new;
            NonNull::new(old as *mut u8)
        }

        unsafe fn shrink(&mut self, bytes: usize) {
            let bytes = bytes.min(self.brk - self.base);
            let new = self.brk - bytes;
            if bytes != 0 {
                let rw = align_up(new, HUGE_PAGE)
                    .unwrap_or(self.rw_end)
                    .min(self.rw_end);
                // SAFETY: the range is inside our reservation and unused (caller contract).
                unsafe {
                    libc::madvise(new as *mut libc::c_void, bytes, libc::MADV_DONTNEED);
                    if rw < self.rw_end {
                        libc::mprotect(rw as *mut libc::c_void, self.rw_end - rw, libc::PROT_NONE);
                    }
                }
                self.rw_end = rw;
            }
            self.brk = new;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec;

    #[test]
    fn arena_carves_aligned_runs_and_reuses_them() {
        let buf = vec![0u8; 8 * SEGMENT_SIZE].leak();
        let mut a = ArenaSource::from_static(buf);
        assert!(a.capacity() >= 7);
        let s1 = a.alloc_segments(1).unwrap();
        let s3 = a.alloc_segments(3).unwrap();
        assert_eq!(s1.as_ptr() as usize % SEGMENT_SIZE, 0);
        assert_eq!(s3.as_ptr() as usize, s1.as_ptr() as usize + SEGMENT_SIZE);
        assert!(a.alloc_segments(a.capacity()).is_none());
        unsafe { a.free_segments(s1, 1) };
        let again = a.alloc_segments(1).unwrap();
        assert_eq!(again, s1);
        assert_eq!(a.in_use(), 4);
    }

    #[test]
    fn arena_brk_grows_contiguously_and_stops_at_the_end() {
        let buf = vec![0u8; 3 * PAGE_SIZE].leak();
        let mut b = ArenaBrk::from_static(buf);
        let p = b.grow(PAGE_SIZE).unwrap();
        let q = b.grow(PAGE_SIZE).unwrap();
        assert_eq!(q.as_ptr() as usize, p.as_ptr() as usize + PAGE_SIZE);
        assert!(b.grow(2 * PAGE_SIZE).is_none());
        unsafe { b.shrink(PAGE_SIZE) };
        assert_eq!(b.used(), PAGE_SIZE);
    }

    #[cfg(feature = "std")]
    #[test]
    fn host_segments_are_aligned_and_writable() {
        let mut h = HostSource::new();
        let one = h.alloc_segments(1).unwrap();
        unsafe { one.as_ptr().write_bytes(7, SEGMENT_SIZE) };
        unsafe { h.free_segments(one, 1) };
        assert_eq!(h.pooled(), 1);
        assert_eq!(h.alloc_segments(1).unwrap(), one);
        let s = h.alloc_segments(2).unwrap();
        assert_eq!(s.as_ptr() as usize % SEGMENT_SIZE, 0);
        unsafe {
            s.as_ptr().write_bytes(0xab, 2 * SEGMENT_SIZE);
            h.decommit(s, SEGMENT_SIZE);
            h.free_segments(s, 2);
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn host_pool_purges_in_batches_and_reuses_every_segment() {
        let mut h = HostSource::small_pages();
        let segs: vec::Vec<_> = (0..300).map(|_| h.alloc_segments(1).unwrap()).collect();
        for s in &segs {
            unsafe { s.as_ptr().write_bytes(3, SEGMENT_SIZE) };
        }
        for s in &segs[..256] {
            unsafe { h.free_segments(*s, 1) };
        }
        assert_eq!((h.pooled(), h.unpurged()), (256, 256));
        unsafe { h.free_segments(segs[256], 1) }; // the 257th: the first 256 given back
        assert_eq!((h.pooled(), h.unpurged()), (257, 1));
        for s in &segs[257..] {
            unsafe { h.free_segments(*s, 1) };
        }
        assert_eq!((h.pooled(), h.unpurged()), (300, 44));
        h.purge();
        assert_eq!(h.unpurged(), 0);
        // every pooled segment comes back once, and is writable
        let mut again: vec::Vec<_> = (0..300).map(|_| h.alloc_segments(1).unwrap()).collect();
        assert_eq!(h.pooled(), 0);
        for s in &again {
            unsafe { s.as_ptr().write_bytes(5, SEGMENT_SIZE) };
        }
        let mut orig = segs.clone();
        orig.sort();
        again.sort();
        assert_eq!(again, orig);
        // a segment freed and taken again before its batch is given back: first out
        unsafe { h.free_segments(again[7], 1) };
        assert_eq!(h.unpurged(), 1);
        assert_eq!(h.alloc_segments(1).unwrap(), again[7]);
        assert_eq!((h.pooled(), h.unpurged()), (0, 0));
    }

    #[cfg(feature = "std")]
    #[test]
    fn host_brk_commits_on_growth() {
        let mut b = HostBrk::new(1 << 20).unwrap();
        let p = b.grow(2 * PAGE_SIZE).unwrap();
        unsafe { p.as_ptr().write_bytes(1, 2 * PAGE_SIZE) };
        assert!(b.grow(1 << 21).is_none());
        unsafe { b.shrink(PAGE_SIZE) };
        assert_eq!(b.used(), PAGE_SIZE);
    }
}
