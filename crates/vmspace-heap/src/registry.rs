//! The segment registry: which 64 KiB-aligned addresses hold a size-class heap's segment,
//! and where that segment's record is, so a free finds the record from the pointer without
//! touching memory at its segment base.
//!
//! A two-level radix map over 48-bit (canonical) addresses, one record pointer per segment
//! (null: no heap's segment): the top level has one entry per 4 GiB window (bits 47..32 of
//! the address), a leaf one pointer per 64 KiB segment of its window (512 KiB, committed by
//! the kernel a page — 512 segments, 32 MiB of heap — at a time). Reads are lock-free (two
//! dependent loads, one when the caller caches the window's leaf); leaves are installed under
//! a spin lock and never freed, so a reader never follows a dangling leaf. With `std` leaves
//! come from `mmap` and the top level is a static array (512 KiB of `.bss`, never touched
//! but for the windows in use); without it (a kernel's heap needs no allocator to start)
//! there is one static leaf and the top level is the one window it serves, so the registry
//! costs 512 KiB of `.bss` in all: segments outside that one window of 4 GiB cannot be
//! registered, and the heap treats such a segment as out of memory.
//!
//! One registry serves every heap of the process: a non-null entry says "some vmspace heap's
//! segment is here"; the record's cookie then says which heap.

use crate::segment::Segment;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, Ordering::*};

/// log2 of the bytes one leaf covers.
const WINDOW_SHIFT: u32 = 32;
/// Top-level entries: the 4 GiB windows of a 48-bit address space.
const TOP_ENTRIES: usize = 1 << (48 - WINDOW_SHIFT);
/// Entries of one leaf (one per segment of a window).
const LEAF_ENTRIES: usize = 1 << (WINDOW_SHIFT - crate::source::SEGMENT_SHIFT);
/// Leaves in the static pool (without `std`): 512 KiB of `.bss`, segments in one window
/// of 4 GiB.
#[cfg(not(feature = "std"))]
const POOL_LEAVES: usize = 1;

/// One window's record pointers.
#[repr(C, align(4096))]
struct Leaf([AtomicPtr<Segment>; LEAF_ENTRIES]);

/// A leaf's entries, as cached by a heap for its main window.
pub(crate) type Entries = *const AtomicPtr<Segment>;

/// An empty top-level entry.
#[cfg(feature = "std")]
#[allow(clippy::declare_interior_mutable_const)]
const NO_LEAF: AtomicPtr<Leaf> = AtomicPtr::new(null_mut());
/// The top level (with `std`): one leaf pointer per 4 GiB window (null: no segment
/// registered there yet).
#[cfg(feature = "std")]
static TOP: [AtomicPtr<Leaf>; TOP_ENTRIES] = [NO_LEAF; TOP_ENTRIES];
/// The top level without `std`: per pool leaf, 1 + the top-level index of the window it
/// serves (0: not handed out yet). Written once, under [`INSTALL`], with release.
#[cfg(not(feature = "std"))]
static WINDOW_OF: [core::sync::atomic::AtomicUsize; POOL_LEAVES] =
    [const { core::sync::atomic::AtomicUsize::new(0) }; POOL_LEAVES];

/// The leaf of window `top` (below [`TOP_ENTRIES`]), null when none is installed.
#[inline(always)]
fn leaf_of(top: usize) -> *mut Leaf {
    #[cfg(feature = "std")]
    {
        // SAFETY: `top < TOP_ENTRIES` (caller, from `top_of`'s mask).
        unsafe { TOP.get_unchecked(top) }.load(Acquire)
    }
    #[cfg(not(feature = "std"))]
    {
        for (i, w) in WINDOW_OF.iter().enumerate() {
            if w.load(Acquire) == top + 1 {
                return &POOL[i] as *const Leaf as *mut Leaf;
            }
        }
        null_mut()
    }
}

/// An empty leaf.
#[cfg(not(feature = "std"))]
#[allow(clippy::declare_interior_mutable_const)]
const ZERO_LEAF: Leaf = Leaf([const { AtomicPtr::new(null_mut()) }; LEAF_ENTRIES]);
/// The static pool of leaves (without `std`).
#[cfg(not(feature = "std"))]
static POOL: [Leaf; POOL_LEAVES] = [ZERO_LEAF; POOL_LEAVES];
/// Leaves of [`POOL`] handed out (changed under [`INSTALL`]).
#[cfg(not(feature = "std"))]
static POOL_USED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
/// Serialises the installation of leaves.
static INSTALL: spin::Mutex<()> = spin::Mutex::new(());

