//! Per-heap statistics: live bytes, committed bytes, segments, fragmentation.

/// A snapshot of one heap's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HeapStats {
    /// Bytes in allocated blocks (block sizes, including rounding to the class or chunk).
    pub live_bytes: usize,
    /// Bytes the heap holds from its source (segments, large blocks, the break region).
    pub committed_bytes: usize,
    /// Segments (or large blocks) held from the source; 0 for a break-based heap.
    pub segments: usize,
    /// `1 - live / committed`: the share of committed memory not in live blocks.
    pub fragmentation: f64,
}

impl HeapStats {
    pub(crate) fn new(live_bytes: usize, committed_bytes: usize, segments: usize) -> Self {
        let fragmentation = if committed_bytes == 0 {
            0.0
        } else {
            1.0 - live_bytes as f64 / committed_bytes as f64
        };
        HeapStats {
            live_bytes,
            committed_bytes,
            segments,
            fragmentation,
        }
    }
}
