//! Quantum caches: per-size magazines of small segments in front of an arena.
//!
//! Class `k` holds segments of `(k + 1) * quantum` bytes that stay allocated in the arena
//! (in its hash), so a hit costs a pop and a free a push; a full magazine sends the free on
//! to the arena. Fixed arrays: no heap.

/// Most size classes (sizes up to `QC_CLASSES * quantum`).
pub const QC_CLASSES: usize = 16;
/// Segments per magazine.
pub const QC_MAG: usize = 32;

/// The magazines of one arena.
pub struct QCache {
    /// Enabled classes (0 = caches off).
    pub classes: usize,
    count: [u8; QC_CLASSES],
    mag: [[u64; QC_MAG]; QC_CLASSES],
}

impl QCache {
    /// Caches off, empty.
    pub const fn new() -> Self {
        QCache {
            classes: 0,
            count: [0; QC_CLASSES],
            mag: [[0; QC_MAG]; QC_CLASSES],
        }
    }

    /// Whether `size` (a nonzero multiple of the quantum, 2^`qshift`) goes through a cache.
    #[inline]
    pub fn serves(&self, size: u64, qshift: u32) -> bool {
        self.classes != 0 && size >> qshift <= self.classes as u64
    }

    /// The class of a served size.
    pub fn class(&self, size: u64, qshift: u32) -> usize {
        (size >> qshift) as usize - 1
    }

    /// Takes a cached segment.
    pub fn pop(&mut self, class: usize) -> Option<u64> {
        let n = self.count[class] as usize;
        if n == 0 {
            return None;
        }
        self.count[class] -= 1;
        Some(self.mag[class][n - 1])
    }

    /// Caches a segment; false if the magazine is full.
    pub fn push(&mut self, class: usize, base: u64) -> bool {
        let n = self.count[class] as usize;
        if n == QC_MAG {
            return false;
        }
        self.mag[class][n] = base;
        self.count[class] += 1;
        true
    }

    /// Whether the magazine of `class` holds `base` (a double free).
    pub fn contains(&self, class: usize, base: u64) -> bool {
        self.mag[class][..self.count[class] as usize].contains(&base)
    }

    /// Bytes held.
    pub fn bytes(&self, quantum: u64) -> u128 {
        (0..QC_CLASSES)
            .map(|k| self.count[k] as u128 * (k as u128 + 1) * quantum as u128)
            .sum()
    }
}

impl Default for QCache {
    fn default() -> Self {
        Self::new()
    }
}