/// Segment index within its window.
#[inline(always)]
fn index(a: usize) -> usize {
    (a >> crate::source::SEGMENT_SHIFT) & (LEAF_ENTRIES - 1)
}

/// Top-level index of address `a`; `None` for a non-canonical address (bits 63..47 neither
/// all clear nor all set).
#[inline(always)]
fn top_of(a: usize) -> Option<usize> {
    let a = a as u64;
    // Canonical: bits 63..47 all equal, so bits 47..32 identify the window uniquely.
    if ((a as i64) >> 47).wrapping_add(1) as u64 > 1 {
        return None;
    }
    Some(((a >> WINDOW_SHIFT) & (TOP_ENTRIES as u64 - 1)) as usize)
}

/// The record of the heap segment containing `p`, null when none is registered there.
#[inline(always)]
pub(crate) fn lookup(p: *const u8) -> *mut Segment {
    let Some(top) = top_of(p as usize) else {
        return null_mut();
    };
    let leaf = leaf_of(top);
    if leaf.is_null() {
        return null_mut();
    }
    // SAFETY: installed leaves are never freed; the index is below LEAF_ENTRIES by the mask.
    unsafe { (*leaf).0.get_unchecked(index(p as usize)).load(Acquire) }
}

/// The entries of the window of `p` (4 GiB), null when no leaf is installed: a heap caches
/// the window most of its segments lie in and looks those up with [`lookup_in`], one load
/// instead of two.
pub(crate) fn window_entries(p: *const u8) -> Entries {
    match top_of(p as usize) {
        Some(top) => {
            let leaf = leaf_of(top);
            if leaf.is_null() {
                core::ptr::null()
            } else {
                // SAFETY: installed leaves are never freed.
                unsafe { (*leaf).0.as_ptr() }
            }
        }
        None => core::ptr::null(),
    }
}

/// The record of the heap segment containing `p` (null when none), given the entries of its
/// window ([`window_entries`] of an address with the same bits 63..32).
///
/// # Safety
/// `entries` must come from [`window_entries`] for `p`'s window.
#[inline(always)]
pub(crate) unsafe fn lookup_in(entries: Entries, p: *const u8) -> *mut Segment {
    // SAFETY: `entries` are a leaf's (caller), and installed leaves are never freed; the
    // index is below LEAF_ENTRIES by the mask.
    unsafe { (*entries.add(index(p as usize))).load(Acquire) }
}

/// Records that the segment at `seg` (64 KiB-aligned) is a heap's, described by `rec`;
/// `false` when no leaf can be had for its window (the caller treats the segment as
/// unavailable). The record must be written before (the entry is published with release).
pub(crate) fn register(seg: *const u8, rec: *mut Segment) -> bool {
    let Some(top) = top_of(seg as usize) else {
        return false;
    };
    let mut leaf = leaf_of(top);
    if leaf.is_null() {
        let _g = INSTALL.lock();
        leaf = leaf_of(top);
        if leaf.is_null() {
            match install(top) {
                Some(l) => leaf = l,
                None => return false,
            }
        }
    }
    // SAFETY: installed leaves are never freed.
    unsafe { (*leaf).0[index(seg as usize)].store(rec, Release) };
    true
}

/// Forgets the segment at `seg` (before it goes back to its source).
pub(crate) fn unregister(seg: *const u8) {
    let Some(top) = top_of(seg as usize) else {
        return;
    };
    let leaf = leaf_of(top);
    if !leaf.is_null() {
        // SAFETY: installed leaves are never freed.
        unsafe { (*leaf).0[index(seg as usize)].store(null_mut(), Release) };
    }
}

