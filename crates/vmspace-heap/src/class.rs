//! Size classes of the size-class heap: 8-byte steps up to 64 bytes, then eight classes per
//! doubling (at most 12.5 % between neighbours) up to [`SMALL_MAX`].
//!
//! A request's class comes from a lookup table indexed by `(size + 7) / 8` — no division and
//! no loop on the hot path.

use crate::source::PAGE_SIZE;

/// Largest request served from size classes; larger ones go straight to the segment source.
pub const SMALL_MAX: usize = 8192;
/// Number of size classes.
pub const CLASSES: usize = 64;

/// Block size of each class, ascending.
pub const CLASS_SIZE: [u32; CLASSES] = class_sizes();

const fn class_sizes() -> [u32; CLASSES] {
    let mut t = [0u32; CLASSES];
    let mut i = 0;
    while i < 8 {
        t[i] = (i as u32 + 1) * 8;
        i += 1;
    }
    let mut base = 64u32;
    while i < CLASSES {
        let mut j = 1;
        while j <= 8 {
            t[i] = base + j * (base / 8);
            i += 1;
            j += 1;
        }
        base *= 2;
    }
    t
}

/// `ceil(2^64 / CLASS_SIZE[c])` per class: the multiply-high constant that turns a block
/// offset into a block index (and tests that it is a block start) without dividing.
pub(crate) const DIV_C: [u64; CLASSES] = div_constants();

const fn div_constants() -> [u64; CLASSES] {
    let mut t = [0u64; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        t[c] = u64::MAX / CLASS_SIZE[c] as u64 + 1;
        c += 1;
    }
    t
}

const LOOKUP_LEN: usize = SMALL_MAX / 8 + 1;
// A `const`, not a `static`: each crate that inlines the hot path gets its own copy,
// addressed directly instead of through the GOT.
const LOOKUP: [u8; LOOKUP_LEN] = lookup_table();

const fn lookup_table() -> [u8; LOOKUP_LEN] {
    let mut t = [0u8; LOOKUP_LEN];
    let mut idx = 0;
    let mut c = 0;
    while idx < LOOKUP_LEN {
        let size = (idx * 8) as u32;
        while CLASS_SIZE[c] < size {
            c += 1;
        }
        t[idx] = c as u8;
        idx += 1;
    }
    t
}

/// The class for a request of `size` bytes (alignment at most 8), or `None` above
/// [`SMALL_MAX`].
#[inline(always)]
pub fn class_of(size: usize) -> Option<usize> {
    if size <= SMALL_MAX {
        // `size + 7` cannot overflow here.
        Some(LOOKUP[(size + 7) >> 3] as usize)
    } else {
        None
    }
}

/// The class for a request of `size <= SMALL_MAX` bytes (alignment at most 8).
#[inline(always)]
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) fn class_of_small(size: usize) -> usize {
    debug_assert!(size <= SMALL_MAX);
    // (size + 7) >> 3 <= SMALL_MAX / 8: inside the table.
    LOOKUP[(size + 7) >> 3] as usize
}

/// The class for `size` bytes at alignment `align` (a power of two up to [`PAGE_SIZE`]):
/// the smallest class at least `size` whose block size is a multiple of `align` (blocks start
/// at their segment's 64 KiB-aligned base, so such blocks are `align`-aligned).
pub fn class_of_aligned(size: usize, align: usize) -> Option<usize> {
    if align <= 8 {
        return class_of(size);
    }
    if align > PAGE_SIZE {
        return None;
    }
    let mut c = class_of(size.max(align))?;
    while CLASS_SIZE[c] as usize % align != 0 {
        c += 1;
        if c == CLASSES {
            return None;
        }
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ascending_multiples_of_eight_ending_at_small_max() {
        assert_eq!(CLASS_SIZE[0], 8);
        assert_eq!(CLASS_SIZE[CLASSES - 1] as usize, SMALL_MAX);
        for w in CLASS_SIZE.windows(2) {
            assert!(w[0] < w[1]);
            assert_eq!(w[1] % 8, 0);
            if w[0] >= 64 {
                // at most 12.5 % internal waste between neighbours above 64 bytes
                assert!((w[1] - w[0]) * 8 <= w[0], "{} -> {}", w[0], w[1]);
            }
        }
    }

    #[test]
    fn lookup_gives_the_smallest_fitting_class() {
        for size in 0..=SMALL_MAX {
            let c = class_of(size).unwrap();
            assert!(CLASS_SIZE[c] as usize >= size);
            if c > 0 {
                assert!((CLASS_SIZE[c - 1] as usize) < size.max(1));
            }
        }
        assert_eq!(class_of(SMALL_MAX + 1), None);
        assert_eq!(class_of(usize::MAX), None);
    }

    #[test]
    fn aligned_classes_are_multiples_of_the_alignment() {
        for align in [16usize, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
            for size in [1usize, 7, 100, 1000, 4000, 8192] {
                let c = class_of_aligned(size, align).unwrap();
                let bs = CLASS_SIZE[c] as usize;
                assert!(bs >= size && bs % align == 0, "{size} {align} -> {bs}");
            }
        }
        assert_eq!(class_of_aligned(8, 8192), None);
    }
}
