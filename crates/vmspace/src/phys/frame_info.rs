//! Per-frame metadata: one [`FrameInfo`] per managed 4 KiB frame, the `struct page` of vmspace.
//!
//! The buddy allocator keeps one entry for every frame of its memory map (reserved frames
//! included, holes between ranges excluded). An entry says what the frame is part of
//! ([`FrameState`]), the order of the block it heads, and a reference count; the free lists
//! are threaded through the entries by index, so they need no other storage.
//!
//! Reference counts live on the *head* frame of an allocated block: allocation sets it to 1,
//! [`inc_ref`](super::BuddyAllocator::inc_ref) adds a sharer (copy-on-write, shared mappings),
//! [`dec_ref`](super::BuddyAllocator::dec_ref) removes one without ever freeing, and
//! [`put`](super::BuddyAllocator::put) removes one and frees the block when none is left.

/// What a frame currently is, as recorded in its [`FrameInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameState {
    /// First frame of a free block of `2^order` frames; the block is on the free list of its
    /// order.
    Free,
    /// First frame of an allocated block of `2^order` frames; carries the reference count.
    Allocated,
    /// Any other frame of a block (free or allocated); the block's head lies below it.
    Tail,
    /// Never handed out: firmware tables, the kernel image, memory-mapped devices…
    Reserved,
}

/// Index meaning "no entry" in the intrusive free-list links.
pub(crate) const NIL: u32 = u32::MAX;

/// Metadata of one 4 KiB frame (16 bytes).
///
/// Callers that run without a heap provide a slice of these (see
/// [`metadata_len`](super::metadata_len)); its initial contents do not matter, the allocator
/// overwrites every entry it uses. Only the allocator changes an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FrameInfo {
    /// Next block on the same free list (metadata index), or `NIL`.
    pub(crate) next: u32,
    /// Previous block on the same free list (metadata index); stale in a list head.
    pub(crate) prev: u32,
    /// Reference count of an allocated head; 0 otherwise.
    pub(crate) refs: u32,
    pub(crate) state: FrameState,
    /// Order of the block this frame heads; 0 for tails and reserved frames.
    pub(crate) order: u8,
    /// Index of the memory-map section the frame belongs to (fixed at construction).
    pub(crate) section: u16,
}

impl FrameInfo {
    /// A blank entry, for initialising caller-provided storage (`[FrameInfo::EMPTY; N]`).
    pub const EMPTY: FrameInfo = FrameInfo {
        next: NIL,
        prev: NIL,
        refs: 0,
        state: FrameState::Reserved,
        order: 0,
        section: 0,
    };

    /// What the frame is.
    pub const fn state(&self) -> FrameState {
        self.state
    }

    /// Order of the block this frame heads (meaningful for `Free` and `Allocated` heads).
    pub const fn order(&self) -> u8 {
        self.order
    }

    /// Reference count: the number of owners of an `Allocated` head, 0 for any other frame.
    pub const fn ref_count(&self) -> u32 {
        self.refs
    }

    /// Whether the frame heads an allocated block.
    pub const fn is_allocated_head(&self) -> bool {
        matches!(self.state, FrameState::Allocated)
    }

    /// Whether the frame heads a free block of `order`.
    #[inline]
    pub(crate) fn is_free_head_of(&self, order: u8) -> bool {
        matches!(self.state, FrameState::Free) && self.order == order
    }
}

impl Default for FrameInfo {
    fn default() -> Self {
        FrameInfo::EMPTY
    }
}

/// Counts kept by the buddy allocator; `total == reserved + free + allocated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameStats {
    /// Frames with metadata: every frame of the usable ranges, reserved ones included.
    pub total_frames: u64,
    /// Frames excluded from allocation.
    pub reserved_frames: u64,
    /// Frames in free blocks.
    pub free_frames: u64,
    /// Frames in allocated blocks.
    pub allocated_frames: u64,
    /// Number of free blocks of each order `0..=MAX_ORDER`.
    pub free_blocks: [u64; super::ORDERS],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_sixteen_bytes() {
        assert_eq!(core::mem::size_of::<FrameInfo>(), 16);
    }

    #[test]
    fn blank_entry_is_not_allocated() {
        let e = FrameInfo::default();
        assert_eq!(e.state(), FrameState::Reserved);
        assert_eq!(e.ref_count(), 0);
        assert!(!e.is_allocated_head());
        assert!(!e.is_free_head_of(0));
    }
}