/// Installs a zeroed leaf for window `top` (under [`INSTALL`]): from the pool, or with `std`
/// a fresh mapping. `None` when there is none to be had.
fn install(top: usize) -> Option<*mut Leaf> {
    #[cfg(not(feature = "std"))]
    {
        let i = POOL_USED.load(Relaxed);
        if i < POOL_LEAVES {
            POOL_USED.store(i + 1, Relaxed);
            // The leaf is zero (never handed out before): publish it for the window.
            WINDOW_OF[i].store(top + 1, Release);
            return Some(&POOL[i] as *const Leaf as *mut Leaf);
        }
    }
    #[cfg(feature = "std")]
    {
        // SAFETY: an anonymous private mapping at an address the kernel chooses; zero-filled,
        // which is an empty leaf (pages committed as entries are written). Never unmapped.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                core::mem::size_of::<Leaf>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            TOP[top].store(p as *mut Leaf, Release);
            return Some(p as *mut Leaf);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SEGMENT_SIZE;

    fn contains(p: *const u8) -> bool {
        !lookup(p).is_null()
    }

    /// The start of 7 segments no heap uses, for fake records: with `std` in the 4 GiB
    /// window at 2^46 (nothing else in the tests registers there); without it in the test
    /// pool, the one window the registry serves there.
    fn spare() -> usize {
        #[cfg(feature = "std")]
        return 1usize << 46;
        #[cfg(not(feature = "std"))]
        return crate::testing::buffer(7 * SEGMENT_SIZE).as_ptr() as usize;
    }

    #[test]
    fn registered_segments_are_found_and_forgotten() {
        let base = spare() + 5 * SEGMENT_SIZE;
        let p = base as *const u8;
        let rec = 0x1040 as *mut Segment;
        assert!(!contains(p));
        assert!(register(p, rec));
        assert_eq!(lookup(p), rec);
        assert!(contains(p));
        assert!(contains((base + SEGMENT_SIZE - 1) as *const u8));
        assert!(!contains((base + SEGMENT_SIZE) as *const u8));
        assert!(!contains((base - 1) as *const u8));
        // Same segment bits in another window, and non-canonical aliases, are not it.
        assert!(!contains((base + (1 << 32)) as *const u8));
        assert!(!contains((base | 1 << 60) as *const u8));
        assert!(!contains(usize::MAX as *const u8));
        unregister(p);
        assert!(!contains(p));
    }

    #[cfg(feature = "std")]
    #[test]
    fn kernel_half_addresses_have_their_own_windows() {
        let k = 0xffff_8000_0000_0000usize + 7 * SEGMENT_SIZE;
        let u = 0x0000_8000_0000_0000usize - (1 << 32) + 7 * SEGMENT_SIZE;
        assert!(register(k as *const u8, 0x80 as *mut Segment));
        assert!(contains(k as *const u8));
        assert!(!contains(u as *const u8));
        unregister(k as *const u8);
        assert!(!contains(k as *const u8));
    }

    /// Without `std` the registry serves the one window of its static leaf: once a segment
    /// is registered there (here the test pool's, which every heap of the tests uses),
    /// segments of any other window — the next one up or down, the top of the user half,
    /// the kernel half — are refused and not found, and the window's entries are intact.
    #[cfg(not(feature = "std"))]
    #[test]
    fn without_std_only_one_window_is_served() {
        let base = spare();
        let rec = 0x2080 as *mut Segment;
        assert!(register(base as *const u8, rec));
        assert_eq!(base >> WINDOW_SHIFT, crate::testing::pool_window());
        assert!(!window_entries(base as *const u8).is_null());
        let others = [
            base.wrapping_add(1 << 32),
            base.wrapping_sub(1 << 32),
            0x0000_8000_0000_0000usize - (1 << 32) + 7 * SEGMENT_SIZE,
            0xffff_8000_0000_0000usize + 7 * SEGMENT_SIZE,
            0xffff_ffff_ffff_0000usize,
        ];
        for o in others {
            let o = o as *const u8;
            assert!(!register(o, 0x1c0 as *mut Segment), "{o:p} registered");
            assert!(!contains(o));
            assert!(window_entries(o).is_null());
            unregister(o); // harmless: nothing there
        }
        assert_eq!(lookup(base as *const u8), rec);
        assert_eq!(POOL_USED.load(Relaxed), POOL_LEAVES);
        unregister(base as *const u8);
        assert!(!contains(base as *const u8));
    }
}
