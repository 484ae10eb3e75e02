//! Boundary tags: one per span and per segment, kept outside the managed range.
//!
//! Tags are slots of a [`super::Store`] addressed by `u32` index ([`NIL`] for none). Each tag
//! sits on the arena's segment list (address order within a span, a span marker first) and,
//! through `link_*`, on one more list that depends on its kind: a free list (free segments),
//! a hash chain (allocated segments), the span list (span markers) or the pool of unused tags.
//!
//! A tag is 32 bytes aligned to 32, so it never straddles a cache line and two share one: the
//! kind is packed into the top bits of the `next` link, which limits an arena to
//! [`MAX_TAGS`] tags (2^29 − 1, 16 GiB of tags).

/// No tag.
pub const NIL: u32 = u32::MAX;

/// Most tags one arena can have: indices fit the 29 bits left next to the kind.
pub const MAX_TAGS: usize = NEXT_NIL as usize;

const KIND_SHIFT: u32 = 29;
const NEXT_NIL: u32 = (1 << KIND_SHIFT) - 1;

/// What a tag describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Unused, in the tag pool.
    Unused,
    /// A span added directly with `add_span`; stays until removed.
    Span,
    /// A span imported from the parent; returned to it when wholly free.
    Imported,
    /// A free segment, on the free list of its size.
    Free,
    /// An allocated segment, in the hash.
    Alloc,
}

/// A boundary tag.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub struct Tag {
    /// First address.
    pub start: u64,
    /// Length in bytes (nonzero).
    pub size: u64,
    /// Previous tag on the segment list.
    pub prev: u32,
    /// Next tag on the segment list (low 29 bits, all ones for none) and the kind (top 3).
    next_kind: u32,
    /// Previous tag on the kind's list (free list, span list); unused for hash chains.
    pub link_prev: u32,
    /// Next tag on the kind's list (free list, hash chain, span list, tag pool).
    pub link_next: u32,
}

impl Tag {
    /// An unused tag.
    pub const EMPTY: Tag = Tag::new(0, 0, Kind::Unused);

    /// A tag of `kind` for `[start, start+size)`, on no list.
    pub const fn new(start: u64, size: u64, kind: Kind) -> Tag {
        Tag {
            start,
            size,
            prev: NIL,
            next_kind: NEXT_NIL | (kind as u32) << KIND_SHIFT,
            link_prev: NIL,
            link_next: NIL,
        }
    }

    /// One past the last address (may be 2^64).
    pub fn end(&self) -> u128 {
        self.start as u128 + self.size as u128
    }

    /// Next tag on the segment list ([`NIL`] for none).
    #[inline]
    pub fn next(&self) -> u32 {
        let n = self.next_kind & NEXT_NIL;
        if n == NEXT_NIL {
            NIL
        } else {
            n
        }
    }

    /// What the tag describes.
    #[inline]
    pub fn kind(&self) -> Kind {
        match self.next_kind >> KIND_SHIFT {
            0 => Kind::Unused,
            1 => Kind::Span,
            2 => Kind::Imported,
            3 => Kind::Free,
            _ => Kind::Alloc,
        }
    }

    /// Whether the tag is of `kind` (one compare).
    #[inline]
    pub fn is(&self, kind: Kind) -> bool {
        self.next_kind >> KIND_SHIFT == kind as u32
    }

    /// Sets the next tag (an index below [`MAX_TAGS`], or [`NIL`]).
    #[inline]
    pub fn set_next(&mut self, next: u32) {
        debug_assert!(next == NIL || (next as usize) < MAX_TAGS);
        self.next_kind = (self.next_kind & !NEXT_NIL) | (next & NEXT_NIL);
    }

    /// Sets the kind.
    #[inline]
    pub fn set_kind(&mut self, kind: Kind) {
        self.next_kind = (self.next_kind & NEXT_NIL) | (kind as u32) << KIND_SHIFT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Kind; 5] = [
        Kind::Unused,
        Kind::Span,
        Kind::Imported,
        Kind::Free,
        Kind::Alloc,
    ];

    #[test]
    fn a_tag_is_half_a_cache_line() {
        assert_eq!(core::mem::size_of::<Tag>(), 32);
        assert_eq!(core::mem::align_of::<Tag>(), 32);
    }

    #[test]
    fn next_and_kind_are_independent() {
        for kind in ALL {
            let mut t = Tag::new(7, 9, kind);
            assert_eq!((t.next(), t.kind()), (NIL, kind));
            for next in [0, 1, 12345, (MAX_TAGS - 1) as u32, NIL] {
                t.set_next(next);
                assert_eq!((t.next(), t.kind()), (next, kind));
                for k2 in ALL {
                    t.set_kind(k2);
                    assert_eq!((t.next(), t.kind()), (next, k2));
                    assert!(t.is(k2) && ALL.iter().all(|&k| t.is(k) == (k == k2)));
                }
                t.set_kind(kind);
            }
        }
    }
}
