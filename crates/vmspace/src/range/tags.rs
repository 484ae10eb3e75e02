//! Boundary tags: one per span and per segment, kept outside the managed range.
//!
//! Tags are slots of a [`super::Store`] addressed by `u32` index ([`NIL`] for none). Each tag
//! sits on the arena's segment list (address order within a span, a span marker first) and,
//! through `link_*`, on one more list that depends on its kind: a free list (free segments),
//! a hash chain (allocated segments), the span list (span markers) or the pool of unused tags.

/// No tag.
pub const NIL: u32 = u32::MAX;

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
pub struct Tag {
    /// First address.
    pub start: u64,
    /// Length in bytes (nonzero).
    pub size: u64,
    /// Previous tag on the segment list.
    pub prev: u32,
    /// Next tag on the segment list.
    pub next: u32,
    /// Previous tag on the kind's list (free list, span list); unused for hash chains.
    pub link_prev: u32,
    /// Next tag on the kind's list (free list, hash chain, span list, tag pool).
    pub link_next: u32,
    /// What the tag describes.
    pub kind: Kind,
}

impl Tag {
    /// An unused tag.
    pub const EMPTY: Tag = Tag {
        start: 0,
        size: 0,
        prev: NIL,
        next: NIL,
        link_prev: NIL,
        link_next: NIL,
        kind: Kind::Unused,
    };

    /// One past the last address (may be 2^64).
    pub fn end(&self) -> u128 {
        self.start as u128 + self.size as u128
    }
}
