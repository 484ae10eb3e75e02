//! The segment registry: which 64 KiB-aligned addresses hold a size-class heap's segment
//! header, so a free looks the pointer up before it touches memory at its segment base.
//!
//! A two-level radix map over 48-bit (canonical) addresses, one bit per segment: the top
//! level has one entry per 4 GiB window (bits 47..32 of the address), a leaf one bit per
//! 64 KiB segment of its window (8 KiB). Reads are lock-free (two dependent loads, both in
//! cache for a heap's working set); leaves are installed under a spin lock and never freed,
//! so a reader never follows a dangling leaf. Leaves come from a small static pool (a
//! kernel's heap needs no allocator to start) and, with `std`, from `mmap` once it is used
//! up; without `std`, more than [`POOL_LEAVES`] windows of 4 GiB cannot be registered and
//! the heap treats the segment as out of memory.
//!
//! One registry serves every heap of the process: a set bit says "some vmspace heap's
//! header lives here"; the header's cookie then says which heap.

use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

/// log2 of the bytes one leaf covers.
const WINDOW_SHIFT: u32 = 32;
/// Top-level entries: the 4 GiB windows of a 48-bit address space.
const TOP_ENTRIES: usize = 1 << (48 - WINDOW_SHIFT);
/// Words of one leaf (one bit per segment of a window).
const LEAF_WORDS: usize = 1 << (WINDOW_SHIFT - crate::source::SEGMENT_SHIFT - 6);
/// Leaves in the static pool.
pub const POOL_LEAVES: usize = 8;

/// One window's segment bits.
struct Leaf([AtomicU64; LEAF_WORDS]);

#[allow(clippy::declare_interior_mutable_const)]
const NO_LEAF: AtomicPtr<Leaf> = AtomicPtr::new(null_mut());
static TOP: [AtomicPtr<Leaf>; TOP_ENTRIES] = [NO_LEAF; TOP_ENTRIES];

#[allow(clippy::declare_interior_mutable_const)]
const ZERO_LEAF: Leaf = Leaf([const { AtomicU64::new(0) }; LEAF_WORDS]);
static POOL: [Leaf; POOL_LEAVES] = [ZERO_LEAF; POOL_LEAVES];
static POOL_USED: AtomicUsize = AtomicUsize::new(0);
static INSTALL: spin::Mutex<()> = spin::Mutex::new(());

/// Top-level index, leaf word and bit of segment address `a`; `None` for a non-canonical
/// address (bits 63..47 neither all clear nor all set) or an address above 48 bits.
#[inline(always)]
fn split(a: usize) -> Option<(usize, usize, u64)> {
    let a = a as u64;
    // Canonical: bits 63..47 all equal, so bits 47..32 identify the window uniquely.
    if ((a as i64) >> 47).wrapping_add(1) as u64 > 1 {
        return None;
    }
    let top = ((a >> WINDOW_SHIFT) & (TOP_ENTRIES as u64 - 1)) as usize;
    let s = (a >> crate::source::SEGMENT_SHIFT) & ((1 << (WINDOW_SHIFT - 16)) - 1);
    Some((top, (s >> 6) as usize, 1u64 << (s & 63)))
}

/// Whether a heap header is registered at the segment containing `p`.
#[inline(always)]
pub(crate) fn contains(p: *const u8) -> bool {
    let Some((top, w, bit)) = split(p as usize) else {
        return false;
    };
    // SAFETY: `top < TOP_ENTRIES` by the mask.
    let leaf = unsafe { TOP.get_unchecked(top) }.load(Acquire);
    if leaf.is_null() {
        return false;
    }
    // SAFETY: installed leaves are never freed; `w < LEAF_WORDS` by the mask.
    unsafe { (*leaf).0.get_unchecked(w).load(Relaxed) & bit != 0 }
}

