//! What the buddy allocator knows about a frame ([`FrameInfo`]: state, order, reference
//! count), the `struct page` of vmspace, and its [`FrameStats`].
//!
//! The allocator does not store a `FrameInfo` per frame: it keeps bitmaps (free and allocated
//! block heads per order, a reserved and a shared bit per frame) and a reference count per
//! frame, and [`frame_info`](super::BuddyAllocator::frame_info) assembles the view.
//!
//! Reference counts live on the *head* frame of an allocated block: allocation sets it to 1,
//! [`inc_ref`](super::BuddyAllocator::inc_ref) adds a sharer (copy-on-write, shared mappings),
//! [`dec_ref`](super::BuddyAllocator::dec_ref) removes one without ever freeing, and
//! [`put`](super::BuddyAllocator::put) removes one and frees the block when none is left.

/// What a frame currently is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameState {
    /// First frame of a free block of `2^order` frames.
    Free,
    /// First frame of an allocated block of `2^order` frames; carries the reference count.
    Allocated,
    /// Any other frame of a block (free or allocated); the block's head lies below it.
    Tail,
    /// Never handed out: firmware tables, the kernel image, memory-mapped devices…
    Reserved,
}

/// What the allocator knows about one 4 KiB frame, as returned by
/// [`frame_info`](super::BuddyAllocator::frame_info): a snapshot, not a reference into the
/// allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameInfo {
    /// Reference count of an allocated head; 0 otherwise.
    pub(crate) refs: u32,
    pub(crate) state: FrameState,
    /// Order of the block this frame heads; 0 for tails and reserved frames.
    pub(crate) order: u8,
}

impl FrameInfo {
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
    fn only_allocated_heads_report_as_allocated() {
        let e = FrameInfo {
            refs: 0,
            state: FrameState::Reserved,
            order: 0,
        };
        assert_eq!(e.state(), FrameState::Reserved);
        assert_eq!(e.ref_count(), 0);
        assert!(!e.is_allocated_head());
        let h = FrameInfo {
            refs: 2,
            state: FrameState::Allocated,
            order: 3,
        };
        assert!(h.is_allocated_head());
        assert_eq!((h.order(), h.ref_count()), (3, 2));
    }
}