/// The bit words of the window of `p` (4 GiB), null when none is installed: a heap caches
/// the window most of its segments lie in and tests those with [`contains_in`], one load
/// instead of three.
pub(crate) fn window_words(p: *const u8) -> *const AtomicU64 {
    match split(p as usize) {
        // SAFETY: `top < TOP_ENTRIES`; installed leaves are never freed.
        Some((top, _, _)) => {
            let leaf = TOP[top].load(Acquire);
            if leaf.is_null() {
                core::ptr::null()
            } else {
                // SAFETY: a live leaf.
                unsafe { (*leaf).0.as_ptr() }
            }
        }
        None => core::ptr::null(),
    }
}

/// Whether a heap header is registered at the segment containing `p`, given the bit words
/// of its window ([`window_words`] of an address with the same bits 63..32).
///
/// # Safety
/// `words` must come from [`window_words`] for `p`'s window.
#[inline(always)]
pub(crate) unsafe fn contains_in(words: *const AtomicU64, p: *const u8) -> bool {
    let s = (p as usize >> crate::source::SEGMENT_SHIFT) & ((1 << (WINDOW_SHIFT - 16)) - 1);
    // SAFETY: `s >> 6 < LEAF_WORDS` by the mask; leaves are never freed.
    unsafe { (*words.add(s >> 6)).load(Relaxed) & 1u64 << (s & 63) != 0 }
}

/// Records that a heap header lives at segment `seg` (64 KiB-aligned); `false` when no leaf
/// can be had for its window (the caller treats the segment as unavailable).
pub(crate) fn register(seg: *const u8) -> bool {
    let Some((top, w, bit)) = split(seg as usize) else {
        return false;
    };
    let mut leaf = TOP[top].load(Acquire);
    if leaf.is_null() {
        let _g = INSTALL.lock();
        leaf = TOP[top].load(Acquire);
        if leaf.is_null() {
            match new_leaf() {
                Some(l) => {
                    TOP[top].store(l, Release);
                    leaf = l;
                }
                None => return false,
            }
        }
    }
    // SAFETY: installed leaves are never freed.
    unsafe { (*leaf).0[w].fetch_or(bit, Release) };
    true
}

/// Forgets segment `seg` (before it goes back to its source).
pub(crate) fn unregister(seg: *const u8) {
    let Some((top, w, bit)) = split(seg as usize) else {
        return;
    };
    let leaf = TOP[top].load(Acquire);
    if !leaf.is_null() {
        // SAFETY: installed leaves are never freed.
        unsafe { (*leaf).0[w].fetch_and(!bit, Release) };
    }
}

/// A zeroed leaf from the pool, or (with `std`) a fresh mapping.
fn new_leaf() -> Option<*mut Leaf> {
    let i = POOL_USED.load(Relaxed);
    if i < POOL_LEAVES {
        POOL_USED.store(i + 1, Relaxed);
        return Some(&POOL[i] as *const Leaf as *mut Leaf);
    }
    #[cfg(feature = "std")]
    {
        // SAFETY: an anonymous private mapping at an address the kernel chooses; zero-filled,
        // which is an empty leaf. Never unmapped.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                core::mem::size_of::<Leaf>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return Some(p as *mut Leaf);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SEGMENT_SIZE;

    #[test]
    fn registered_segments_are_found_and_forgotten() {
        // An address range nothing else in the tests registers (the 4 GiB window at 2^46).
        let base = (1usize << 46) + 5 * SEGMENT_SIZE;
        let p = base as *const u8;
        assert!(!contains(p));
        assert!(register(p));
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

    #[test]
    fn kernel_half_addresses_have_their_own_windows() {
        let k = 0xffff_8000_0000_0000usize + 7 * SEGMENT_SIZE;
        let u = 0x0000_8000_0000_0000usize - (1 << 32) + 7 * SEGMENT_SIZE;
        assert!(register(k as *const u8));
        assert!(contains(k as *const u8));
        assert!(!contains(u as *const u8));
        unregister(k as *const u8);
        assert!(!contains(k as *const u8));
    }
}
